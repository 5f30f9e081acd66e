//! The record of one ownership change, from the first failed probe of the old primary to the
//! first client login through the overlay IP, so that every failover can be explained and
//! its phases exported as `tdsvip_failover_phase_duration_seconds{phase}`.
//!
//! Timestamps are monotonic `Instant`s (wall clocks jump); serialized, they become seconds
//! relative to the earliest timestamp of the record, which is all a reader needs.
//!
//! The phases, each present only when both of its ends are known:
//! - `detect`: first failed probe of the old primary → the failure became a verdict (fall
//!   count reached, or SQL Server said not PRIMARY), locally or as a peer reported it;
//! - `decide`: what made the decision possible (local replica first seen PRIMARY for an
//!   acquire; detection for a release) → the decision;
//! - `address`, `garp`, `ebpf`: the node executor's steps of those names;
//! - `route_table`: start of the first cloud claim → end of the claim that made every route
//!   table point here (retries included);
//! - `first_local_login`: decision → this node's own first login through the overlay IP. It
//!   takes the local route (the address is on this node's interface), so it never crosses
//!   `eth0`, the eBPF guard, ARP or a route table: it says the address answers, not that
//!   clients reach it;
//! - `first_client_login`: decision → the first login through the overlay IP that a peer
//!   agent made across the network and that this node's replica answered (the peer reports
//!   since when, as an age in its `/status`; the driver puts it on this clock at the time the
//!   answer arrived, so the phase is never shorter than the truth, by at most one `/status`
//!   request's time). Of several peers the earliest report that arrives before the timeline
//!   closes counts. Without a peer whose `/status` is readable there is nothing to measure it
//!   with, and the phase stays empty.
//!
//! In manage mode an acquire that follows this agent's own promotion of its replica also
//! carries the promotion's steps ([`PromotionSteps`]: detect, elect, failover); its
//! `local_primary_seen` is then the promotion's re-observe step and its `decided` the
//! acquire, so that the whole path from the vacancy to the address is one record.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::decision::ReleaseCause;
use super::promotion::PromotionSteps;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::Display)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Direction {
    Acquire,
    Release,
}

/// One timed executor step (a node step, or one route table of a claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedStep {
    pub name: String,
    pub start: Instant,
    pub duration: Duration,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverTimeline {
    pub ag: String,
    pub direction: Direction,
    /// The release cause, or `None` for an acquire (whose cause is always "local PRIMARY").
    pub cause: Option<ReleaseCause>,
    pub reason: String,
    pub old_primary_failed: Option<Instant>,
    /// Who saw that failure: "local" or the peer's name.
    pub old_primary_failed_by: Option<String>,
    pub detected: Option<Instant>,
    pub local_primary_seen: Option<Instant>,
    pub decided: Instant,
    pub node_steps: Vec<TimedStep>,
    /// When the node executor call returned.
    pub node_done: Option<Instant>,
    pub node_ok: Option<bool>,
    /// Every route table of every claim attempt, in order.
    pub route_tables: Vec<TimedStep>,
    pub cloud_first_start: Option<Instant>,
    /// End of the claim that made every table point here.
    pub cloud_done: Option<Instant>,
    pub first_local_login: Option<Instant>,
    pub first_client_login: Option<Instant>,
    /// The peer whose login through the overlay IP is `first_client_login`.
    pub first_client_login_by: Option<String>,
    /// Manage mode: this agent's promotion of the local replica that the acquire followed.
    pub promotion: Option<PromotionSteps>,
    /// What the timeline was still waiting for when it was closed at its time limit
    /// (`route_tables`, `first_local_login`, `first_client_login`); empty for a complete
    /// timeline.
    pub unfinished: Vec<&'static str>,
}

/// Per-phase durations, named as the metric's `phase` label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    pub detect: Option<Duration>,
    pub decide: Option<Duration>,
    pub address: Option<Duration>,
    pub garp: Option<Duration>,
    pub ebpf: Option<Duration>,
    pub route_table: Option<Duration>,
    pub first_local_login: Option<Duration>,
    pub first_client_login: Option<Duration>,
}

/// The phases in the order they happen, as the `phase` label of
/// `tdsvip_failover_phase_duration_seconds` and the keys of a timeline's `phases`.
pub const PHASE_NAMES: [&str; 8] = [
    "detect",
    "decide",
    "address",
    "garp",
    "ebpf",
    "route_table",
    "first_local_login",
    "first_client_login",
];

impl Phases {
    /// `(phase label, duration)` for every known phase, for the histogram.
    pub fn known(&self) -> Vec<(&'static str, Duration)> {
        let durations = [
            self.detect,
            self.decide,
            self.address,
            self.garp,
            self.ebpf,
            self.route_table,
            self.first_local_login,
            self.first_client_login,
        ];
        PHASE_NAMES
            .into_iter()
            .zip(durations)
            .filter_map(|(name, d)| d.map(|d| (name, d)))
            .collect()
    }
}

fn between(from: Option<Instant>, to: Option<Instant>) -> Option<Duration> {
    Some(to?.saturating_duration_since(from?))
}

impl FailoverTimeline {
    pub fn new(
        ag: &str,
        direction: Direction,
        cause: Option<ReleaseCause>,
        reason: &str,
        decided: Instant,
    ) -> FailoverTimeline {
        FailoverTimeline {
            ag: ag.to_owned(),
            direction,
            cause,
            reason: reason.to_owned(),
            old_primary_failed: None,
            old_primary_failed_by: None,
            detected: None,
            local_primary_seen: None,
            decided,
            node_steps: Vec::new(),
            node_done: None,
            node_ok: None,
            route_tables: Vec::new(),
            cloud_first_start: None,
            cloud_done: None,
            first_local_login: None,
            first_client_login: None,
            first_client_login_by: None,
            promotion: None,
            unfinished: Vec::new(),
        }
    }

    /// The metric `reason` label of `tdsvip_failovers_total`.
    pub fn reason_label(&self) -> &'static str {
        self.cause.map_or("primary", Into::into)
    }

    /// The earliest timestamp: what serialized times are relative to.
    pub fn origin(&self) -> Instant {
        let marks = [
            self.old_primary_failed,
            self.detected,
            self.local_primary_seen,
            self.node_done,
            self.cloud_first_start,
            self.cloud_done,
            self.first_local_login,
            self.first_client_login,
        ];
        let steps = self
            .node_steps
            .iter()
            .chain(&self.route_tables)
            .map(|s| Some(s.start));
        let promotion = self
            .promotion
            .iter()
            .flat_map(|p| [p.detected, p.elected, p.failover_sent, p.failover_answered].map(Some));
        marks
            .into_iter()
            .chain(steps)
            .chain(promotion)
            .flatten()
            .fold(self.decided, Instant::min)
    }

    fn node_step(&self, name: &str) -> Option<Duration> {
        self.node_steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.duration)
    }

    pub fn phases(&self) -> Phases {
        let trigger = match self.direction {
            Direction::Acquire => self.local_primary_seen,
            Direction::Release => self.detected,
        };
        Phases {
            detect: between(self.old_primary_failed, self.detected),
            decide: between(trigger, Some(self.decided)),
            address: self.node_step("address"),
            garp: self.node_step("garp"),
            ebpf: self.node_step("ebpf"),
            route_table: between(self.cloud_first_start, self.cloud_done),
            first_local_login: between(Some(self.decided), self.first_local_login),
            first_client_login: between(Some(self.decided), self.first_client_login),
        }
    }
}

/// Serialized as its wire form (`crate::status::TimelineDocument`), the one `/status`,
/// `/events` and the logs carry.
impl Serialize for FailoverTimeline {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::status::TimelineDocument::from(self).serialize(serializer)
    }
}
