//! The node-level takeover as the controller sees it: [`NodeTakeover`], its errors, and what
//! `verify` reports.

use std::{future::Future, net::IpAddr, time::Instant};

use thiserror::Error;

use super::call_steps::{Action, CallSteps};
use crate::{
    address::{AddressError, AddressPresence},
    announce::AnnounceError,
    caps::CapsError,
    conn_track::Connection,
    guard::{Counters, GuardError},
    sock_destroy::SockDestroyError,
};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Announce(#[from] AnnounceError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    SockDestroy(#[from] SockDestroyError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("eBPF is disabled in the configuration")]
    EbpfDisabled,
}

/// A call that stopped at a failed step, with the steps it took.
#[derive(Debug, Error)]
#[error("{action:?} failed: {error}")]
pub struct TakeoverFailure {
    pub action: Action,
    pub error: NodeError,
    pub timeline: CallSteps,
}

pub(super) fn fail(timeline: CallSteps, error: impl Into<NodeError>) -> TakeoverFailure {
    TakeoverFailure {
        action: timeline.action,
        error: error.into(),
        timeline,
    }
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Every address present as configured and (with eBPF) the guard passing it.
    pub owned: bool,
    pub addresses: Vec<(IpAddr, AddressPresence)>,
    /// Guard state per address: `Some(true)` passing, `Some(false)` fenced, `None` eBPF off.
    pub guard: Vec<(IpAddr, Option<bool>)>,
    pub timeline: CallSteps,
}

/// Node-level takeover of the overlay address. Every call is idempotent.
pub trait NodeTakeover {
    /// Take the address: fence off, address on, announce, tickle the clients of
    /// `peer_connections` (handed over by peers) and of the local tracker.
    fn acquire(
        &mut self,
        peer_connections: &[Connection],
    ) -> impl Future<Output = Result<CallSteps, TakeoverFailure>> + Send;

    /// Give the address up: fence on, local sockets reset, address off.
    fn release(&mut self) -> impl Future<Output = Result<CallSteps, TakeoverFailure>> + Send;

    /// Check that the node's state is what the last call left.
    fn verify(&mut self) -> impl Future<Output = Result<Verification, TakeoverFailure>> + Send;

    /// One announcement round now (e.g. after a link flap while owning).
    fn announce(&mut self) -> impl Future<Output = Result<CallSteps, TakeoverFailure>> + Send;

    /// Extends the kernel ownership lease from the moment the replica was last seen PRIMARY
    /// (no effect when not owning, without a lease or without eBPF).
    fn renew_lease(&mut self, primary_seen_at: Instant) -> Result<(), NodeError>;

    /// `vip_guard`'s counters for one address (an error when eBPF is off).
    fn counters(&self, ip: IpAddr) -> Result<Counters, NodeError>;

    /// The connections `conn_track` knows now, what a peer would be handed (an error when
    /// eBPF is off).
    fn tracked_connections(&self) -> Result<Vec<Connection>, NodeError>;
}
