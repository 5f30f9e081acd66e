//! Test helpers of this crate's integration tests; the moto server and the EC2 world live in
//! `tdsvip_cloud::moto` (feature `moto-harness`) so that the agent's tests share them.
#![allow(dead_code)]

pub mod proxy;

use std::time::Duration;

#[allow(unused_imports)] // each test binary uses its own part of the harness
pub use tdsvip_cloud::moto::*;

/// Fails the test instead of hanging it.
pub async fn bounded<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}
