//! The controller: decides, per availability group, whether this node owns the overlay IP,
//! following DESIGN.md's "Who decides who owns the address" (SQL Server decides; the agent
//! owns the address only while its local replica is PRIMARY with every configured database
//! ONLINE).
//!
//! It is sans-I/O: [`AgController::handle`] takes an [`Event`] with the monotonic instant at
//! which the driver saw it and returns [`Decision`]s; executors (node, cloud) are run by the
//! driver, whose results come back as events. That split keeps the policy testable with
//! exact instants and no root, and makes every decision loggable with its reason.
//!
//! - `event.rs`: the inputs; `decision.rs`: the outputs and their metric labels;
//! - `policy.rs`: how each probe outcome counts (the rules table);
//! - `health.rs`: rise/fall counting of one replica (the local one here, peers' in the
//!   driver), and when a replica that was PRIMARY was lost, as one observer saw it;
//! - `state/`: the per-AG state machine; `timeline.rs`: the record of each ownership change.

mod decision;
mod event;
mod health;
mod policy;
pub mod promotion;
mod state;
mod timeline;

pub use decision::{AlertKind, Decision, ReleaseCause};
pub use event::{
    ClaimSummary, Drift, DriftKind, Event, NodeCall, OverlayLogins, PeerReport, PeerView,
    PrimaryLoss, ReplicaRole, TableSummary,
};
pub(crate) use health::ReplicaHealth;
pub use policy::{AgPolicy, Backoff, PolicyError, Verdict};
pub use state::{AgController, OwnershipState};
pub use timeline::{Direction, FailoverTimeline, PHASE_NAMES, Phases, TimedStep};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_promoted;
