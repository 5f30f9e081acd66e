//! Tests of the pure parts of `fence.rs`: id checks, refusals before EC2, and how EC2's answers
//! become outcomes. The calls themselves are tested against moto in `tests/moto_fence.rs`.

use super::*;
use aws_sdk_ec2::types::{Instance, InstanceStateChange, InstanceStateName as Name, Reservation};

const ID: &str = "i-0123456789abcdef0";

fn change(id: &str, previous: Name, current: Name) -> InstanceStateChange {
    InstanceStateChange::builder()
        .instance_id(id)
        .previous_state(InstanceState::builder().name(previous).build())
        .current_state(InstanceState::builder().name(current).build())
        .build()
}

fn stop_answer(changes: Vec<InstanceStateChange>) -> StopInstancesOutput {
    StopInstancesOutput::builder()
        .set_stopping_instances(Some(changes))
        .build()
}

fn rejected(code: &str) -> CloudError {
    CloudError::Rejected {
        operation: Operation::StopInstances,
        resource: ID.into(),
        code: code.into(),
        message: "The instance is not in a state from which it can be stopped.".into(),
        config_problem: false,
    }
}

#[test]
fn instance_ids_are_i_and_8_or_17_lowercase_hex_digits() {
    for good in ["i-0123abcd", ID, "i-ffffffffffffffff0"] {
        assert!(valid_instance_id(good), "{good}");
    }
    for bad in [
        "",
        "i-",
        "i-0123abc",
        "i-0123456789abcdef",
        "i-0123456789abcdef01",
        "i-0123ABCD",
        "I-0123abcd",
        "i-0123abcg",
        "eni-0123abcd",
        " i-0123abcd",
        "i-0123abcd\n",
    ] {
        assert!(!valid_instance_id(bad), "{bad:?}");
    }
}

#[test]
fn a_malformed_id_is_refused_before_the_own_instance_check() {
    let Some(FenceOutcome::Failed {
        result,
        code,
        message,
    }) = refusal("i-XYZ", Some("i-XYZ"))
    else {
        panic!("a malformed id must fail");
    };
    assert_eq!(result, CallResult::Rejected);
    assert_eq!(code, None);
    assert!(
        message.contains("\"i-XYZ\"") && message.contains("not called"),
        "{message}"
    );
}

#[test]
fn only_this_nodes_own_instance_is_refused() {
    assert_eq!(refusal(ID, Some(ID)), Some(FenceOutcome::OwnInstance));
    assert_eq!(refusal(ID, Some("i-0123abcd")), None);
    assert_eq!(refusal(ID, None), None);
}

#[test]
fn a_running_instance_is_stopping() {
    let answer = stop_answer(vec![
        change("i-0123abcd", Name::Stopped, Name::Stopped),
        change(ID, Name::Running, Name::Stopping),
    ]);
    assert_eq!(
        accepted(&answer, ID),
        FenceOutcome::Stopping {
            previous: "running".into(),
            current: "stopping".into()
        }
    );
}

#[test]
fn an_instance_that_was_down_before_the_stop_is_already_down() {
    for (previous, current) in [
        (Name::Stopped, Name::Stopped),
        // What moto answers for a stopped instance.
        (Name::Stopped, Name::Stopping),
        (Name::Stopping, Name::Stopping),
        (Name::Terminated, Name::Terminated),
    ] {
        let answer = stop_answer(vec![change(ID, previous.clone(), current)]);
        assert_eq!(
            accepted(&answer, ID),
            FenceOutcome::AlreadyDown {
                state: previous.as_str().into()
            }
        );
    }
}

#[test]
fn an_answer_without_the_instance_is_not_a_fence() {
    let answer = stop_answer(vec![change("i-0123abcd", Name::Running, Name::Stopping)]);
    let outcome = accepted(&answer, ID);
    assert!(
        matches!(&outcome, FenceOutcome::Failed { result: CallResult::Ok, code: None, message } if message.contains(ID)),
        "{outcome:?}"
    );
}

#[test]
fn incorrect_state_is_a_fence_only_if_the_instance_reads_back_down() {
    let error = rejected(INCORRECT_STATE);
    for down in ["terminated", "shutting-down"] {
        assert_eq!(
            not_stoppable(&error, Ok(Some(down.into()))),
            FenceOutcome::AlreadyDown { state: down.into() }
        );
    }
    for (state, says) in [
        (Ok(Some("pending".to_owned())), "reads it as pending"),
        (Ok(None), "does not list it"),
        (
            Err(rejected("RequestLimitExceeded")),
            "DescribeInstances failed",
        ),
    ] {
        let outcome = not_stoppable(&error, state);
        let FenceOutcome::Failed {
            result,
            code,
            message,
        } = &outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(*result, CallResult::Rejected);
        assert_eq!(code.as_deref(), Some(INCORRECT_STATE));
        assert!(
            message.contains(INCORRECT_STATE) && message.contains(says),
            "{message}"
        );
    }
}

#[test]
fn described_state_finds_the_instance_among_others() {
    let instance = |id: &str, name: Name| {
        Instance::builder()
            .instance_id(id)
            .state(InstanceState::builder().name(name).build())
            .build()
    };
    let output = DescribeInstancesOutput::builder()
        .reservations(
            Reservation::builder()
                .instances(instance("i-0123abcd", Name::Running))
                .instances(instance(ID, Name::ShuttingDown))
                .build(),
        )
        .build();
    assert_eq!(
        described_state(&output, ID).as_deref(),
        Some("shutting-down")
    );
    assert_eq!(described_state(&output, "i-0123abce"), None);
}

fn report(outcome: FenceOutcome, calls: Vec<CallRecord>) -> FenceReport {
    FenceReport {
        instance_id: ID.into(),
        outcome,
        calls,
        elapsed: Duration::from_micros(12_345),
    }
}

fn stop_call(result: CallResult, attempts: u32, code: Option<&str>) -> CallRecord {
    CallRecord {
        operation: Operation::StopInstances,
        resource: ID.into(),
        result,
        elapsed: Duration::from_micros(12_000),
        attempts,
        code: code.map(str::to_owned),
    }
}

#[test]
fn stopped_means_stopping_or_already_down() {
    let stopping = FenceOutcome::Stopping {
        previous: "running".into(),
        current: "stopping".into(),
    };
    let down = FenceOutcome::AlreadyDown {
        state: "stopped".into(),
    };
    assert!(report(stopping, vec![]).stopped());
    assert!(report(down, vec![]).stopped());
    assert!(!report(FenceOutcome::OwnInstance, vec![]).stopped());
    assert!(!report(failed(CallResult::Rejected, &rejected("X")), vec![]).stopped());
}

#[test]
fn the_log_line_names_instance_outcome_time_and_attempts() {
    let stopping = FenceOutcome::Stopping {
        previous: "running".into(),
        current: "stopping".into(),
    };
    let line = report(stopping, vec![stop_call(CallResult::Ok, 3, None)]).to_string();
    assert_eq!(
        line,
        format!("fence {ID}: stopping (running -> stopping); 12.3 ms, 3 attempt(s)")
    );
    let refused = failed(
        CallResult::Rejected,
        &rejected("InvalidInstanceID.NotFound"),
    );
    let calls = vec![stop_call(
        CallResult::Rejected,
        1,
        Some("InvalidInstanceID.NotFound"),
    )];
    let line = report(refused, calls).to_string();
    assert!(
        line.starts_with(&format!(
            "fence {ID}: FAILED (rejected, InvalidInstanceID.NotFound): "
        )) && line.ends_with("; 12.3 ms, 1 attempt(s)")
            && !line.contains('\n'),
        "{line}"
    );
}

#[test]
fn the_json_tags_the_outcome_and_gives_milliseconds() {
    let down = FenceOutcome::AlreadyDown {
        state: "terminated".into(),
    };
    let json =
        serde_json::to_value(report(down, vec![stop_call(CallResult::Ok, 1, None)])).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "instance_id": ID,
            "outcome": {"kind": "already_down", "state": "terminated"},
            "calls": [{
                "operation": "StopInstances", "resource": ID, "result": "ok",
                "ms": 12.0, "attempts": 1, "code": null
            }],
            "ms": 12.345
        })
    );
    let own = serde_json::to_value(report(FenceOutcome::OwnInstance, vec![])).unwrap();
    assert_eq!(own["outcome"], serde_json::json!({"kind": "own_instance"}));
}
