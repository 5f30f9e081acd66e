//! What the controller is told: every input is an [`Event`] handed in with the monotonic
//! instant at which the driver saw it, so the controller never reads a clock and tests can
//! replay any interleaving with exact times.
//!
//! The local probe arrives as a [`Verdict`] on each probe (the driver classifies the probe's
//! outcome) rather than the probe runner's filtered Up/Down state. The policy treats outcome classes differently (SQL Server saying
//! "not PRIMARY" releases at once, a silent server only after the fall count), the runner's
//! hysteresis counts every non-`ok` alike, and the failover timeline needs the first failed
//! probe of a streak, which a filtered state no longer carries. So the controller owns its
//! rise/fall counting (see `policy.rs`) and the runner's `state` is for display only.
//!
//! Executor results are described with the controller's own [`TimedStep`] instead of the
//! node crate's `Timeline`: the node crate pulls in the eBPF build, and the controller only
//! needs each step's name (the node's `StepKind::name()`, which is also the metric label),
//! when it started, how long it lasted and whether it worked. The driver converts once.

use std::time::{Duration, Instant};

use super::policy::Verdict;
use super::promotion::PromotionSteps;
use super::timeline::TimedStep;

/// One input to an AG's controller.
#[derive(Debug, Clone)]
pub enum Event {
    /// A result of the local login probe for this AG (the health query on the local replica).
    LocalProbe {
        verdict: Verdict,
        /// When the probe started: a failed probe means the server was failing from then.
        started: Instant,
    },
    /// What a peer agent said about its own replica, or that it could not be reached.
    Peer(PeerReport),
    /// The peers answered the handover question of `Decision::AwaitPeerRelease` `attempt`.
    PeersReleased {
        attempt: u32,
        /// The wait, as the timeline's `peer_release` step.
        step: TimedStep,
        /// A peer still held the addresses when the wait ran out: why the acquire fails.
        refused: Option<String>,
    },
    /// The node executor's `acquire` returned.
    NodeAcquired(NodeCall),
    /// The node executor's `release` returned.
    NodeReleased(NodeCall),
    /// A cloud claim that the controller asked for (by `attempt`) returned.
    CloudClaimed {
        attempt: u32,
        /// When the driver started the claim (the report's times are relative to it).
        started: Instant,
        report: Box<ClaimSummary>,
    },
    /// This node's own TDS login through the overlay IP succeeded (the local route while it
    /// owns the address: `first_local_login`).
    LocalOverlayLogin,
    /// The periodic verification ran; `drift` is empty when everything was as expected.
    Reconcile { drift: Vec<Drift> },
    /// The agent is stopping: give up what is owned and never acquire again.
    Stop,
    /// A planned switchover (manage mode): let go of the addresses now, although the local
    /// replica is still PRIMARY, and take none before `until` ([`Event::MayHold`] ends it
    /// sooner). The replica is demoted next, so that no client reaches it as a secondary;
    /// `until` bounds the let-go if the switchover stops half way.
    LetGo { until: Instant },
    /// Manage mode: this agent's promotion of the local replica was accepted (`FAILOVER`
    /// answered); its steps go into the timeline of the acquire that follows it.
    Promoted(Box<PromotionSteps>),
    /// The switchover did not happen: the addresses may be taken again.
    MayHold,
    /// The instant of [`super::AgController::next_deadline`] has come.
    Deadline,
}

/// A role as `sys.dm_hadr_availability_replica_states.role_desc` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaRole {
    Primary,
    Secondary,
    Resolving,
    /// Anything else the peer passed on, kept verbatim for the logs.
    Other(String),
}

impl ReplicaRole {
    /// Parses `role_desc` (case-insensitive, as tdsvip's health query and `/status` spell it).
    pub fn from_role_desc(desc: &str) -> ReplicaRole {
        match desc.trim().to_ascii_uppercase().as_str() {
            "PRIMARY" => ReplicaRole::Primary,
            "SECONDARY" => ReplicaRole::Secondary,
            "RESOLVING" => ReplicaRole::Resolving,
            _ => ReplicaRole::Other(desc.to_owned()),
        }
    }
}

/// One reading of a peer agent's `/status` (or a failure to read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub peer: String,
    /// When the view was true, on this node's monotonic clock: when the peer's probe that
    /// saw the role started (the peer serves ages, the driver subtracts them), or when the
    /// driver gave up reaching it.
    pub at: Instant,
    /// `None` when the peer could not be reached: its earlier view is then forgotten.
    pub view: Option<PeerView>,
}

/// What a reachable peer reported for this AG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's local replica's role, `None` when the peer does not know it (its probe fails).
    pub role: Option<ReplicaRole>,
    /// When the peer saw the old primary fail, translated by the driver to this node's
    /// monotonic clock (the peer reports ages, not instants). `None` clears what this peer
    /// reported before. The driver may also report its own probes of another replica's TDS
    /// endpoint this way, under a name of its choice.
    pub primary_lost: Option<PrimaryLoss>,
    /// What the peer agent says of its own logins through the overlay IP, which cross the
    /// network to whichever node holds the address; `None` from a source that does not
    /// measure them (a probe of the peer's replica).
    pub overlay_logins: Option<OverlayLogins>,
}

/// A peer agent's logins through the overlay IP, as the driver matched them to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverlayLogins {
    /// Since when (on this node's clock) they have been answered by this node's replica;
    /// `None` while they fail or another server answers them.
    pub answered_here_since: Option<Instant>,
}

/// The old primary's failure as some observer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryLoss {
    pub first_failure: Instant,
    /// When the observer's fall count was reached, if it was.
    pub detected: Option<Instant>,
}

/// A finished node executor call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCall {
    /// When the driver started the call.
    pub started: Instant,
    pub steps: Vec<TimedStep>,
    /// `None` when the call succeeded; otherwise the error (the steps so far are in `steps`).
    pub error: Option<String>,
}

/// Something an owner found not as it should be during reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub kind: DriftKind,
    /// What was found ("address 10.9.0.10/32 missing on eth0", "rtb-1 points to eni-b").
    pub detail: String,
}

/// The kinds of drift, named as the `tdsvip_drift_repairs_total{kind}` label.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum DriftKind {
    /// The overlay address is not on the interface.
    Address,
    /// The eBPF guard does not pass the address.
    Ebpf,
    /// A route table (or the secondary IP) does not point at this node.
    RouteTable,
}

/// A cloud claim's result as the controller needs it (the driver summarises the cloud
/// crate's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSummary {
    pub tables: Vec<TableSummary>,
    /// The whole claim, from its start.
    pub total: Duration,
    /// Some failure is a configuration or IAM problem (retrying will not fix it alone).
    pub config_problem: bool,
}

/// One route table (or secondary IP) of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub id: String,
    pub duration: Duration,
    /// Read back pointing at this node.
    pub points_here: bool,
    pub error: Option<String>,
}

impl ClaimSummary {
    /// Every table was read back pointing here.
    pub fn all_point_here(&self) -> bool {
        !self.tables.is_empty() && self.tables.iter().all(|t| t.points_here)
    }
}
