//! Rule 3's other half: how many synchronized secondaries a commit waits for. Rule 3 only
//! promotes the replica with the highest `sequence_number` among ⌊n/2⌋+1 reporters; that loses
//! no acknowledged commit only if every commit was hardened on enough synchronous replicas
//! for any such majority to include one of them. SQL Server makes a commit wait for
//! `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT` synchronized secondaries (besides every
//! synchronous secondary that is SYNCHRONIZED at the time), and an AG is created with 0.
//!
//! So the leader keeps the AG's value where Microsoft's `mssql` Pacemaker agent keeps it
//! (mssql-server-ha, `ag-helper`: at every monitor of the primary, after promote, and when a
//! replica starts or stops, it sets the value unless the AG already has it):
//! - from the number `n` of `SYNCHRONOUS_COMMIT` replicas, the primary included
//!   (configuration-only and asynchronous replicas are not counted): ⌊n/2⌋, a majority of
//!   the synchronous replicas with the primary — 1 for three, 2 for five;
//! - except 0 for exactly two: a lone synchronous secondary that is down or slow would
//!   otherwise stop every write on the primary. Availability before data protection: the
//!   primary keeps writing alone, and what it commits then is lost if it is lost too.
//!   Automatic failover is not weakened by it: with two synchronous replicas (and no
//!   configuration-only one) rule 3 needs both to report, so a lost primary is never
//!   replaced automatically, and with a configuration-only replica `FAILOVER` itself
//!   refuses (41142) a secondary that had fallen behind;
//! - `[cluster] required_synchronized_secondaries_to_commit` replaces the computed value
//!   (Microsoft's resource parameter of the same name): 1 with two synchronous replicas
//!   trades writes during a secondary's outage for never acknowledging a commit that only
//!   the primary holds.
//!
//! Only the leader whose replica is PRIMARY sends it, only while its key is provably held
//! (as a write-lease renewal), only when the value its replica reports differs, and at most
//! once per write-lease period (a poll that started before the change may still show the
//! old value).

use std::time::Instant;

use super::candidate::MemberRole;
use super::{PromotionAction as A, PromotionController};

/// The AG's commit rule as the local replica's catalog reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRule {
    /// `SYNCHRONOUS_COMMIT` replicas in `sys.availability_replicas`, the primary included.
    pub synchronous_replicas: u32,
    /// `sys.availability_groups.required_synchronized_secondaries_to_commit` now.
    pub required: u32,
}

/// The value Microsoft's `mssql` agent computes for `synchronous_replicas`.
pub fn microsoft_value(synchronous_replicas: u32) -> u32 {
    match synchronous_replicas {
        2 => 0,
        n => n / 2,
    }
}

/// The value the AG should have: the configured one, else Microsoft's.
pub fn wanted(rule: CommitRule, configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| microsoft_value(rule.synchronous_replicas))
}

/// The value to set, when the AG does not have it yet.
pub fn change(rule: CommitRule, configured: Option<u32>) -> Option<u32> {
    let want = wanted(rule, configured);
    (rule.required != want).then_some(want)
}

impl PromotionController {
    /// The leader's part, from `lead`, after the write-lease renewal.
    pub(super) fn keep_commit_rule(&mut self, now: Instant, token: i64, out: &mut Vec<A>) {
        let primary = self
            .local
            .as_ref()
            .is_some_and(|l| l.role == MemberRole::Primary);
        let Some(rule) = self.commit_rule.filter(|_| primary) else {
            return;
        };
        let Some(value) = change(rule, self.s.required_synchronized) else {
            return;
        };
        let quiet = self
            .commit_rule_sent
            .is_none_or(|t| now >= t + self.s.write_lease_validity);
        // A switchover in progress changes nothing else on the replica it is demoting.
        if quiet && !self.in_flight.commit_rule && !self.switching_over() && self.may_send(now) {
            self.in_flight.commit_rule = true;
            self.commit_rule_sent = Some(now);
            out.push(A::SetRequiredSynchronized {
                token,
                value,
                reported: rule,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(synchronous_replicas: u32, required: u32) -> CommitRule {
        CommitRule {
            synchronous_replicas,
            required,
        }
    }

    #[test]
    fn microsofts_value_is_half_the_synchronous_replicas_but_zero_for_two() {
        let got: Vec<u32> = (0..=9).map(microsoft_value).collect();
        assert_eq!(got, [0, 0, 0, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn only_a_different_value_is_set() {
        // Three synchronous replicas (the lab's AG without an asynchronous node).
        assert_eq!(change(rule(3, 1), None), None);
        assert_eq!(change(rule(3, 0), None), Some(1));
        assert_eq!(change(rule(3, 2), None), Some(1));
        // Two synchronous replicas and an asynchronous one (the lab's no-sync-candidate).
        assert_eq!(change(rule(2, 1), None), Some(0));
        assert_eq!(change(rule(2, 0), None), None);
    }

    #[test]
    fn the_configured_value_replaces_microsofts() {
        assert_eq!(wanted(rule(2, 0), Some(1)), 1);
        assert_eq!(change(rule(2, 0), Some(1)), Some(1));
        assert_eq!(change(rule(3, 0), Some(0)), None);
        assert_eq!(change(rule(5, 2), Some(4)), Some(4));
    }
}
