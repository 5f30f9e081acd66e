//! The running agent: probes, controllers, executors, the status store, metrics and HTTP,
//! joined by one task that routes events.
//!
//! The controllers are sans-I/O and each AG's node executor takes `&mut self`, so one task
//! (the [`router`]) owns every AG's runtime and everything else reaches it as an [`Input`]
//! on one channel. That keeps the order of events per AG exactly the order its controller
//! sees them, and node calls never overlap (the controller's "never two owners" argument
//! assumes one call at a time). Node calls are awaited inline: they take milliseconds, and
//! the probe runner's bounded channel turns any delay into skipped ticks, not a backlog.
//!
//! Whatever can take longer runs in a task of its own and comes back as an input: cloud
//! claims and observations (EC2 calls take up to seconds and must not hold back a release),
//! and the handover question asked to the peers before an acquire (up to
//! `peer_poll.release_wait_ms`, during which other AGs' events must still flow).
//!
//! A second login probe runs through the overlay IP (`overlay.rs`): across the network to
//! whichever node owns the address, which is what peers report for the new owner's
//! `first_client_login`; to this node over the local route once it owns the address, which
//! is its `first_local_login`. At start, one login probe decides whether addresses a killed predecessor
//! left on the interface are adopted (replica PRIMARY: they keep serving) or fenced.
//!
//! The files, in the order a reader meets them:
//! - `start.rs`: [`run`]: builds everything from the config, runs the router, shuts down;
//! - `runtime.rs`: one AG's controller and executors ([`runtime::AgRuntime`]);
//! - `router.rs`: the loop that routes inputs to runtimes and decisions to executors;
//! - `inputs.rs`: the probes that feed it; `signals.rs`: SIGTERM/SIGINT/SIGHUP as inputs;
//! - `overlay.rs`: the logins through the overlay IP;
//! - `peer_reports.rs`: peer reports and published clients; `handover.rs`: the question asked
//!   to the peers before an acquire;
//! - `manage/`: manage mode's promotion task per AG (etcd, T-SQL), beside the router;
//! - `reconcile.rs`: the periodic check of node and cloud state; `steps.rs`: executor
//!   steps as the controller records them; `reload.rs`: what a SIGHUP may change.

use std::time::Instant;

use tdsvip_cloud::{ClaimReport, ObserveReport};
use tdsvip_probes::{Password, ProbeResult};

use crate::config::AgentConfig;
use crate::peer_status::Unreadable;

mod handover;
mod inputs;
mod manage;
mod overlay;
mod peer_reports;
mod reconcile;
mod reload;
mod router;
mod runtime;
mod signals;
mod start;
mod steps;
#[cfg(test)]
mod tests;
pub(crate) mod verdict;

pub use start::run;

/// Why the agent could not start (or stopped badly). `Config` problems exit 2.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Stop(String),
}

fn cfg_err(key: impl Into<String>, reason: impl Into<String>) -> DriverError {
    DriverError::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Reads the configuration (and the password) again, for SIGHUP; the errors are `KEY: reason`.
pub type Reloader = Box<dyn Fn() -> Result<(AgentConfig, Password), Vec<String>> + Send + Sync>;

/// What reaches the router. AGs are numbered by their place in the config (fixed for the
/// process's life); peers are named: after a reload, a late answer of a removed peer is
/// simply dropped.
enum Input {
    Probe(usize, Box<ProbeResult>),
    /// A result of the periodic login through the overlay IP.
    OverlayProbe(usize, Box<ProbeResult>),
    /// A quick re-login through the overlay IP ended: its first success, or `None` when it
    /// gave up (see `overlay.rs`).
    OverlayRelogin(usize, Option<Box<ProbeResult>>),
    /// The peers' answer to handover question `.1` of AG `.0`.
    Handover(usize, u32, handover::Handover),
    /// Cloud claim `.1` of AG `.0`, started at `.2`, and its report.
    Claimed(usize, u32, Instant, Box<ClaimReport>),
    /// A cloud observation made during reconciliation.
    Observed(usize, Box<ObserveReport>),
    /// A read of peer `.0`'s `/status`, answered (or given up) at `.1`.
    PeerStatus(String, Instant, Result<serde_json::Value, Unreadable>),
    /// A probe of peer `.0`'s replica for AG `.1`.
    PeerProbe(String, usize, Box<ProbeResult>),
    /// An event for AG `.0`'s ownership controller from its manage task (a planned
    /// switchover's let-go).
    Ownership(usize, crate::controller::Event),
    /// SIGHUP.
    Reload,
    Stop(&'static str),
}
