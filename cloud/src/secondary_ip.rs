//! Secondary-IP mode: for an overlay IP inside the ENI's own subnet (the WSFC-on-AWS layout),
//! the address is moved as a secondary private IP with `AssignPrivateIpAddresses` and
//! `AllowReassignment`, instead of through route tables.
//!
//! Reported through the same `ClaimReport`/`ObserveReport` as route mode, with a single entry
//! whose id is the subnet: the scope in which the address can belong to one ENI only.
//! "Where it points" is read by listing the subnet's ENIs and their private IPs (the
//! `addresses.private-ip-address` filter would be simpler, but moto matches only primary IPs
//! with it, so the scan is what both AWS and moto answer faithfully).

use std::net::Ipv4Addr;
use std::time::Instant;

use aws_sdk_ec2::types::{Filter, NetworkInterface};

use crate::config::{ClaimMode, CloudConfig};
use crate::ec2::{Ec2Api, failure_from_sdk};
use crate::error::CloudError;
use crate::identity::Identity;
use crate::report::{
    CallRecord, ClaimReport, ObserveReport, Operation, RouteState, TableCalls, TableClaim,
    TableObservation,
};
use crate::retry::{RetryPolicy, call_with_retry};

#[derive(Debug, Clone)]
pub struct SecondaryIpExecutor {
    api: Ec2Api,
    eni: String,
    subnet: String,
    address: Ipv4Addr,
}

impl SecondaryIpExecutor {
    /// Looks up the ENI's subnet (which also proves the ENI exists and warms the client).
    /// The source/destination check does not matter here: the address becomes the ENI's own.
    pub async fn new(
        api: Ec2Api,
        cfg: &CloudConfig,
        identity: &Identity,
        address: Ipv4Addr,
    ) -> Result<Self, CloudError> {
        cfg.require_mode(ClaimMode::SecondaryIp, "SecondaryIpExecutor")?;
        let policy = *api.policy();
        let deadline = Instant::now() + policy.budget();
        let eni = identity.eni_id.as_str();
        let (answer, _record) = call_with_retry(
            &policy,
            deadline,
            Operation::DescribeNetworkInterfaces,
            eni,
            || {
                let request = api
                    .client()
                    .describe_network_interfaces()
                    .network_interface_ids(eni);
                async move { request.send().await.map_err(failure_from_sdk) }
            },
        )
        .await;
        let subnet = answer?
            .network_interfaces()
            .iter()
            .find(|n| n.network_interface_id() == Some(eni))
            .and_then(|n| n.subnet_id())
            .map(str::to_owned)
            .ok_or_else(|| CloudError::Unexpected {
                operation: Operation::DescribeNetworkInterfaces,
                resource: eni.to_owned(),
                detail: "the answer does not name this ENI's subnet".into(),
            })?;
        Ok(SecondaryIpExecutor {
            api,
            eni: identity.eni_id.clone(),
            subnet,
            address,
        })
    }

    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    pub async fn claim(&self) -> ClaimReport {
        let started = Instant::now();
        let policy = *self.api.policy();
        let budget = policy.budget();
        let deadline = started + budget;
        let mut calls = Vec::with_capacity(3);

        let single_try = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        let (before, record) = self.holder(&single_try, deadline).await;
        calls.push(record);

        let write_started = Instant::now();
        let (assigned, record) = call_with_retry(
            &policy,
            deadline,
            Operation::AssignPrivateIpAddresses,
            &self.eni,
            || {
                let request = self
                    .api
                    .client()
                    .assign_private_ip_addresses()
                    .network_interface_id(&self.eni)
                    .private_ip_addresses(self.address.to_string())
                    .allow_reassignment(true);
                async move { request.send().await.map(drop).map_err(failure_from_sdk) }
            },
        )
        .await;
        let attempts = record.attempts;
        calls.push(record);
        let write_elapsed = write_started.elapsed();

        let (after, record) = self.holder(&policy, deadline).await;
        calls.push(record);

        let error = match (&assigned, &after) {
            (Err(e), _) | (Ok(()), Err(e)) => Some(e.clone()),
            (Ok(()), Ok(RouteState::ThisEni)) => None,
            (Ok(()), Ok(other)) => Some(CloudError::Unexpected {
                operation: Operation::DescribeNetworkInterfaces,
                resource: self.subnet.clone(),
                detail: format!("assigned, but the address reads back as held by {other:?}"),
            }),
        };
        ClaimReport {
            address: self.address,
            eni: self.eni.clone(),
            mode: ClaimMode::SecondaryIp,
            tables: vec![TableClaim {
                id: self.subnet.clone(),
                before: before.ok(),
                after: after.ok(),
                outcome: TableCalls::ended(error.as_ref(), write_elapsed, attempts, calls),
            }],
            total: started.elapsed(),
            budget,
        }
    }

    pub async fn observe(&self) -> ObserveReport {
        let started = Instant::now();
        let policy = *self.api.policy();
        let (state, record) = self.holder(&policy, started + policy.budget()).await;
        let (elapsed, attempts) = (record.elapsed, record.attempts);
        let outcome = TableCalls::ended(state.as_ref().err(), elapsed, attempts, vec![record]);
        ObserveReport {
            address: self.address,
            eni: self.eni.clone(),
            mode: ClaimMode::SecondaryIp,
            tables: vec![TableObservation {
                id: self.subnet.clone(),
                state: state.ok(),
                outcome,
            }],
            total: started.elapsed(),
        }
    }

    /// Which ENI of the subnet holds the address. When this ENI holds it, that is the answer
    /// even if another ENI also lists it (AWS never allows that; moto does after a
    /// reassignment, see the module doc).
    async fn holder(
        &self,
        policy: &RetryPolicy,
        deadline: Instant,
    ) -> (Result<RouteState, CloudError>, CallRecord) {
        let (answer, record) = call_with_retry(
            policy,
            deadline,
            Operation::DescribeNetworkInterfaces,
            &self.subnet,
            || {
                let request = self.api.client().describe_network_interfaces().filters(
                    Filter::builder()
                        .name("subnet-id")
                        .values(&self.subnet)
                        .build(),
                );
                async move { request.send().await.map_err(failure_from_sdk) }
            },
        )
        .await;
        let address = self.address.to_string();
        let state = answer.map(|output| {
            let holders: Vec<&NetworkInterface> = output
                .network_interfaces()
                .iter()
                .filter(|n| {
                    n.private_ip_addresses()
                        .iter()
                        .any(|a| a.private_ip_address() == Some(address.as_str()))
                })
                .collect();
            if holders
                .iter()
                .any(|n| n.network_interface_id() == Some(self.eni.as_str()))
            {
                RouteState::ThisEni
            } else if let Some(other) = holders.first() {
                RouteState::OtherEni {
                    eni: other.network_interface_id().unwrap_or("unknown").to_owned(),
                    instance: other
                        .attachment()
                        .and_then(|a| a.instance_id())
                        .map(str::to_owned),
                }
            } else {
                RouteState::Missing
            }
        });
        (state, record)
    }
}
