//! What the agent serves at `GET /status`, `GET /primary` and `GET /events`: a snapshot that
//! the driver updates and the HTTP server only reads.
//!
//! The snapshot lives in a `tokio::sync::watch` channel so that readers never block the
//! driver (a read clones the latest value) and a future reader (peers, `tdsvip status`) can
//! wait for changes. Completed failover timelines go to a bounded ring buffer: `/events`
//! must not grow without bound on a flapping cluster.
//!
//! `/primary` is a load balancer's health probe, so its rule is strict and lives here as a
//! pure function ([`primary_verdict`]) that is tested without sockets: 200 only while this
//! node holds every overlay address of the AG AND its latest local probe said PRIMARY.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tdsvip_node::Connection;
use tdsvip_probes::ProbeResult;
use tokio::sync::watch;

use crate::controller::promotion::ClusterView;
use crate::controller::{FailoverTimeline, OwnershipState, PrimaryLoss};

mod document;
mod wire;

pub use wire::{
    AgDocument, ClusterDocument, LossAges, MemberDocument, OverlayLoginDocument, PeerAgSummary,
    PeerEntry, PeerSummary, PhasesDocument, ProbeDocument, PromotionDocument, RouteOwner,
    StatusDocument, StepDocument, TimelineDocument, status_schema,
};

/// How many completed timelines `/events` keeps unless told otherwise.
pub(crate) const DEFAULT_EVENTS: usize = 32;

/// The latest local probe, reduced to what a person or a peer needs (served as a
/// [`ProbeDocument`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSummary {
    pub target: SocketAddr,
    pub mode: &'static str,
    /// `Outcome::name()`: `ok`, `timeout`, `not_primary`, ...
    pub outcome: &'static str,
    /// The outcome with its details, as logged.
    pub detail: String,
    pub latency_seconds: f64,
    /// `role_desc` the server reported, when the probe got that far.
    pub role: Option<String>,
    /// Wall-clock start, Unix seconds (for display only).
    pub started_unix: f64,
    /// When the probe started (served as `age_ms`).
    pub started: Instant,
}

impl From<&ProbeResult> for ProbeSummary {
    fn from(r: &ProbeResult) -> Self {
        ProbeSummary {
            target: r.target,
            mode: r.mode.name(),
            outcome: r.outcome.name(),
            detail: r.outcome.to_string(),
            latency_seconds: r.latency.as_secs_f64(),
            role: r.server.role.clone(),
            started_unix: r
                .started_wall
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            started: r.started,
        }
    }
}

/// One AG as the router keeps it (served as an [`AgDocument`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AgStatus {
    /// The controller's state name.
    pub state: OwnershipState,
    /// The AG's configured overlay addresses.
    pub overlay_ips: Vec<IpAddr>,
    /// The overlay addresses this node holds right now.
    pub owned_addresses: Vec<IpAddr>,
    /// The latest probe of the local replica in login mode (the only mode that asks for
    /// the role): `/primary` reads it.
    pub last_local_probe: Option<ProbeSummary>,
    /// The local replica's role as last known (`role_desc`).
    pub replica_role: Option<String>,
    pub route_tables: Vec<RouteOwner>,
    pub last_timeline: Option<FailoverTimeline>,
    /// When the local replica, last seen PRIMARY, started failing (served as ages; `null`
    /// when it has not, or long ago): the start of the next owner's failover timeline.
    pub primary_loss: Option<PrimaryLoss>,
    /// The overlay IP's clients that `conn_track` saw while this node owned it: the next
    /// owner tickles them, also when this node is gone.
    pub tracked_connections: Vec<Connection>,
    /// Conflict episodes since start: the local replica and a peer both PRIMARY.
    pub conflicts: u64,
    /// The peers whose latest report counts as PRIMARY right now (a conflict in progress
    /// when the local replica is PRIMARY too).
    pub peers_primary: Vec<String>,
    /// This node's run of answered logins through the overlay IP (served as
    /// `overlay_login`).
    pub overlay_login: Option<OverlayRun>,
    /// Manage mode: the AG's election as the manage task last saw it.
    pub cluster: Option<ClusterView>,
}

/// Who has been answering this node's logins through the overlay IP, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayRun {
    pub target: SocketAddr,
    /// The server that answered, as its health query names it.
    pub server: String,
    /// When the first login of the run completed (served as `since_age_ms`).
    pub since: Instant,
}

impl AgStatus {
    pub fn new(overlay_ips: Vec<IpAddr>) -> AgStatus {
        AgStatus {
            state: OwnershipState::Standby,
            overlay_ips,
            owned_addresses: Vec::new(),
            last_local_probe: None,
            replica_role: None,
            route_tables: Vec::new(),
            last_timeline: None,
            primary_loss: None,
            tracked_connections: Vec::new(),
            conflicts: 0,
            peers_primary: Vec::new(),
            overlay_login: None,
            cluster: None,
        }
    }
}

/// A peer agent as this node last read it (served as a [`PeerEntry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub url: String,
    /// Unix seconds of the last attempt to read it.
    pub checked_unix: Option<f64>,
    /// What its last good answer said (a summary, never its whole document).
    pub view: Option<PeerSummary>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
}

impl PeerStatus {
    /// A peer not read yet.
    pub fn new(url: &str) -> PeerStatus {
        PeerStatus {
            url: url.to_owned(),
            checked_unix: None,
            view: None,
            error: None,
        }
    }
}

/// What the router keeps for `/status`; [`AgentStatus::document`] turns it into the wire
/// type when a request comes (ages are measured then).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    pub node: String,
    pub version: &'static str,
    pub ags: BTreeMap<String, AgStatus>,
    pub peers: BTreeMap<String, PeerStatus>,
}

impl AgentStatus {
    pub fn new(node: &str) -> AgentStatus {
        AgentStatus {
            node: node.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
            ags: BTreeMap::new(),
            peers: BTreeMap::new(),
        }
    }
}

/// Serialized as its wire form, with ages measured now.
impl Serialize for AgentStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.document().serialize(serializer)
    }
}

/// The answer of `/primary` for one AG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryVerdict {
    Primary,
    /// Not primary, with a one-line reason.
    NotPrimary(String),
}

/// The `/primary` rule: every configured overlay address of the AG is held here, and the
/// latest local probe succeeded with the server reporting its replica PRIMARY. A probe that
/// does not ask for the role (tcp, prelogin) never makes this node primary.
pub(crate) fn primary_verdict(ag: &AgStatus) -> PrimaryVerdict {
    use PrimaryVerdict::NotPrimary;
    if ag.overlay_ips.is_empty() {
        return NotPrimary("no overlay address configured".into());
    }
    if let Some(missing) = ag
        .overlay_ips
        .iter()
        .find(|ip| !ag.owned_addresses.contains(ip))
    {
        return NotPrimary(format!("overlay address {missing} not held by this node"));
    }
    let Some(probe) = &ag.last_local_probe else {
        return NotPrimary("no local probe yet".into());
    };
    if probe.outcome != "ok" {
        return NotPrimary(format!("latest local probe: {}", probe.detail));
    }
    match probe.role.as_deref() {
        Some(r) if r.trim().eq_ignore_ascii_case("PRIMARY") => PrimaryVerdict::Primary,
        Some(r) => NotPrimary(format!("latest local probe reports role {r}")),
        None => NotPrimary("latest local probe did not report a role".into()),
    }
}

/// The last N completed timelines, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct EventLog {
    capacity: usize,
    items: VecDeque<FailoverTimeline>,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> EventLog {
        EventLog {
            capacity,
            items: VecDeque::with_capacity(capacity),
        }
    }

    pub(crate) fn push(&mut self, timeline: FailoverTimeline) {
        if self.capacity == 0 {
            return;
        }
        while self.items.len() >= self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(timeline);
    }

    pub(crate) fn to_vec(&self) -> Vec<FailoverTimeline> {
        self.items.iter().cloned().collect()
    }
}

/// The driver's handle on what HTTP serves; cheap to share (`Arc` it).
#[derive(Debug)]
pub struct StatusStore {
    status: watch::Sender<AgentStatus>,
    events: watch::Sender<EventLog>,
}

impl StatusStore {
    pub fn new(status: AgentStatus, events_capacity: usize) -> StatusStore {
        StatusStore {
            status: watch::Sender::new(status),
            events: watch::Sender::new(EventLog::new(events_capacity)),
        }
    }

    /// Changes the snapshot in place; readers see the whole change or none of it.
    pub fn update(&self, f: impl FnOnce(&mut AgentStatus)) {
        self.status.send_modify(f);
    }

    /// Changes one AG's entry, if the AG is known (`false` otherwise).
    pub fn update_ag(&self, ag: &str, f: impl FnOnce(&mut AgStatus)) -> bool {
        self.update_ag_if(ag, |a| {
            f(a);
            true
        })
    }

    /// Lets `f` change one AG's entry and say whether it did: readers are woken only then.
    /// (`false` also when the AG is not known).
    pub fn update_ag_if(&self, ag: &str, f: impl FnOnce(&mut AgStatus) -> bool) -> bool {
        self.status
            .send_if_modified(|s| s.ags.get_mut(ag).is_some_and(f))
    }

    pub fn snapshot(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// For readers that want to wait for the next change.
    pub fn subscribe(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    /// A completed timeline: kept for `/events` and as its AG's `last_timeline`.
    pub fn push_timeline(&self, timeline: FailoverTimeline) {
        let ag = timeline.ag.clone();
        self.update_ag(&ag, |a| a.last_timeline = Some(timeline.clone()));
        self.events.send_modify(|e| e.push(timeline));
    }

    pub fn events(&self) -> Vec<FailoverTimeline> {
        self.events.borrow().to_vec()
    }

    /// `/primary` for `ag`, or for the only AG when `ag` is `None`.
    pub fn primary(&self, ag: Option<&str>) -> Result<PrimaryVerdict, PrimaryQueryError> {
        let s = self.status.borrow();
        let entry = match ag {
            Some(name) => s
                .ags
                .get(name)
                .ok_or_else(|| PrimaryQueryError::UnknownAg(name.to_owned()))?,
            None => {
                let mut all = s.ags.values();
                match (all.next(), all.next()) {
                    (Some(only), None) => only,
                    (None, _) => return Ok(PrimaryVerdict::NotPrimary("no AG configured".into())),
                    (Some(_), Some(_)) => return Err(PrimaryQueryError::Ambiguous),
                }
            }
        };
        Ok(primary_verdict(entry))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrimaryQueryError {
    #[error("unknown AG '{0}'")]
    UnknownAg(String),
    #[error("several AGs are configured: name one with ?ag=NAME")]
    Ambiguous,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use crate::controller::Direction;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn probe(outcome: &'static str, role: Option<&str>) -> ProbeSummary {
        ProbeSummary {
            target: "127.0.0.1:1433".parse().unwrap(),
            mode: "login",
            outcome,
            detail: outcome.to_owned(),
            latency_seconds: 0.001,
            role: role.map(str::to_owned),
            started_unix: 0.0,
            started: Instant::now(),
        }
    }

    fn owning_primary() -> AgStatus {
        let mut a = AgStatus::new(vec![ip("10.9.0.10"), ip("fd00::10")]);
        a.owned_addresses = vec![ip("fd00::10"), ip("10.9.0.10")];
        a.last_local_probe = Some(probe("ok", Some("PRIMARY")));
        a
    }

    #[test]
    fn primary_needs_every_address_and_a_primary_probe() {
        assert_eq!(primary_verdict(&owning_primary()), PrimaryVerdict::Primary);

        let mut a = owning_primary();
        a.owned_addresses.pop();
        assert!(
            matches!(primary_verdict(&a), PrimaryVerdict::NotPrimary(r) if r.contains("10.9.0.10"))
        );

        let mut a = owning_primary();
        a.last_local_probe = None;
        assert!(matches!(primary_verdict(&a), PrimaryVerdict::NotPrimary(_)));

        let mut a = owning_primary();
        a.last_local_probe = Some(probe("not_primary", Some("SECONDARY")));
        assert!(matches!(primary_verdict(&a), PrimaryVerdict::NotPrimary(_)));

        // An ok probe that reports SECONDARY (should not happen) or no role (tcp mode).
        let mut a = owning_primary();
        a.last_local_probe = Some(probe("ok", Some("SECONDARY")));
        assert!(matches!(primary_verdict(&a), PrimaryVerdict::NotPrimary(_)));
        a.last_local_probe = Some(probe("ok", None));
        assert!(matches!(primary_verdict(&a), PrimaryVerdict::NotPrimary(_)));

        let mut a = owning_primary();
        a.overlay_ips.clear();
        assert!(matches!(primary_verdict(&a), PrimaryVerdict::NotPrimary(_)));
    }

    #[test]
    fn primary_picks_the_ag() {
        let mut s = AgentStatus::new("n1");
        s.ags.insert("ag1".into(), owning_primary());
        let store = StatusStore::new(s, 4);
        assert_eq!(store.primary(None), Ok(PrimaryVerdict::Primary));
        assert_eq!(store.primary(Some("ag1")), Ok(PrimaryVerdict::Primary));
        assert_eq!(
            store.primary(Some("nope")),
            Err(PrimaryQueryError::UnknownAg("nope".into()))
        );
        store.update(|s| {
            s.ags
                .insert("ag2".into(), AgStatus::new(vec![ip("10.9.0.11")]));
        });
        assert_eq!(store.primary(None), Err(PrimaryQueryError::Ambiguous));
        assert!(matches!(
            store.primary(Some("ag2")),
            Ok(PrimaryVerdict::NotPrimary(_))
        ));
    }

    #[test]
    fn event_log_keeps_the_newest_n() {
        let mut s = AgentStatus::new("n1");
        s.ags
            .insert("ag1".into(), AgStatus::new(vec![ip("10.9.0.10")]));
        let store = StatusStore::new(s, 3);
        for i in 0..5 {
            let tl = FailoverTimeline::new(
                "ag1",
                Direction::Acquire,
                None,
                &format!("r{i}"),
                Instant::now(),
            );
            store.push_timeline(tl);
        }
        let reasons: Vec<String> = store.events().into_iter().map(|t| t.reason).collect();
        assert_eq!(reasons, ["r2", "r3", "r4"]);
        let last = store.snapshot().ags["ag1"].last_timeline.clone().unwrap();
        assert_eq!(last.reason, "r4");

        let mut none = EventLog::new(0);
        none.push(FailoverTimeline::new(
            "ag1",
            Direction::Release,
            None,
            "x",
            Instant::now(),
        ));
        assert!(none.to_vec().is_empty());
    }
}
