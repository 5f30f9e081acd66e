//! The loop the agent runs per target: schedule → probe → observation.
//!
//! One probe is in flight at a time per runner: a probe that outlasts the interval makes
//! the schedule skip ticks (counted in each [`Tick`]) instead of piling up concurrent
//! probes against a server that is already slow. Every result is sent, unfiltered: the
//! agent's controller does its own rise/fall counting, because it treats outcome classes
//! differently (`not_primary` releases the address at once, a silent server only after the
//! fall count, or after one miss once a peer is PRIMARY) and needs the first failed probe
//! of a streak for the failover timeline. The channel is bounded: a slow
//! consumer delays the next probe, which the schedule again turns into skipped ticks.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AnyProbe;
use crate::config::ConfigProblem;
use crate::outcome::ProbeResult;
use crate::schedule::{Schedule, ScheduleConfig, Tick};

/// What the runner reports after every probe.
#[derive(Debug, Clone)]
pub struct Observation {
    pub result: ProbeResult,
    pub tick: Tick,
}

/// Why a runner stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    ReceiverDropped,
}

/// Totals of a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    pub reason: StopReason,
    pub probes: u64,
    pub missed_ticks: u64,
}

pub struct ProbeRunner {
    probe: AnyProbe,
    schedule: ScheduleConfig,
    seed: Option<u64>,
}

impl ProbeRunner {
    pub fn new(probe: AnyProbe, schedule: ScheduleConfig) -> Result<Self, ConfigProblem> {
        schedule.validate()?;
        Ok(ProbeRunner {
            probe,
            schedule,
            seed: None,
        })
    }

    /// Seeds the schedule's jitter, for reproducible tests.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts the loop on the current runtime; observations arrive on the returned
    /// receiver (of capacity `capacity`, at least 1). Dropping the receiver or cancelling
    /// `cancel` stops it.
    pub fn spawn(
        self,
        capacity: usize,
        cancel: CancellationToken,
    ) -> (JoinHandle<RunSummary>, mpsc::Receiver<Observation>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tokio::spawn(self.run(tx, cancel)), rx)
    }

    /// Runs until `cancel` fires or `tx`'s receiver is dropped. Tick 0 is due at once.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Observation>,
        cancel: CancellationToken,
    ) -> RunSummary {
        let mut schedule = Schedule::validated(self.schedule, tokio::time::Instant::now());
        if let Some(seed) = self.seed {
            schedule = schedule.with_seed(seed);
        }
        let mut probes = 0u64;
        let stop = |reason, probes, schedule: &Schedule| RunSummary {
            reason,
            probes,
            missed_ticks: schedule.missed_total(),
        };
        loop {
            let tick = tokio::select! {
                biased;
                _ = cancel.cancelled() => return stop(StopReason::Cancelled, probes, &schedule),
                _ = tx.closed() => return stop(StopReason::ReceiverDropped, probes, &schedule),
                t = schedule.tick() => t,
            };
            // A probe in flight is dropped on stop; its sockets close with it.
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return stop(StopReason::Cancelled, probes, &schedule),
                _ = tx.closed() => return stop(StopReason::ReceiverDropped, probes, &schedule),
                r = self.probe.probe() => r,
            };
            probes += 1;
            let obs = Observation { result, tick };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return stop(StopReason::Cancelled, probes, &schedule),
                sent = tx.send(obs) => if sent.is_err() {
                    return stop(StopReason::ReceiverDropped, probes, &schedule);
                },
            }
        }
    }
}
