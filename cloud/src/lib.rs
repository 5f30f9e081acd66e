//! tdsvip's cloud executor: makes the overlay IP reach this node through the EC2 API.
//!
//! On AWS the overlay IP is a /32 outside the VPC, routed to the owner's ENI in every route
//! table that serves clients (`RouteTableExecutor`), or, for in-subnet addresses, a secondary
//! private IP moved between ENIs (`SecondaryIpExecutor`). This crate keeps aws-sdk-ec2 (a very
//! slow build) behind its own boundary so that editing the agent never rebuilds it, and gives
//! the agent's controller a small trait (`CloudExecutor`) so it can be tested without AWS.
//! In manage mode it also fences: `InstanceFence` stops a lost primary's instance.
//!
//! Wiring for `tdsvip routes`:
//! ```no_run
//! # async fn routes(cfg: &tdsvip_cloud::CloudConfig, address: std::net::Ipv4Addr) -> Result<(), tdsvip_cloud::CloudError> {
//! use tdsvip_cloud::{AwsExecutor, CloudExecutor, Identity};
//! let identity = Identity::resolve(cfg).await?;
//! let executor = AwsExecutor::connect(cfg, &identity, address).await?;
//! let report = executor.claim().await;
//! println!("{report}");
//! let _exit = if report.all_point_here() { 0 } else { 1 };
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod config;
mod ec2;
pub mod error;
pub mod fence;
pub mod identity;
#[cfg(feature = "moto-harness")]
pub mod moto;
pub mod report;
pub mod retry;
pub mod route_table;
pub mod secondary_ip;
pub mod source_dest;

use std::future::Future;
use std::net::Ipv4Addr;

pub use config::{ClaimMode, CloudConfig, ConfigProblem, Provider};
pub use ec2::{Credentials, Ec2Api};
pub use error::CloudError;
pub use fence::{FenceOutcome, FenceReport, InstanceFence, valid_instance_id};
pub use identity::{Identity, ImdsClient};
pub use report::{
    CallRecord, CallResult, ClaimReport, ObserveReport, Operation, RouteState, TableCalls,
    TableClaim, TableObservation,
};
pub use retry::RetryPolicy;
pub use route_table::RouteTableExecutor;
pub use secondary_ip::SecondaryIpExecutor;
pub use source_dest::check_source_dest_disabled;

/// What the agent's controller needs from a cloud executor. Neither method fails as a whole:
/// per-table outcomes and errors are in the reports, because a partial claim still matters.
pub trait CloudExecutor: Send + Sync {
    /// Points the overlay IP at this node everywhere it is configured, and reads it back.
    fn claim(&self) -> impl Future<Output = ClaimReport> + Send;
    /// Says where the overlay IP points now, without changing anything.
    fn observe(&self) -> impl Future<Output = ObserveReport> + Send;
}

impl CloudExecutor for RouteTableExecutor {
    fn claim(&self) -> impl Future<Output = ClaimReport> + Send {
        RouteTableExecutor::claim(self)
    }
    fn observe(&self) -> impl Future<Output = ObserveReport> + Send {
        RouteTableExecutor::observe(self)
    }
}

impl CloudExecutor for SecondaryIpExecutor {
    fn claim(&self) -> impl Future<Output = ClaimReport> + Send {
        SecondaryIpExecutor::claim(self)
    }
    fn observe(&self) -> impl Future<Output = ObserveReport> + Send {
        SecondaryIpExecutor::observe(self)
    }
}

/// The executor `cloud.mode` asks for.
#[derive(Debug, Clone)]
pub enum AwsExecutor {
    Route(RouteTableExecutor),
    SecondaryIp(SecondaryIpExecutor),
}

impl AwsExecutor {
    /// Validates `cfg`, connects with the SDK's standard credential chain and runs the mode's
    /// startup checks (source/destination check in route mode).
    pub async fn connect(
        cfg: &CloudConfig,
        identity: &Identity,
        address: Ipv4Addr,
    ) -> Result<Self, CloudError> {
        let api = Ec2Api::connect(cfg).await?;
        Self::with_api(api, cfg, identity, address).await
    }

    pub async fn with_api(
        api: Ec2Api,
        cfg: &CloudConfig,
        identity: &Identity,
        address: Ipv4Addr,
    ) -> Result<Self, CloudError> {
        Ok(match cfg.mode {
            ClaimMode::Route => {
                AwsExecutor::Route(RouteTableExecutor::new(api, cfg, identity, address).await?)
            }
            ClaimMode::SecondaryIp => AwsExecutor::SecondaryIp(
                SecondaryIpExecutor::new(api, cfg, identity, address).await?,
            ),
        })
    }
}

impl CloudExecutor for AwsExecutor {
    async fn claim(&self) -> ClaimReport {
        match self {
            AwsExecutor::Route(e) => e.claim().await,
            AwsExecutor::SecondaryIp(e) => e.claim().await,
        }
    }
    async fn observe(&self) -> ObserveReport {
        match self {
            AwsExecutor::Route(e) => e.observe().await,
            AwsExecutor::SecondaryIp(e) => e.observe().await,
        }
    }
}
