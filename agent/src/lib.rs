//! The tdsvip agent as a library: configuration and (with the agent issue) the controller,
//! so that integration tests and the lab can drive them without the binary.
//!
//! The binary (`main.rs`, `cli/`) is a thin layer over this: it parses the command line and
//! turns results into exit codes.

#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod driver;
pub mod http;
pub mod metrics;
pub mod peer_status;
pub mod status;
pub mod systemd;
