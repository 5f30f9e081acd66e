//! A fixed-rate schedule for probes.
//!
//! Tick k is due at `origin + k * interval`, computed from the origin every time, so the
//! rate does not drift with the probe's own duration or with timer slack (a loop that
//! sleeps `interval` after each probe runs slower than asked, by the probe's latency).
//! When the caller falls behind (a probe that took several intervals, a stalled host), the
//! ticks that passed are skipped and counted rather than fired in a burst: a burst of
//! catch-up probes would hit a server that is already slow and would feed the hysteresis
//! several results about the same moment. Optional jitter delays each tick by a random
//! `0..jitter` from its nominal time, spreading the probes of many agents without the
//! delays adding up.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::config::ConfigProblem;

/// The default probe interval: 20 probes a second.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Time between nominal ticks (at least 1 ms).
    pub interval: Duration,
    /// Each tick is delayed by a random amount in `0..jitter`, in whole milliseconds (the
    /// timer's resolution); must be below `interval`.
    pub jitter: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            interval: DEFAULT_INTERVAL,
            jitter: Duration::ZERO,
        }
    }
}

impl ScheduleConfig {
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.interval < Duration::from_millis(1) {
            return Err(ConfigProblem::new(
                "interval",
                format!("{:?} is below the minimum of 1ms", self.interval),
            ));
        }
        if self.jitter >= self.interval {
            return Err(ConfigProblem::new(
                "jitter",
                format!(
                    "{:?} must be below the interval ({:?})",
                    self.jitter, self.interval
                ),
            ));
        }
        Ok(())
    }
}

/// One firing of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// k: the tick's index on the grid since the origin (skipped ticks leave gaps).
    pub seq: u64,
    /// The nominal time `origin + k * interval` (without jitter).
    pub scheduled: std::time::Instant,
    /// When the tick was handed out.
    pub fired: std::time::Instant,
    /// Ticks skipped just before this one because the caller was late.
    pub missed: u64,
    /// Ticks skipped since the schedule started.
    pub missed_total: u64,
}

#[derive(Debug)]
pub struct Schedule {
    origin: Instant,
    interval: Duration,
    jitter: Duration,
    next: u64,
    missed_total: u64,
    rng: StdRng,
}

impl Schedule {
    /// A schedule whose tick 0 is due now.
    pub fn new(cfg: ScheduleConfig) -> Result<Self, ConfigProblem> {
        Self::starting_at(cfg, Instant::now())
    }

    /// A schedule whose tick 0 is due at `origin`.
    pub fn starting_at(cfg: ScheduleConfig, origin: Instant) -> Result<Self, ConfigProblem> {
        cfg.validate()?;
        Ok(Self::validated(cfg, origin))
    }

    /// For callers that validated `cfg` already (the runner, at construction).
    pub(crate) fn validated(cfg: ScheduleConfig, origin: Instant) -> Self {
        Schedule {
            origin,
            interval: cfg.interval,
            jitter: cfg.jitter,
            next: 0,
            missed_total: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    /// Replaces the jitter's random source by a seeded one, for reproducible tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    pub fn missed_total(&self) -> u64 {
        self.missed_total
    }

    fn nominal(&self, k: u64) -> Instant {
        let nanos = self.interval.as_nanos().saturating_mul(u128::from(k));
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        // The remainder is below 1e9 and fits in u32.
        let sub = (nanos % 1_000_000_000) as u32;
        self.origin + Duration::new(secs, sub)
    }

    /// Waits for the next tick. Call it again after the work of the previous tick is done.
    pub async fn tick(&mut self) -> Tick {
        let mut k = self.next;
        let now = Instant::now();
        let mut missed = 0;
        if now >= self.nominal(k + 1) {
            // Late by at least a whole interval: jump to the latest tick already due.
            let elapsed = now.duration_since(self.origin).as_nanos();
            let latest = u64::try_from(elapsed / self.interval.as_nanos()).unwrap_or(u64::MAX);
            missed = latest - k;
            k = latest;
            self.missed_total += missed;
        } else {
            let mut due = self.nominal(k);
            // Whole milliseconds: tokio's timer rounds every deadline up to the next
            // millisecond, so a finer delay could land on or past `jitter`.
            let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
            if jitter_ms > 0 {
                due += Duration::from_millis(self.rng.random_range(0..jitter_ms));
            }
            tokio::time::sleep_until(due).await;
        }
        self.next = k + 1;
        Tick {
            seq: k,
            scheduled: self.nominal(k).into_std(),
            fired: Instant::now().into_std(),
            missed,
            missed_total: self.missed_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg(interval_ms: u64, jitter_ms: u64) -> ScheduleConfig {
        ScheduleConfig {
            interval: Duration::from_millis(interval_ms),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    #[test]
    fn config_is_validated_by_field() {
        assert_eq!(cfg(0, 0).validate().unwrap_err().key, "interval");
        assert_eq!(cfg(20, 20).validate().unwrap_err().key, "jitter");
        assert!(cfg(20, 19).validate().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_stay_on_the_grid_whatever_the_work_takes() {
        let origin = Instant::now();
        let mut s = Schedule::starting_at(cfg(20, 0), origin).unwrap();
        for k in 0..200u64 {
            let t = s.tick().await;
            assert_eq!(t.seq, k);
            assert_eq!(t.fired, (origin + k as u32 * 20 * MS).into_std());
            assert_eq!(t.scheduled, t.fired);
            assert_eq!(t.missed, 0);
            // Work of varying length, always shorter than the interval.
            tokio::time::sleep(Duration::from_micros(1000 + (k % 7) * 2500)).await;
        }
        assert_eq!(s.missed_total(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_skips_missed_ticks_without_a_burst() {
        let origin = Instant::now();
        let mut s = Schedule::starting_at(cfg(20, 0), origin).unwrap();
        for _ in 0..4 {
            s.tick().await; // ticks 0..=3, the last at 60 ms
        }
        // Stall until 155 ms: ticks 4 (80), 5 (100), 6 (120) pass; 7 (140) is due.
        tokio::time::sleep(95 * MS).await;
        let t = s.tick().await;
        assert_eq!(t.seq, 7);
        assert_eq!(t.missed, 3);
        assert_eq!(t.missed_total, 3);
        assert_eq!(t.scheduled, (origin + 140 * MS).into_std());
        assert_eq!(t.fired, (origin + 155 * MS).into_std(), "fires at once");
        // The next tick is back on the grid, not right after: no catch-up burst.
        let t = s.tick().await;
        assert_eq!(t.seq, 8);
        assert_eq!(t.missed, 0);
        assert_eq!(t.fired, (origin + 160 * MS).into_std());
    }

    #[tokio::test(start_paused = true)]
    async fn slightly_late_tick_is_not_skipped() {
        let origin = Instant::now();
        let mut s = Schedule::starting_at(cfg(20, 0), origin).unwrap();
        s.tick().await;
        // Work overruns into the next interval but not past tick 1's successor.
        tokio::time::sleep(35 * MS).await;
        let t = s.tick().await;
        assert_eq!((t.seq, t.missed), (1, 0));
        assert_eq!(t.fired, (origin + 35 * MS).into_std());
        let t = s.tick().await;
        assert_eq!(t.fired, (origin + 40 * MS).into_std());
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_its_window_and_does_not_accumulate() {
        let origin = Instant::now();
        let mut s = Schedule::starting_at(cfg(20, 5), origin)
            .unwrap()
            .with_seed(7);
        let mut delays = Vec::new();
        for k in 0..1000u64 {
            let t = s.tick().await;
            assert_eq!(t.seq, k);
            let nominal = (origin + k as u32 * 20 * MS).into_std();
            assert_eq!(t.scheduled, nominal);
            let delay = t.fired - nominal;
            assert!(delay < 5 * MS, "tick {k} delayed {delay:?}");
            delays.push(delay);
        }
        assert_eq!(s.missed_total(), 0);
        // The delays are really random, not a constant offset.
        let min = delays.iter().min().copied().unwrap();
        let max = delays.iter().max().copied().unwrap();
        assert!(max - min > 3 * MS, "{min:?}..{max:?}");
    }
}
