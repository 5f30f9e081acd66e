//! The periodic check of what the executors left: the node's addresses and eBPF guard (and
//! the guard's packet counters, for the metrics), and, while owning with `[cloud]`, where the
//! route tables point. What differs becomes drift for the controller, which repairs it.

use tdsvip_cloud::{ClaimReport, CloudExecutor, ObserveReport, RouteState};
use tdsvip_node::NodeTakeover;
use tdsvip_node::address::AddressPresence;
use tdsvip_node::executor::Verification;

use super::Input;
use super::router::EventRouter;
use crate::controller::{Drift, DriftKind, Event, OwnershipState};
use crate::metrics::PacketVerdict;
use crate::status::RouteOwner;

/// Where each route table points, as `/status` shows it.
fn route_owners(tables: impl Iterator<Item = (String, Option<RouteState>)>) -> Vec<RouteOwner> {
    tables
        .map(|(id, state)| {
            let target = match &state {
                Some(RouteState::ThisEni) => Some("this node".to_owned()),
                Some(RouteState::OtherEni { eni, .. }) => Some(eni.clone()),
                Some(RouteState::Blackhole { target } | RouteState::OtherTarget { target }) => {
                    Some(target.clone())
                }
                Some(RouteState::Missing) | None => None,
            };
            RouteOwner {
                route_table: id,
                target,
                this_node: state == Some(RouteState::ThisEni),
                ..RouteOwner::default()
            }
        })
        .collect()
}

/// What a node verification found not as the last call left it.
fn node_drift(v: &Verification) -> Vec<Drift> {
    let addresses = v
        .addresses
        .iter()
        .filter(|(_, presence)| *presence != AddressPresence::AsConfigured)
        .map(|(ip, presence)| Drift {
            kind: DriftKind::Address,
            detail: format!("address {ip}: {presence:?}"),
        });
    let guard = v
        .guard
        .iter()
        .filter(|(_, guard)| *guard == Some(false))
        .map(|(ip, _)| Drift {
            kind: DriftKind::Ebpf,
            detail: format!("eBPF guard fences {ip}"),
        });
    addresses.chain(guard).collect()
}

impl<N: NodeTakeover, C: CloudExecutor + 'static> EventRouter<N, C> {
    pub(super) async fn reconcile(&mut self) {
        for i in 0..self.ags.len() {
            self.observe_cloud(i);
            self.export_counters(i);
            let rt = &mut self.ags[i];
            let ag = rt.controller.ag().to_owned();
            let drift = match rt.node.verify().await {
                Ok(v) => node_drift(&v),
                Err(e) => {
                    tracing::warn!(ag, error = %e, "verify failed");
                    continue;
                }
            };
            if !drift.is_empty() && rt.controller.state() == OwnershipState::Owner {
                tracing::warn!(ag, drift = ?drift, "reconcile found drift");
            }
            self.process(i, Event::Reconcile { drift }).await;
        }
    }

    /// While owning with `[cloud]`: where the route tables point, in a task whose report
    /// comes back as `Input::Observed`.
    fn observe_cloud(&self, i: usize) {
        let rt = &self.ags[i];
        let Some(exec) = rt.cloud.clone() else { return };
        if rt.controller.state() != OwnershipState::Owner {
            return;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let report = exec.observe().await;
            let _ = tx.send(Input::Observed(i, Box::new(report))).await;
        });
    }

    fn export_counters(&self, i: usize) {
        let rt = &self.ags[i];
        for ip in &rt.addresses {
            if let Ok(c) = rt.node.counters(*ip) {
                let m = &self.metrics;
                m.set_overlay_packets(*ip, PacketVerdict::Pass, c.passed_packets);
                m.set_overlay_packets(*ip, PacketVerdict::Drop, c.dropped_packets);
            }
        }
    }

    pub(super) fn on_claim_report(&mut self, i: usize, report: &ClaimReport) {
        let ag = self.ags[i].controller.ag().to_owned();
        for t in &report.tables {
            self.metrics.record_cloud_calls(&t.outcome.calls);
            tracing::info!(ag, table = %t.id, ms = tdsvip_cloud::report::millis(t.outcome.elapsed), attempts = t.outcome.attempts, points_here = t.points_here(), error = ?t.outcome.error, "route table claim");
        }
        let owners = route_owners(
            report
                .tables
                .iter()
                .map(|t| (t.id.clone(), t.after.clone())),
        );
        self.status.update_ag(&ag, |a| a.route_tables = owners);
    }

    pub(super) async fn on_observed(&mut self, i: usize, report: ObserveReport) {
        let ag = self.ags[i].controller.ag().to_owned();
        let mut drift = Vec::new();
        for t in &report.tables {
            self.metrics.record_cloud_calls(&t.outcome.calls);
            if t.state.is_some() && !t.points_here() {
                drift.push(Drift {
                    kind: DriftKind::RouteTable,
                    detail: format!("{} points to {:?}", t.id, t.state),
                });
            }
        }
        let owners = route_owners(
            report
                .tables
                .iter()
                .map(|t| (t.id.clone(), t.state.clone())),
        );
        self.status.update_ag(&ag, |a| a.route_tables = owners);
        self.process(i, Event::Reconcile { drift }).await;
    }
}
