//! The rules of [`super::PromotionController`]: `absorb` records what an event says,
//! `evaluate` (in `lead.rs`) decides what follows from the whole state, so that a rule fires
//! the same whichever event made it true.

use std::time::{Duration, Instant};

use super::candidate::MemberRole;
use super::{
    Campaign, LeaderKey, LocalPoll, PromotionAction as A, PromotionCause, PromotionController,
    PromotionEvent as E, Vacancy,
};

impl PromotionController {
    pub(super) fn absorb(&mut self, now: Instant, event: E, out: &mut Vec<A>) {
        match event {
            E::Local(poll) => self.absorb_local(poll),
            E::Polled { poll, started } => {
                if self.role_changed_at.is_none_or(|t| started >= t) {
                    self.absorb_local(poll);
                }
            }
            E::RoleChanged => self.role_changed_at = Some(now),
            E::Members(members) => {
                self.note_primary(&members);
                self.members = members;
            }
            E::Leader(key) => self.see_leader(now, key),
            E::Beat { token, revision } => self.beat_seen(now, token, revision),
            E::Beaten { token, sent } => self.beaten(token, sent),
            E::BeatRefused { token } => {
                // Deposed (or expired): the key is not this agent's any more. The same as
                // seeing it go, before the watch says so.
                if self.held == Some(token) {
                    self.absorb(
                        now,
                        E::LeaderGone {
                            token,
                            handoff: None,
                        },
                        out,
                    );
                }
            }
            E::DeposeFailed { token, revision } => self.depose_failed(now, token, revision),
            E::LeaderGone { token, handoff } => {
                let ours_or_unknown = self.leader.as_ref().is_none_or(|k| k.token == token);
                let note = handoff.filter(|h| h.token == token);
                let holder = self.leader.as_ref().filter(|k| k.token == token);
                self.note_loss(holder.map(|k| k.holder.clone()), note.as_ref());
                let confirmed = note.as_ref().is_some_and(|h| h.confirmed_down);
                let to_me = note.is_some_and(|h| h.to.as_deref() == Some(self.s.node.as_str()));
                if ours_or_unknown {
                    let cause = match (confirmed, to_me) {
                        (true, _) => PromotionCause::PrimaryDown,
                        (false, true) => PromotionCause::Switchover,
                        (false, false) => PromotionCause::LeaderLost,
                    };
                    self.vacate(now, cause);
                    if cause == PromotionCause::LeaderLost {
                        self.shorten_vacancy(token);
                    }
                }
                if confirmed {
                    self.release_acknowledgement(token);
                }
                if self.held == Some(token) {
                    self.held = None;
                }
            }
            E::KeyRenewed { sent, ttl } => {
                self.key_renewal_sent(sent);
                let deadline = sent + ttl.saturating_sub(self.s.key_margin);
                self.key_deadline = Some(self.key_deadline.map_or(deadline, |d| d.max(deadline)));
            }
            E::LeaseGranted => {
                // Member state lived on the old lease, if any: write it again.
                self.published = None;
                self.publish_retry_at = None;
            }
            E::LeaseLost => {
                self.key_lost(out);
                self.published = None;
            }
            E::Published { ok } => {
                if !ok {
                    self.published = None;
                    self.publish_retry_at = Some(now + self.s.renew_interval);
                }
            }
            E::Campaigned(c) => self.absorb_campaign(now, c, out),
            E::FailedOver(result) => self.absorb_failover(now, result, out),
            E::WriteLeaseRenewed => self.in_flight.renewal = false,
            E::RequiredSynchronizedSet => self.in_flight.commit_rule = false,
            E::Acknowledged { token, sent, from } => self.acknowledged(token, sent, &from),
            E::SwitchoverAsked(asked) => self.switchover_asked(asked, out),
            E::LetGoDone { ok } => self.let_go_done(now, ok, out),
            E::Demoted { ok } => {
                // Even a demotion that failed on the wire may have been applied.
                self.role_changed_at = Some(now);
                self.demoted(ok, out);
            }
            E::ResignFailed { token } => {
                // Resigned in vain: the key stays in this node's name (and its lease may well
                // be renewed), so the stale-key rule gives it back again, after an interval.
                self.stale_key.take_if(|t| *t == token);
                self.resign_retry_at = Some(now + self.s.renew_interval);
            }
            E::AcknowledgedLeader { token, until } => self.acknowledged_leader(token, until),
            E::EtcdFailed => self.in_flight.campaign = false,
            E::Deadline => {}
        }
    }

    fn absorb_local(&mut self, poll: LocalPoll) {
        match poll {
            LocalPoll::Up(state, commit_rule) => {
                self.commit_rule = Some(commit_rule);
                self.refused = 0;
                self.unanswered = 0;
                if state.role == MemberRole::Primary {
                    self.awaiting_primary_until = None;
                }
                self.local = Some(state);
            }
            // "In a row": an answer of the other kind starts the count again.
            LocalPoll::Refused => {
                self.refused += 1;
                self.unanswered = 0;
                self.local = None;
            }
            LocalPoll::Unanswered => {
                self.unanswered += 1;
                self.refused = 0;
                self.local = None;
            }
        }
    }

    /// A read of the leader key. `None` from a read always starts a new wait: this agent
    /// cannot know what happened while it could not read (another leader may have come,
    /// promoted, and gone), so it waits as after an unannounced loss.
    fn see_leader(&mut self, now: Instant, key: Option<LeaderKey>) {
        match key {
            Some(k) => {
                if k.holder != self.s.node {
                    // Someone else leads now: a 41142 of ours is history.
                    self.not_synchronized = false;
                }
                self.vacancy = None;
                self.refusal = None;
                self.leader = Some(k);
            }
            None => self.vacate(now, PromotionCause::LeaderLost),
        }
    }

    /// The key is gone: candidates wait out the old write lease, unless the old primary
    /// cannot write (its SQL Server is down, or it was demoted for a switchover to us).
    pub(super) fn vacate(&mut self, now: Instant, cause: PromotionCause) {
        self.leader = None;
        self.refusal = None;
        let wait = match cause {
            PromotionCause::PrimaryDown | PromotionCause::Switchover => Duration::ZERO,
            PromotionCause::LeaderLost => self.s.write_lease_validity + self.s.statement_timeout,
        };
        self.vacancy = Some(Vacancy {
            seen: now,
            wait,
            cause,
        });
    }

    fn absorb_campaign(&mut self, now: Instant, c: Campaign, out: &mut Vec<A>) {
        self.in_flight.campaign = false;
        let (token, sent) = match c {
            Campaign::Held(k) => return self.see_leader(now, Some(k)),
            Campaign::Won { token, sent } => (token, sent),
        };
        self.held = Some(token);
        self.beaten(token, sent);
        self.leader = Some(LeaderKey {
            holder: self.s.node.clone(),
            token,
        });
        let cause = self
            .vacancy
            .take()
            .map_or(PromotionCause::LeaderLost, |v| v.cause);
        match self.local.as_ref().map(|l| l.role) {
            Some(MemberRole::Secondary) => {
                self.fence_on_win();
                self.in_flight.failover = true;
                out.push(A::Failover { token, cause });
            }
            Some(MemberRole::Primary) => {}
            _ => self.resign(false, out),
        }
    }

    fn absorb_failover(&mut self, now: Instant, result: Result<Instant, bool>, out: &mut Vec<A>) {
        self.in_flight.failover = false;
        match result {
            // FAILOVER returns before the role shows: give SQL Server a write lease's time.
            Ok(_) => {
                match self.held {
                    Some(token) => self.fence_after_failover(token, out),
                    // The key went while FAILOVER ran: the stop is not this agent's to ask.
                    None => self.fence_pending = None,
                }
                self.role_changed_at = Some(now);
                self.awaiting_primary_until =
                    Some(now + self.s.write_lease_validity + self.s.statement_timeout);
            }
            Err(not_synchronized) => {
                self.fence_pending = None;
                if not_synchronized {
                    self.not_synchronized = true;
                    out.push(A::Refused(super::Refusal::NotSynchronized));
                }
                self.resign(false, out);
            }
        }
    }

    pub(super) fn resign(&mut self, confirmed_down: bool, out: &mut Vec<A>) {
        self.awaiting_primary_until = None;
        if let Some(token) = self.held.take() {
            // Resigned here: until the deletion comes back through the watch the key still
            // names this node, and is not a stale key of its own to resign a second time.
            self.stale_key = Some(token);
            out.push(A::Resign {
                token,
                confirmed_down,
                to: None,
            });
        }
    }
}
