//! The record of one executor call: each step (address, garp, ebpf, tickle, …) with its
//! offset from the start of the call, its duration, whether it worked and what it did. The
//! step names are the metric label values.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Acquire,
    Release,
    Verify,
    Announce,
}

/// One step of a takeover; the names are the metric label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, strum::IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum StepKind {
    /// Duplicate-address detection.
    Dad,
    /// The `vip_guard` map write(s).
    Ebpf,
    /// Netlink address add / remove / check.
    Address,
    /// Gratuitous ARP / unsolicited NA, first round.
    Garp,
    /// Tickle ACKs, first round.
    Tickle,
    /// SOCK_DESTROY of local sockets on the address.
    SockDestroy,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub kind: StepKind,
    /// From the start of the call to the start of this step.
    pub offset: Duration,
    pub duration: Duration,
    /// What the step did ("3 addresses", "12 sent"), or the error.
    pub detail: String,
    pub ok: bool,
}

/// The steps of one call, in order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CallSteps {
    pub action: Action,
    pub steps: Vec<Step>,
    pub total: Duration,
    #[serde(skip)]
    started: Option<Instant>,
}

impl CallSteps {
    pub fn new(action: Action) -> Self {
        Self {
            action,
            steps: Vec::new(),
            total: Duration::ZERO,
            started: Some(Instant::now()),
        }
    }

    fn origin(&self) -> Instant {
        self.started.unwrap_or_else(Instant::now)
    }

    /// Runs `f` as step `kind` and records it; the error, if any, is returned as is.
    pub fn step<T, E: std::fmt::Display>(
        &mut self,
        kind: StepKind,
        f: impl FnOnce() -> Result<(T, String), E>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let result = f();
        self.record(kind, start, result)
    }

    /// [`CallSteps::step`] for async steps.
    pub async fn step_async<T, E: std::fmt::Display>(
        &mut self,
        kind: StepKind,
        f: impl Future<Output = Result<(T, String), E>>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let result = f.await;
        self.record(kind, start, result)
    }

    fn record<T, E: std::fmt::Display>(
        &mut self,
        kind: StepKind,
        start: Instant,
        result: Result<(T, String), E>,
    ) -> Result<T, E> {
        let end = Instant::now();
        let (value, detail, ok) = match result {
            Ok((value, detail)) => (Ok(value), detail, true),
            Err(err) => {
                let detail = err.to_string();
                (Err(err), detail, false)
            }
        };
        self.steps.push(Step {
            kind,
            offset: start.saturating_duration_since(self.origin()),
            duration: end.saturating_duration_since(start),
            detail,
            ok,
        });
        self.total = end.saturating_duration_since(self.origin());
        value
    }

    pub fn duration_of(&self, kind: StepKind) -> Option<Duration> {
        self.steps
            .iter()
            .find(|step| step.kind == kind)
            .map(|step| step.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_records_steps_in_order_with_errors() {
        let mut timeline = CallSteps::new(Action::Acquire);
        let ok: Result<u8, String> = timeline.step(StepKind::Ebpf, || Ok((7, "one".into())));
        assert_eq!(ok, Ok(7));
        let err: Result<(), String> = timeline.step(StepKind::Address, || Err("boom".to_owned()));
        assert_eq!(err, Err("boom".to_owned()));
        assert_eq!(timeline.steps.len(), 2);
        assert_eq!(timeline.steps[0].kind, StepKind::Ebpf);
        assert!(timeline.steps[0].ok);
        assert_eq!(timeline.steps[1].detail, "boom");
        assert!(!timeline.steps[1].ok);
        assert!(timeline.steps[1].offset >= timeline.steps[0].offset);
        assert!(timeline.total >= timeline.steps[1].offset);
        let json = serde_json::to_value(&timeline).unwrap();
        assert_eq!(json["action"], "acquire");
        assert_eq!(json["steps"][1]["kind"], "address");
    }
}
