//! The tdsvip agent as a library: configuration and (with the agent issue) the controller,
//! so that integration tests and the lab can drive them without the binary.
//!
//! The binary (`main.rs`, `cli/`) is a thin layer over this: it parses the command line and
//! turns results into exit codes.

#![forbid(unsafe_code)]
// Items are `pub(crate)` unless this file re-exports them: the public surface is listed here.
#![deny(unreachable_pub)]

/// The config file is a public contract (its keys are documented), read by every subcommand.
pub mod config;
/// Public so that tests and benchmarks drive the decisions with exact instants.
pub mod controller;
mod driver;
/// Rule 5's promises between peers (`POST /failsafe`), shared by the HTTP listener and the
/// manage tasks.
pub mod failsafe;
mod http;
mod metrics;
mod peer_status;
mod status;
/// The value of an AG's switchover request in etcd: written by `tdsvip switchover`, read by
/// the leader's manage task.
pub mod switchover_request;
mod systemd;

pub use driver::{DriverError, Reloader, run};
/// The client side of the agent's HTTP interface, used by `tdsvip status`.
pub use http::client as status_client;
pub use http::{HttpServer, HttpState, Token, token_text};
pub use metrics::{AgentMetrics, ManageMetrics, PacketVerdict};
pub use peer_status::field_error;
/// The `/status` wire types: one set, read by the CLI, by peers and by other tools.
pub use status::{
    AgDocument, ClusterDocument, LossAges, MemberDocument, OverlayLoginDocument, PeerAgSummary,
    PeerEntry, PeerSummary, PhasesDocument, ProbeDocument, PromotionDocument, RouteOwner,
    StatusDocument, StepDocument, TimelineDocument, status_schema,
};
pub use status::{AgStatus, AgentStatus, OverlayRun, PeerStatus, ProbeSummary, StatusStore};
