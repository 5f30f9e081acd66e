//! The instance fence against moto's real EC2 server, through the tests' proxy so that every
//! request is seen (and, where a test says so, answered with a fault): a forced stop of the
//! other node, an instance already down, this node's own instance, unknown and malformed ids,
//! EC2's IncorrectInstanceState, throttling and a black-holed endpoint.
//!
//! moto 5.2 reads only `InstanceIds` of StopInstances: it accepts `Force` and `SkipOsShutdown`
//! without acting on them, answers `previous → stopping` whatever the previous state was (also
//! for a stopped or terminated instance), and has the instance `stopped` at once. Real EC2
//! answers `IncorrectInstanceState` for a terminated instance; the proxy plays that part.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy, Rule, SilentEndpoint};
use common::{World, api, bounded, config, moto, setup_api};
use tdsvip_cloud::{
    CallResult, ClaimMode, CloudConfig, FenceOutcome, InstanceFence, Operation, RetryPolicy,
};

const LIMIT: Duration = Duration::from_secs(120);
/// A well-formed instance id that does not exist.
const UNKNOWN_INSTANCE: &str = "i-0000000000000000f";

fn moto_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], moto().port))
}

/// A valid config for `endpoint` with small backoffs (the logic is the same, the tests quick).
fn fence_config(endpoint: &str) -> CloudConfig {
    let mut cfg = config(endpoint, &[]);
    cfg.mode = ClaimMode::SecondaryIp;
    cfg.call_timeout_ms = 500;
    cfg.max_attempts = 4;
    cfg.backoff_base_ms = 20;
    cfg.backoff_cap_ms = 100;
    cfg
}

/// A world (nodes a and b, both running) and node a's fence, talking through a proxy with
/// `rules`.
async fn setup(rules: impl FnOnce(&World) -> Vec<Rule>) -> (World, FaultProxy, InstanceFence) {
    let direct = setup_api(&moto().endpoint()).await;
    let world = World::build(direct.client(), 0).await;
    let proxy = FaultProxy::start(moto_addr(), rules(&world)).await;
    let api = api(&fence_config(&proxy.endpoint())).await;
    let fence = InstanceFence::new(api, Some(world.a.instance.clone()));
    (world, proxy, fence)
}

/// The instance's state, read straight through the SDK (not through the code under test).
async fn state(id: &str) -> String {
    let direct = setup_api(&moto().endpoint()).await;
    let out = direct
        .client()
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("DescribeInstances");
    let instance = &out.reservations()[0].instances()[0];
    let name = instance.state().and_then(|s| s.name()).expect("a state");
    name.as_str().to_owned()
}

fn operations(calls: &[tdsvip_cloud::CallRecord]) -> Vec<(Operation, CallResult)> {
    calls.iter().map(|c| (c.operation, c.result)).collect()
}

fn injected(instance: &str, status: u16, code: &'static str, times: usize) -> Rule {
    Rule {
        action: "StopInstances",
        table: Some(instance.to_owned()),
        fault: Fault::Error { status, code },
        times,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_is_force_stopped_without_os_shutdown() {
    bounded(LIMIT, async {
        let (world, proxy, fence) = setup(|_| Vec::new()).await;
        let b = &world.b.instance;
        let report = fence.stop(b).await;

        assert_eq!(
            report.outcome,
            FenceOutcome::Stopping {
                previous: "running".into(),
                current: "stopping".into()
            },
            "{report}"
        );
        assert!(report.stopped());
        assert_eq!(&report.instance_id, b);
        assert_eq!(
            operations(&report.calls),
            [(Operation::StopInstances, CallResult::Ok)]
        );
        assert_eq!(report.attempts(), 1);
        // One request, with both flags and this instance only.
        let seen = proxy.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let body = &seen[0].body;
        assert_eq!(seen[0].action, "StopInstances");
        for parameter in [
            "Force=true",
            "SkipOsShutdown=true",
            &format!("InstanceId.1={b}"),
        ] {
            assert!(
                body.split('&').any(|p| p == parameter),
                "{parameter} not in {body}"
            );
        }
        assert!(!body.contains("InstanceId.2"), "{body}");
        // EC2 (moto) agrees, and the fencing node's own instance was left alone.
        assert!(["stopping", "stopped"].contains(&state(b).await.as_str()));
        assert_eq!(state(&world.a.instance).await, "running");
        let line = report.to_string();
        assert!(
            line.contains(b.as_str()) && line.contains("running -> stopping"),
            "{line}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_is_already_down() {
    bounded(LIMIT, async {
        let (world, proxy, fence) = setup(|_| Vec::new()).await;
        let b = &world.b.instance;
        let direct = setup_api(&moto().endpoint()).await;
        direct
            .client()
            .stop_instances()
            .instance_ids(b)
            .send()
            .await
            .expect("StopInstances");
        assert_eq!(state(b).await, "stopped");

        let report = fence.stop(b).await;
        // moto answers stopped -> stopping (real EC2: stopped -> stopped); either way the
        // instance was down before the fence asked.
        assert_eq!(
            report.outcome,
            FenceOutcome::AlreadyDown {
                state: "stopped".into()
            },
            "{report}"
        );
        assert!(report.stopped());
        assert_eq!(
            operations(&report.calls),
            [(Operation::StopInstances, CallResult::Ok)]
        );
        assert_eq!(proxy.count("StopInstances", b), 1);
        assert_eq!(state(b).await, "stopped");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_nodes_own_instance_is_refused_without_a_call() {
    bounded(LIMIT, async {
        let (world, proxy, fence) = setup(|_| Vec::new()).await;
        let report = fence.stop(&world.a.instance).await;
        assert_eq!(report.outcome, FenceOutcome::OwnInstance, "{report}");
        assert!(!report.stopped());
        assert!(report.calls.is_empty());
        assert_eq!(report.attempts(), 0);
        assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
        assert_eq!(state(&world.a.instance).await, "running");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_instance_is_rejected_with_awss_code_and_not_retried() {
    bounded(LIMIT, async {
        let (_world, proxy, fence) = setup(|_| Vec::new()).await;
        let report = fence.stop(UNKNOWN_INSTANCE).await;
        let FenceOutcome::Failed {
            result,
            code,
            message,
        } = &report.outcome
        else {
            panic!("{report}");
        };
        assert_eq!(*result, CallResult::Rejected);
        assert_eq!(code.as_deref(), Some("InvalidInstanceID.NotFound"));
        assert!(message.contains(UNKNOWN_INSTANCE), "{message}");
        assert!(!report.stopped());
        assert_eq!(
            operations(&report.calls),
            [(Operation::StopInstances, CallResult::Rejected)]
        );
        assert_eq!(report.attempts(), 1);
        assert_eq!(proxy.count("StopInstances", UNKNOWN_INSTANCE), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_fails_without_a_call() {
    bounded(LIMIT, async {
        let (_world, proxy, fence) = setup(|_| Vec::new()).await;
        // moto itself would answer InvalidInstanceID.NotFound for these; AWS, .Malformed.
        for bad in [
            "",
            "i-xyz",
            "I-0123ABCD",
            "i-0123456789abcdef",
            "eni-0123abcd",
        ] {
            let report = fence.stop(bad).await;
            let FenceOutcome::Failed {
                result,
                code: None,
                message,
            } = &report.outcome
            else {
                panic!("{bad:?}: {report}");
            };
            assert_eq!(*result, CallResult::Rejected);
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(report.calls.is_empty());
        }
        assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incorrect_state_for_a_terminated_instance_reads_back_as_already_down() {
    bounded(LIMIT, async {
        let (world, proxy, fence) = setup(|w| {
            vec![injected(
                &w.b.instance,
                400,
                "IncorrectInstanceState",
                usize::MAX,
            )]
        })
        .await;
        let b = &world.b.instance;
        let direct = setup_api(&moto().endpoint()).await;
        direct
            .client()
            .terminate_instances()
            .instance_ids(b)
            .send()
            .await
            .expect("TerminateInstances");

        let report = fence.stop(b).await;
        assert_eq!(
            report.outcome,
            FenceOutcome::AlreadyDown {
                state: "terminated".into()
            },
            "{report}"
        );
        assert_eq!(
            operations(&report.calls),
            [
                (Operation::StopInstances, CallResult::Rejected),
                (Operation::DescribeInstances, CallResult::Ok)
            ]
        );
        assert_eq!(
            report.calls[0].code.as_deref(),
            Some("IncorrectInstanceState")
        );
        assert_eq!(proxy.count("StopInstances", b), 1);
        assert_eq!(proxy.count("DescribeInstances", b), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incorrect_state_for_a_running_instance_is_a_failed_fence() {
    bounded(LIMIT, async {
        let (world, proxy, fence) = setup(|w| {
            vec![injected(
                &w.b.instance,
                400,
                "IncorrectInstanceState",
                usize::MAX,
            )]
        })
        .await;
        let b = &world.b.instance;
        let report = fence.stop(b).await;
        let FenceOutcome::Failed {
            result,
            code,
            message,
        } = &report.outcome
        else {
            panic!("{report}");
        };
        assert_eq!(*result, CallResult::Rejected);
        assert_eq!(code.as_deref(), Some("IncorrectInstanceState"));
        assert!(message.contains("reads it as running"), "{message}");
        assert!(!report.stopped());
        assert_eq!(proxy.count("StopInstances", b), 1, "not retried");
        assert_eq!(state(b).await, "running");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_stop_is_retried_and_then_succeeds() {
    bounded(LIMIT, async {
        let (world, proxy, fence) =
            setup(|w| vec![injected(&w.b.instance, 503, "RequestLimitExceeded", 2)]).await;
        let b = &world.b.instance;
        let report = fence.stop(b).await;
        assert!(
            matches!(&report.outcome, FenceOutcome::Stopping { previous, .. } if previous == "running"),
            "{report}"
        );
        assert_eq!(operations(&report.calls), [(Operation::StopInstances, CallResult::Ok)]);
        assert_eq!(report.calls[0].attempts, 3);
        assert_eq!(proxy.count("StopInstances", b), 3);
        assert!(report.to_string().ends_with("3 attempt(s)"), "{report}");
        assert!(["stopping", "stopped"].contains(&state(b).await.as_str()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_ends_within_the_budget_as_a_timeout() {
    bounded(LIMIT, async {
        let silent = SilentEndpoint::start().await;
        let mut cfg = fence_config(&silent.endpoint());
        cfg.call_timeout_ms = 200;
        cfg.max_attempts = 3;
        let budget = RetryPolicy::from_config(&cfg).budget();
        assert_eq!(budget, Duration::from_millis(3 * 200 + 20 + 40));
        let fence = InstanceFence::new(api(&cfg).await, None);

        let started = Instant::now();
        let report = fence.stop(UNKNOWN_INSTANCE).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed <= budget + Duration::from_millis(300),
            "{elapsed:?}"
        );
        assert!(elapsed >= Duration::from_millis(3 * 200), "{elapsed:?}");
        assert!(
            matches!(
                &report.outcome,
                FenceOutcome::Failed {
                    result: CallResult::Timeout,
                    code: None,
                    ..
                }
            ),
            "{report}"
        );
        assert_eq!(report.calls.len(), 1);
        assert_eq!(report.calls[0].attempts, 3);
        assert!(!report.stopped());
    })
    .await;
}

/// `check-config --online`'s question: the instance is read (it exists), moto answers the
/// dry run `DryRunOperation` (allowed) and stops nothing; an `UnauthorizedOperation` (a role without the permission or the
/// instance without the tag, played by the proxy) is a problem with AWS's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_whether_the_stop_is_allowed_and_stops_nothing() {
    bounded(LIMIT, async {
        let (world, proxy, fence) = setup(|_| Vec::new()).await;
        let b = &world.b.instance;
        assert_eq!(fence.may_stop(b).await, Ok("running".to_owned()));
        let seen = proxy.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].action, "DescribeInstances");
        assert!(
            seen[1].body.split('&').any(|p| p == "DryRun=true"),
            "{}",
            seen[1].body
        );
        // moto answers a dry run for any id; the read before it knows the instance.
        let unknown = fence.may_stop(UNKNOWN_INSTANCE).await;
        assert!(unknown.is_err(), "{unknown:?}");
        assert_eq!(state(b).await, "running");
        assert!(
            fence.may_stop(&world.a.instance).await.is_err(),
            "its own instance"
        );

        let (world, _proxy, fence) =
            setup(|w| vec![injected(&w.b.instance, 403, "UnauthorizedOperation", 1)]).await;
        let refused = fence.may_stop(&world.b.instance).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("UnauthorizedOperation")),
            "{refused:?}"
        );
    })
    .await;
}
