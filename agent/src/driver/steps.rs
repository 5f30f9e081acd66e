//! Node executor calls as the controller records them: the node crate's `CallSteps` (steps
//! with offsets from the start of the call) becomes a [`NodeCall`] of [`TimedStep`]s with
//! their own start instants, in one conversion, and every step is logged.

use std::time::Instant;

use tdsvip_node::CallSteps;
use tdsvip_node::executor::TakeoverFailure;

use crate::controller::{NodeCall, TimedStep};

/// The call that started at `started`, as the controller's event carries it.
pub(super) fn node_call(started: Instant, result: &Result<CallSteps, TakeoverFailure>) -> NodeCall {
    let (timeline, error) = match result {
        Ok(t) => (t, None),
        Err(f) => (&f.timeline, Some(f.error.to_string())),
    };
    NodeCall {
        started,
        steps: timeline
            .steps
            .iter()
            .map(|s| TimedStep {
                name: <&str>::from(s.kind).to_owned(),
                start: started + s.offset,
                duration: s.duration,
                ok: s.ok,
                detail: s.detail.clone(),
            })
            .collect(),
        error,
    }
}

/// Logs every step of `call` (offsets from the call's start) and how it ended.
pub(super) fn log_steps(ag: &str, what: &str, call: &NodeCall) {
    for s in &call.steps {
        tracing::info!(
            ag,
            call = what,
            step = %s.name,
            offset_us = s.start.saturating_duration_since(call.started).as_micros() as u64,
            duration_us = s.duration.as_micros() as u64,
            ok = s.ok,
            detail = %s.detail,
            "node step"
        );
    }
    match &call.error {
        None => tracing::info!(
            ag,
            call = what,
            total_us = call.started.elapsed().as_micros() as u64,
            "node call done"
        ),
        Some(e) => tracing::error!(ag, call = what, error = %e, "node call failed"),
    }
}
