//! The router's snapshot as the wire type: instants become ages (measured when the
//! document is written) or seconds from a timeline's start, so that no clock of this
//! machine is ever compared with another's.

use std::time::Instant;

use serde_json::Map;

use super::wire::{
    AgDocument, ClusterDocument, LossAges, MemberDocument, OverlayLoginDocument, PeerEntry,
    PhasesDocument, ProbeDocument, PromotionDocument, StatusDocument, StepDocument,
    TimelineDocument,
};
use super::{AgStatus, AgentStatus, OverlayRun, PeerStatus, ProbeSummary};
use crate::controller::promotion::{ClusterView, PromotionSteps, VacancySign};
use crate::controller::{FailoverTimeline, PrimaryLoss, TimedStep};

fn age_ms(at: Instant) -> f64 {
    at.elapsed().as_secs_f64() * 1000.0
}

impl AgentStatus {
    /// `GET /status`, with ages as of now.
    pub fn document(&self) -> StatusDocument {
        StatusDocument {
            node: self.node.clone(),
            version: self.version.to_owned(),
            ags: self
                .ags
                .iter()
                .map(|(name, ag)| (name.clone(), ag.document()))
                .collect(),
            peers: self
                .peers
                .iter()
                .map(|(name, p)| (name.clone(), p.document()))
                .collect(),
            other: Map::new(),
        }
    }
}

impl AgStatus {
    fn document(&self) -> AgDocument {
        AgDocument {
            state: self.state.to_string(),
            overlay_ips: self.overlay_ips.clone(),
            owned_addresses: self.owned_addresses.clone(),
            last_local_probe: self.last_local_probe.as_ref().map(ProbeSummary::document),
            replica_role: self.replica_role.clone(),
            route_tables: self.route_tables.clone(),
            last_timeline: self.last_timeline.as_ref().map(TimelineDocument::from),
            primary_loss: self.primary_loss.map(loss_ages),
            tracked_connections: self.tracked_connections.clone(),
            conflicts: self.conflicts,
            peers_primary: self.peers_primary.clone(),
            overlay_login: self.overlay_login.as_ref().map(OverlayRun::document),
            cluster: self.cluster.as_ref().map(cluster_document),
            other: Map::new(),
        }
    }
}

fn cluster_document(c: &ClusterView) -> ClusterDocument {
    let now = Instant::now();
    ClusterDocument {
        leader: c.leader.as_ref().map(|k| k.holder.clone()),
        term: c.leader.as_ref().map(|k| k.token),
        leading: c.leading,
        etcd_lease_alive: c.lease_alive,
        promotion_refused: c.refusal.as_ref().map(ToString::to_string),
        candidates_wait_ms: c
            .candidates_wait_until
            .map(|t| t.saturating_duration_since(now).as_secs_f64() * 1000.0),
        failsafe: c.failsafe,
        acknowledged_hold_ms: c
            .acknowledged_until
            .map(|t| t.saturating_duration_since(now).as_secs_f64() * 1000.0),
        required_synchronized: c.commit_rule.map(|(r, _)| r.required),
        required_synchronized_wanted: c.commit_rule.map(|(_, wanted)| wanted),
        members: c
            .members
            .iter()
            .map(|m| MemberDocument {
                node: m.node.clone(),
                role: <&str>::from(m.role).to_owned(),
                commit_mode: <&str>::from(m.commit_mode).to_owned(),
                sequence_number: m.sequence_number,
                synchronized: m.synchronized,
                other: Map::new(),
            })
            .collect(),
        other: Map::new(),
    }
}

impl OverlayRun {
    fn document(&self) -> OverlayLoginDocument {
        OverlayLoginDocument {
            target: Some(self.target),
            server: self.server.clone(),
            since_age_ms: age_ms(self.since),
            other: Map::new(),
        }
    }
}

fn loss_ages(loss: PrimaryLoss) -> LossAges {
    LossAges {
        first_failure_age_ms: age_ms(loss.first_failure),
        detected_age_ms: loss.detected.map(age_ms),
        other: Map::new(),
    }
}

impl ProbeSummary {
    fn document(&self) -> ProbeDocument {
        ProbeDocument {
            target: Some(self.target),
            mode: self.mode.to_owned(),
            outcome: self.outcome.to_owned(),
            detail: self.detail.clone(),
            latency_seconds: self.latency_seconds,
            role: self.role.clone(),
            started_unix: self.started_unix,
            age_ms: Some(age_ms(self.started)),
            other: Map::new(),
        }
    }
}

impl PeerStatus {
    fn document(&self) -> PeerEntry {
        PeerEntry {
            url: self.url.clone(),
            checked_unix: self.checked_unix,
            view: self.view.clone(),
            error: self.error.clone(),
            other: Map::new(),
        }
    }
}

fn steps(list: &[TimedStep], origin: Instant) -> Vec<StepDocument> {
    list.iter()
        .map(|s| StepDocument {
            name: s.name.clone(),
            at: Some(s.start.saturating_duration_since(origin).as_secs_f64()),
            duration: Some(s.duration.as_secs_f64()),
            ok: Some(s.ok),
            detail: s.detail.clone(),
            other: Map::new(),
        })
        .collect()
}

impl From<&FailoverTimeline> for TimelineDocument {
    fn from(t: &FailoverTimeline) -> TimelineDocument {
        let origin = t.origin();
        let at = |i: Instant| i.saturating_duration_since(origin).as_secs_f64();
        let opt = |i: Option<Instant>| i.map(at);
        let p = t.phases();
        let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
        TimelineDocument {
            ag: t.ag.clone(),
            direction: t.direction.to_string(),
            reason_label: t.reason_label().to_owned(),
            reason: t.reason.clone(),
            old_primary_failed: opt(t.old_primary_failed),
            old_primary_failed_by: t.old_primary_failed_by.clone(),
            detected: opt(t.detected),
            local_primary_seen: opt(t.local_primary_seen),
            decided: Some(at(t.decided)),
            node_steps: steps(&t.node_steps, origin),
            node_done: opt(t.node_done),
            node_ok: t.node_ok,
            route_tables: steps(&t.route_tables, origin),
            route_tables_done: opt(t.cloud_done),
            first_local_login: opt(t.first_local_login),
            first_client_login: opt(t.first_client_login),
            first_client_login_by: t.first_client_login_by.clone(),
            promotion: t.promotion.as_ref().map(|p| promotion_document(p, origin)),
            unfinished: t.unfinished.iter().map(|s| (*s).to_owned()).collect(),
            phases: PhasesDocument {
                detect: secs(p.detect),
                decide: secs(p.decide),
                address: secs(p.address),
                garp: secs(p.garp),
                ebpf: secs(p.ebpf),
                route_table: secs(p.route_table),
                first_local_login: secs(p.first_local_login),
                first_client_login: secs(p.first_client_login),
                other: Map::new(),
            },
            other: Map::new(),
        }
    }
}

fn promotion_document(p: &PromotionSteps, origin: Instant) -> PromotionDocument {
    let at = |i: Instant| Some(i.saturating_duration_since(origin).as_secs_f64());
    PromotionDocument {
        cause: p.cause.name().to_owned(),
        term: Some(p.term),
        vacancy_seen: p.vacancy.name().to_owned(),
        previous_term: p.vacancy.previous_term(),
        previous_leader: match &p.vacancy {
            VacancySign::Handoff { from, .. } => Some(from.clone()),
            _ => None,
        },
        detected: at(p.detected),
        elected: at(p.elected),
        failover_sent: at(p.failover_sent),
        failover_answered: at(p.failover_answered),
        other: Map::new(),
    }
}
