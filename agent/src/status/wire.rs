//! The one wire type of `GET /status` (and of the timelines in `GET /events`): what the
//! server writes, what peer agents read before a handover, and what `tdsvip status` prints.
//! Other people's tools read it too, so its JSON Schema is published
//! (`agent/status.schema.json`, tested against the server's real answer).
//!
//! Times are served as ages (`age_ms`, `*_age_ms`) or as seconds relative to the start of a
//! timeline, never as one machine's clock for another to compare. Every struct keeps the
//! fields it does not know in `other` (flattened), so that an older reader passes a newer
//! agent's fields on instead of dropping them, and every field has a default, so that a
//! newer reader accepts an older agent's document. Field order is the order of the structs
//! (serde_json keeps it: `preserve_order`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tdsvip_node::Connection;

/// `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusDocument {
    /// This node's name (`node` in the config, else the host name).
    pub node: String,
    /// The agent's version.
    #[serde(default)]
    pub version: String,
    /// Per availability group.
    pub ags: BTreeMap<String, AgDocument>,
    /// Per configured peer agent, as this node last read it.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerEntry>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One availability group on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AgDocument {
    /// The controller's state: `standby`, `acquiring`, `owner` or `releasing`.
    pub state: String,
    /// The AG's configured overlay addresses.
    pub overlay_ips: Vec<IpAddr>,
    /// The overlay addresses this node holds right now.
    pub owned_addresses: Vec<IpAddr>,
    /// The latest login probe of the local replica (`null` before the first).
    pub last_local_probe: Option<ProbeDocument>,
    /// The local replica's role as last reported (`role_desc`).
    pub replica_role: Option<String>,
    /// Where each route table points (with `[cloud]`).
    pub route_tables: Vec<RouteOwner>,
    /// The last completed ownership change.
    pub last_timeline: Option<TimelineDocument>,
    /// When the local replica, last seen PRIMARY, started failing: the start of the next
    /// owner's failover timeline (`null` when it has not, or long ago).
    pub primary_loss: Option<LossAges>,
    /// The overlay IP's clients that `conn_track` saw while this node owned it: the next
    /// owner tickles them, also when this node is gone.
    #[schemars(with = "Vec<ConnectionSchema>")]
    pub tracked_connections: Vec<Connection>,
    /// Conflict episodes since start: the local replica and a peer both PRIMARY.
    pub conflicts: u64,
    /// The peers whose latest report counts as PRIMARY right now.
    pub peers_primary: Vec<String>,
    /// This node's logins through the overlay IP, the path a client takes: which server has
    /// been answering them and since when (`null` while they fail). They cross the network
    /// whenever another node holds the address, so the new owner times its
    /// `first_client_login` from its peers' entries.
    pub overlay_login: Option<OverlayLoginDocument>,
    /// Manage mode: the AG's election as this agent sees it (`null` in follow mode).
    pub cluster: Option<ClusterDocument>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `cluster`: who leads the AG's failover in etcd, and what each replica reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ClusterDocument {
    /// The node whose agent holds the AG's leader key (`null`: none, while a failover is
    /// under way or when no replica may be promoted; or etcd was not read yet).
    pub leader: Option<String>,
    /// The leader key's create revision: the term, and the fencing token every action of
    /// the leader is logged with.
    pub term: Option<i64>,
    /// This agent holds the leader key.
    pub leading: bool,
    /// This agent's etcd lease is provably alive (a renewal answered within its TTL).
    pub etcd_lease_alive: bool,
    /// Why the local replica may not be promoted, as reported in the current vacancy.
    pub promotion_refused: Option<String>,
    /// In a vacancy: milliseconds until candidates may campaign (0 once they may).
    pub candidates_wait_ms: Option<f64>,
    /// This agent leads on its peers' acknowledgements alone: etcd does not renew its key
    /// (rule 5, failsafe).
    pub failsafe: bool,
    /// This agent acknowledged another leader whose key etcd did not renew: milliseconds
    /// until it may promote its own replica again (`null`: no such promise).
    pub acknowledged_hold_ms: Option<f64>,
    /// `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT` as the local replica reports it (`null`:
    /// it has not answered).
    pub required_synchronized: Option<u32>,
    /// The value the leader keeps it at: `[cluster]`'s, or Microsoft's for the
    /// `SYNCHRONOUS_COMMIT` replicas the local replica lists.
    pub required_synchronized_wanted: Option<u32>,
    /// Every replica's state as its agent published it in etcd.
    pub members: Vec<MemberDocument>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One replica as its agent published it (`{prefix}/{ag}/members/{node}` in etcd).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct MemberDocument {
    pub node: String,
    /// `primary`, `secondary` or `resolving`.
    pub role: String,
    /// `synchronous`, `asynchronous` or `configuration_only`.
    pub commit_mode: String,
    /// The AG's `sequence_number` as this replica last saw it.
    pub sequence_number: i64,
    /// Its local databases are SYNCHRONIZED.
    pub synchronized: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `overlay_login`: the current run of answered logins through the overlay IP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct OverlayLoginDocument {
    /// The overlay address and port the logins go to.
    pub target: Option<SocketAddr>,
    /// The server that answered them, as its health query names it (`@@SERVERNAME`).
    pub server: String,
    /// How long before the document was written the first login of the run completed, in
    /// milliseconds.
    pub since_age_ms: f64,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A client connection to the overlay IP.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct ConnectionSchema {
    /// The overlay address and port the client connected to.
    server: SocketAddr,
    client: SocketAddr,
}

/// The latest local probe, reduced to what a person or a peer needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ProbeDocument {
    pub target: Option<SocketAddr>,
    /// `tcp`, `prelogin` or `login`.
    pub mode: String,
    /// `ok`, `timeout`, `not_primary`, `db_not_online`, …
    pub outcome: String,
    /// The outcome with its details, as logged.
    pub detail: String,
    pub latency_seconds: f64,
    /// `role_desc` the server reported, when the probe got that far.
    pub role: Option<String>,
    /// Wall-clock start, Unix seconds (for display only).
    pub started_unix: f64,
    /// How long ago the probe started when the document was written, in milliseconds.
    pub age_ms: Option<f64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `primary_loss` as ages in milliseconds when the document was written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LossAges {
    /// The first failed probe of the replica that was PRIMARY.
    pub first_failure_age_ms: f64,
    /// When the failure became a verdict (fall count, or SQL Server said not PRIMARY).
    #[serde(default)]
    pub detected_age_ms: Option<f64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Where one route table sends the overlay address, as the last observation found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RouteOwner {
    pub route_table: String,
    /// The ENI (or other target) the /32 points to; `null`: no route.
    pub target: Option<String>,
    /// Whether that target is this node.
    pub this_node: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A peer agent as this node last read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PeerEntry {
    pub url: String,
    /// Unix seconds of the last attempt to read it.
    pub checked_unix: Option<f64>,
    /// What its last good answer said (a summary, never its whole document: that would
    /// nest peers of peers without end).
    pub view: Option<PeerSummary>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The part of a peer's `/status` this node keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PeerSummary {
    pub node: String,
    pub ags: BTreeMap<String, PeerAgSummary>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PeerAgSummary {
    pub state: String,
    pub replica_role: Option<String>,
    pub owned_addresses: Vec<IpAddr>,
    /// How many clients the peer listed.
    pub tracked_connections: usize,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One ownership change, times in seconds from its earliest event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TimelineDocument {
    pub ag: String,
    /// `acquire` or `release`.
    pub direction: String,
    /// The `reason` label of `tdsvip_failovers_total`.
    pub reason_label: String,
    pub reason: String,
    pub old_primary_failed: Option<f64>,
    /// Who saw that failure: `local` or a peer's name.
    pub old_primary_failed_by: Option<String>,
    pub detected: Option<f64>,
    pub local_primary_seen: Option<f64>,
    pub decided: Option<f64>,
    pub node_steps: Vec<StepDocument>,
    pub node_done: Option<f64>,
    pub node_ok: Option<bool>,
    pub route_tables: Vec<StepDocument>,
    pub route_tables_done: Option<f64>,
    /// This node's own first login through the overlay IP (the local route).
    pub first_local_login: Option<f64>,
    /// The first login through the overlay IP that a peer made across the network and this
    /// node answered.
    pub first_client_login: Option<f64>,
    /// The peer that made it.
    pub first_client_login_by: Option<String>,
    /// Manage mode: this agent's promotion of its replica that the acquire followed (`null`
    /// otherwise). Its steps are detect, elect and failover; re-observe is this timeline's
    /// `local_primary_seen` and acquire its `decided`.
    pub promotion: Option<PromotionDocument>,
    /// What the timeline never got before it was closed.
    pub unfinished: Vec<String>,
    /// Per phase, seconds (`tdsvip_failover_phase_duration_seconds{phase}`).
    pub phases: PhasesDocument,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `promotion` of a timeline: the steps of this agent's promotion of its replica, in
/// seconds from the timeline's start, in the order they happen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PromotionDocument {
    /// Why the AG needed a new primary: `primary_down`, `leader_lost` or `switchover` (the
    /// `cause` label of `tdsvip_promotions_total`).
    pub cause: String,
    /// The leader key this agent won: its create revision, the fencing token.
    pub term: Option<i64>,
    /// How the vacancy was seen: `handoff` (the old leader's note), `key_deleted` (the key
    /// deleted without a note: expired, or resigned without one), `key_missing` (a read
    /// found no key) or `start` (no key known when the agent started).
    pub vacancy_seen: String,
    /// The term of the leader key that went, when known.
    pub previous_term: Option<i64>,
    /// The old leader that wrote the handoff note.
    pub previous_leader: Option<String>,
    /// detect: the vacancy began (the instant the candidates' wait counts from).
    pub detected: Option<f64>,
    /// elect: the campaign's answer, the key won, arrived.
    pub elected: Option<f64>,
    /// failover: `ALTER AVAILABILITY GROUP … FAILOVER` went out ...
    pub failover_sent: Option<f64>,
    /// ... and SQL Server accepted it.
    pub failover_answered: Option<f64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A timeline's phases in seconds, in the order they happen (`null`: not measured).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PhasesDocument {
    pub detect: Option<f64>,
    pub decide: Option<f64>,
    pub address: Option<f64>,
    pub garp: Option<f64>,
    pub ebpf: Option<f64>,
    pub route_table: Option<f64>,
    pub first_local_login: Option<f64>,
    pub first_client_login: Option<f64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl PhasesDocument {
    /// `(phase, seconds)` of every measured phase, known ones first in their order.
    pub fn measured(&self) -> Vec<(String, f64)> {
        let known = [
            ("detect", self.detect),
            ("decide", self.decide),
            ("address", self.address),
            ("garp", self.garp),
            ("ebpf", self.ebpf),
            ("route_table", self.route_table),
            ("first_local_login", self.first_local_login),
            ("first_client_login", self.first_client_login),
        ];
        let known = known
            .into_iter()
            .filter_map(|(name, s)| Some((name.to_owned(), s?)));
        let other = self
            .other
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), v.as_f64()?)));
        known.chain(other).collect()
    }
}

/// One timed step (a node step, or one route table of a claim).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StepDocument {
    pub name: String,
    /// Seconds from the timeline's start.
    pub at: Option<f64>,
    pub duration: Option<f64>,
    pub ok: Option<bool>,
    pub detail: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The JSON Schema of [`StatusDocument`], as published in `agent/status.schema.json`.
pub fn status_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(StatusDocument)).unwrap_or(Value::Null)
}
