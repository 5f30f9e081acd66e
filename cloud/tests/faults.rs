//! Faults the SDK client must survive, injected by the tests' own HTTP proxy in front of moto:
//! throttling, 500s, stalls longer than the deadline, refusals. Shows that a claim retries the
//! failing calls only (the proxy counts every request), ends within its time budget, and
//! reports what happened per table.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy, Rule};
use common::{OVERLAY, World, api, bounded, config, moto, route_target, setup_api};
use tdsvip_cloud::{CallResult, Operation, RouteTableExecutor, TableClaim};

const LIMIT: Duration = Duration::from_secs(120);

fn moto_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], moto().port))
}

fn throttle(table: &str, times: usize) -> Rule {
    Rule {
        action: "ReplaceRoute",
        table: Some(table.to_owned()),
        fault: Fault::Error {
            status: 503,
            code: "RequestLimitExceeded",
        },
        times,
    }
}

fn write_call(table: &TableClaim) -> &tdsvip_cloud::CallRecord {
    table
        .outcome
        .calls
        .iter()
        .find(|c| c.operation == Operation::ReplaceRoute)
        .expect("a ReplaceRoute call")
}

/// A world with 4 tables routed to node b, and an executor for node a that talks through a
/// proxy applying `rules`. Small backoffs keep the tests quick; the logic is the same.
async fn setup(rules: impl FnOnce(&World) -> Vec<Rule>) -> (World, FaultProxy, RouteTableExecutor) {
    setup_routed(true, rules).await
}

/// As `setup`; with `routed` false the overlay route exists in no table yet.
async fn setup_routed(
    routed: bool,
    rules: impl FnOnce(&World) -> Vec<Rule>,
) -> (World, FaultProxy, RouteTableExecutor) {
    let direct = setup_api(&moto().endpoint()).await;
    let world = World::build(direct.client(), 4).await;
    if routed {
        world
            .route_to(direct.client(), &world.tables, &world.b.eni)
            .await;
    }
    let proxy = FaultProxy::start(moto_addr(), rules(&world)).await;
    let mut cfg = config(&proxy.endpoint(), &world.tables);
    cfg.call_timeout_ms = 500;
    cfg.max_attempts = 4;
    cfg.backoff_base_ms = 20;
    cfg.backoff_cap_ms = 100;
    let executor = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
        .await
        .expect("executor starts through the proxy");
    (world, proxy, executor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_writes_are_retried_and_only_they_are() {
    bounded(LIMIT, async {
        let (world, proxy, executor) = setup(|w| vec![throttle(&w.tables[1], 2)]).await;
        let report = executor.claim().await;
        assert!(report.all_point_here(), "{report}");

        let throttled = &report.tables[1];
        let write = write_call(throttled);
        assert_eq!(write.attempts, 3);
        assert_eq!(write.result, CallResult::Ok);
        assert_eq!(throttled.outcome.attempts, 3);
        assert_eq!(proxy.count("ReplaceRoute", &world.tables[1]), 3);
        for (i, table) in world.tables.iter().enumerate() {
            if i != 1 {
                assert_eq!(proxy.count("ReplaceRoute", table), 1, "{table}");
                assert_eq!(report.tables[i].outcome.attempts, 1);
            }
            // One read before, one after: reads were never retried.
            assert_eq!(proxy.count("DescribeRouteTables", table), 2, "{table}");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tables"][1]["attempts"], 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    bounded(LIMIT, async {
        let (world, proxy, executor) = setup(|w| {
            vec![Rule {
                action: "ReplaceRoute",
                table: Some(w.tables[0].clone()),
                fault: Fault::Error {
                    status: 500,
                    code: "InternalError",
                },
                times: 1,
            }]
        })
        .await;
        let report = executor.claim().await;
        assert!(report.all_point_here(), "{report}");
        assert_eq!(write_call(&report.tables[0]).attempts, 2);
        assert_eq!(proxy.count("ReplaceRoute", &world.tables[0]), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_is_cut_at_the_deadline_and_retried() {
    bounded(LIMIT, async {
        let (world, proxy, executor) = setup(|w| {
            vec![Rule {
                action: "ReplaceRoute",
                table: Some(w.tables[2].clone()),
                fault: Fault::Stall(Duration::from_secs(5)),
                times: 1,
            }]
        })
        .await;
        let started = Instant::now();
        let report = executor.claim().await;
        let elapsed = started.elapsed();
        assert!(report.all_point_here(), "{report}");
        let stalled = &report.tables[2];
        assert_eq!(write_call(stalled).attempts, 2);
        // Cut at the 500 ms deadline, not held for the 5 s stall.
        assert!(
            stalled.outcome.elapsed >= Duration::from_millis(500),
            "{:?}",
            stalled.outcome.elapsed
        );
        assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
        assert_eq!(proxy.count("ReplaceRoute", &world.tables[2]), 2);
        // The stall did not hold back the other tables.
        for i in [0, 1, 3] {
            assert!(
                report.tables[i].outcome.elapsed < Duration::from_millis(400),
                "{:?}",
                report.tables[i]
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_throttling_gives_up_within_budget_and_says_so() {
    bounded(LIMIT, async {
        let (world, proxy, executor) = setup(|w| vec![throttle(&w.tables[3], usize::MAX)]).await;
        let budget = Duration::from_millis(4 * 500 + 20 + 40 + 80);
        let started = Instant::now();
        let report = executor.claim().await;
        let elapsed = started.elapsed();
        assert!(elapsed <= budget + Duration::from_millis(300), "{elapsed:?}");
        assert_eq!(report.budget, budget);

        let stuck = &report.tables[3];
        assert!(!stuck.points_here());
        let write = write_call(stuck);
        assert_eq!(write.attempts, 4);
        assert_eq!(write.result, CallResult::Throttled);
        assert_eq!(stuck.outcome.error_code.as_deref(), Some("RequestLimitExceeded"));
        assert!(!stuck.outcome.config_problem);
        let message = stuck.outcome.error.as_deref().unwrap();
        assert!(
            message.contains(&world.tables[3]) && message.contains("RequestLimitExceeded"),
            "{message}"
        );
        assert_eq!(proxy.count("ReplaceRoute", &world.tables[3]), 4);
        // The read-back still tells the truth: the route stayed with node b.
        assert!(
            matches!(&stuck.after, Some(tdsvip_cloud::RouteState::OtherEni { eni, .. }) if *eni == world.b.eni)
        );
        for i in 0..3 {
            assert!(report.tables[i].points_here());
        }
        let direct = setup_api(&moto().endpoint()).await;
        assert_eq!(
            route_target(direct.client(), &world.tables[3]).await.as_deref(),
            Some(world.b.eni.as_str())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_not_retried_and_is_a_configuration_problem() {
    bounded(LIMIT, async {
        let (world, proxy, executor) = setup(|w| {
            vec![Rule {
                action: "ReplaceRoute",
                table: Some(w.tables[0].clone()),
                fault: Fault::Error {
                    status: 403,
                    code: "UnauthorizedOperation",
                },
                times: usize::MAX,
            }]
        })
        .await;
        let report = executor.claim().await;
        let refused = &report.tables[0];
        assert_eq!(write_call(refused).attempts, 1);
        assert_eq!(write_call(refused).result, CallResult::Rejected);
        assert_eq!(
            refused.outcome.error_code.as_deref(),
            Some("UnauthorizedOperation")
        );
        assert!(refused.outcome.config_problem);
        assert!(report.has_config_problem());
        assert_eq!(proxy.count("ReplaceRoute", &world.tables[0]), 1);
        assert_eq!(report.tables.iter().filter(|t| t.points_here()).count(), 3);
        let text = report.to_string();
        assert!(text.contains("UnauthorizedOperation"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_table_without_the_route_still_gets_it() {
    bounded(LIMIT, async {
        // The read before the write fails (it has one attempt: it is informational), so the
        // executor does not know the route is missing, tries ReplaceRoute, gets moto's real
        // "no route ... Use CreateRoute instead" refusal, and switches to CreateRoute.
        let (world, proxy, executor) = setup_routed(false, |w| {
            vec![Rule {
                action: "DescribeRouteTables",
                table: Some(w.tables[1].clone()),
                fault: Fault::Error {
                    status: 500,
                    code: "InternalError",
                },
                times: 1,
            }]
        })
        .await;
        let report = executor.claim().await;
        assert!(report.all_point_here(), "{report}");
        let table = &report.tables[1];
        assert_eq!(table.before, None);
        let ops: Vec<(Operation, CallResult)> = table
            .outcome
            .calls
            .iter()
            .map(|c| (c.operation, c.result))
            .collect();
        assert_eq!(
            ops,
            [
                (Operation::DescribeRouteTables, CallResult::ServerError),
                (Operation::ReplaceRoute, CallResult::Rejected),
                (Operation::CreateRoute, CallResult::Ok),
                (Operation::DescribeRouteTables, CallResult::Ok),
            ]
        );
        assert!(table.outcome.error.is_none());
        assert_eq!(proxy.count("DescribeRouteTables", &world.tables[1]), 2);
        // The tables whose read worked went straight to CreateRoute.
        assert_eq!(proxy.count("ReplaceRoute", &world.tables[0]), 0);
        assert_eq!(proxy.count("CreateRoute", &world.tables[0]), 1);
    })
    .await;
}
