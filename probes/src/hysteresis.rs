//! Rise/fall hysteresis (HAProxy's `rise`/`fall`): raw probe outcomes in, `Up`/`Down`
//! transitions out.
//!
//! A single lost probe must not move an IP address, and a single lucky one must not take
//! it. The state flips only after `rise` consecutive successes (when down) or `fall`
//! consecutive failures (when up); any result that agrees with the current state resets the
//! count. Alternating results therefore never flip it. The transition records when it
//! happened (monotonic for measuring, wall-clock for logs) and the outcome that tipped it.
//!
//! This is the generic filter. Policy that must bypass it (release at once on
//! `not_primary`) belongs to the agent, which sees every raw outcome in the observations.

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::outcome::{Outcome, ProbeResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HysteresisConfig {
    /// Consecutive successes needed to go from Down to Up (at least 1, default 2).
    pub rise: u32,
    /// Consecutive failures needed to go from Up to Down (at least 1, default 3).
    pub fall: u32,
    /// The state before any result (default Down: `rise` successes are needed first).
    pub initial: State,
}

impl Default for HysteresisConfig {
    fn default() -> Self {
        HysteresisConfig {
            rise: 2,
            fall: 3,
            initial: State::Down,
        }
    }
}

impl HysteresisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rise == 0 {
            return Err(ConfigError::new("rise", "must be at least 1"));
        }
        if self.fall == 0 {
            return Err(ConfigError::new("fall", "must be at least 1"));
        }
        Ok(())
    }
}

/// A change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// When the deciding result was taken (the probe's start).
    pub at: Instant,
    pub at_wall: SystemTime,
    /// The outcome of the result that completed the streak.
    pub cause: Outcome,
    /// Length of the streak that caused it (`rise` or `fall`).
    pub streak: u32,
}

#[derive(Debug, Clone)]
pub struct Hysteresis {
    cfg: HysteresisConfig,
    state: State,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl Hysteresis {
    pub fn new(cfg: HysteresisConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Hysteresis {
            cfg,
            state: cfg.initial,
            streak: 0,
        })
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Consecutive results so far that disagree with the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Feeds one probe result.
    pub fn observe_result(&mut self, r: &ProbeResult) -> Option<Transition> {
        self.observe(&r.outcome, r.started, r.started_wall)
    }

    /// Feeds one outcome taken at `at`; returns the transition if the state flipped.
    pub fn observe(
        &mut self,
        outcome: &Outcome,
        at: Instant,
        at_wall: SystemTime,
    ) -> Option<Transition> {
        let (agrees, needed, to) = match self.state {
            State::Down => (!outcome.is_ok(), self.cfg.rise, State::Up),
            State::Up => (outcome.is_ok(), self.cfg.fall, State::Down),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        let t = Transition {
            from: self.state,
            to,
            at,
            at_wall,
            cause: outcome.clone(),
            streak: self.streak,
        };
        self.state = to;
        self.streak = 0;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Phase;
    use std::time::Duration;

    fn fail() -> Outcome {
        Outcome::Timeout {
            phase: Phase::Connect,
        }
    }

    /// Feeds a string of results ('+' ok, '-' failure) and returns the states after each.
    fn run(h: &mut Hysteresis, pattern: &str) -> (String, Vec<Transition>) {
        let t0 = Instant::now();
        let mut states = String::new();
        let mut transitions = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            let o = if c == '+' { Outcome::Ok } else { fail() };
            let at = t0 + Duration::from_millis(i as u64 * 20);
            if let Some(t) = h.observe(&o, at, SystemTime::now()) {
                transitions.push(t);
            }
            states.push(if h.state() == State::Up { 'U' } else { 'D' });
        }
        (states, transitions)
    }

    #[test]
    fn defaults_rise_2_fall_3_initially_down() {
        let mut h = Hysteresis::new(HysteresisConfig::default()).unwrap();
        assert_eq!(h.state(), State::Down);
        let (s, ts) = run(&mut h, "++---+---");
        assert_eq!(s, "DUUUDDDDD");
        assert_eq!(ts.len(), 2);
        assert_eq!(
            (ts[0].from, ts[0].to, ts[0].streak),
            (State::Down, State::Up, 2)
        );
        assert_eq!(ts[0].cause, Outcome::Ok);
        assert_eq!(
            (ts[1].from, ts[1].to, ts[1].streak),
            (State::Up, State::Down, 3)
        );
        assert_eq!(ts[1].cause, fail());
        // The transition carries the time of the deciding result (the 5th, index 4).
        assert_eq!(ts[1].at - ts[0].at, Duration::from_millis(60));
    }

    #[test]
    fn alternating_results_never_flap() {
        for initial in [State::Up, State::Down] {
            let mut h = Hysteresis::new(HysteresisConfig {
                initial,
                ..Default::default()
            })
            .unwrap();
            let (s, ts) = run(&mut h, &"+-".repeat(500));
            assert!(ts.is_empty(), "{initial:?}: {ts:?}");
            assert!(
                s.chars()
                    .all(|c| c == if initial == State::Up { 'U' } else { 'D' })
            );
        }
        // Two failures between successes never reach fall = 3 either.
        let mut h = Hysteresis::new(HysteresisConfig {
            initial: State::Up,
            ..Default::default()
        })
        .unwrap();
        let (_, ts) = run(&mut h, &"+--".repeat(300));
        assert!(ts.is_empty());
    }

    #[test]
    fn a_disagreeing_result_resets_the_streak() {
        let mut h = Hysteresis::new(HysteresisConfig {
            rise: 3,
            fall: 1,
            initial: State::Down,
        })
        .unwrap();
        let (s, _) = run(&mut h, "++-++-+++-");
        assert_eq!(s, "DDDDDDDDUD");
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let mut h = Hysteresis::new(HysteresisConfig {
            rise: 1,
            fall: 1,
            initial: State::Down,
        })
        .unwrap();
        let (s, ts) = run(&mut h, "+-+-");
        assert_eq!(s, "UDUD");
        assert_eq!(ts.len(), 4);
    }

    #[test]
    fn initial_up_needs_fall_failures() {
        let mut h = Hysteresis::new(HysteresisConfig {
            initial: State::Up,
            ..Default::default()
        })
        .unwrap();
        let (s, _) = run(&mut h, "--+---");
        assert_eq!(s, "UUUUUD");
    }

    #[test]
    fn counts_of_zero_are_refused_by_name() {
        let e = Hysteresis::new(HysteresisConfig {
            rise: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "rise");
        let e = Hysteresis::new(HysteresisConfig {
            fall: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "fall");
    }
}
