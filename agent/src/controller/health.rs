//! Rise/fall counting for one replica, the only place it is done: the controller counts its
//! local replica with it (may it own, must it release), and the driver counts each peer
//! replica's TDS endpoint with it. Both report, from the same counts, when a replica that
//! was PRIMARY stopped answering as one: the start of a failover timeline ("first failed
//! probe of the old primary") as one observer saw it. Every agent serves its local loss in
//! `/status` (as ages); the node that takes over stamps the earliest it hears of into its
//! timeline.
//!
//! - the first failed probe of a streak starts a loss; the fall count, or SQL Server saying
//!   "not PRIMARY" / "database not online", makes it detected (whichever came first);
//! - only a replica confirmed PRIMARY before the streak can be lost;
//! - a loss is forgotten when the replica answers PRIMARY again, or after [`LOSS_MEMORY`].

use std::time::{Duration, Instant};

use super::decision::ReleaseCause;
use super::event::PrimaryLoss;
use super::policy::Verdict;

/// How long a loss stays reportable.
pub(crate) const LOSS_MEMORY: Duration = Duration::from_secs(30);

/// One replica as the rise/fall counting sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaHealth {
    rise: u32,
    fall: u32,
    ok_streak: u32,
    unconfirmed_streak: u32,
    /// The last time SQL Server said no, until the next `ok`.
    refusal: Option<(ReleaseCause, String)>,
    /// Completion of the first `ok` of the current streak: "local replica seen PRIMARY".
    first_ok_at: Option<Instant>,
    /// Start of the first failed probe since the last `ok`.
    first_failure_at: Option<Instant>,
    /// When the failure became a verdict: fall count reached, or SQL Server said no.
    detected_at: Option<Instant>,
    last_unconfirmed: Option<String>,
    last_was_ok: bool,
    /// Start of the latest `ok` probe: the last moment the replica was confirmed PRIMARY.
    last_ok_started: Option<Instant>,
    /// What the last `observe` reported as [`ReplicaHealth::loss`], so that an expiry between
    /// two probes still counts as a change.
    reported: Option<PrimaryLoss>,
}

impl ReplicaHealth {
    pub(crate) fn new(rise: u32, fall: u32) -> ReplicaHealth {
        ReplicaHealth {
            rise,
            fall,
            ok_streak: 0,
            unconfirmed_streak: 0,
            refusal: None,
            first_ok_at: None,
            first_failure_at: None,
            detected_at: None,
            last_unconfirmed: None,
            last_was_ok: false,
            last_ok_started: None,
            reported: None,
        }
    }

    /// Counts one probe that started at `started` and whose result arrived at `now`; `true`
    /// when what [`ReplicaHealth::loss`] reports changed.
    pub(crate) fn observe(&mut self, verdict: &Verdict, started: Instant, now: Instant) -> bool {
        self.count(verdict, started, now);
        let reported = self.loss(now);
        let changed = reported != self.reported;
        self.reported = reported;
        changed
    }

    fn count(&mut self, verdict: &Verdict, started: Instant, now: Instant) {
        match verdict.clone() {
            Verdict::Primary => {
                if self.ok_streak == 0 {
                    self.first_ok_at = Some(now);
                }
                self.ok_streak = self.ok_streak.saturating_add(1);
                self.unconfirmed_streak = 0;
                self.refusal = None;
                self.first_failure_at = None;
                self.detected_at = None;
                self.last_was_ok = true;
                self.last_ok_started = Some(started);
            }
            Verdict::SqlSaysNo { cause, what } => {
                self.fail(started);
                self.unconfirmed_streak = 0;
                // A fall count reached earlier stays the moment of detection.
                self.detected_at.get_or_insert(now);
                self.refusal = Some((cause, what));
            }
            Verdict::Unconfirmed { what } => {
                self.fail(started);
                self.unconfirmed_streak = self.unconfirmed_streak.saturating_add(1);
                if self.unconfirmed_streak == self.fall && self.detected_at.is_none() {
                    self.detected_at = Some(now);
                }
                self.last_unconfirmed = Some(what);
            }
        }
    }

    fn fail(&mut self, started: Instant) {
        self.ok_streak = 0;
        self.first_ok_at = None;
        self.last_was_ok = false;
        self.first_failure_at.get_or_insert(started);
    }

    /// Rise count met: the agent may acquire.
    pub(crate) fn may_own(&self) -> bool {
        self.ok_streak >= self.rise
    }

    /// The latest probe said PRIMARY (for conflict detection, which needs no hysteresis).
    pub(crate) fn says_primary(&self) -> bool {
        self.last_was_ok
    }

    /// Why an owner must release now, if it must.
    pub(crate) fn must_release(&self) -> Option<(ReleaseCause, String)> {
        if let Some(refusal) = &self.refusal {
            return Some(refusal.clone());
        }
        if self.unconfirmed_streak >= self.fall {
            let last = self.last_unconfirmed.as_deref().unwrap_or("no answer");
            return Some((
                ReleaseCause::NotAnswering,
                format!(
                    "local SQL Server not answering: {} failed probes in a row (fall {}), last {last}",
                    self.unconfirmed_streak, self.fall
                ),
            ));
        }
        None
    }

    /// Local SQL Server stopped answering (at least one unconfirmed probe in a row), the
    /// fall count not necessarily reached, with the latest failure's description.
    pub(crate) fn unanswered(&self) -> Option<(u32, &str)> {
        (self.unconfirmed_streak > 0).then(|| {
            (
                self.unconfirmed_streak,
                self.last_unconfirmed.as_deref().unwrap_or("no answer"),
            )
        })
    }

    pub(crate) fn last_ok_started(&self) -> Option<Instant> {
        self.last_ok_started
    }

    pub(crate) fn ok_streak(&self) -> u32 {
        self.ok_streak
    }

    pub(crate) fn rise(&self) -> u32 {
        self.rise
    }

    pub(crate) fn first_ok_at(&self) -> Option<Instant> {
        self.first_ok_at
    }

    pub(crate) fn first_failure_at(&self) -> Option<Instant> {
        self.first_failure_at
    }

    pub(crate) fn detected_at(&self) -> Option<Instant> {
        self.detected_at
    }

    /// The loss of this replica as PRIMARY, if one is remembered at `now`: only a replica
    /// confirmed PRIMARY before the current failure streak can be lost (a secondary failing
    /// is not a failover), and a loss is forgotten after [`LOSS_MEMORY`] so that it is never
    /// stamped into a later, unrelated takeover.
    pub(crate) fn loss(&self, now: Instant) -> Option<PrimaryLoss> {
        // Every `ok` clears the streak, so a streak with an `ok` before it followed one.
        self.last_ok_started?;
        let first_failure = self.first_failure_at?;
        (now.saturating_duration_since(first_failure) <= LOSS_MEMORY).then_some(PrimaryLoss {
            first_failure,
            detected: self.detected_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn refused() -> Verdict {
        Verdict::Unconfirmed {
            what: "refused".into(),
        }
    }

    fn timeout() -> Verdict {
        Verdict::Unconfirmed {
            what: "timeout (connect)".into(),
        }
    }

    fn demoted() -> Verdict {
        Verdict::SqlSaysNo {
            cause: ReleaseCause::NotPrimary,
            what: "role SECONDARY".into(),
        }
    }

    #[test]
    fn rise_needs_consecutive_oks_and_fall_consecutive_failures() {
        let t0 = Instant::now();
        let ms = |n: u64| ms(t0, n);
        let mut h = ReplicaHealth::new(3, 2);
        h.observe(&Verdict::Primary, ms(0), ms(1));
        h.observe(&Verdict::Primary, ms(20), ms(21));
        assert!(!h.may_own());
        h.observe(&refused(), ms(40), ms(41));
        h.observe(&Verdict::Primary, ms(60), ms(61));
        h.observe(&Verdict::Primary, ms(80), ms(81));
        assert!(!h.may_own());
        h.observe(&Verdict::Primary, ms(100), ms(101));
        assert!(h.may_own());
        assert_eq!(h.first_ok_at(), Some(ms(61)));
        h.observe(&refused(), ms(120), ms(121));
        assert_eq!(h.must_release(), None);
        h.observe(&refused(), ms(140), ms(141));
        let (cause, reason) = h.must_release().unwrap();
        assert_eq!(cause, ReleaseCause::NotAnswering);
        assert!(reason.contains("2 failed probes"), "{reason}");
        assert!(reason.contains("refused"), "{reason}");
        assert_eq!(h.first_failure_at(), Some(ms(120)));
        assert_eq!(h.detected_at(), Some(ms(141)));
    }

    #[test]
    fn a_secondary_failing_is_no_loss() {
        let t = Instant::now();
        let mut l = ReplicaHealth::new(1, 2);
        assert!(!l.observe(&timeout(), t, ms(t, 5)));
        assert!(!l.observe(&timeout(), ms(t, 20), ms(t, 25)));
        assert_eq!(l.loss(ms(t, 30)), None);
    }

    #[test]
    fn fall_count_detects_and_primary_again_forgets() {
        let t = Instant::now();
        let mut l = ReplicaHealth::new(1, 2);
        assert!(!l.observe(&Verdict::Primary, t, ms(t, 1)));
        assert!(l.observe(&timeout(), ms(t, 20), ms(t, 40)));
        assert_eq!(
            l.loss(ms(t, 40)),
            Some(PrimaryLoss {
                first_failure: ms(t, 20),
                detected: None
            })
        );
        assert!(l.observe(&timeout(), ms(t, 40), ms(t, 60)));
        assert_eq!(
            l.loss(ms(t, 60)),
            Some(PrimaryLoss {
                first_failure: ms(t, 20),
                detected: Some(ms(t, 60))
            })
        );
        // A third failure changes nothing.
        assert!(!l.observe(&timeout(), ms(t, 60), ms(t, 80)));
        assert!(l.observe(&Verdict::Primary, ms(t, 80), ms(t, 81)));
        assert_eq!(l.loss(ms(t, 81)), None);
    }

    #[test]
    fn demotion_is_detected_at_once_and_kept_while_secondary() {
        let t = Instant::now();
        let mut l = ReplicaHealth::new(1, 3);
        l.observe(&Verdict::Primary, t, ms(t, 1));
        assert!(l.observe(&demoted(), ms(t, 20), ms(t, 22)));
        let loss = l.loss(ms(t, 22)).unwrap();
        assert_eq!(
            (loss.first_failure, loss.detected),
            (ms(t, 20), Some(ms(t, 22)))
        );
        assert!(!l.observe(&demoted(), ms(t, 40), ms(t, 42)));
        assert_eq!(l.loss(ms(t, 42)), Some(loss));
    }

    /// The controller's counter used to move the detection to the refusal; the peers'
    /// counter kept the fall count's. One counter now, and the earlier moment is the truth.
    #[test]
    fn a_refusal_after_the_fall_count_keeps_the_earlier_detection() {
        let t = Instant::now();
        let mut l = ReplicaHealth::new(1, 2);
        l.observe(&Verdict::Primary, t, ms(t, 1));
        l.observe(&timeout(), ms(t, 20), ms(t, 30));
        l.observe(&timeout(), ms(t, 40), ms(t, 50));
        assert!(!l.observe(&demoted(), ms(t, 60), ms(t, 62)));
        assert_eq!(l.detected_at(), Some(ms(t, 50)));
        assert_eq!(l.loss(ms(t, 62)).unwrap().detected, Some(ms(t, 50)));
    }

    #[test]
    fn a_loss_is_forgotten_after_its_memory() {
        let t = Instant::now();
        let mut l = ReplicaHealth::new(1, 1);
        l.observe(&Verdict::Primary, t, t);
        l.observe(&refused(), ms(t, 10), ms(t, 11));
        assert!(l.loss(ms(t, 11)).is_some());
        let late = ms(t, 10) + LOSS_MEMORY + Duration::from_millis(1);
        assert_eq!(l.loss(late), None);
        // The probe after the expiry reports it as a change, once.
        assert!(l.observe(&refused(), late, late));
        assert!(!l.observe(&refused(), late, late));
    }
}
