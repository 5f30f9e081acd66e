//! The agent's Prometheus metrics (DESIGN.md "Interfaces other tools rely on": `tdsvip_`
//! prefix, base units, `_total` counters, one histogram per failover phase), served as text
//! at `GET /metrics`.
//!
//! One [`AgentMetrics`] owns its own `prometheus::Registry` (never the global one, so tests
//! and several agents in one process do not share counters) and exposes one method per kind
//! of event, taking the project's own types, so that the driver calls one method per event
//! and label names and values are decided here, in one place.
//!
//! Some sources only give absolute, cumulative values (the eBPF map's packet counters, the
//! controller's conflict and drift counts). A Prometheus counter must never go down, and
//! those sources restart from zero (an eBPF map recreated after an agent restart), so they
//! go through [`ResetAware`], which turns absolute readings into increments the way
//! Prometheus' own `rate()` treats a counter reset: a reading below the previous one means
//! the source restarted, and all of the new reading is new.
//!
//! Manage mode's metrics (the election, promotions, the leases) are in [`manage`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tdsvip_cloud::report::CallRecord;
use tdsvip_probes::ProbeResult;

use crate::controller::{AgController, DriftKind, FailoverTimeline, ReplicaRole};

mod manage;

pub(crate) use manage::FenceResult;
pub use manage::ManageMetrics;

/// Probe latencies: a TCP connect on a LAN takes ~0.1 ms, a login with TLS tens of ms, and
/// a deadline is at most about a second.
const PROBE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Failover phases: node steps take well under a millisecond, route tables and detection
/// seconds (cloud retries, fall counts), so the buckets span 0.1 ms to a minute.
const PHASE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The `role` label values of `tdsvip_replica_role`; exactly one is 1 per (ag, replica), so
/// a query can tell "not primary" from "no data".
const ROLES: &[&str] = &["primary", "secondary", "resolving", "other", "unknown"];

const DRIFT_KINDS: &[DriftKind] = &[DriftKind::Address, DriftKind::Ebpf, DriftKind::RouteTable];

/// The `role` label of a replica role (`None`: the role is not known).
pub(crate) fn role_label(role: Option<&ReplicaRole>) -> &'static str {
    match role {
        Some(ReplicaRole::Primary) => "primary",
        Some(ReplicaRole::Secondary) => "secondary",
        Some(ReplicaRole::Resolving) => "resolving",
        Some(ReplicaRole::Other(_)) => "other",
        None => "unknown",
    }
}

/// The verdicts the eBPF guard counts packets under (the `verdict` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum PacketVerdict {
    Pass,
    Drop,
}

/// Turns absolute readings of a cumulative source into increments that never go negative.
#[derive(Debug, Default)]
pub(crate) struct ResetAware<K> {
    last: HashMap<K, u64>,
}

impl<K: std::hash::Hash + Eq> ResetAware<K> {
    pub(crate) fn new() -> Self {
        ResetAware {
            last: HashMap::new(),
        }
    }

    /// The increment that `absolute` represents since the previous reading of `key`. The
    /// first reading counts in full: the source started at zero, and so did the counter.
    pub(crate) fn delta(&mut self, key: K, absolute: u64) -> u64 {
        let previous = self.last.insert(key, absolute);
        match previous {
            Some(p) if absolute >= p => absolute - p,
            // Below the previous reading: the source restarted from zero in between.
            _ => absolute,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics registry: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics text is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

pub struct AgentMetrics {
    registry: Registry,
    probe_duration: HistogramVec,
    probe_failures: IntCounterVec,
    replica_role: IntGaugeVec,
    owner: IntGaugeVec,
    phase_duration: HistogramVec,
    failovers: IntCounterVec,
    route_table_calls: IntCounterVec,
    conflicts: IntCounterVec,
    drift_repairs: IntCounterVec,
    overlay_packets: IntCounterVec,
    config_reloads: IntCounterVec,
    manage: ManageMetrics,
    packets_seen: Mutex<ResetAware<(IpAddr, PacketVerdict)>>,
    conflicts_seen: Mutex<ResetAware<String>>,
    drift_seen: Mutex<ResetAware<(String, DriftKind)>>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

/// One metric's name, help text and label names. The constants below (and manage mode's in
/// `manage.rs`) are the metrics' contract with dashboards and alerts (dashboards/), listed in
/// one place per subsystem.
struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const BUILD_INFO: Def = Def {
    name: "tdsvip_build_info",
    help: "Always 1; the version label names the running agent's version.",
    labels: &["version"],
};
const PROBE_DURATION: Def = Def {
    name: "tdsvip_probe_duration_seconds",
    help: "Time from the start of a probe to its outcome, successful or not.",
    labels: &["target", "mode"],
};
const PROBE_FAILURES: Def = Def {
    name: "tdsvip_probe_failures_total",
    help: "Probes whose outcome was not ok, by outcome class.",
    labels: &["target", "mode", "outcome"],
};
const REPLICA_ROLE: Def = Def {
    name: "tdsvip_replica_role",
    help: "1 for the role a replica was last seen in, 0 for the other roles.",
    labels: &["ag", "replica", "role"],
};
const OWNER: Def = Def {
    name: "tdsvip_owner",
    help: "1 while this node holds the overlay address, else 0.",
    labels: &["ag", "address"],
};
const PHASE_DURATION: Def = Def {
    name: "tdsvip_failover_phase_duration_seconds",
    help: "Duration of each phase of an ownership change.",
    labels: &["phase"],
};
const FAILOVERS: Def = Def {
    name: "tdsvip_failovers_total",
    help: "Completed ownership changes of this node.",
    labels: &["ag", "direction", "reason"],
};
const ROUTE_TABLE_CALLS: Def = Def {
    name: "tdsvip_route_table_calls_total",
    help: "EC2 calls made for route tables or secondary IPs, by final result.",
    labels: &["operation", "result"],
};
const CONFLICTS: Def = Def {
    name: "tdsvip_conflicts_total",
    help: "Times another replica reported PRIMARY while this node would acquire or owned.",
    labels: &["ag"],
};
const DRIFT_REPAIRS: Def = Def {
    name: "tdsvip_drift_repairs_total",
    help: "Drift found and repaired by the owner's reconcile loop, by kind.",
    labels: &["kind"],
};
const OVERLAY_PACKETS: Def = Def {
    name: "tdsvip_overlay_packets_total",
    help: "Packets to an overlay address seen by the eBPF guard, by verdict.",
    labels: &["address", "verdict"],
};
const CONFIG_RELOADS: Def = Def {
    name: "tdsvip_config_reloads_total",
    help: "SIGHUP reloads of the configuration file, by result (applied or refused).",
    labels: &["result"],
};

fn counter(registry: &Registry, def: &Def) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(def.name, def.help), def.labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, def: &Def) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(def.name, def.help), def.labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    registry: &Registry,
    def: &Def,
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let h = HistogramVec::new(
        HistogramOpts::new(def.name, def.help).buckets(buckets.to_vec()),
        def.labels,
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

/// A poisoned lock only means another thread panicked mid-update of a delta table; its
/// contents are still a valid table, and metrics must not take the agent down.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AgentMetrics {
    /// Registers every metric; `tdsvip_build_info{version}` is set to 1 at once.
    pub fn new() -> Result<AgentMetrics, MetricsError> {
        let r = Registry::new();
        gauge(&r, &BUILD_INFO)?
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(AgentMetrics {
            probe_duration: histogram(&r, &PROBE_DURATION, PROBE_BUCKETS)?,
            probe_failures: counter(&r, &PROBE_FAILURES)?,
            replica_role: gauge(&r, &REPLICA_ROLE)?,
            owner: gauge(&r, &OWNER)?,
            phase_duration: histogram(&r, &PHASE_DURATION, PHASE_BUCKETS)?,
            failovers: counter(&r, &FAILOVERS)?,
            route_table_calls: counter(&r, &ROUTE_TABLE_CALLS)?,
            conflicts: counter(&r, &CONFLICTS)?,
            drift_repairs: counter(&r, &DRIFT_REPAIRS)?,
            overlay_packets: counter(&r, &OVERLAY_PACKETS)?,
            config_reloads: counter(&r, &CONFIG_RELOADS)?,
            manage: ManageMetrics::new(&r)?,
            registry: r,
            packets_seen: Mutex::new(ResetAware::new()),
            conflicts_seen: Mutex::new(ResetAware::new()),
            drift_seen: Mutex::new(ResetAware::new()),
        })
    }

    /// Manage mode's metrics, for the manage tasks.
    pub fn manage(&self) -> ManageMetrics {
        self.manage.clone()
    }

    /// One SIGHUP reload: applied, or refused with the running config kept.
    pub fn count_reload(&self, applied: bool) {
        self.config_reloads
            .with_label_values(&[if applied { "applied" } else { "refused" }])
            .inc();
    }

    pub fn observe_probe(&self, result: &ProbeResult) {
        let target = result.target.to_string();
        let mode = result.mode.name();
        self.probe_duration
            .with_label_values(&[target.as_str(), mode])
            .observe(result.latency.as_secs_f64());
        if !result.outcome.is_ok() {
            self.probe_failures
                .with_label_values(&[target.as_str(), mode, result.outcome.name()])
                .inc();
        }
    }

    /// A completed timeline: one failover counted, and every known phase observed.
    pub fn record_timeline(&self, timeline: &FailoverTimeline) {
        self.failovers
            .with_label_values(&[
                timeline.ag.as_str(),
                timeline.direction.into(),
                timeline.reason_label(),
            ])
            .inc();
        for (phase, duration) in timeline.phases().known() {
            self.phase_duration
                .with_label_values(&[phase])
                .observe(duration.as_secs_f64());
        }
    }

    /// The EC2 calls of one claim or observation.
    pub fn record_cloud_calls(&self, calls: &[CallRecord]) {
        for call in calls {
            self.route_table_calls
                .with_label_values(&[<&str>::from(call.operation), call.result.into()])
                .inc();
        }
    }

    pub fn set_owner(&self, ag: &str, address: IpAddr, owned: bool) {
        self.owner
            .with_label_values(&[ag, &address.to_string()])
            .set(i64::from(owned));
    }

    /// `role` `None`: the replica's role is not known (its probe fails).
    pub fn set_role(&self, ag: &str, replica: &str, role: Option<&ReplicaRole>) {
        let current = role_label(role);
        for r in ROLES {
            self.replica_role
                .with_label_values(&[ag, replica, r])
                .set(i64::from(*r == current));
        }
    }

    /// Absolute packet counts of one address and verdict, read from the eBPF map.
    pub fn set_overlay_packets(&self, address: IpAddr, verdict: PacketVerdict, absolute: u64) {
        let delta = lock(&self.packets_seen).delta((address, verdict), absolute);
        self.overlay_packets
            .with_label_values(&[address.to_string().as_str(), verdict.into()])
            .inc_by(delta);
    }

    /// The controller's cumulative conflict and drift-repair counts, turned into counter
    /// increments (a controller rebuilt on a config reload starts from zero again).
    pub fn observe_controller(&self, controller: &AgController) {
        let ag = controller.ag();
        let delta = lock(&self.conflicts_seen).delta(ag.to_owned(), controller.conflicts());
        self.conflicts.with_label_values(&[ag]).inc_by(delta);
        for &kind in DRIFT_KINDS {
            let delta =
                lock(&self.drift_seen).delta((ag.to_owned(), kind), controller.drift_repairs(kind));
            self.drift_repairs
                .with_label_values(&[<&str>::from(kind)])
                .inc_by(delta);
        }
    }

    /// Everything registered, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_aware_never_decreases_and_counts_after_a_restart() {
        let m = AgentMetrics::new().unwrap();
        let addr: IpAddr = "10.9.0.10".parse().unwrap();
        let value = || {
            m.overlay_packets
                .with_label_values(&["10.9.0.10", "pass"])
                .get()
        };
        m.set_overlay_packets(addr, PacketVerdict::Pass, 100);
        assert_eq!(value(), 100);
        m.set_overlay_packets(addr, PacketVerdict::Pass, 150);
        assert_eq!(value(), 150);
        m.set_overlay_packets(addr, PacketVerdict::Pass, 150);
        assert_eq!(value(), 150);
        // The map was recreated (agent restart): 7 packets since, not -143.
        m.set_overlay_packets(addr, PacketVerdict::Pass, 7);
        assert_eq!(value(), 157);
        m.set_overlay_packets(addr, PacketVerdict::Pass, 10);
        assert_eq!(value(), 160);
        // Another verdict of the same address is a separate series.
        m.set_overlay_packets(addr, PacketVerdict::Drop, 3);
        assert_eq!(value(), 160);
        assert_eq!(
            m.overlay_packets
                .with_label_values(&["10.9.0.10", "drop"])
                .get(),
            3
        );
    }

    #[test]
    fn reset_aware_deltas() {
        let mut r = ResetAware::new();
        assert_eq!(r.delta("a", 5), 5);
        assert_eq!(r.delta("a", 5), 0);
        assert_eq!(r.delta("a", 9), 4);
        assert_eq!(r.delta("a", 0), 0);
        assert_eq!(r.delta("a", 2), 2);
        assert_eq!(r.delta("b", 1), 1);
    }

    #[test]
    fn exactly_one_role_is_set() {
        let m = AgentMetrics::new().unwrap();
        m.set_role("ag1", "sql1", Some(&ReplicaRole::Primary));
        m.set_role("ag1", "sql1", Some(&ReplicaRole::Secondary));
        let get = |r: &str| m.replica_role.with_label_values(&["ag1", "sql1", r]).get();
        assert_eq!(get("secondary"), 1);
        assert_eq!(get("primary"), 0);
        assert_eq!(ROLES.iter().map(|r| get(r)).sum::<i64>(), 1);
        m.set_role("ag1", "sql1", None);
        assert_eq!(get("unknown"), 1);
        assert_eq!(get("secondary"), 0);
    }
}
