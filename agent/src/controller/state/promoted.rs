//! Manage mode: joining this agent's promotion of its replica ([`PromotionSteps`], from the
//! promotion controller) to the timeline of the acquire that follows it, so that `/status`
//! and `/events` show one record from the vacancy to the address: detect, elect, failover
//! (the promotion's), re-observe (`local_primary_seen`) and acquire (`decided`).
//!
//! The two controllers run in different tasks, so the record may come before the acquire
//! (kept until the acquire) or after it (joined to the acquire's open timeline). Which
//! acquire it belongs to is decided by causality, on this node's monotonic clock: the one
//! whose run of PRIMARY probes began after `FAILOVER` was sent (a probe cannot see the
//! promoted replica PRIMARY before that). A record that no such acquire takes within the
//! timeline limit is dropped, so that a later, unrelated acquire never shows it.

use std::time::Instant;

use super::{AgController, OwnershipState};
use crate::controller::promotion::PromotionSteps;
use crate::controller::timeline::{Direction, FailoverTimeline};

/// Whether the acquire recorded in `t` followed `p`'s `FAILOVER`.
fn followed(t: &FailoverTimeline, p: &PromotionSteps) -> bool {
    t.direction == Direction::Acquire
        && t.promotion.is_none()
        && t.local_primary_seen
            .is_some_and(|seen| seen >= p.failover_sent)
}

impl AgController {
    /// A promotion's record arrived at `now`: joined to the open acquire it led to, or kept
    /// for the next one while no address is taken yet.
    pub(super) fn on_promoted(&mut self, now: Instant, p: PromotionSteps) {
        if let Some(t) = self.timeline.as_mut()
            && followed(t, &p)
        {
            t.promotion = Some(p);
            return;
        }
        // An acquire already under way (or done) did not follow this promotion: the record
        // came too late for it, and belongs to no later one.
        let waiting = self.state == OwnershipState::Standby && !self.stopped;
        self.promotion = waiting.then_some((now, p));
    }

    /// The rise count, or its exception after this agent's own promotion: one PRIMARY probe
    /// that *started* after `FAILOVER` was sent meets it. The rise count is there so that a
    /// role seen in passing does not move the address; a role this node's agent has just
    /// set, read by a probe begun afterwards, is not one. It saves a probe interval of every
    /// failover the agents run (the re-observe still happens). Whom the address may go to is
    /// not decided by rise: the handover check and the kernel ownership lease are unchanged.
    pub(super) fn may_own(&self) -> bool {
        let promoted_here = self.promotion.as_ref().is_some_and(|(_, p)| {
            self.health
                .last_ok_started()
                .is_some_and(|s| self.health.ok_streak() >= 1 && s >= p.failover_sent)
        });
        self.health.may_own() || promoted_here
    }

    /// A probe that does not say PRIMARY after one begun after `FAILOVER` did: the promoted
    /// replica's PRIMARY run ended (taken `OFFLINE` when the key was lost, demoted), and the
    /// record lowers no later rise count (nor joins a later acquire). A SECONDARY read before
    /// any PRIMARY is no such sign: `FAILOVER` returns before the role shows. Called before
    /// the probe is counted.
    pub(super) fn forget_undone_promotion(&mut self, primary: bool) {
        let was_primary_since = |p: &PromotionSteps| {
            self.health
                .last_ok_started()
                .is_some_and(|s| s >= p.failover_sent)
        };
        if !primary
            && self
                .promotion
                .as_ref()
                .is_some_and(|(_, p)| was_primary_since(p))
        {
            self.promotion = None;
        }
    }

    /// A kept record that no acquire took within the timeline limit belongs to none: dropped,
    /// so that it neither joins a later acquire nor lowers a later rise count.
    pub(super) fn expire_promotion(&mut self, now: Instant) {
        let limit = self.policy.timeline_limit;
        self.promotion
            .take_if(|(arrived, _)| now.saturating_duration_since(*arrived) > limit);
    }

    /// The kept promotion record, if the acquire being recorded in `t` at `now` followed it
    /// (the record is given up either way: one promotion, one acquire).
    pub(super) fn promotion_for(
        &mut self,
        t: &FailoverTimeline,
        now: Instant,
    ) -> Option<PromotionSteps> {
        let (arrived, p) = self.promotion.take()?;
        let fresh = now.saturating_duration_since(arrived) <= self.policy.timeline_limit;
        (fresh && followed(t, &p)).then_some(p)
    }
}
