//! The rules of DESIGN.md's "Who decides who owns the address", as pure functions and one
//! small counter, so that each rule can be read (and tested) apart from the state machine.
//!
//! How each probe outcome counts, and why:
//!
//! | outcome | class | effect |
//! |---|---|---|
//! | `ok` (PRIMARY, every configured database ONLINE) | [`Verdict::Primary`] | counts toward rise |
//! | `not_primary` (SECONDARY, RESOLVING, AG not found) | [`Verdict::SqlSaysNo`] | release at once: SQL Server said so, nothing to filter |
//! | `db_not_online` | [`Verdict::SqlSaysNo`] | release at once: never own while a configured database is not ONLINE, since clients would land on a primary that cannot serve them |
//! | `query_failed` | [`Verdict::Unconfirmed`] | counts toward fall: the server answered but the role could not be read, so it is no proof of PRIMARY (never counts toward rise), yet a single failed query (a deadlock victim, a timeout) must not move the address either |
//! | `timeout`, `refused`, `reset`, `unreachable`, `protocol_error`, `login_failed` | [`Verdict::Unconfirmed`] | counts toward fall: local SQL is not answering |
//! | `io_error` | [`Verdict::Unconfirmed`] | counts toward fall: a local problem, not a verdict on the server, but the agent can no longer confirm PRIMARY either |
//!
//! Peers: only a reachable peer's fresh report that its replica is PRIMARY matters. Seen
//! after the local replica became PRIMARY, it forbids acquiring (a conflict). Seen after the
//! local replica was last confirmed PRIMARY while local SQL has stopped answering, it
//! releases at once instead of after the fall count (`peer_primary`): SQL Server has a new
//! primary, and every probe interval spent counting is an interval the new owner waits for
//! this one to let go. An unreachable or silent peer is forgotten; otherwise a dead old
//! primary's last report would keep the new primary from ever taking the address.

use std::fmt;
use std::time::{Duration, Instant};

use super::decision::ReleaseCause;

/// Settings of one AG's controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgPolicy {
    /// Consecutive `ok` probes before the agent may acquire.
    pub rise: u32,
    /// Consecutive unanswered probes before an owner releases.
    pub fall: u32,
    /// Backoff of cloud claim retries; `None` when no cloud executor is configured.
    pub cloud_retry: Option<Backoff>,
    /// Backoff before acquiring again after a failed acquire, so a broken interface does not
    /// turn into an acquire/release loop at the probe rate.
    pub acquire_retry: Backoff,
    /// A peer report older than this no longer counts (as if the peer were unreachable).
    pub peer_stale_after: Duration,
    /// Ask the peers to let go of the addresses before each acquire (peers are configured).
    pub handover: bool,
    /// Whether a probe through the overlay IP runs, so an acquire's timeline waits for it.
    pub expect_overlay_login: bool,
    /// How long a successful acquire's timeline waits for what comes after the node call
    /// (route tables, the first login through the overlay IP). A SQL Server that does not
    /// listen on the overlay IP, or a cloud API that never answers, must not keep the
    /// failover out of `/events` and the metrics: the timeline is then closed and names what
    /// never came.
    pub timeline_limit: Duration,
}

impl AgPolicy {
    /// The policy for the `[probe]` rise and fall counts, with the defaults for the rest.
    pub fn new(rise: u32, fall: u32) -> AgPolicy {
        AgPolicy {
            rise,
            fall,
            cloud_retry: None,
            acquire_retry: Backoff {
                base: Duration::from_millis(200),
                cap: Duration::from_secs(5),
            },
            peer_stale_after: Duration::from_secs(5),
            handover: false,
            expect_overlay_login: false,
            timeline_limit: Duration::from_secs(30),
        }
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.rise == 0 {
            return Err(PolicyError("rise must be at least 1"));
        }
        if self.fall == 0 {
            return Err(PolicyError("fall must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyError(pub &'static str);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The controller's backoffs have no jitter: one node retries per AG, so there is no herd to
/// spread, and a deterministic delay lets the decision say exactly when the retry runs.
pub use tdsvip_backoff::Backoff;

/// What one probe outcome says about owning the address: the controller's own input type
/// (the driver classifies the probes crate's outcomes, see the table above), so that the
/// controller depends on nothing that does I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Primary,
    /// SQL Server answered that this replica must not own the address.
    SqlSaysNo {
        cause: ReleaseCause,
        what: String,
    },
    /// No confirmation either way.
    Unconfirmed {
        what: String,
    },
}

/// The local replica as the rise/fall counting sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHealth {
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
}

impl LocalHealth {
    pub fn new(rise: u32, fall: u32) -> LocalHealth {
        LocalHealth {
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
        }
    }

    /// Counts one probe that started at `started` and whose result arrived at `now`.
    pub fn observe(&mut self, verdict: &Verdict, started: Instant, now: Instant) {
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
                if self.refusal.is_none() {
                    self.detected_at = Some(now);
                }
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
    pub fn may_own(&self) -> bool {
        self.ok_streak >= self.rise
    }

    /// The latest probe said PRIMARY (for conflict detection, which needs no hysteresis).
    pub fn says_primary(&self) -> bool {
        self.last_was_ok
    }

    /// Why an owner must release now, if it must.
    pub fn must_release(&self) -> Option<(ReleaseCause, String)> {
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
    pub fn unanswered(&self) -> Option<(u32, &str)> {
        (self.unconfirmed_streak > 0).then(|| {
            (
                self.unconfirmed_streak,
                self.last_unconfirmed.as_deref().unwrap_or("no answer"),
            )
        })
    }

    pub fn last_ok_started(&self) -> Option<Instant> {
        self.last_ok_started
    }

    pub fn ok_streak(&self) -> u32 {
        self.ok_streak
    }

    pub fn rise(&self) -> u32 {
        self.rise
    }

    pub fn first_ok_at(&self) -> Option<Instant> {
        self.first_ok_at
    }

    pub fn first_failure_at(&self) -> Option<Instant> {
        self.first_failure_at
    }

    pub fn detected_at(&self) -> Option<Instant> {
        self.detected_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Verdict {
        Verdict::Unconfirmed {
            what: "refused".into(),
        }
    }

    #[test]
    fn rise_needs_consecutive_oks_and_fall_consecutive_failures() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut h = LocalHealth::new(3, 2);
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
    fn zero_counts_are_refused() {
        assert!(AgPolicy::new(0, 3).validate().is_err());
        assert!(AgPolicy::new(2, 0).validate().is_err());
        assert!(AgPolicy::new(1, 1).validate().is_ok());
    }
}
