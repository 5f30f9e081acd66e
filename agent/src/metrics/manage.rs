//! Manage mode's metrics (`driver/manage/`): the election, promotions and the two leases the
//! leader keeps alive (its etcd lease, SQL Server's write lease). A module of their own because
//! they are one subsystem's contract (README "Manage mode"), registered with the rest by
//! [`super::AgentMetrics::new`] and handed to the manage tasks as one cloneable value.

use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};
use strum::VariantNames;

use super::{Def, counter, gauge, histogram};
use crate::controller::promotion::{PromotionCause, Refusal};

const LEADER: Def = Def {
    name: "tdsvip_leader",
    help: "Manage mode: 1 while this agent holds the AG's leader key in etcd, else 0.",
    labels: &["ag"],
};
const LEADER_TERM: Def = Def {
    name: "tdsvip_leader_term",
    help: "Manage mode: create revision of the AG's leader key (the term, the fencing token) as this agent last read it; no series while there is no leader key.",
    labels: &["ag"],
};
const PROMOTIONS: Def = Def {
    name: "tdsvip_promotions_total",
    help: "Manage mode: FAILOVERs of the local replica this agent sent and SQL Server accepted, by cause (primary_down: its SQL Server refused connections; leader_lost: the leader key went without that word).",
    labels: &["ag", "cause"],
};
const PROMOTION_REFUSED: Def = Def {
    name: "tdsvip_promotion_refused_total",
    help: "Manage mode: times the local replica could not be promoted while no leader held the AG, by reason.",
    labels: &["ag", "reason"],
};
const FENCES: Def = Def {
    name: "tdsvip_fences_total",
    help: "Manage mode with [fence] aws: stops of an old primary's EC2 instance this agent asked for as the new leader, by result (stopped: EC2 took the stop or the instance was down already; failed: EC2 refused or did not answer before the key's proof ran out; not_sent: the leader key was no longer provably held, or the node is no [[peer]]; refused: the instance id is this node's own or malformed, EC2 not called).",
    labels: &["ag", "result"],
};
const ETCD_LEASE_ALIVE: Def = Def {
    name: "tdsvip_etcd_lease_alive",
    help: "Manage mode: 1 while this agent's etcd lease is provably alive (a renewal answered within its TTL), else 0.",
    labels: &["ag"],
};
const KEY_RENEWAL: Def = Def {
    name: "tdsvip_etcd_lease_renewal_seconds",
    help: "Manage mode: round trip of each renewal of this agent's etcd lease.",
    labels: &["ag"],
};
const KEY_RENEWAL_FAILURES: Def = Def {
    name: "tdsvip_etcd_lease_renewal_failures_total",
    help: "Manage mode: renewals of this agent's etcd lease that got no answer or an error.",
    labels: &["ag"],
};
const HEARTBEAT: Def = Def {
    name: "tdsvip_leader_heartbeat_seconds",
    help: "Manage mode, on the leader: round trip of each heartbeat (the guarded rewrite of the leader key) that etcd applied.",
    labels: &["ag"],
};
const HEARTBEAT_FAILURES: Def = Def {
    name: "tdsvip_leader_heartbeat_failures_total",
    help: "Manage mode, on the leader: heartbeats that got no answer or an error.",
    labels: &["ag"],
};
const WRITE_LEASE_RENEWAL: Def = Def {
    name: "tdsvip_write_lease_renewal_seconds",
    help: "Manage mode: time of each WRITE_LEASE_VALIDITY renewal the leader sent, answered or not.",
    labels: &["ag"],
};

const FAILSAFE: Def = Def {
    name: "tdsvip_failsafe",
    help: "Manage mode: 1 while this agent leads on its peers' acknowledgements alone (etcd does not renew its key: rule 5, failsafe), else 0.",
    labels: &["ag"],
};
const ACKNOWLEDGEMENTS: Def = Def {
    name: "tdsvip_failsafe_acknowledgements_total",
    help: "Manage mode: acknowledgements this agent gave another leader whose key etcd did not renew (each holds this node's own promotion back).",
    labels: &["ag"],
};

/// A call that answered in `took` goes into `histogram`; one that did not (`None`) is
/// counted in `failures`.
fn observe_or_count(
    histogram: &HistogramVec,
    failures: &IntCounterVec,
    ag: &str,
    took: Option<Duration>,
) {
    match took {
        Some(t) => histogram.with_label_values(&[ag]).observe(t.as_secs_f64()),
        None => failures.with_label_values(&[ag]).inc(),
    }
}

/// How a stop of an old primary's instance ended (the `result` label of `tdsvip_fences_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum FenceResult {
    Stopped,
    Failed,
    NotSent,
    /// Refused before any EC2 call: this node's own instance, or a malformed id.
    Refused,
}

/// Renewal round trips: an etcd or SQL round trip on a LAN is about a millisecond, and a
/// renewal past a few hundred milliseconds has eaten the key's margin.
const RENEWAL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Manage mode's metrics (`driver/manage/`). Registered in every mode; in follow mode no
/// series is ever set, which is how a dashboard tells "follow mode" from "no leader" (0).
#[derive(Debug, Clone)]
pub struct ManageMetrics {
    leader: IntGaugeVec,
    term: IntGaugeVec,
    promotions: IntCounterVec,
    refused: IntCounterVec,
    fences: IntCounterVec,
    etcd_lease_alive: IntGaugeVec,
    key_renewal: HistogramVec,
    key_renewal_failures: IntCounterVec,
    heartbeat: HistogramVec,
    heartbeat_failures: IntCounterVec,
    write_lease_renewal: HistogramVec,
    failsafe: IntGaugeVec,
    acknowledgements: IntCounterVec,
}

impl ManageMetrics {
    /// Every manage-mode metric's name, for the tests that check dashboards and rules use
    /// them all.
    pub const NAMES: [&str; 13] = [
        LEADER.name,
        LEADER_TERM.name,
        PROMOTIONS.name,
        PROMOTION_REFUSED.name,
        FENCES.name,
        ETCD_LEASE_ALIVE.name,
        KEY_RENEWAL.name,
        KEY_RENEWAL_FAILURES.name,
        HEARTBEAT.name,
        HEARTBEAT_FAILURES.name,
        WRITE_LEASE_RENEWAL.name,
        FAILSAFE.name,
        ACKNOWLEDGEMENTS.name,
    ];

    pub(super) fn new(r: &Registry) -> Result<ManageMetrics, prometheus::Error> {
        Ok(ManageMetrics {
            leader: gauge(r, &LEADER)?,
            term: gauge(r, &LEADER_TERM)?,
            promotions: counter(r, &PROMOTIONS)?,
            refused: counter(r, &PROMOTION_REFUSED)?,
            fences: counter(r, &FENCES)?,
            etcd_lease_alive: gauge(r, &ETCD_LEASE_ALIVE)?,
            key_renewal: histogram(r, &KEY_RENEWAL, RENEWAL_BUCKETS)?,
            key_renewal_failures: counter(r, &KEY_RENEWAL_FAILURES)?,
            heartbeat: histogram(r, &HEARTBEAT, RENEWAL_BUCKETS)?,
            heartbeat_failures: counter(r, &HEARTBEAT_FAILURES)?,
            write_lease_renewal: histogram(r, &WRITE_LEASE_RENEWAL, RENEWAL_BUCKETS)?,
            failsafe: gauge(r, &FAILSAFE)?,
            acknowledgements: counter(r, &ACKNOWLEDGEMENTS)?,
        })
    }

    /// Also starts the AG's counters at 0 (manage mode reports whether it leads after every
    /// event, from its first on).
    pub fn set_leader(&self, ag: &str, held: bool) {
        self.leader.with_label_values(&[ag]).set(i64::from(held));
        self.start_counters(ag);
    }

    /// Creates every counter series of `ag` at 0, every label value included. A series that
    /// first appears at 1 has no increase that `increase()`/`rate()` can see, and promotions
    /// and refusals are rare enough that most would be the first of their series: missing
    /// from the dashboard and the alerts. Idempotent: an existing series keeps its value.
    fn start_counters(&self, ag: &str) {
        for cause in PromotionCause::VARIANTS {
            self.promotions.with_label_values(&[ag, cause]);
        }
        for reason in Refusal::VARIANTS {
            self.refused.with_label_values(&[ag, reason]);
        }
        for result in FenceResult::VARIANTS {
            self.fences.with_label_values(&[ag, result]);
        }
        self.key_renewal_failures.with_label_values(&[ag]);
        self.heartbeat_failures.with_label_values(&[ag]);
        self.acknowledgements.with_label_values(&[ag]);
    }

    pub fn count_promotion(&self, ag: &str, cause: &str) {
        self.promotions.with_label_values(&[ag, cause]).inc();
    }

    pub fn count_refusal(&self, ag: &str, reason: &str) {
        self.refused.with_label_values(&[ag, reason]).inc();
    }

    pub fn count_fence(&self, ag: &str, result: FenceResult) {
        self.fences.with_label_values(&[ag, result.into()]).inc();
    }

    pub fn observe_key_renewal(&self, ag: &str, took: Option<Duration>) {
        observe_or_count(&self.key_renewal, &self.key_renewal_failures, ag, took);
    }

    pub fn observe_heartbeat(&self, ag: &str, took: Option<Duration>) {
        observe_or_count(&self.heartbeat, &self.heartbeat_failures, ag, took);
    }

    pub fn observe_write_lease_renewal(&self, ag: &str, took: Duration) {
        self.write_lease_renewal
            .with_label_values(&[ag])
            .observe(took.as_secs_f64());
    }

    /// `term` `None`: the AG has no leader key. Its series goes rather than keeping the last
    /// term, which a dashboard would show as a leader that no longer exists.
    pub fn set_term(&self, ag: &str, term: Option<i64>) {
        match term {
            Some(t) => self.term.with_label_values(&[ag]).set(t),
            // An error only says there was no series to remove.
            None => {
                let _ = self.term.remove_label_values(&[ag]);
            }
        }
    }

    pub fn set_etcd_lease_alive(&self, ag: &str, alive: bool) {
        self.etcd_lease_alive
            .with_label_values(&[ag])
            .set(i64::from(alive));
    }

    pub fn set_failsafe(&self, ag: &str, on: bool) {
        self.failsafe.with_label_values(&[ag]).set(i64::from(on));
    }

    pub fn count_acknowledgement(&self, ag: &str) {
        self.acknowledgements.with_label_values(&[ag]).inc();
    }
}

#[cfg(test)]
mod tests {
    use crate::controller::promotion::{PromotionCause, Refusal};
    use crate::metrics::AgentMetrics;

    const MANAGE_METRICS: [&str; 13] = super::ManageMetrics::NAMES;

    /// The sample lines (not `# HELP`/`# TYPE`) of metric `name` in the text format: exactly
    /// that name, or a histogram's series of it (`tdsvip_leader` is not `tdsvip_leader_term`).
    fn samples<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name).is_some_and(|rest| {
                    let rest = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| rest.strip_prefix(s))
                        .unwrap_or(rest);
                    rest.starts_with(['{', ' '])
                })
            })
            .collect()
    }

    #[test]
    fn follow_mode_exports_no_manage_series() {
        let m = AgentMetrics::new().unwrap();
        let text = m.encode().unwrap();
        for name in MANAGE_METRICS {
            assert!(samples(&text, name).is_empty(), "{name} in {text}");
        }
    }

    #[test]
    fn every_manage_metric_is_registered_under_its_name() {
        let m = AgentMetrics::new().unwrap();
        let manage = m.manage();
        manage.set_leader("AG1", true);
        manage.set_term("AG1", Some(7));
        manage.count_promotion("AG1", "leader_lost");
        manage.count_refusal("AG1", "behind_sequence");
        manage.count_fence("AG1", super::FenceResult::Stopped);
        manage.set_etcd_lease_alive("AG1", true);
        manage.observe_key_renewal("AG1", Some(std::time::Duration::from_millis(2)));
        manage.observe_key_renewal("AG1", None);
        manage.observe_write_lease_renewal("AG1", std::time::Duration::from_millis(3));
        manage.observe_heartbeat("AG1", Some(std::time::Duration::from_millis(2)));
        manage.observe_heartbeat("AG1", None);
        manage.set_failsafe("AG1", false);
        manage.count_acknowledgement("AG1");
        let text = m.encode().unwrap();
        for name in MANAGE_METRICS {
            let type_line = format!("# TYPE {name} ");
            assert!(
                text.lines().any(|l| l.starts_with(&type_line)),
                "no {name} in {text}"
            );
            assert!(
                !samples(&text, name).is_empty(),
                "no {name} series in {text}"
            );
        }
    }

    #[test]
    fn the_first_leader_reading_starts_the_ags_counters_at_zero() {
        let m = AgentMetrics::new().unwrap();
        let manage = m.manage();
        manage.set_leader("AG1", false);
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "tdsvip_promotions_total"),
            [
                r#"tdsvip_promotions_total{ag="AG1",cause="leader_lost"} 0"#,
                r#"tdsvip_promotions_total{ag="AG1",cause="primary_down"} 0"#,
                r#"tdsvip_promotions_total{ag="AG1",cause="switchover"} 0"#,
            ],
            "{text}"
        );
        assert_eq!(
            samples(&text, "tdsvip_promotion_refused_total"),
            [
                r#"tdsvip_promotion_refused_total{ag="AG1",reason="behind_sequence"} 0"#,
                r#"tdsvip_promotion_refused_total{ag="AG1",reason="local_unknown"} 0"#,
                r#"tdsvip_promotion_refused_total{ag="AG1",reason="not_secondary"} 0"#,
                r#"tdsvip_promotion_refused_total{ag="AG1",reason="not_synchronized"} 0"#,
                r#"tdsvip_promotion_refused_total{ag="AG1",reason="not_synchronous_commit"} 0"#,
                r#"tdsvip_promotion_refused_total{ag="AG1",reason="too_few_reporters"} 0"#,
            ],
            "{text}"
        );
        assert_eq!(
            samples(&text, "tdsvip_etcd_lease_renewal_failures_total"),
            [r#"tdsvip_etcd_lease_renewal_failures_total{ag="AG1"} 0"#],
            "{text}"
        );
        // Counted since, and read again after the next event: the counts stay.
        manage.count_promotion("AG1", PromotionCause::LeaderLost.name());
        manage.count_refusal("AG1", Refusal::NotSynchronized.reason());
        manage.set_leader("AG1", true);
        let text = m.encode().unwrap();
        let count = |name: &str, labels: &str| {
            samples(&text, name)
                .into_iter()
                .find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")))
                .map(str::to_owned)
        };
        assert_eq!(
            count("tdsvip_promotions_total", r#"ag="AG1",cause="leader_lost""#).as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            count(
                "tdsvip_promotions_total",
                r#"ag="AG1",cause="primary_down""#
            )
            .as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            count(
                "tdsvip_promotion_refused_total",
                r#"ag="AG1",reason="not_synchronized""#
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
        // No histogram series: a renewal time of nothing would be a false observation.
        assert!(
            samples(&text, "tdsvip_etcd_lease_renewal_seconds").is_empty(),
            "{text}"
        );
    }

    #[test]
    fn the_term_is_the_last_read_and_goes_with_the_leader_key() {
        let m = AgentMetrics::new().unwrap();
        let manage = m.manage();
        manage.set_term("AG1", Some(41));
        manage.set_term("AG2", Some(9));
        manage.set_term("AG1", Some(57));
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "tdsvip_leader_term"),
            [
                r#"tdsvip_leader_term{ag="AG1"} 57"#,
                r#"tdsvip_leader_term{ag="AG2"} 9"#
            ],
            "{text}"
        );
        // AG1's key is gone: its series goes (not a stale 57), AG2's stays.
        manage.set_term("AG1", None);
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "tdsvip_leader_term"),
            [r#"tdsvip_leader_term{ag="AG2"} 9"#],
            "{text}"
        );
        // No key read yet and none now: nothing to remove, no panic, no series.
        manage.set_term("AG3", None);
        manage.set_term("AG2", None);
        let text = m.encode().unwrap();
        assert!(samples(&text, "tdsvip_leader_term").is_empty(), "{text}");
        // A new leader key: the series is back with the new term.
        manage.set_term("AG1", Some(80));
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "tdsvip_leader_term"),
            [r#"tdsvip_leader_term{ag="AG1"} 80"#],
            "{text}"
        );
    }

    #[test]
    fn the_etcd_lease_is_alive_or_not_per_ag() {
        let m = AgentMetrics::new().unwrap();
        let manage = m.manage();
        manage.set_etcd_lease_alive("AG1", true);
        manage.set_etcd_lease_alive("AG2", false);
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "tdsvip_etcd_lease_alive"),
            [
                r#"tdsvip_etcd_lease_alive{ag="AG1"} 1"#,
                r#"tdsvip_etcd_lease_alive{ag="AG2"} 0"#
            ],
            "{text}"
        );
        manage.set_etcd_lease_alive("AG1", false);
        manage.set_etcd_lease_alive("AG2", true);
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "tdsvip_etcd_lease_alive"),
            [
                r#"tdsvip_etcd_lease_alive{ag="AG1"} 0"#,
                r#"tdsvip_etcd_lease_alive{ag="AG2"} 1"#
            ],
            "{text}"
        );
    }
}
