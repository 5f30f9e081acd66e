//! Manage mode's metrics (`driver/manage/`): the election, promotions and the two leases the
//! leader keeps alive (its etcd lease, SQL Server's write lease). A module of their own because
//! they are one subsystem's contract (README "Manage mode"), registered with the rest by
//! [`super::AgentMetrics::new`] and handed to the manage tasks as one cloneable value.

use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use super::{Def, counter, gauge, histogram};

const LEADER: Def = Def {
    name: "tdsvip_leader",
    help: "Manage mode: 1 while this agent holds the AG's leader key in etcd, else 0.",
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
const WRITE_LEASE_RENEWAL: Def = Def {
    name: "tdsvip_write_lease_renewal_seconds",
    help: "Manage mode: time of each WRITE_LEASE_VALIDITY renewal the leader sent, answered or not.",
    labels: &["ag"],
};

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
    promotions: IntCounterVec,
    refused: IntCounterVec,
    key_renewal: HistogramVec,
    key_renewal_failures: IntCounterVec,
    write_lease_renewal: HistogramVec,
}

impl ManageMetrics {
    pub(super) fn new(r: &Registry) -> Result<ManageMetrics, prometheus::Error> {
        Ok(ManageMetrics {
            leader: gauge(r, &LEADER)?,
            promotions: counter(r, &PROMOTIONS)?,
            refused: counter(r, &PROMOTION_REFUSED)?,
            key_renewal: histogram(r, &KEY_RENEWAL, RENEWAL_BUCKETS)?,
            key_renewal_failures: counter(r, &KEY_RENEWAL_FAILURES)?,
            write_lease_renewal: histogram(r, &WRITE_LEASE_RENEWAL, RENEWAL_BUCKETS)?,
        })
    }

    pub fn set_leader(&self, ag: &str, held: bool) {
        self.leader.with_label_values(&[ag]).set(i64::from(held));
    }

    pub fn count_promotion(&self, ag: &str, cause: &str) {
        self.promotions.with_label_values(&[ag, cause]).inc();
    }

    pub fn count_refusal(&self, ag: &str, reason: &str) {
        self.refused.with_label_values(&[ag, reason]).inc();
    }

    pub fn observe_key_renewal(&self, ag: &str, took: Option<Duration>) {
        match took {
            Some(t) => self
                .key_renewal
                .with_label_values(&[ag])
                .observe(t.as_secs_f64()),
            None => self.key_renewal_failures.with_label_values(&[ag]).inc(),
        }
    }

    pub fn observe_write_lease_renewal(&self, ag: &str, took: Duration) {
        self.write_lease_renewal
            .with_label_values(&[ag])
            .observe(took.as_secs_f64());
    }
}
