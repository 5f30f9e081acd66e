//! What follows from the whole state after each event: publishing the local replica's
//! state, losing the key, leading (write-lease renewals, resigning), and following or
//! campaigning.

use std::time::Instant;

use super::candidate::{MemberRole, eligibility};
use super::{PromotionAction as A, PromotionController};

impl PromotionController {
    pub(super) fn evaluate(&mut self, now: Instant, out: &mut Vec<A>) {
        if self.proof_deadline().is_some_and(|d| now >= d) {
            self.key_lost(out);
        }
        if self.held.is_some() {
            self.lead(now, out);
        } else {
            self.follow_or_campaign(now, out);
        }
        self.publish(now, out);
    }

    fn publish(&mut self, now: Instant, out: &mut Vec<A>) {
        let waiting = self.publish_retry_at.is_some_and(|t| now < t);
        if self.local != self.published && !waiting {
            self.publish_retry_at = None;
            out.push(match &self.local {
                Some(state) => A::Publish(state.clone()),
                None => A::Unpublish,
            });
            self.published = self.local.clone();
        }
    }

    /// Past the deadline nothing proves the key is still this agent's (neither etcd nor the
    /// peers' acknowledgements, `failsafe.rs`): a replica that is
    /// or may become PRIMARY is taken offline, and the key is given back (guarded by its
    /// token, so a key that already expired is not touched).
    pub(super) fn key_lost(&mut self, out: &mut Vec<A>) {
        self.key_deadline = None;
        self.forget_acknowledgements();
        let Some(token) = self.held else { return };
        let primary = self
            .local
            .as_ref()
            .is_some_and(|l| l.role == MemberRole::Primary);
        let becoming = self.in_flight.failover || self.awaiting_primary_until.is_some();
        if (primary || becoming) && self.offline_for != Some(token) {
            self.offline_for = Some(token);
            out.push(A::TakeOffline { token });
            // Unknown until the next poll: a PRIMARY seen before the OFFLINE is no reason
            // to campaign again.
            self.local = None;
        }
        self.resign(false, out);
        self.leader = None;
    }

    fn lead(&mut self, now: Instant, out: &mut Vec<A>) {
        if self.refused >= self.s.confirm_down {
            return self.resign(true, out);
        }
        if self.unanswered >= self.s.fall {
            return self.resign(false, out);
        }
        let Some(token) = self.held else { return };
        let role = self.local.as_ref().map(|l| l.role);
        let promoting =
            self.in_flight.failover || self.awaiting_primary_until.is_some_and(|t| now < t);
        if matches!(role, Some(MemberRole::Secondary | MemberRole::Resolving)) && !promoting {
            // Holding the key over a replica that does not serve (a failover that did not
            // take, a DBA's demotion) would keep every candidate waiting: give it back.
            return self.resign(false, out);
        }
        self.switch_over(now, token, out);
        let due = self
            .last_renewal
            .is_none_or(|t| now >= t + self.s.renew_interval);
        if role == Some(MemberRole::Primary) && due && self.may_send(now) && !self.in_flight.renewal
        {
            self.in_flight.renewal = true;
            self.last_renewal = Some(now);
            out.push(A::RenewWriteLease { token });
        }
        self.keep_commit_rule(now, token, out);
    }

    fn follow_or_campaign(&mut self, now: Instant, out: &mut Vec<A>) {
        if let Some(leader) = &self.leader
            && leader.holder == self.s.node
            && self.stale_key != Some(leader.token)
            && self.resign_retry_at.is_none_or(|t| now >= t)
        {
            // A key in this node's name that this controller does not hold: a failed
            // resign, a lost lease's, or a killed predecessor's. Nobody renews through it:
            // give it back now rather than leave the candidates waiting for it to expire.
            self.stale_key = Some(leader.token);
            return out.push(A::Resign {
                token: leader.token,
                confirmed_down: false,
                to: None,
            });
        }
        self.depose_if_silent(now, out);
        let Some(local) = self.local.as_ref() else {
            return;
        };
        if let Some(leader) = &self.leader {
            let resolving = local.role == MemberRole::Resolving;
            let quiet = self
                .last_set_secondary
                .is_none_or(|t| now >= t + self.s.write_lease_validity);
            if resolving && leader.holder != self.s.node && quiet {
                self.last_set_secondary = Some(now);
                out.push(A::SetSecondary);
            }
            return;
        }
        let live_lease = self.key_deadline.is_some_and(|d| now < d);
        if self.in_flight.campaign || !live_lease {
            return;
        }
        if local.role == MemberRole::Primary {
            // Bootstrap, or the leader key expired under a healthy primary: it is still the
            // primary SQL Server chose, so its agent takes the key without a failover.
            self.in_flight.campaign = true;
            return out.push(A::Campaign);
        }
        if self.vacancy.is_some_and(|v| now < v.seen + v.wait) || self.not_synchronized {
            return;
        }
        match eligibility(Some(local), &self.members) {
            // A promise to a leader without etcd (rule 8) holds back the promotion only: a
            // refusal is still reported, and a PRIMARY (above) still takes the key. A planned
            // switchover to this node is not held back (`FailsafeGate::begin_failover` says why).
            Ok(()) if self.holds_back(now) && !self.planned_for_me() => {}
            Ok(()) => {
                self.in_flight.campaign = true;
                out.push(A::Campaign);
            }
            Err(r) if self.refusal.as_ref() != Some(&r) => {
                self.refusal = Some(r.clone());
                out.push(A::Refused(r));
            }
            Err(_) => {}
        }
    }
}
