//! Rule 5 of manage mode, both halves: etcd trouble is not an outage. Without it, a leader
//! whose key renewals fail (etcd lost its quorum, say) must take its healthy primary offline
//! once the key is no longer provably held, although every node of the AG is fine.
//!
//! - **The leader** asks every peer agent to acknowledge it once its key renewals are
//!   [`LATE_RENEWALS`] intervals late. A round of requests sent at `r` that every peer
//!   acknowledged proves what a key renewal proves: that no peer promotes for a while. So it
//!   counts like one, `ack_window` long: role changes and write-lease renewals may be sent
//!   until `r + ack_window`, and the replica is taken offline only once neither the key nor
//!   a round proves anything (`proof_deadline`).
//! - **A peer** that acknowledges a leader promotes nothing for
//!   [`super::PromotionSettings::ack_hold`] after its answer (which came after `r`): by then
//!   the last renewal the leader could send on that round has landed and the write lease
//!   it granted has run out. A campaign waits for the hold; the driver checks it again
//!   under the same lock that answers acknowledgements right before sending `FAILOVER`.
//! - A peer answers for itself only: the round counts if every node that reported its
//!   replica in etcd answered, and as many as the local replica's catalog lists synchronous
//!   and configuration-only replicas, so a node missing from `[[peer]]` stops the failsafe
//!   rather than being left free to promote.
//!
//! A confirmed-down handoff from the acknowledged leader ends the hold: a SQL Server that
//! refuses connections writes nothing, whatever its lease says.

use std::time::Instant;

use super::PromotionController;

/// A leader asks for acknowledgements once its last answered key renewal was sent this many
/// renew intervals ago: one late renewal is a scheduling hiccup, three are etcd trouble.
pub const LATE_RENEWALS: u32 = 3;

#[derive(Debug)]
pub(super) struct Failsafe {
    /// `r + ack_window + statement_timeout` of the last round every peer acknowledged for
    /// the held key: the acknowledgements' counterpart of `key_deadline`.
    ack_deadline: Option<Instant>,
    /// When the last answered renewal of this agent's etcd lease was sent.
    last_key_sent: Option<Instant>,
    /// The other leader this agent acknowledged (its token), and until when it holds back.
    acknowledged: Option<(i64, Instant)>,
}

/// The token of the hold a fresh process starts with: no leader key has it (tokens are
/// etcd revisions, from 1), so no handoff note ends it early.
const PREDECESSOR: i64 = 0;

impl Failsafe {
    /// A promise lives in the process that gave it: a fresh process holds back as if it had
    /// just acknowledged a leader, so that a restart cannot cut its predecessor's promise
    /// short (a vacancy's wait would not do: the first read of the leader key restarts it
    /// at the shorter wait of an unannounced loss).
    pub(super) fn at_start(now: Instant, hold: std::time::Duration) -> Failsafe {
        Failsafe {
            ack_deadline: None,
            last_key_sent: None,
            acknowledged: Some((PREDECESSOR, now + hold)),
        }
    }
}

impl PromotionController {
    /// The latest instant this agent provably leads, by its key or by its peers.
    pub(super) fn proof_deadline(&self) -> Option<Instant> {
        self.proof_deadline_with(None)
    }

    /// [`Self::proof_deadline`] with an applied heartbeat not absorbed yet.
    pub(super) fn proof_deadline_with(&self, heard: Option<(i64, Instant)>) -> Option<Instant> {
        match (self.key_proof_with(heard), self.failsafe.ack_deadline) {
            (Some(k), Some(a)) => Some(k.max(a)),
            (k, a) => k.or(a),
        }
    }

    pub(super) fn key_renewal_sent(&mut self, sent: Instant) {
        let last = &mut self.failsafe.last_key_sent;
        *last = Some(last.map_or(sent, |t| t.max(sent)));
    }

    /// While this agent holds the key and its renewals are late: the token to ask the peers
    /// to acknowledge.
    /// Only for a replica that answers as PRIMARY: one that does not answer is about to be
    /// given up (rule 2), and must not be kept on the peers' word.
    pub fn wants_acknowledgements(&self, now: Instant) -> Option<i64> {
        let token = self.held?;
        let primary = self
            .local
            .as_ref()
            .is_some_and(|l| l.role == super::MemberRole::Primary);
        (primary && self.renewals_late(now)).then_some(token)
    }

    fn renewals_late(&self, now: Instant) -> bool {
        let late = self.s.renew_interval * LATE_RENEWALS;
        self.key_last_renewed().is_none_or(|t| now >= t + late)
    }

    pub(super) fn failsafe_last_key_sent(&self) -> Option<Instant> {
        self.failsafe.last_key_sent
    }

    /// A round for the held key that every peer acknowledged, if every node that reported
    /// its replica is among them.
    pub(super) fn acknowledged(&mut self, token: i64, sent: Instant, from: &[String]) {
        if self.held != Some(token) || from.is_empty() {
            return;
        }
        let unheard = self
            .members
            .iter()
            .any(|m| m.node != self.s.node && !from.contains(&m.node));
        // The member keys are the last etcd showed, stale while it does not answer; the
        // local replica's own catalog says how many synchronous replicas there are, each of
        // which could be promoted: one missing from `[[peer]]` must not pass unheard.
        let voters = self.local.as_ref().map_or(u32::MAX, |l| l.voters);
        let heard = u32::try_from(from.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if unheard || heard < voters {
            return;
        }
        let deadline = sent + self.s.ack_window + self.s.statement_timeout;
        let d = &mut self.failsafe.ack_deadline;
        *d = Some(d.map_or(deadline, |x| x.max(deadline)));
    }

    pub(super) fn acknowledged_leader(&mut self, token: i64, until: Instant) {
        let hold = &mut self.failsafe.acknowledged;
        *hold = Some(match *hold {
            Some((_, u)) if u > until => (token, u),
            _ => (token, until),
        });
    }

    /// The acknowledged leader with `token` handed off saying its SQL Server is down.
    pub(super) fn release_acknowledgement(&mut self, token: i64) {
        self.failsafe.acknowledged.take_if(|(t, _)| *t == token);
    }

    pub(super) fn forget_acknowledgements(&mut self) {
        self.failsafe.ack_deadline = None;
    }

    /// This agent acknowledged another leader recently: no campaign, no promotion.
    pub(super) fn holds_back(&self, now: Instant) -> bool {
        self.acknowledged_until(now).is_some()
    }

    pub(super) fn acknowledged_until(&self, now: Instant) -> Option<Instant> {
        self.failsafe
            .acknowledged
            .map(|(_, until)| until)
            .filter(|&u| now < u)
    }

    /// This agent holds the key, is promoting its replica, or the replica is PRIMARY: it
    /// acknowledges no other leader.
    pub fn leads_or_promotes(&self) -> bool {
        let primary = self
            .local
            .as_ref()
            .is_some_and(|l| l.role == super::MemberRole::Primary);
        self.held.is_some()
            || self.in_flight.failover
            || self.awaiting_primary_until.is_some()
            || primary
    }

    /// Leading on the peers' acknowledgements alone: the key is not provably held.
    pub(super) fn on_acknowledgements(&self, now: Instant) -> bool {
        self.held.is_some()
            && self.key_proof().is_none_or(|d| now >= d)
            && self.failsafe.ack_deadline.is_some_and(|d| now < d)
    }

    /// When renewals become late (the driver starts asking) and when a hold ends.
    pub(super) fn failsafe_deadline(&self) -> Option<Instant> {
        let late = self
            .key_last_renewed()
            .map(|t| t + self.s.renew_interval * LATE_RENEWALS);
        let hold = self.failsafe.acknowledged.map(|(_, u)| u);
        [late, hold].into_iter().flatten().min()
    }
}
