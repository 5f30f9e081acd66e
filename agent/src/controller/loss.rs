//! When a replica that was PRIMARY stopped answering as one: the start of a failover
//! timeline ("first failed probe of the old primary") as one observer saw it.
//!
//! Every agent runs one tracker over its local probes and serves the result in `/status`
//! (as ages), and one over each peer replica's TDS endpoint; the node that takes over stamps
//! the earliest it hears of into its timeline. It is pure so that the rules below are tested
//! with exact instants:
//! - only a replica last seen PRIMARY can be lost (a secondary failing is not a failover);
//! - the first failed probe of the streak starts the loss; the fall count, or SQL Server
//!   saying "not PRIMARY" / "database not online", makes it detected;
//! - a loss is forgotten when the replica answers PRIMARY again, or after [`LOSS_MEMORY`],
//!   so that it is never stamped into a later, unrelated takeover.

use std::time::{Duration, Instant};

use super::event::PrimaryLoss;
use super::policy::Verdict;

/// How long a loss stays reportable.
pub const LOSS_MEMORY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossTracker {
    fall: u32,
    was_primary: bool,
    failures: u32,
    loss: Option<PrimaryLoss>,
    /// What the last `observe` reported, so that an expiry between two probes still counts
    /// as a change.
    reported: Option<PrimaryLoss>,
}

impl LossTracker {
    pub fn new(fall: u32) -> LossTracker {
        LossTracker {
            fall: fall.max(1),
            was_primary: false,
            failures: 0,
            loss: None,
            reported: None,
        }
    }

    /// Counts one probe (started at `started`, answered at `now`); `true` when what
    /// [`LossTracker::loss`] reports changed.
    pub fn observe(&mut self, verdict: &Verdict, started: Instant, now: Instant) -> bool {
        match verdict {
            Verdict::Primary => {
                self.was_primary = true;
                self.failures = 0;
                self.loss = None;
            }
            Verdict::SqlSaysNo { .. } => {
                if self.was_primary {
                    let first = self.loss.map_or(started, |l| l.first_failure);
                    self.loss = Some(PrimaryLoss {
                        first_failure: first,
                        detected: Some(self.loss.and_then(|l| l.detected).unwrap_or(now)),
                    });
                }
                self.was_primary = false;
                self.failures = 0;
            }
            Verdict::Unconfirmed { .. } => {
                if self.was_primary {
                    self.failures = self.failures.saturating_add(1);
                    let first = self.loss.map_or(started, |l| l.first_failure);
                    let detected = self
                        .loss
                        .and_then(|l| l.detected)
                        .or((self.failures >= self.fall).then_some(now));
                    self.loss = Some(PrimaryLoss {
                        first_failure: first,
                        detected,
                    });
                }
            }
        }
        let now_reported = self.loss(now);
        let changed = now_reported != self.reported;
        self.reported = now_reported;
        changed
    }

    /// The current loss, if one is remembered at `now`.
    pub fn loss(&self, now: Instant) -> Option<PrimaryLoss> {
        self.loss
            .filter(|l| now.saturating_duration_since(l.first_failure) <= LOSS_MEMORY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::verdict::classify;
    use tdsvip_probes::{Outcome, Phase};

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn timeout() -> Outcome {
        Outcome::Timeout {
            phase: Phase::Connect,
        }
    }

    #[test]
    fn a_secondary_failing_is_no_loss() {
        let t = Instant::now();
        let mut l = LossTracker::new(2);
        assert!(!l.observe(&classify(&timeout()), t, ms(t, 5)));
        assert!(!l.observe(&classify(&timeout()), ms(t, 20), ms(t, 25)));
        assert_eq!(l.loss(ms(t, 30)), None);
    }

    #[test]
    fn fall_count_detects_and_primary_again_forgets() {
        let t = Instant::now();
        let mut l = LossTracker::new(2);
        assert!(!l.observe(&classify(&Outcome::Ok), t, ms(t, 1)));
        assert!(l.observe(&classify(&timeout()), ms(t, 20), ms(t, 40)));
        assert_eq!(
            l.loss(ms(t, 40)),
            Some(PrimaryLoss {
                first_failure: ms(t, 20),
                detected: None
            })
        );
        assert!(l.observe(&classify(&timeout()), ms(t, 40), ms(t, 60)));
        assert_eq!(
            l.loss(ms(t, 60)),
            Some(PrimaryLoss {
                first_failure: ms(t, 20),
                detected: Some(ms(t, 60))
            })
        );
        // A third failure changes nothing.
        assert!(!l.observe(&classify(&timeout()), ms(t, 60), ms(t, 80)));
        assert!(l.observe(&classify(&Outcome::Ok), ms(t, 80), ms(t, 81)));
        assert_eq!(l.loss(ms(t, 81)), None);
    }

    #[test]
    fn demotion_is_detected_at_once_and_kept_while_secondary() {
        let t = Instant::now();
        let mut l = LossTracker::new(3);
        l.observe(&classify(&Outcome::Ok), t, ms(t, 1));
        let demoted = Outcome::NotPrimary {
            role: Some("SECONDARY".into()),
            detail: "role SECONDARY".into(),
        };
        assert!(l.observe(&classify(&demoted), ms(t, 20), ms(t, 22)));
        let loss = l.loss(ms(t, 22)).unwrap();
        assert_eq!(
            (loss.first_failure, loss.detected),
            (ms(t, 20), Some(ms(t, 22)))
        );
        assert!(!l.observe(&classify(&demoted), ms(t, 40), ms(t, 42)));
        assert_eq!(l.loss(ms(t, 42)), Some(loss));
    }

    #[test]
    fn a_loss_is_forgotten_after_its_memory() {
        let t = Instant::now();
        let mut l = LossTracker::new(1);
        l.observe(&classify(&Outcome::Ok), t, t);
        l.observe(&classify(&Outcome::Refused), ms(t, 10), ms(t, 11));
        assert!(l.loss(ms(t, 11)).is_some());
        let late = ms(t, 10) + LOSS_MEMORY + Duration::from_millis(1);
        assert_eq!(l.loss(late), None);
        // The probe after the expiry reports it as a change, once.
        assert!(l.observe(&classify(&Outcome::Refused), late, late));
        assert!(!l.observe(&classify(&Outcome::Refused), late, late));
    }
}
