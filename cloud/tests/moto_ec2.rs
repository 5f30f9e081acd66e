//! The executors against moto's real EC2 server (no hand-written fake): claims across several
//! route tables, missing routes, drift, an unknown table, an unknown ENI, the source/dest
//! check, the secondary-IP mode, and a black-holed endpoint. Each test builds its own VPC in
//! the shared server, so tests run in parallel without seeing each other's resources.

mod common;

use std::time::{Duration, Instant};

use common::proxy::SilentEndpoint;
use common::{
    OVERLAY, World, api, bounded, config, moto, route_target, set_source_dest_check, setup_api,
};
use tdsvip_cloud::{
    AwsExecutor, CallResult, ClaimMode, CloudError, CloudExecutor, Operation, RouteState,
    RouteTableExecutor, SecondaryIpExecutor,
};

const LIMIT: Duration = Duration::from_secs(120);
/// A well-formed route table id that does not exist.
const UNKNOWN_TABLE: &str = "rtb-0000000000000000f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_takes_four_tables_from_the_other_node() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 4).await;
        world.route_to(setup.client(), &world.tables, &world.b.eni).await;

        let cfg = config(&moto().endpoint(), &world.tables);
        let executor = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
            .await
            .expect("source/dest check is off, so the executor starts");
        let report = executor.claim().await;

        assert!(report.all_point_here(), "{report}");
        assert_eq!(report.eni, world.a.eni);
        assert_eq!(report.tables.len(), 4);
        for (table, id) in report.tables.iter().zip(&world.tables) {
            assert_eq!(&table.id, id);
            assert!(
                matches!(&table.before, Some(RouteState::OtherEni { eni, .. }) if *eni == world.b.eni),
                "{table:?}"
            );
            assert_eq!(table.after, Some(RouteState::ThisEni));
            assert_eq!(table.outcome.attempts, 1);
            assert!(table.outcome.error.is_none());
            let ops: Vec<Operation> = table.outcome.calls.iter().map(|c| c.operation).collect();
            assert_eq!(
                ops,
                [
                    Operation::DescribeRouteTables,
                    Operation::ReplaceRoute,
                    Operation::DescribeRouteTables
                ]
            );
            assert!(table.outcome.calls.iter().all(|c| c.result == CallResult::Ok));
            // Checked through the SDK directly, not only through the report.
            assert_eq!(
                route_target(setup.client(), id).await.as_deref(),
                Some(world.a.eni.as_str())
            );
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tables"][3]["before"], world.b.eni.as_str());
        assert_eq!(json["tables"][3]["after"], world.a.eni.as_str());
        assert_eq!(json["tables"][3]["error"], serde_json::Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_creates_the_route_where_it_is_missing() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 4).await;
        // Two tables already route to the other node; two have never seen the overlay IP.
        world
            .route_to(setup.client(), &world.tables[..2], &world.b.eni)
            .await;

        let cfg = config(&moto().endpoint(), &world.tables);
        let executor = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
            .await
            .unwrap();
        let report = executor.claim().await;

        assert!(report.all_point_here(), "{report}");
        for table in &report.tables[2..] {
            assert_eq!(table.before, Some(RouteState::Missing));
            assert!(
                table
                    .outcome
                    .calls
                    .iter()
                    .any(|c| c.operation == Operation::CreateRoute && c.result == CallResult::Ok),
                "{table:?}"
            );
            assert!(
                !table
                    .outcome
                    .calls
                    .iter()
                    .any(|c| c.operation == Operation::ReplaceRoute)
            );
        }
        for table in &report.tables[..2] {
            assert!(
                table
                    .outcome
                    .calls
                    .iter()
                    .any(|c| c.operation == Operation::ReplaceRoute)
            );
        }
        for id in &world.tables {
            assert_eq!(
                route_target(setup.client(), id).await.as_deref(),
                Some(world.a.eni.as_str())
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_sees_drift_and_claim_repairs_it() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 4).await;
        let cfg = config(&moto().endpoint(), &world.tables);
        let executor = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
            .await
            .unwrap();

        let before_claim = executor.observe().await;
        assert!(
            before_claim
                .tables
                .iter()
                .all(|t| t.state == Some(RouteState::Missing)),
            "{before_claim}"
        );
        assert!(executor.claim().await.all_point_here());
        assert!(executor.observe().await.all_point_here());

        // Someone else (another node, an operator) takes table 2.
        setup
            .client()
            .replace_route()
            .route_table_id(&world.tables[2])
            .destination_cidr_block(format!("{OVERLAY}/32"))
            .network_interface_id(&world.b.eni)
            .send()
            .await
            .unwrap();

        let drifted = executor.observe().await;
        assert!(!drifted.all_point_here());
        let moved: Vec<&str> = drifted.drifted().map(|t| t.id.as_str()).collect();
        assert_eq!(moved, [world.tables[2].as_str()]);
        assert!(
            matches!(&drifted.tables[2].state, Some(RouteState::OtherEni { eni, .. }) if *eni == world.b.eni)
        );
        let text = drifted.to_string();
        assert!(text.contains(&world.b.eni) && text.contains("3 of 4"), "{text}");

        let repaired = executor.claim().await;
        assert!(repaired.all_point_here(), "{repaired}");
        assert!(executor.observe().await.all_point_here());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_table_is_reported_and_the_others_are_claimed() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 3).await;
        world
            .route_to(setup.client(), &world.tables, &world.b.eni)
            .await;
        let mut tables = world.tables.clone();
        tables.insert(1, UNKNOWN_TABLE.to_owned());

        let cfg = config(&moto().endpoint(), &tables);
        let executor = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
            .await
            .unwrap();
        let report = executor.claim().await;

        assert!(!report.all_point_here());
        assert!(report.has_config_problem());
        let bad = &report.tables[1];
        assert_eq!(bad.id, UNKNOWN_TABLE);
        assert_eq!(
            bad.outcome.error_code.as_deref(),
            Some("InvalidRouteTableID.NotFound")
        );
        assert!(bad.outcome.config_problem);
        let message = bad.outcome.error.as_deref().unwrap();
        assert!(
            message.contains(UNKNOWN_TABLE) && message.contains("InvalidRouteTableID.NotFound"),
            "{message}"
        );
        // Refused at once: one read, no retry, no write.
        assert_eq!(bad.outcome.calls.len(), 1);
        assert_eq!(bad.outcome.calls[0].attempts, 1);
        assert_eq!(bad.outcome.calls[0].result, CallResult::Rejected);
        for (i, table) in report.tables.iter().enumerate() {
            if i != 1 {
                assert!(table.points_here(), "{table:?}");
                assert!(table.outcome.error.is_none());
            }
        }
        for id in &world.tables {
            assert_eq!(
                route_target(setup.client(), id).await.as_deref(),
                Some(world.a.eni.as_str())
            );
        }
        let observed = executor.observe().await;
        assert_eq!(
            observed.tables[1].outcome.error_code.as_deref(),
            Some("InvalidRouteTableID.NotFound")
        );
        assert_eq!(
            observed.tables.iter().filter(|t| t.points_here()).count(),
            3
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_dest_check_on_stops_the_executor_with_the_fix() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 1).await;
        set_source_dest_check(setup.client(), &world.a.eni, true).await;

        let cfg = config(&moto().endpoint(), &world.tables);
        let err = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CloudError::SourceDestCheckEnabled { eni } if *eni == world.a.eni),
            "{err}"
        );
        assert!(err.is_config_problem());
        let text = err.to_string();
        assert!(
            text.contains(&world.a.eni) && text.contains("--no-source-dest-check"),
            "{text}"
        );
        // Nothing was written.
        assert_eq!(route_target(setup.client(), &world.tables[0]).await, None);

        set_source_dest_check(setup.client(), &world.a.eni, false).await;
        // Through the mode-selecting executor and the controller's trait.
        let executor = AwsExecutor::with_api(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
            .await
            .expect("starts once the check is off");
        assert!(CloudExecutor::claim(&executor).await.all_point_here());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_eni_is_a_configuration_error_without_retries() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 2).await;
        let mut ghost = world.a.identity();
        ghost.eni_id = "eni-0000000000000000f".into();
        let cfg = config(&moto().endpoint(), &world.tables);

        let err = RouteTableExecutor::new(api(&cfg).await, &cfg, &ghost, OVERLAY)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("InvalidNetworkInterfaceID.NotFound"),
            "{err}"
        );
        assert!(err.is_config_problem());

        let executor = RouteTableExecutor::without_checks(api(&cfg).await, &cfg, &ghost, OVERLAY);
        let report = executor.claim().await;
        for table in &report.tables {
            assert_eq!(
                table.outcome.error_code.as_deref(),
                Some("InvalidNetworkInterfaceID.NotFound"),
                "{table:?}"
            );
            assert_eq!(table.outcome.attempts, 1, "not retried");
            assert!(table.outcome.config_problem);
        }
        assert!(report.has_config_problem());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_ip_moves_to_this_node() {
    bounded(LIMIT, async {
        let setup = setup_api(&moto().endpoint()).await;
        let world = World::build(setup.client(), 0).await;
        let address = std::net::Ipv4Addr::new(10, 0, 1, 200);
        setup
            .client()
            .assign_private_ip_addresses()
            .network_interface_id(&world.b.eni)
            .private_ip_addresses(address.to_string())
            .send()
            .await
            .unwrap();

        let mut cfg = config(&moto().endpoint(), &[]);
        cfg.mode = ClaimMode::SecondaryIp;
        let executor = SecondaryIpExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), address)
            .await
            .unwrap();
        assert_eq!(executor.subnet(), world.db_subnet);
        let observed = executor.observe().await;
        assert!(
            matches!(&observed.tables[0].state, Some(RouteState::OtherEni { eni, .. }) if *eni == world.b.eni),
            "{observed}"
        );

        let report = executor.claim().await;
        assert!(report.all_point_here(), "{report}");
        assert_eq!(report.tables[0].id, world.db_subnet);
        assert!(matches!(&report.tables[0].before, Some(RouteState::OtherEni { eni, .. }) if *eni == world.b.eni));
        // Only what moto models faithfully: the address is now on this node's ENI. moto also
        // leaves it on the old ENI (AWS removes it there with AllowReassignment), so nothing is
        // asserted about node b.
        let enis = setup
            .client()
            .describe_network_interfaces()
            .network_interface_ids(&world.a.eni)
            .send()
            .await
            .unwrap();
        let holds = enis.network_interfaces()[0]
            .private_ip_addresses()
            .iter()
            .any(|a| a.private_ip_address() == Some("10.0.1.200"));
        assert!(holds);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_cannot_hang_a_claim() {
    bounded(LIMIT, async {
        let silent = SilentEndpoint::start().await;
        let tables = vec!["rtb-89abcdef".to_owned(), "rtb-0123abcd".to_owned()];
        let mut cfg = config(&silent.endpoint(), &tables);
        cfg.call_timeout_ms = 300;
        cfg.max_attempts = 3;
        cfg.backoff_base_ms = 50;
        cfg.backoff_cap_ms = 100;
        let identity = tdsvip_cloud::Identity {
            instance_id: None,
            eni_id: "eni-0123456789abcdef0".into(),
        };
        let api = api(&cfg).await;
        let budget = api.policy().budget();
        assert_eq!(budget, Duration::from_millis(3 * 300 + 50 + 100));

        let started = Instant::now();
        let err = RouteTableExecutor::new(api.clone(), &cfg, &identity, OVERLAY)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() <= budget + Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                &err,
                CloudError::GaveUp {
                    result: CallResult::Timeout,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );

        let executor = RouteTableExecutor::without_checks(api, &cfg, &identity, OVERLAY);
        let started = Instant::now();
        let report = executor.claim().await;
        let elapsed = started.elapsed();
        assert!(
            elapsed <= budget + Duration::from_millis(300),
            "{elapsed:?} > {budget:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(900),
            "{elapsed:?}: attempts were skipped"
        );
        for table in &report.tables {
            assert!(!table.points_here());
            let error = table.outcome.error.as_deref().unwrap();
            assert!(error.contains("no answer within"), "{error}");
            assert!(!table.outcome.config_problem);
            let write = table
                .outcome
                .calls
                .iter()
                .find(|c| c.operation == Operation::ReplaceRoute)
                .expect("a write was attempted");
            assert_eq!(write.result, CallResult::Timeout);
        }
    })
    .await;
}
