//! Rule 9 of manage mode: a dead leader is found faster than its etcd lease expires. etcd
//! counts a lease's TTL in whole seconds and expires keys from a 500 ms loop, so a crashed or
//! cut-off primary's key lingers 1 to 1.5 s with a 1 s TTL, and the candidates' wait (the
//! old write lease) only starts after that. So the leader also rewrites its key every renew
//! interval (a heartbeat: a transaction that applies only while the key carries its token),
//! and the heartbeats are the proof it acts on:
//!
//! - **The leader** sends role changes and write-lease renewals only until
//!   `sent + leader_timeout - key_margin` of the last heartbeat etcd applied (its campaign
//!   counts as one), measured from the *send*, on its own clock, and never past its lease's
//!   own proof. A heartbeat that finds the key gone or another term's ends its lead at once.
//! - **Everyone else** notes when it first saw each revision of the key. A key not rewritten
//!   for `leader_timeout` since is deposed: deleted in a transaction that applies only if the
//!   key still carries that token *and* that revision, so a heartbeat that landed meanwhile
//!   (a live leader) keeps it.
//! - **After a deposal or any unannounced loss**, a candidate waits until `seen +
//!   leader_timeout + write_lease_validity` of the last revision it saw, if that comes before
//!   the wait from the loss itself. Why that is enough: the leader's last applied heartbeat
//!   was sent before the candidate saw it, so the leader sent its last renewal before
//!   `seen + leader_timeout - key_margin - statement_timeout`; it landed within the statement
//!   timeout and the write lease it granted ran out `write_lease_validity` later, and
//!   `key_margin` covers the two clocks' rates. A heartbeat the candidate did not see could
//!   not have been applied before the deletion (etcd's watch shows every revision in order).
//!
//! A frozen leader cannot act on anything: there the write lease runs out by itself, which
//! the same wait covers.

use std::time::Instant;

use super::{PromotionAction as A, PromotionController};

#[derive(Debug, Default)]
pub(super) struct Beats {
    /// Leader side: the held key's token and when its last applied heartbeat was sent.
    applied: Option<(i64, Instant)>,
    /// Everyone: the leader key's last revision seen, and when it was first seen.
    seen: Option<Seen>,
    /// The deposal already sent, for this token and revision: not sent twice.
    deposing: Option<(i64, i64)>,
    /// After a deposal etcd did not answer: when to try again.
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    token: i64,
    revision: i64,
    at: Instant,
}

impl PromotionController {
    /// A heartbeat (or the winning campaign) of the key with `token`, sent at `sent`, applied.
    pub(super) fn beaten(&mut self, token: i64, sent: Instant) {
        if self.held != Some(token) {
            return;
        }
        let b = &mut self.beats.applied;
        *b = Some(match *b {
            Some((t, s)) if t == token && s > sent => (t, s),
            _ => (token, sent),
        });
    }

    /// The revision `revision` of the key with `token` is seen now (by a read or the watch);
    /// one seen before keeps the instant it was first seen.
    pub(super) fn beat_seen(&mut self, now: Instant, token: i64, revision: i64) {
        // A revision at or below the last one seen of the same key is no news (a watch
        // replays what happened between its start and the read).
        let known = self
            .beats
            .seen
            .is_some_and(|s| s.token == token && s.revision >= revision);
        if !known {
            self.beats.seen = Some(Seen {
                token,
                revision,
                at: now,
            });
        }
    }

    pub(super) fn depose_failed(&mut self, now: Instant, token: i64, revision: i64) {
        if self.beats.deposing == Some((token, revision)) {
            self.beats.deposing = None;
            self.beats.retry_at = Some(now + self.s.renew_interval);
        }
    }

    /// Until when the held key is provably this agent's by etcd: its lease's proof and its
    /// last applied heartbeat's, whichever ends first.
    pub(super) fn key_proof(&self) -> Option<Instant> {
        self.key_proof_with(None)
    }

    /// [`Self::key_proof`] as it is once `heard`, an applied heartbeat (token, send time)
    /// not absorbed yet, is.
    pub(super) fn key_proof_with(&self, heard: Option<(i64, Instant)>) -> Option<Instant> {
        let token = self.held?;
        let sent = [self.beats.applied, heard]
            .into_iter()
            .flatten()
            .filter(|(t, _)| *t == token)
            .map(|(_, sent)| sent)
            .max()?;
        let beat = sent + self.s.leader_timeout.saturating_sub(self.s.key_margin);
        Some(self.key_deadline?.min(beat))
    }

    /// When the older of the held key's two proofs was last renewed (rule 8 asks the peers
    /// once it is late).
    pub(super) fn key_last_renewed(&self) -> Option<Instant> {
        let token = self.held?;
        let beat = self.beats.applied.filter(|(t, _)| *t == token)?.1;
        Some(self.failsafe_last_key_sent()?.min(beat))
    }

    /// The last revision of the key `token` seen, if the key is another agent's.
    fn silent_since(&self) -> Option<Seen> {
        let leader = self.leader.as_ref()?;
        if self.held.is_some() || leader.holder == self.s.node {
            return None;
        }
        self.beats.seen.filter(|s| s.token == leader.token)
    }

    /// Deposes the leader whose key has not been rewritten for `leader_timeout`.
    pub(super) fn depose_if_silent(&mut self, now: Instant, out: &mut Vec<A>) {
        let Some(seen) = self.silent_since() else {
            return;
        };
        let due = now >= seen.at + self.s.leader_timeout;
        let waiting = self.beats.retry_at.is_some_and(|t| now < t);
        if due && !waiting && self.beats.deposing != Some((seen.token, seen.revision)) {
            self.beats.deposing = Some((seen.token, seen.revision));
            self.beats.retry_at = None;
            out.push(A::Depose {
                token: seen.token,
                revision: seen.revision,
            });
        }
    }

    /// When the next deposal is due, for `next_deadline`.
    pub(super) fn depose_deadline(&self) -> Option<Instant> {
        let seen = self.silent_since()?;
        if self.beats.deposing == Some((seen.token, seen.revision)) {
            return None;
        }
        let due = seen.at + self.s.leader_timeout;
        Some(self.beats.retry_at.map_or(due, |r| r.max(due)))
    }

    /// The key with `token` went without a word: if its heartbeats end the wait sooner than
    /// the loss itself does, they set it.
    pub(super) fn shorten_vacancy(&mut self, token: i64) {
        let Some(seen) = self.beats.seen.filter(|s| s.token == token) else {
            return;
        };
        let end = seen.at + self.s.leader_timeout + self.s.write_lease_validity;
        if let Some(v) = self.vacancy.as_mut()
            && end < v.seen + v.wait
        {
            v.wait = end.saturating_duration_since(v.seen);
        }
    }
}
