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

use tdsvip_cloud::CloudConfig;
use tdsvip_probes::Outcome;

use super::decision::ReleaseCause;
use crate::config::ProbeSettings;

/// The longest pause between two cloud claims of one ownership.
pub const CLOUD_RETRY_CAP: Duration = Duration::from_secs(30);

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
            expect_overlay_login: false,
            timeline_limit: Duration::from_secs(30),
        }
    }

    /// The policy the config file asks for. A cloud claim that failed has already retried
    /// each call within its own budget, so the claim-level retries start at the per-call
    /// backoff cap and double up to [`CLOUD_RETRY_CAP`]: a throttled API is not hammered, and
    /// a lasting failure is still retried twice a minute.
    pub fn from_config(probe: &ProbeSettings, cloud: Option<&CloudConfig>) -> AgPolicy {
        let mut policy = AgPolicy::new(probe.rise, probe.fall);
        policy.cloud_retry = cloud.map(|c| {
            let base = Duration::from_millis(c.backoff_cap_ms.max(c.backoff_base_ms).max(1));
            Backoff {
                base,
                cap: CLOUD_RETRY_CAP.max(base),
            }
        });
        policy
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

/// Exponential backoff without jitter: one node retries per AG, so there is no herd to
/// spread, and a deterministic delay lets the decision say exactly when the retry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The pause after the `failures`-th failure in a row (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }
}

/// What one probe outcome says about owning the address.
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

pub fn classify(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Ok => Verdict::Primary,
        Outcome::NotPrimary { .. } => Verdict::SqlSaysNo {
            cause: ReleaseCause::NotPrimary,
            what: outcome.to_string(),
        },
        Outcome::DbNotOnline { .. } => Verdict::SqlSaysNo {
            cause: ReleaseCause::DbNotOnline,
            what: outcome.to_string(),
        },
        Outcome::Refused
        | Outcome::Timeout { .. }
        | Outcome::Reset { .. }
        | Outcome::Unreachable { .. }
        | Outcome::LoginFailed { .. }
        | Outcome::ProtocolError { .. }
        | Outcome::QueryFailed { .. }
        | Outcome::IoError { .. } => Verdict::Unconfirmed {
            what: outcome.to_string(),
        },
    }
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
    pub fn observe(&mut self, outcome: &Outcome, started: Instant, now: Instant) {
        match classify(outcome) {
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
    use tdsvip_probes::Phase;

    fn every_outcome() -> Vec<Outcome> {
        vec![
            Outcome::Ok,
            Outcome::Refused,
            Outcome::Timeout {
                phase: Phase::Login,
            },
            Outcome::Reset {
                phase: Phase::Query,
            },
            Outcome::Unreachable {
                detail: "no route".into(),
            },
            Outcome::LoginFailed {
                code: Some(18456),
                message: "bad password".into(),
            },
            Outcome::ProtocolError {
                phase: Phase::Prelogin,
                detail: "eof".into(),
            },
            Outcome::QueryFailed {
                code: 297,
                message: "no VIEW SERVER STATE".into(),
            },
            Outcome::NotPrimary {
                role: Some("SECONDARY".into()),
                detail: "ag1".into(),
            },
            Outcome::DbNotOnline {
                database: "sales".into(),
                state: Some("RECOVERING".into()),
            },
            Outcome::IoError {
                phase: Phase::Connect,
                detail: "EMFILE".into(),
            },
        ]
    }

    #[test]
    fn every_outcome_has_the_documented_class() {
        for outcome in every_outcome() {
            let class = match classify(&outcome) {
                Verdict::Primary => "primary".to_owned(),
                Verdict::SqlSaysNo { cause, .. } => format!("no:{}", cause.name()),
                Verdict::Unconfirmed { .. } => "unconfirmed".to_owned(),
            };
            let expected = match outcome.name() {
                "ok" => "primary",
                "not_primary" => "no:not_primary",
                "db_not_online" => "no:db_not_online",
                _ => "unconfirmed",
            };
            assert_eq!(class, expected, "{outcome}");
        }
    }

    #[test]
    fn rise_needs_consecutive_oks_and_fall_consecutive_failures() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut h = LocalHealth::new(3, 2);
        h.observe(&Outcome::Ok, ms(0), ms(1));
        h.observe(&Outcome::Ok, ms(20), ms(21));
        assert!(!h.may_own());
        h.observe(&Outcome::Refused, ms(40), ms(41));
        h.observe(&Outcome::Ok, ms(60), ms(61));
        h.observe(&Outcome::Ok, ms(80), ms(81));
        assert!(!h.may_own());
        h.observe(&Outcome::Ok, ms(100), ms(101));
        assert!(h.may_own());
        assert_eq!(h.first_ok_at(), Some(ms(61)));
        h.observe(&Outcome::Refused, ms(120), ms(121));
        assert_eq!(h.must_release(), None);
        h.observe(&Outcome::Refused, ms(140), ms(141));
        let (cause, reason) = h.must_release().unwrap();
        assert_eq!(cause, ReleaseCause::NotAnswering);
        assert!(reason.contains("2 failed probes"), "{reason}");
        assert!(reason.contains("refused"), "{reason}");
        assert_eq!(h.first_failure_at(), Some(ms(120)));
        assert_eq!(h.detected_at(), Some(ms(141)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(700),
        };
        let got: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 700, 700]);
        assert_eq!(b.delay(1000), Duration::from_millis(700));
    }

    #[test]
    fn the_config_sets_the_counts_and_the_cloud_retries() {
        let probe = ProbeSettings {
            rise: 4,
            fall: 5,
            ..Default::default()
        };
        let p = AgPolicy::from_config(&probe, None);
        assert_eq!((p.rise, p.fall, p.cloud_retry), (4, 5, None));
        let cloud: CloudConfig =
            toml::from_str("provider = \"aws\"\nbackoff_base_ms = 50\nbackoff_cap_ms = 800\n")
                .unwrap();
        let retry = AgPolicy::from_config(&probe, Some(&cloud))
            .cloud_retry
            .unwrap();
        assert_eq!(retry.delay(1), Duration::from_millis(800));
        assert_eq!(retry.delay(2), Duration::from_millis(1600));
        assert_eq!(retry.delay(20), CLOUD_RETRY_CAP);
    }

    #[test]
    fn zero_counts_are_refused() {
        assert!(AgPolicy::new(0, 3).validate().is_err());
        assert!(AgPolicy::new(2, 0).validate().is_err());
        assert!(AgPolicy::new(1, 1).validate().is_ok());
    }
}
