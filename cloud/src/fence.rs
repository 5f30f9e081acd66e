//! Fencing on EC2: when the leader promotes its replica after the old primary was lost without
//! being confirmed down (a crash, a partition, a hung SQL Server), it first stops the old
//! primary's instance, so that a node that was frozen or cut off cannot come back and serve
//! writes beside the new primary.
//!
//! The stop is `StopInstances` with `Force` and `SkipOsShutdown`: the graceful OS shutdown that
//! `Force` alone still tries first is exactly the window in which a thawed node could act, and
//! a node that needs fencing cannot be trusted to shut down. Deciding *when* to fence (only the
//! holder of the leader key does) is the caller's; this executor only refuses to stop its own
//! instance, so that a mix-up in the node-to-instance map cannot take down the new primary.
//!
//! One `StopInstances` is the fast path. `DescribeInstances` is called only when EC2 answers
//! `IncorrectInstanceState` (real EC2 does for a terminated or shutting-down instance), to tell
//! "already gone" (fenced) from "not stoppable right now" (not fenced).

use std::fmt;
use std::time::{Duration, Instant};

use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::stop_instances::StopInstancesOutput;
use aws_sdk_ec2::types::InstanceState;
use serde::Serialize;

use crate::ec2::{Ec2Api, failure_from_sdk};
use crate::error::CloudError;
use crate::report::{CallRecord, CallResult, Operation, as_millis, millis};
use crate::retry::call_with_retry;

/// Instance states in which the instance no longer runs its OS (or is on its way out): a
/// fence that finds one has nothing left to do.
const DOWN_STATES: &[&str] = &["stopping", "stopped", "shutting-down", "terminated"];

/// EC2's answer to a dry run that would have been allowed.
const DRY_RUN_ALLOWED: &str = "DryRunOperation";

/// EC2's answer to a stop of an instance that is not in a stoppable state.
const INCORRECT_STATE: &str = "IncorrectInstanceState";

/// True for an EC2 instance id: `i-` and 8 (older instances) or 17 lowercase hex digits. Public
/// so that the agent's config check refuses a bad node-to-instance map at startup, not during
/// a failover.
pub fn valid_instance_id(id: &str) -> bool {
    crate::config::is_resource_id(id, "i-")
}

/// Stops other nodes' instances. Never this node's own: "only the key holder fences" (fence_aws's
/// race check, in tdsvip) is the caller's rule; the executor itself refuses its own instance.
#[derive(Debug, Clone)]
pub struct InstanceFence {
    api: Ec2Api,
    own_instance: Option<String>,
}

/// What a fence did, for the agent's log, timeline and metrics (`calls`, as for claims).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceReport {
    pub instance_id: String,
    pub outcome: FenceOutcome,
    /// Every EC2 call made, retries folded in; empty when the fence was refused before EC2.
    pub calls: Vec<CallRecord>,
    /// From the start of `stop` to its end, every call and backoff included.
    #[serde(rename = "ms", serialize_with = "as_millis")]
    pub elapsed: Duration,
}

/// How a fence ended. Only `Stopping` and `AlreadyDown` mean the instance can no longer act.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FenceOutcome {
    /// EC2 accepted the stop: previous and current state as StopInstances returned them (e.g.
    /// running → stopping).
    Stopping { previous: String, current: String },
    /// The instance was already stopping, stopped, shutting down or terminated (`state`, as
    /// StopInstances or the DescribeInstances read-back named it). After a retry this can be
    /// the work of an earlier attempt whose answer was lost.
    AlreadyDown { state: String },
    /// This node's own instance: refused without calling EC2.
    OwnInstance,
    /// EC2 refused or never answered, or the id is malformed (`Rejected`, no call): the last
    /// failure, as `call_with_retry` reported it.
    Failed {
        result: CallResult,
        code: Option<String>,
        message: String,
    },
}

impl InstanceFence {
    /// `own_instance` is this node's instance id when known (IMDS or config); `None` disables
    /// only the self-check, which is why the caller should pass it whenever it has it.
    pub fn new(api: Ec2Api, own_instance: Option<String>) -> Self {
        InstanceFence { api, own_instance }
    }

    /// StopInstances(Force, SkipOsShutdown) of `instance_id`, retried per the api's
    /// `RetryPolicy` within `policy.budget()`, then says what EC2 answered. Never panics and
    /// never fails as a whole: a fence that did not happen is a `Failed` outcome.
    pub async fn stop(&self, instance_id: &str) -> FenceReport {
        let budget = self.api.policy().budget();
        self.stop_by(instance_id, Instant::now() + budget).await
    }

    /// [`Self::stop`], with no attempt started (or left running) past `deadline`: the
    /// caller's right to fence (the leader key's proof) ends there.
    pub async fn stop_by(&self, instance_id: &str, deadline: Instant) -> FenceReport {
        let started = Instant::now();
        let deadline = deadline.min(started + self.api.policy().budget());
        let (outcome, calls) = match refusal(instance_id, self.own_instance.as_deref()) {
            Some(outcome) => (outcome, Vec::new()),
            None => self.stop_on_ec2(instance_id, deadline).await,
        };
        FenceReport {
            instance_id: instance_id.to_owned(),
            outcome,
            calls,
            elapsed: started.elapsed(),
        }
    }

    async fn stop_on_ec2(&self, id: &str, deadline: Instant) -> (FenceOutcome, Vec<CallRecord>) {
        let policy = *self.api.policy();
        let (answer, record) =
            call_with_retry(&policy, deadline, Operation::StopInstances, id, || {
                let request = self
                    .api
                    .client()
                    .stop_instances()
                    .instance_ids(id)
                    .force(true)
                    .skip_os_shutdown(true);
                async move { request.send().await.map_err(failure_from_sdk) }
            })
            .await;
        let result = record.result;
        let mut calls = vec![record];
        let outcome = match answer {
            Ok(output) => accepted(&output, id),
            Err(error) if error.code() == Some(INCORRECT_STATE) => {
                let (state, record) = self.read_state(id, deadline).await;
                calls.push(record);
                not_stoppable(&error, state)
            }
            Err(error) => failed(result, &error),
        };
        (outcome, calls)
    }

    /// Whether these credentials may stop `instance_id`, without stopping it, and its state:
    /// `DescribeInstances` (the instance exists), then `StopInstances` with `DryRun`, which
    /// EC2 (and moto) answers `DryRunOperation` when the call would be allowed and
    /// `UnauthorizedOperation` when not. For `check-config --online`: a wrong id, a missing
    /// permission or tag is found at set-up, not in the failover that needs it.
    pub async fn may_stop(&self, instance_id: &str) -> Result<String, String> {
        if let Some(refused) = refusal(instance_id, self.own_instance.as_deref()) {
            return Err(refused.to_string());
        }
        let policy = *self.api.policy();
        let deadline = Instant::now() + policy.budget();
        let state = match self.read_state(instance_id, deadline).await.0 {
            Ok(Some(state)) => state,
            Ok(None) => return Err(format!("DescribeInstances does not list {instance_id}")),
            Err(e) => return Err(format!("DescribeInstances: {e}")),
        };
        let (answer, _) = call_with_retry(
            &policy,
            deadline,
            Operation::StopInstances,
            instance_id,
            || {
                let request = self
                    .api
                    .client()
                    .stop_instances()
                    .instance_ids(instance_id)
                    .force(true)
                    .skip_os_shutdown(true)
                    .dry_run(true);
                async move { request.send().await.map_err(failure_from_sdk) }
            },
        )
        .await;
        match answer {
            Err(e) if e.code() == Some(DRY_RUN_ALLOWED) => Ok(state),
            Err(e) => Err(e.to_string()),
            // An endpoint that ignores DryRun: say so loudly, it just stopped the instance.
            Ok(_) => Err(format!(
                "the endpoint ignored DryRun and accepted a real stop of {instance_id}"
            )),
        }
    }

    /// The instance's state by DescribeInstances (`None` if the answer does not list it).
    async fn read_state(
        &self,
        id: &str,
        deadline: Instant,
    ) -> (Result<Option<String>, CloudError>, CallRecord) {
        let policy = *self.api.policy();
        let (answer, record) =
            call_with_retry(&policy, deadline, Operation::DescribeInstances, id, || {
                let request = self.api.client().describe_instances().instance_ids(id);
                async move { request.send().await.map_err(failure_from_sdk) }
            })
            .await;
        (answer.map(|output| described_state(&output, id)), record)
    }
}

/// The fences refused before any call: a malformed id, or this node's own instance.
fn refusal(id: &str, own: Option<&str>) -> Option<FenceOutcome> {
    if !valid_instance_id(id) {
        return Some(FenceOutcome::Failed {
            result: CallResult::Rejected,
            code: None,
            message: format!(
                "{id:?} is not an EC2 instance id (expected i- followed by 8 or 17 lowercase \
                 hex digits); EC2 was not called"
            ),
        });
    }
    (own == Some(id)).then_some(FenceOutcome::OwnInstance)
}

fn state_name(state: Option<&InstanceState>) -> String {
    state
        .and_then(InstanceState::name)
        .map_or_else(|| "unknown".to_owned(), |n| n.as_str().to_owned())
}

fn is_down(state: &str) -> bool {
    DOWN_STATES.contains(&state)
}

/// StopInstances answered: the instance's state change, or `Failed` if the answer leaves it out.
fn accepted(output: &StopInstancesOutput, id: &str) -> FenceOutcome {
    let Some(change) = output
        .stopping_instances()
        .iter()
        .find(|c| c.instance_id() == Some(id))
    else {
        return FenceOutcome::Failed {
            result: CallResult::Ok,
            code: None,
            message: format!("StopInstances {id}: the answer does not list this instance"),
        };
    };
    let previous = state_name(change.previous_state());
    if is_down(&previous) {
        return FenceOutcome::AlreadyDown { state: previous };
    }
    FenceOutcome::Stopping {
        previous,
        current: state_name(change.current_state()),
    }
}

fn described_state(output: &DescribeInstancesOutput, id: &str) -> Option<String> {
    output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id))
        .map(|i| state_name(i.state()))
}

/// StopInstances said IncorrectInstanceState: fenced if the read-back finds the instance down,
/// otherwise the refusal stands, with what the read-back found.
fn not_stoppable(error: &CloudError, state: Result<Option<String>, CloudError>) -> FenceOutcome {
    let found = match state {
        Ok(Some(state)) if is_down(&state) => return FenceOutcome::AlreadyDown { state },
        Ok(Some(state)) => format!("DescribeInstances reads it as {state}"),
        Ok(None) => "DescribeInstances does not list it".to_owned(),
        Err(e) => format!("and DescribeInstances failed: {e}"),
    };
    FenceOutcome::Failed {
        result: CallResult::Rejected,
        code: error.code().map(str::to_owned),
        message: format!("{error}; {found}"),
    }
}

fn failed(result: CallResult, error: &CloudError) -> FenceOutcome {
    FenceOutcome::Failed {
        result,
        code: error.code().map(str::to_owned),
        message: error.to_string(),
    }
}

impl FenceReport {
    /// True when the instance can no longer act: EC2 accepted the stop or found it down.
    pub fn stopped(&self) -> bool {
        matches!(
            self.outcome,
            FenceOutcome::Stopping { .. } | FenceOutcome::AlreadyDown { .. }
        )
    }

    /// Attempts over all calls (0 when refused before EC2).
    pub fn attempts(&self) -> u32 {
        self.calls.iter().map(|c| c.attempts).sum()
    }
}

impl fmt::Display for FenceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceOutcome::Stopping { previous, current } => {
                write!(f, "stopping ({previous} -> {current})")
            }
            FenceOutcome::AlreadyDown { state } => write!(f, "already down ({state})"),
            FenceOutcome::OwnInstance => f.write_str("refused: this node's own instance"),
            FenceOutcome::Failed {
                result,
                code,
                message,
            } => {
                let code = code
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default();
                write!(f, "FAILED ({result}{code}): {message}")
            }
        }
    }
}

/// One line for the agent's log: instance, outcome, time and attempts.
impl fmt::Display for FenceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fence {}: {}; {:.1} ms, {} attempt(s)",
            self.instance_id,
            self.outcome,
            millis(self.elapsed),
            self.attempts()
        )
    }
}

#[cfg(test)]
#[path = "fence_tests.rs"]
mod tests;
