//! The agent's use of etcd v3 in manage mode: agents coordinate failover through etcd instead
//! of asking each other. Per availability group there is one leader key under the owner's
//! lease (`leader`), each agent publishes its replica's state under its own lease (`members`),
//! and agents watch an AG's keys to react (`watch`). Leases carry honest timing (`lease`): the
//! holder knows, on its own clock, until when etcd cannot have expired them.
//!
//! It is its own crate because the agent's controller stays pure: this is the I/O side, pure
//! data types in and out of async calls, every call bounded by a deadline and every failure
//! an `EtcdError` naming the endpoints (no panic on any answer etcd may give).

#![forbid(unsafe_code)]

mod answer;
mod client;
mod error;
mod keys;
mod leader;
mod lease;
mod members;
mod pin;
mod settings;
mod watch;

pub use client::{Etcd, StoredValue};
pub use error::EtcdError;
pub use keys::{SWITCHOVER_KEY_SUFFIX, check_name};
pub use leader::{Campaign, LeaderKey};
pub use lease::{Lease, Renewal};
pub use members::MemberKey;
pub use settings::{EtcdSettings, EtcdTls};
pub use watch::{AgEvent, AgWatch};
