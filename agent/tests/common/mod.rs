//! Helpers shared by the tests that run the `tdsvip` binary.
#![allow(dead_code)] // each test binary uses its own part

pub mod netns;

use std::process::Output;

use serde_json::Value;

/// Parses the binary's stdout as JSON, or fails with what it printed instead.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
