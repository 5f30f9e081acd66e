//! What the controller tells the driver to do. Deciding and acting are kept apart so that the
//! whole policy can be tested without executors: the driver runs the executor a decision
//! names, logs the decision's `reason` verbatim, and feeds the result back as an event.
//!
//! The typed parts (`ReleaseCause`, `AlertKind`, `DriftKind`) exist for metric labels; the
//! reason strings exist for people and carry the facts that led to the decision.

use std::fmt;
use std::time::Instant;

use super::event::DriftKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask every peer whether it still holds the AG's addresses and wait (bounded) for the
    /// holders to let go; report the answer as `Event::PeersReleased` with this `attempt`.
    /// The acquire that follows is decided only then.
    AwaitPeerRelease {
        ag: String,
        attempt: u32,
        reason: String,
    },
    /// Run the node executor's `acquire` for the AG's addresses.
    Acquire { ag: String, reason: String },
    /// Run the node executor's `release`.
    Release {
        ag: String,
        cause: ReleaseCause,
        reason: String,
    },
    /// The controller would act but something holds it back; emitted once per episode.
    Hold { ag: String, reason: String },
    /// Reconciliation found drift; the driver repairs it: for the node kinds with another
    /// (idempotent) `acquire`, whose result it reports as `NodeAcquired` (a failure raises an
    /// alert, the next tick finds the drift again); for route tables with the `ClaimCloud`
    /// that follows. Counted by kind.
    Repair {
        ag: String,
        kind: DriftKind,
        reason: String,
    },
    /// Run the cloud executor's `claim` at `at` (now, or later after a failure), and report
    /// back with this `attempt` number; results of older attempts are ignored.
    ClaimCloud {
        ag: String,
        attempt: u32,
        at: Instant,
        reason: String,
    },
    Alert {
        ag: String,
        kind: AlertKind,
        reason: String,
    },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Acquire { reason, .. }
            | Decision::AwaitPeerRelease { reason, .. }
            | Decision::Release { reason, .. }
            | Decision::Hold { reason, .. }
            | Decision::Repair { reason, .. }
            | Decision::ClaimCloud { reason, .. }
            | Decision::Alert { reason, .. } => reason,
        }
    }

    pub fn ag(&self) -> &str {
        match self {
            Decision::Acquire { ag, .. }
            | Decision::AwaitPeerRelease { ag, .. }
            | Decision::Release { ag, .. }
            | Decision::Hold { ag, .. }
            | Decision::Repair { ag, .. }
            | Decision::ClaimCloud { ag, .. }
            | Decision::Alert { ag, .. } => ag,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self {
            Decision::Acquire { .. } => "acquire".to_owned(),
            Decision::AwaitPeerRelease { attempt, .. } => {
                format!("ask the peers to let go (handover {attempt})")
            }
            Decision::Release { cause, .. } => format!("release ({cause})"),
            Decision::Hold { .. } => "hold".to_owned(),
            Decision::Repair { kind, .. } => format!("repair ({kind})"),
            Decision::ClaimCloud { attempt, .. } => format!("claim cloud (attempt {attempt})"),
            Decision::Alert { kind, .. } => format!("alert ({kind})"),
        };
        write!(f, "{}: {verb}: {}", self.ag(), self.reason())
    }
}

/// Why an address is given up; the `reason` label of `tdsvip_failovers_total`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum ReleaseCause {
    /// The local replica is SECONDARY, RESOLVING or not in the AG (`not_primary`).
    NotPrimary,
    /// A configured database is not ONLINE (`db_not_online`).
    DbNotOnline,
    /// The local SQL Server stopped answering for the fall count.
    NotAnswering,
    /// The local SQL Server stopped answering (before the fall count) and a peer replica
    /// was seen PRIMARY after the local one last was: SQL Server has a new primary, so
    /// waiting out the fall count would only delay the new owner.
    PeerPrimary,
    /// The acquire failed part way; the release undoes the steps that worked.
    AcquireFailed,
    /// The agent is stopping.
    Stop,
    /// A planned switchover (manage mode): the addresses go before the replica is demoted,
    /// so that no client reaches it as a secondary.
    Switchover,
    /// The first verdict after start says this node must not own the address: remove
    /// whatever a previous agent (killed, so it could not release) left behind.
    Startup,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum AlertKind {
    /// Another replica reports PRIMARY while the local one does too
    /// (`tdsvip_conflicts_total`).
    Conflict,
    /// A cloud claim did not make every route table point here; a retry is scheduled.
    CloudClaimFailed,
    /// The node executor's `acquire` failed.
    AcquireFailed,
    /// The node executor's `release` failed; it is retried on the next reconcile tick.
    ReleaseFailed,
}
