//! The startup check that this node's ENI has its source/destination check disabled.
//!
//! With the check on, EC2 drops every packet whose destination is not one of the ENI's own
//! addresses, so the overlay IP's route would deliver nothing: the route moves, clients still
//! time out, and nothing in the route tables shows why. The attribute is read on the ENI
//! itself, which is what EC2 enforces (and the only place moto reflects it).

use std::time::Instant;

use aws_sdk_ec2::types::NetworkInterfaceAttribute;

use crate::ec2::{Ec2Api, failure_from_sdk};
use crate::error::CloudError;
use crate::report::{CallRecord, Operation};
use crate::retry::call_with_retry;

/// Fails with `CloudError::SourceDestCheckEnabled` (which says what command fixes it) unless
/// the check is off on `eni`. Returns the call made, for metrics.
pub async fn check_source_dest_disabled(
    api: &Ec2Api,
    eni: &str,
) -> (Result<(), CloudError>, CallRecord) {
    let policy = api.policy();
    let deadline = Instant::now() + policy.budget();
    let (answer, record) = call_with_retry(
        policy,
        deadline,
        Operation::DescribeNetworkInterfaceAttribute,
        eni,
        || {
            let request = api
                .client()
                .describe_network_interface_attribute()
                .network_interface_id(eni)
                .attribute(NetworkInterfaceAttribute::SourceDestCheck);
            async move { request.send().await.map_err(failure_from_sdk) }
        },
    )
    .await;
    let result = answer.and_then(|output| {
        match output.source_dest_check().and_then(|value| value.value()) {
            Some(false) => Ok(()),
            Some(true) => Err(CloudError::SourceDestCheckEnabled {
                eni: eni.to_owned(),
            }),
            None => Err(CloudError::Unexpected {
                operation: Operation::DescribeNetworkInterfaceAttribute,
                resource: eni.to_owned(),
                detail: "the answer has no sourceDestCheck value".into(),
            }),
        }
    });
    (result, record)
}
