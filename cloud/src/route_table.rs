//! Route-table mode: the overlay IP's /32 routed to this node's ENI in every configured table.
//!
//! `aws-vpc-move-ip` replaces routes one table at a time with a `sleep 1` after each and does
//! not read them back; here every table is handled by its own task, all at once, and each task
//! reads the table before and after its write, so a claim costs about one table's time and says
//! exactly where each table ended up. Tables are independent: one failing (bad id, throttled)
//! never delays or stops the others. All calls of a claim share one time budget.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Route, RouteState as Ec2RouteState};
use tokio::task::JoinSet;

use crate::config::{ClaimMode, CloudConfig};
use crate::ec2::{Ec2Api, failure_from_sdk};
use crate::error::CloudError;
use crate::identity::Identity;
use crate::report::{
    CallRecord, ClaimReport, ObserveReport, Operation, RouteState, TableCalls, TableClaim,
    TableObservation,
};
use crate::retry::{RetryPolicy, call_with_retry};
use crate::source_dest::check_source_dest_disabled;

/// Claims and observes the overlay IP's route in the configured route tables.
#[derive(Debug, Clone)]
pub struct RouteTableExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: Ec2Api,
    eni: String,
    address: Ipv4Addr,
    destination: String,
    tables: Vec<String>,
}

impl RouteTableExecutor {
    /// Checks the ENI's source/destination check (which also warms the client's connection)
    /// and fails if it is on: routing the overlay IP to such an ENI delivers nothing.
    pub async fn new(
        api: Ec2Api,
        cfg: &CloudConfig,
        identity: &Identity,
        address: Ipv4Addr,
    ) -> Result<Self, CloudError> {
        cfg.require_mode(ClaimMode::Route, "RouteTableExecutor")?;
        let (checked, _record) = check_source_dest_disabled(&api, &identity.eni_id).await;
        checked?;
        Ok(Self::without_checks(api, cfg, identity, address))
    }

    /// Skips the source/destination check; for tools that only look (and for tests of the
    /// check itself). The agent must use `new` or `connect`.
    pub fn without_checks(
        api: Ec2Api,
        cfg: &CloudConfig,
        identity: &Identity,
        address: Ipv4Addr,
    ) -> Self {
        RouteTableExecutor {
            inner: Arc::new(Inner {
                api,
                eni: identity.eni_id.clone(),
                address,
                destination: format!("{address}/32"),
                tables: cfg.route_tables.clone(),
            }),
        }
    }

    pub fn eni(&self) -> &str {
        &self.inner.eni
    }

    pub fn address(&self) -> Ipv4Addr {
        self.inner.address
    }

    pub fn tables(&self) -> &[String] {
        &self.inner.tables
    }

    /// Points the /32 at this ENI in every table, in parallel, and reads each table back.
    /// Never fails as a whole: each table's outcome (and error) is in the report.
    pub async fn claim(&self) -> ClaimReport {
        let started = Instant::now();
        let budget = self.inner.api.policy().budget();
        let deadline = started + budget;
        let tables = per_table(&self.inner, |inner, table| async move {
            claim_table(&inner, &table, deadline).await
        })
        .await
        .into_iter()
        .zip(&self.inner.tables)
        .map(|(outcome, id)| {
            outcome.unwrap_or_else(|panic| TableClaim {
                id: id.clone(),
                before: None,
                after: None,
                outcome: TableCalls::panicked(panic),
            })
        })
        .collect();
        ClaimReport {
            address: self.inner.address,
            eni: self.inner.eni.clone(),
            mode: ClaimMode::Route,
            tables,
            total: started.elapsed(),
            budget,
        }
    }

    /// Reads every table, in parallel, and says where the /32 points in each.
    pub async fn observe(&self) -> ObserveReport {
        let started = Instant::now();
        let deadline = started + self.inner.api.policy().budget();
        let tables = per_table(&self.inner, |inner, table| async move {
            let policy = *inner.api.policy();
            let (state, record) = read_route(&inner, &policy, deadline, &table).await;
            let (elapsed, attempts) = (record.elapsed, record.attempts);
            TableObservation {
                id: table,
                outcome: TableCalls::ended(state.as_ref().err(), elapsed, attempts, vec![record]),
                state: state.ok(),
            }
        })
        .await
        .into_iter()
        .zip(&self.inner.tables)
        .map(|(outcome, id)| {
            outcome.unwrap_or_else(|panic| TableObservation {
                id: id.clone(),
                state: None,
                outcome: TableCalls::panicked(panic),
            })
        })
        .collect();
        ObserveReport {
            address: self.inner.address,
            eni: self.inner.eni.clone(),
            mode: ClaimMode::Route,
            tables,
            total: started.elapsed(),
        }
    }

    /// Claims the tables one after the other with a bare ReplaceRoute each (no reads, no
    /// fallback), as `aws-vpc-move-ip` does minus its `sleep 1`: the baseline for the benchmark.
    pub async fn claim_sequentially_like_aws_vpc_move_ip(&self) -> Vec<CallRecord> {
        let policy = *self.inner.api.policy();
        let deadline = Instant::now() + policy.budget();
        let mut records = Vec::with_capacity(self.inner.tables.len());
        for table in &self.inner.tables {
            let (_result, record) =
                write_route(&self.inner, &policy, deadline, table, Write::Replace).await;
            records.push(record);
        }
        records
    }
}

/// Runs `task` for every configured table on its own tokio task and returns the results in
/// config order; a panicking task becomes an `Err` with its message instead of taking the
/// others down.
async fn per_table<T, F, Fut>(inner: &Arc<Inner>, task: F) -> Vec<Result<T, String>>
where
    T: Send + 'static,
    F: Fn(Arc<Inner>, String) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut set = JoinSet::new();
    for (index, table) in inner.tables.iter().enumerate() {
        let future = task(Arc::clone(inner), table.clone());
        set.spawn(async move { (index, future.await) });
    }
    let mut results: Vec<Result<T, String>> = (0..inner.tables.len())
        .map(|_| Err("internal error: the task for this table did not report".to_owned()))
        .collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((index, value)) => results[index] = Ok(value),
            Err(join_error) => tracing::error!(%join_error, "route table task failed"),
        }
    }
    results
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Replace,
    Create,
}

async fn claim_table(inner: &Inner, table: &str, deadline: Instant) -> TableClaim {
    let policy = *inner.api.policy();
    let mut calls = Vec::with_capacity(4);

    // One attempt only: "before" is informational and must not eat the write's budget.
    let single_try = RetryPolicy {
        max_attempts: 1,
        ..policy
    };
    let (before, record) = read_route(inner, &single_try, deadline, table).await;
    calls.push(record);
    if let Err(error) = &before
        && error.is_config_problem()
    {
        // The write would be refused for the same reason (e.g. the table does not exist).
        return TableClaim {
            id: table.to_owned(),
            before: None,
            after: None,
            outcome: TableCalls::ended(Some(error), Duration::ZERO, 0, calls),
        };
    }
    let before = before.ok();

    let write_started = Instant::now();
    let first = if before == Some(RouteState::Missing) {
        Write::Create
    } else {
        Write::Replace
    };
    let (written, attempts) =
        write_switching_verbs(inner, &policy, deadline, table, first, &mut calls).await;
    let write_elapsed = write_started.elapsed();

    let (after, after_calls) = read_back(inner, &policy, deadline, table).await;
    calls.extend(after_calls);

    let error = claim_error(table, &written, &after);
    TableClaim {
        id: table.to_owned(),
        before,
        after: after.ok(),
        outcome: TableCalls::ended(error.as_ref(), write_elapsed, attempts, calls),
    }
}

/// Writes the route with `first`, and once more with the other verb when the table changed
/// between the read and the write (or could not be read). Returns the result and the number
/// of attempts both writes made; their records go into `calls`.
async fn write_switching_verbs(
    inner: &Inner,
    policy: &RetryPolicy,
    deadline: Instant,
    table: &str,
    first: Write,
    calls: &mut Vec<CallRecord>,
) -> (Result<(), CloudError>, u32) {
    let (written, record) = write_route(inner, policy, deadline, table, first).await;
    let attempts = record.attempts;
    calls.push(record);
    let fallback = match (&written, first) {
        (Err(e), Write::Replace) if route_is_missing(e) => Some(Write::Create),
        (Err(e), Write::Create) if e.code() == Some("RouteAlreadyExists") => Some(Write::Replace),
        _ => None,
    };
    let Some(verb) = fallback else {
        return (written, attempts);
    };
    let (retried, record) = write_route(inner, policy, deadline, table, verb).await;
    let attempts = attempts + record.attempts;
    calls.push(record);
    (retried, attempts)
}

/// What went wrong with a claim, if anything: the write's error, the read-back's, or a
/// route that reads back pointing elsewhere although the write succeeded.
fn claim_error(
    table: &str,
    written: &Result<(), CloudError>,
    after: &Result<RouteState, CloudError>,
) -> Option<CloudError> {
    match (written, after) {
        (Err(e), _) => Some(e.clone()),
        (Ok(()), Err(e)) => Some(e.clone()),
        (Ok(()), Ok(RouteState::ThisEni)) => None,
        (Ok(()), Ok(other)) => Some(CloudError::Unexpected {
            operation: Operation::DescribeRouteTables,
            resource: table.to_owned(),
            detail: format!(
                "the write succeeded but the route reads back as {other:?}: another writer is \
                 moving it, or EC2 has not caught up"
            ),
        }),
    }
}

/// Reads the table until it shows this ENI or the attempts run out: DescribeRouteTables is
/// eventually consistent, so the first read after a write may still show the old target.
async fn read_back(
    inner: &Inner,
    policy: &RetryPolicy,
    deadline: Instant,
    table: &str,
) -> (Result<RouteState, CloudError>, Vec<CallRecord>) {
    let mut calls = Vec::new();
    let mut read = 1;
    loop {
        let (state, record) = read_route(inner, policy, deadline, table).await;
        calls.push(record);
        let settled = !matches!(&state, Ok(s) if *s != RouteState::ThisEni);
        if settled || read >= policy.max_attempts {
            return (state, calls);
        }
        let pause = policy.backoff(read, rand::random::<f64>());
        if Instant::now() + pause + Duration::from_millis(10) >= deadline {
            return (state, calls);
        }
        tokio::time::sleep(pause).await;
        read += 1;
    }
}

fn route_is_missing(error: &CloudError) -> bool {
    match error {
        CloudError::Rejected { code, message, .. } => {
            code == "InvalidRoute.NotFound"
                || (code == "InvalidParameterValue"
                    && (message.contains("CreateRoute") || message.contains("no route")))
        }
        _ => false,
    }
}

async fn write_route(
    inner: &Inner,
    policy: &RetryPolicy,
    deadline: Instant,
    table: &str,
    verb: Write,
) -> (Result<(), CloudError>, CallRecord) {
    let client = inner.api.client();
    match verb {
        Write::Replace => {
            call_with_retry(policy, deadline, Operation::ReplaceRoute, table, || {
                let request = client
                    .replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(&inner.destination)
                    .network_interface_id(&inner.eni);
                async move { request.send().await.map(drop).map_err(failure_from_sdk) }
            })
            .await
        }
        Write::Create => {
            call_with_retry(policy, deadline, Operation::CreateRoute, table, || {
                let request = client
                    .create_route()
                    .route_table_id(table)
                    .destination_cidr_block(&inner.destination)
                    .network_interface_id(&inner.eni);
                async move { request.send().await.map(drop).map_err(failure_from_sdk) }
            })
            .await
        }
    }
}

async fn read_route(
    inner: &Inner,
    policy: &RetryPolicy,
    deadline: Instant,
    table: &str,
) -> (Result<RouteState, CloudError>, CallRecord) {
    let client = inner.api.client();
    let (answer, record) = call_with_retry(
        policy,
        deadline,
        Operation::DescribeRouteTables,
        table,
        || {
            let request = client.describe_route_tables().route_table_ids(table);
            async move { request.send().await.map_err(failure_from_sdk) }
        },
    )
    .await;
    let state = answer.and_then(|output| {
        let found = output
            .route_tables()
            .iter()
            .find(|t| t.route_table_id() == Some(table))
            .ok_or_else(|| CloudError::Unexpected {
                operation: Operation::DescribeRouteTables,
                resource: table.to_owned(),
                detail: "the answer does not contain this route table".into(),
            })?;
        Ok(found
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(inner.destination.as_str()))
            .map_or(RouteState::Missing, |route| route_state(route, &inner.eni)))
    });
    (state, record)
}

/// Classifies one EC2 route relative to this node's ENI.
pub(crate) fn route_state(route: &Route, this_eni: &str) -> RouteState {
    let target = route
        .network_interface_id()
        .or(route.gateway_id())
        .or(route.nat_gateway_id())
        .or(route.transit_gateway_id())
        .or(route.vpc_peering_connection_id())
        .or(route.instance_id())
        .or(route.local_gateway_id())
        .or(route.carrier_gateway_id())
        .or(route.egress_only_internet_gateway_id())
        .or(route.core_network_arn())
        .unwrap_or("unknown");
    if route.state() == Some(&Ec2RouteState::Blackhole) {
        return RouteState::Blackhole {
            target: target.to_owned(),
        };
    }
    match route.network_interface_id() {
        Some(eni) if eni == this_eni => RouteState::ThisEni,
        Some(eni) => RouteState::OtherEni {
            eni: eni.to_owned(),
            instance: route.instance_id().map(str::to_owned),
        },
        None => RouteState::OtherTarget {
            target: target.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THIS: &str = "eni-aaaaaaaa";

    fn route() -> aws_sdk_ec2::types::builders::RouteBuilder {
        Route::builder()
            .destination_cidr_block("192.168.100.10/32")
            .state(Ec2RouteState::Active)
    }

    #[test]
    fn route_to_this_eni() {
        let r = route().network_interface_id(THIS).build();
        assert_eq!(route_state(&r, THIS), RouteState::ThisEni);
    }

    #[test]
    fn route_to_another_eni_names_its_instance() {
        let r = route()
            .network_interface_id("eni-bbbbbbbb")
            .instance_id("i-bbbbbbbb")
            .build();
        assert_eq!(
            route_state(&r, THIS),
            RouteState::OtherEni {
                eni: "eni-bbbbbbbb".into(),
                instance: Some("i-bbbbbbbb".into())
            }
        );
    }

    #[test]
    fn blackhole_wins_even_for_this_eni() {
        let r = route()
            .network_interface_id(THIS)
            .state(Ec2RouteState::Blackhole)
            .build();
        assert_eq!(
            route_state(&r, THIS),
            RouteState::Blackhole {
                target: THIS.into()
            }
        );
    }

    #[test]
    fn route_to_a_gateway() {
        let r = route().gateway_id("igw-12345678").build();
        assert_eq!(
            route_state(&r, THIS),
            RouteState::OtherTarget {
                target: "igw-12345678".into()
            }
        );
    }

    #[test]
    fn missing_route_errors_switch_to_create() {
        let rejected = |code: &str, message: &str| CloudError::Rejected {
            operation: Operation::ReplaceRoute,
            resource: "rtb-1".into(),
            code: code.into(),
            message: message.into(),
            config_problem: true,
        };
        assert!(route_is_missing(&rejected(
            "InvalidParameterValue",
            "There is no route defined for '192.168.100.10/32' in the route table. Use CreateRoute instead."
        )));
        assert!(route_is_missing(&rejected("InvalidRoute.NotFound", "")));
        assert!(!route_is_missing(&rejected(
            "InvalidParameterValue",
            "Value (x) for parameter destinationCidrBlock is invalid"
        )));
        assert!(!route_is_missing(&rejected(
            "InvalidRouteTableID.NotFound",
            ""
        )));
    }
}
