//! tdsvip's node data plane (issue 3): everything that makes one Linux node own, announce,
//! fence and give up the overlay address, plus the eBPF programs that guard it and track its
//! client connections. The controller drives it through [`executor::NodeTakeover`]; the
//! real implementation is [`executor::NodeExecutor`].
//!
//! All of it needs root-level capabilities ([`caps`]); see `executor.rs` and `guard.rs` for
//! what happens to the programs and the address when the agent exits or is killed.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod address;
pub mod announce;
pub mod caps;
pub mod conn_track;
pub mod ebpf;
pub mod executor;
pub mod guard;
pub mod interface_guard;
pub mod pins;
pub mod sock_destroy;
pub mod tickle;

pub use address::OverlayAddress;
pub use conn_track::Connection;
pub use executor::{CallSteps, NodeConfig, NodeExecutor, NodeTakeover, StepKind};
pub use interface_guard::{GuardSpec, SharedGuard};
