//! Rule 2 of manage mode: which replica may be promoted without losing an acknowledged
//! commit. It is Microsoft's `mssql` resource agent's rule, kept because its argument holds
//! for us too: a commit was acknowledged only after every synchronized synchronous replica
//! hardened it, and every promotion raises the AG's `sequence_number`; so among a majority
//! of the replicas that take part in the commit quorum (synchronous and configuration-only
//! ones), the highest `sequence_number` belongs to replicas that saw the last configuration
//! of the lost primary. Whether such a replica also hardened its last commit is what
//! `FAILOVER` checks itself (41142 if it was not synchronized when the primary was lost):
//! the DMVs cannot say, every replica reads `NOT SYNCHRONIZING` once its primary is gone.

use serde::{Deserialize, Serialize};

/// How a replica takes part in commits (`sys.availability_replicas.availability_mode_desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CommitMode {
    Synchronous,
    Asynchronous,
    ConfigurationOnly,
}

/// A replica's role as its own DMVs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MemberRole {
    Primary,
    Secondary,
    Resolving,
}

/// What one agent publishes about its local replica (in etcd, under the AG's `members/`).
/// Only an agent whose replica answered publishes one; a replica that does not answer
/// reports nothing and does not count towards the majority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub node: String,
    pub role: MemberRole,
    pub commit_mode: CommitMode,
    /// The AG's `sequence_number` as this replica last saw it.
    pub sequence_number: i64,
    /// `synchronization_state_desc = 'SYNCHRONIZED'` for the local database replicas.
    pub synchronized: bool,
    /// The AG's synchronous-commit and configuration-only replicas, as this replica's
    /// catalog lists them: the `n` of the majority rule (asynchronous ones do not vote).
    pub voters: u32,
}

/// Why a replica may not be promoted: the label of `tdsvip_promotion_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum Refusal {
    /// The local replica's state is unknown (its SQL Server did not answer).
    LocalUnknown,
    /// Only a SECONDARY can be failed over to (a RESOLVING one must rejoin first).
    NotSecondary,
    /// Asynchronous-commit and configuration-only replicas are never promoted automatically.
    NotSynchronousCommit,
    /// Fewer than ⌊n/2⌋+1 synchronous or configuration-only replicas reported.
    TooFewReporters { reporting: usize, needed: usize },
    /// Another reporter saw a later configuration.
    BehindSequence { local: i64, highest: i64 },
    /// `FAILOVER` said the replica was not synchronized when the primary was lost (41142).
    NotSynchronized,
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::LocalUnknown => write!(f, "the local replica's state is unknown"),
            Refusal::NotSecondary => write!(f, "the local replica is not a SECONDARY"),
            Refusal::NotSynchronousCommit => {
                write!(f, "the local replica is not a synchronous-commit replica")
            }
            Refusal::TooFewReporters { reporting, needed } => write!(
                f,
                "{reporting} synchronous or configuration-only replicas reported, {needed} needed"
            ),
            Refusal::BehindSequence { local, highest } => write!(
                f,
                "the local sequence_number {local} is below the highest reported, {highest}"
            ),
            Refusal::NotSynchronized => write!(
                f,
                "FAILOVER refused: the replica was not synchronized when the primary was lost (41142)"
            ),
        }
    }
}

/// Whether `local` may be promoted, given every member state reported (its own included).
pub fn eligibility(local: Option<&MemberState>, reports: &[MemberState]) -> Result<(), Refusal> {
    let local = local.ok_or(Refusal::LocalUnknown)?;
    if local.commit_mode != CommitMode::Synchronous {
        return Err(Refusal::NotSynchronousCommit);
    }
    if local.role != MemberRole::Secondary {
        return Err(Refusal::NotSecondary);
    }
    let quorum: Vec<&MemberState> = reports
        .iter()
        .filter(|m| m.commit_mode != CommitMode::Asynchronous)
        .collect();
    let needed = local.voters as usize / 2 + 1;
    if quorum.len() < needed {
        return Err(Refusal::TooFewReporters {
            reporting: quorum.len(),
            needed,
        });
    }
    let highest = quorum.iter().map(|m| m.sequence_number).max().unwrap_or(0);
    if local.sequence_number < highest {
        return Err(Refusal::BehindSequence {
            local: local.sequence_number,
            highest,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: &str, mode: CommitMode, seq: i64) -> MemberState {
        MemberState {
            node: node.into(),
            role: MemberRole::Secondary,
            commit_mode: mode,
            sequence_number: seq,
            synchronized: false,
            voters: 3,
        }
    }

    #[test]
    fn the_highest_synchronous_replica_of_a_majority_is_eligible() {
        let b = m("b", CommitMode::Synchronous, 7);
        let c = m("c", CommitMode::Synchronous, 7);
        assert_eq!(eligibility(Some(&b), &[b.clone(), c]), Ok(()));
    }

    #[test]
    fn a_stale_sequence_number_is_refused() {
        let b = m("b", CommitMode::Synchronous, 6);
        let c = m("c", CommitMode::Synchronous, 7);
        assert_eq!(
            eligibility(Some(&b), &[b.clone(), c]),
            Err(Refusal::BehindSequence {
                local: 6,
                highest: 7
            })
        );
    }

    #[test]
    fn asynchronous_reports_neither_count_nor_raise_the_bar() {
        let b = m("b", CommitMode::Synchronous, 7);
        // An asynchronous replica's number is not part of the rule (the mssql agent reads 0).
        let c = m("c", CommitMode::Asynchronous, 9);
        assert_eq!(
            eligibility(Some(&b), &[b.clone(), c]),
            Err(Refusal::TooFewReporters {
                reporting: 1,
                needed: 2
            })
        );
    }

    #[test]
    fn configuration_only_replicas_count_and_are_never_candidates() {
        let b = m("b", CommitMode::Synchronous, 7);
        let w = m("w", CommitMode::ConfigurationOnly, 7);
        assert_eq!(eligibility(Some(&b), &[b.clone(), w.clone()]), Ok(()));
        assert_eq!(
            eligibility(Some(&w), &[b, w.clone()]),
            Err(Refusal::NotSynchronousCommit)
        );
    }

    #[test]
    fn an_asynchronous_local_replica_is_never_promoted() {
        let c = m("c", CommitMode::Asynchronous, 7);
        let b = m("b", CommitMode::Synchronous, 7);
        assert_eq!(
            eligibility(Some(&c), &[b, c.clone()]),
            Err(Refusal::NotSynchronousCommit)
        );
        assert_eq!(eligibility(None, &[]), Err(Refusal::LocalUnknown));
    }

    #[test]
    fn the_majority_counts_voters_only_and_a_resolving_replica_waits() {
        // Three synchronous replicas and an asynchronous one: n = 3, two reporters suffice.
        let b = m("b", CommitMode::Synchronous, 7);
        let c = m("c", CommitMode::Synchronous, 7);
        assert_eq!(eligibility(Some(&b), &[b.clone(), c.clone()]), Ok(()));
        let r = MemberState {
            role: MemberRole::Resolving,
            ..b.clone()
        };
        assert_eq!(
            eligibility(Some(&r), &[r.clone(), c]),
            Err(Refusal::NotSecondary)
        );
    }

    #[test]
    fn refusal_labels_are_stable() {
        assert_eq!(
            Refusal::TooFewReporters {
                reporting: 1,
                needed: 2
            }
            .reason(),
            "too_few_reporters"
        );
        assert_eq!(Refusal::NotSynchronized.reason(), "not_synchronized");
    }
}
