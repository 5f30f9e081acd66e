//! A real etcd for the agent's tests: the etcd crate's own harness (`etcd/tests/common`),
//! included rather than copied, so that both crates start, wait for and clean up Debian's
//! etcd the same way. The agent's tests pass their own key prefix (`settings_under`,
//! `connect_under`).

#[path = "../../../etcd/tests/common/mod.rs"]
mod harness;

#[allow(unused_imports)] // each test binary uses a part of `common`
pub use harness::EtcdServer;
