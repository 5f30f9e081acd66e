//! The router's side of peers: reading each `[[peer]]`'s `/status` and probing its replica
//! (both become `Event::Peer` reports; a status also says whether the peer's logins through
//! the overlay IP reach this node, for `first_client_login`), the clients this node publishes for the next owner,
//! and peers added or removed by a reload. The handover question is in `handover.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tdsvip_cloud::CloudExecutor;
use tdsvip_node::{Connection, NodeTakeover};
use tdsvip_probes::{Outcome, ProbeResult};

use super::router::EventRouter;
use super::verdict::classify;
use super::{DriverError, cfg_err};
use crate::config::AgentConfig;
use crate::controller::{
    Event, OverlayLogins, PeerReport, PeerView, PrimaryLoss, ReplicaHealth, ReplicaRole,
};
use crate::http::client::{Target, parse_url};
use crate::peer_status::{PeerAgView, Unreadable, parse_status};
use crate::status::PeerStatus;

/// One `[[peer]]` as the loop holds it.
pub(super) struct PeerRuntime {
    pub(super) name: String,
    pub(super) url: Target,
    /// Per AG: when the peer last listed its clients, and the list.
    pub(super) connections: BTreeMap<String, (Instant, Vec<Connection>)>,
    /// Per AG: when the peer last answered, and whether it held the addresses then.
    pub(super) holds: BTreeMap<String, (Instant, bool)>,
    /// Why the last read failed (`None`: it worked), so that only changes are logged.
    pub(super) last_error: Option<String>,
    /// Since when the peer's node has been answering while its agent does not (see
    /// `peer_status::Unreadable`): it may hold the addresses until its kernel lease runs out.
    pub(super) silent_since: Option<Instant>,
}

impl PeerRuntime {
    /// Keeps `silent_since` from a read at `at`: cleared by a status, or by a node that
    /// did not answer at all (`node_answered == Some(false)`: gone, not silent); else the
    /// first such read is kept.
    fn note_silence(&mut self, at: Instant, read: bool, node_answered: Option<bool>) {
        self.silent_since = match (read, node_answered) {
            (true, _) | (false, Some(false)) => None,
            _ => Some(self.silent_since.unwrap_or(at)),
        };
    }
}

/// What this node's probes of a peer replica's TDS endpoint say, per (peer, AG).
pub(super) struct PeerReplicaWatch {
    pub(super) health: ReplicaHealth,
    pub(super) role: Option<ReplicaRole>,
}

pub(super) fn replica_watches(
    peers: &[PeerRuntime],
    config: &AgentConfig,
) -> BTreeMap<(String, usize), PeerReplicaWatch> {
    peers
        .iter()
        .flat_map(|p| (0..config.ags.len()).map(move |i| (p.name.clone(), i)))
        .map(|key| {
            (
                key,
                PeerReplicaWatch {
                    health: ReplicaHealth::new(config.probe.rise, config.probe.fall),
                    role: None,
                },
            )
        })
        .collect()
}

/// The peer-role part of a probe of a peer replica: what SQL Server answered, if it did.
pub(super) fn role_of(result: &ProbeResult) -> Option<ReplicaRole> {
    match &result.outcome {
        Outcome::Ok => Some(ReplicaRole::Primary),
        Outcome::NotPrimary { .. } | Outcome::DbNotOnline { .. } => result
            .server
            .role
            .as_deref()
            .map(ReplicaRole::from_role_desc),
        _ => None,
    }
}

impl<N: NodeTakeover, C: CloudExecutor + 'static> EventRouter<N, C> {
    /// A read of peer `p`'s `/status`: kept for our `/status`, and, per AG, a report for the
    /// controller and the peer's client list for the next acquire.
    pub(super) async fn on_peer_status(
        &mut self,
        name: &str,
        at: Instant,
        answer: Result<serde_json::Value, Unreadable>,
    ) {
        let Some(p) = self.peers.iter().position(|peer| peer.name == name) else {
            return;
        };
        let name = name.to_owned();
        let checked_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let node_answered = answer.as_ref().err().map(|u| u.node_answered);
        let parsed = answer.map_err(|u| u.text).and_then(|v| parse_status(&v));
        self.peers[p].note_silence(at, parsed.is_ok(), node_answered);
        let (summary, error) = match &parsed {
            Ok(doc) => (Some(doc.summary.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        if std::mem::replace(&mut self.peers[p].last_error, error.clone()) != error {
            match &error {
                Some(e) => {
                    tracing::warn!(peer = %name, error = %e, "peer /status unreadable (ownership does not depend on it)")
                }
                None => tracing::info!(peer = %name, "peer /status readable"),
            }
        }
        self.status.update(|s| {
            if let Some(entry) = s.peers.get_mut(&name) {
                entry.checked_unix = Some(checked_unix);
                entry.error = error;
                if summary.is_some() {
                    entry.view = summary;
                }
            }
        });
        for i in 0..self.ags.len() {
            let ag = self.ags[i].controller.ag().to_owned();
            let view = match &parsed {
                Ok(doc) => doc.ags.get(&ag),
                Err(_) => None,
            };
            let report = match view {
                None => PeerReport {
                    peer: name.clone(),
                    at,
                    view: None,
                },
                Some(v) => self.peer_report(p, i, at, v),
            };
            self.process(i, Event::Peer(report)).await;
        }
    }

    /// What peer `p`'s readable entry for AG `i`, answered at `at`, tells the controller (its
    /// ages put on this node's clock); its clients and holding are kept for the handover.
    fn peer_report(&mut self, p: usize, i: usize, at: Instant, v: &PeerAgView) -> PeerReport {
        let ag = self.ags[i].controller.ag().to_owned();
        let peer = &mut self.peers[p];
        peer.holds.insert(ag.clone(), (at, v.owned));
        if !v.connections.is_empty() || v.owned {
            peer.connections.insert(ag, (at, v.connections.clone()));
        }
        let before = |age: Duration| at.checked_sub(age).unwrap_or(at);
        let (role, seen) = match &v.role {
            Some((role, age)) => (Some(role.clone()), before(*age)),
            None => (None, at),
        };
        let primary_lost = v.loss.map(|(first, detected)| PrimaryLoss {
            first_failure: before(first),
            detected: detected.map(before),
        });
        // Answered by this node's replica: the run reached this node across the network.
        let mine = self.ags[i].server_name.as_deref();
        let answered_here_since = v
            .overlay_login
            .as_ref()
            .filter(|(server, _)| mine.is_some_and(|m| m.eq_ignore_ascii_case(server)))
            .map(|(_, age)| before(*age));
        PeerReport {
            peer: peer.name.clone(),
            at: seen,
            view: Some(PeerView {
                role,
                primary_lost,
                overlay_logins: Some(OverlayLogins {
                    answered_here_since,
                }),
            }),
        }
    }

    /// A probe of peer `p`'s replica for AG `i`: its role (for conflicts) and, when it was
    /// PRIMARY and fails, the loss as this node saw it. Only news reaches the controller.
    pub(super) async fn on_peer_probe(&mut self, name: &str, i: usize, result: ProbeResult) {
        let now = Instant::now();
        let role = role_of(&result);
        let Some(watch) = self.replica_watch.get_mut(&(name.to_owned(), i)) else {
            return;
        };
        let loss_changed = watch
            .health
            .observe(&classify(&result.outcome), result.started, now);
        let role_changed = watch.role != role;
        watch.role = role.clone();
        // A PRIMARY report is renewed every time: its age decides whether it still counts.
        if !(loss_changed || role_changed || role == Some(ReplicaRole::Primary)) {
            return;
        }
        let primary_lost = watch.health.loss(now);
        let report = PeerReport {
            peer: format!("{name} (tds)"),
            at: result.started,
            view: Some(PeerView {
                role,
                primary_lost,
                overlay_logins: None,
            }),
        };
        self.process(i, Event::Peer(report)).await;
    }

    /// While owning: the clients `conn_track` sees, for peers to tickle after a takeover.
    pub(super) fn publish_connections(&mut self) {
        for rt in &self.ags {
            let list: Vec<Connection> = if rt.owned {
                match rt.node.tracked_connections() {
                    Ok(all) => all
                        .into_iter()
                        .filter(|c| rt.addresses.contains(&c.server.ip()))
                        .collect(),
                    Err(_) => Vec::new(),
                }
            } else {
                Vec::new()
            };
            self.status.update_ag(rt.controller.ag(), |a| {
                if a.tracked_connections != list {
                    a.tracked_connections = list;
                }
            });
        }
    }

    /// Reload: the peers of `config`; a peer that stays keeps the clients it listed. Returns
    /// the names of the peers that are gone.
    pub(super) fn reload_peers(
        &mut self,
        config: &AgentConfig,
    ) -> Result<Vec<String>, DriverError> {
        let mut old: BTreeMap<String, PeerRuntime> =
            self.peers.drain(..).map(|p| (p.name.clone(), p)).collect();
        let mut peers = Vec::new();
        for (i, p) in config.peers.iter().enumerate() {
            let url = parse_url(&p.status_url)
                .map_err(|e| cfg_err(format!("peer[{i}].status_url"), e))?;
            let (connections, holds, last_error, silent_since) = old
                .remove(&p.name)
                .map(|o| (o.connections, o.holds, o.last_error, o.silent_since))
                .unwrap_or_default();
            peers.push(PeerRuntime {
                name: p.name.clone(),
                url,
                connections,
                holds,
                last_error,
                silent_since,
            });
        }
        self.replica_watch = replica_watches(&peers, config);
        self.peers = peers;
        self.peer_poll = config.peer_poll.clone();
        self.status.update(|s| {
            s.peers
                .retain(|name, _| config.peers.iter().any(|p| &p.name == name));
            for p in &config.peers {
                let entry = s
                    .peers
                    .entry(p.name.clone())
                    .or_insert_with(|| PeerStatus::new(&p.status_url));
                entry.url = p.status_url.clone();
            }
        });
        Ok(old.into_keys().collect())
    }

    /// Peers removed by a reload must not keep blocking or stamping anything.
    pub(super) async fn forget_peers(&mut self, names: Vec<String>) {
        for name in names {
            for i in 0..self.ags.len() {
                for peer in [name.clone(), format!("{name} (tds)")] {
                    let report = PeerReport {
                        peer,
                        at: Instant::now(),
                        view: None,
                    };
                    self.process(i, Event::Peer(report)).await;
                }
            }
        }
    }
}
