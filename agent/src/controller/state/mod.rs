//! One AG's ownership state machine, `Standby → Acquiring → Owner → Releasing → Standby`,
//! driven by [`Event`]s and answering with [`Decision`]s. It performs no I/O, holds no
//! executor and reads no clock, so that every rule of DESIGN.md can be tested with exact
//! instants and the driver stays a thin loop around executors.
//!
//! "Never two owners" is structural: the only path to an `Acquire` decision starts in
//! `Standby` (so never while an acquire or a release is in flight) and passes the check that
//! no fresh peer report says PRIMARY. The node executor is one `&mut` object, so a reason to
//! release that arrives during an acquire is kept and the `Release` follows the acquire's
//! result at once (every step is idempotent; the acquire lasts milliseconds).
//!
//! Choices where DESIGN.md is silent:
//! - The cloud claim is decided together with the acquire, so the driver runs both in
//!   parallel: route tables take tens of milliseconds to seconds and need not wait for the
//!   address. A release does not touch the cloud: the next owner's claim repoints the routes,
//!   and a route to a node without the address carries no client to a wrong server.
//! - A failed acquire is alerted, undone by a release, and not tried again before a backoff,
//!   so a broken interface cannot become an acquire/release loop at the probe rate.
//! - A failed release is alerted and retried on each reconcile tick until it works; the state
//!   stays `Releasing`, which keeps blocking any acquire.
//! - A new controller does not know whether a killed predecessor left the address on the
//!   interface (the node crate leaves it, so that an agent crash never takes a healthy
//!   primary's address). So the first verdict that this node must not own (`not_primary`,
//!   `db_not_online`, or the fall count) releases once, with cause `startup`; a rise met
//!   first acquires instead (idempotent, the address stays). That release is a cleanup, not
//!   an ownership change, so it records no failover timeline.
//! - Conflicts are counted once per episode (when a fresh peer report of PRIMARY starts to
//!   overlap a local PRIMARY), not once per probe.
//! - `Hold` is emitted once per blocked episode, so that logging every decision verbatim does
//!   not log the same fact fifty times a second.
//! - With peers configured (`AgPolicy::handover`), an acquire starts by asking them to let go
//!   (`AwaitPeerRelease`); the node call is decided only when their answer comes back, and
//!   only if the local verdict still says to own: the wait can last up to a second, and a
//!   PRIMARY verdict that old is no reason to take the address. A reason to release that
//!   arrives during the wait abandons the acquire at once.
//! - A planned switchover (manage mode) lets go of the addresses *before* the replica is
//!   demoted ([`Event::LetGo`]): released as from an owner that must release, and no
//!   acquire until its deadline or [`Event::MayHold`], although the replica is PRIMARY.
//! - Backoffs and time limits are deadlines: [`AgController::next_deadline`] says when the
//!   controller next wants to be asked again (with [`Event::Deadline`]) even if nothing
//!   happens, so that a retry never waits for an unrelated event.
//!
//! The code: this file holds the state and the dispatch; `conflict.rs` the peers' reports and
//! what they forbid; `ownership.rs` acquire, handover and release; `cloud.rs` route-table
//! claims and reconciliation; `record.rs` the failover timeline's opening and closing;
//! `promoted.rs` manage mode's promotion steps joined to the acquire's timeline.

use std::collections::BTreeMap;
use std::time::Instant;

use super::decision::{Decision, ReleaseCause};
use super::event::{DriftKind, Event, PeerView, PrimaryLoss};
use super::health::ReplicaHealth;
use super::policy::{AgPolicy, PolicyError, Verdict};
use super::timeline::{Direction, FailoverTimeline};

mod cloud;
mod conflict;
mod ownership;
mod promoted;
mod record;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum OwnershipState {
    Standby,
    Acquiring,
    Owner,
    Releasing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldCause {
    Conflict,
    ReleaseInFlight,
    AcquireBackoff,
    LetGo,
}

/// The handover questions asked before acquires, numbered like cloud claims.
#[derive(Debug, Clone, Default)]
struct Handovers {
    last_attempt: u32,
    /// The attempt whose answer is awaited; answers of any other attempt are stale.
    awaiting: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct CloudClaims {
    last_attempt: u32,
    /// The attempt whose result is awaited; results of any other attempt are stale.
    outstanding: Option<u32>,
    failures: u32,
}

#[derive(Debug, Clone)]
pub struct AgController {
    ag: String,
    policy: AgPolicy,
    state: OwnershipState,
    health: ReplicaHealth,
    peers: BTreeMap<String, (Instant, PeerView)>,
    /// The latest "old primary lost" a peer reported, for the next acquire's timeline.
    peer_loss: Option<(String, PrimaryLoss)>,
    /// A reason to release that arrived while an acquire was in flight.
    release_after_acquire: Option<(ReleaseCause, String)>,
    release_cause: ReleaseCause,
    release_failed: bool,
    acquire_failures: u32,
    acquire_not_before: Option<Instant>,
    /// Start of the last probe that found the local replica PRIMARY (see `lease_basis`).
    primary_seen: Option<Instant>,
    cloud: CloudClaims,
    handover: Handovers,
    stopped: bool,
    /// A planned switchover's let-go: no address until then (see the module doc).
    let_go_until: Option<Instant>,
    /// No verdict since start yet: see the module doc on leftover addresses.
    startup_cleanup_pending: bool,
    in_conflict: bool,
    hold: Option<HoldCause>,
    conflicts: u64,
    drift_repairs: BTreeMap<DriftKind, u64>,
    timeline: Option<FailoverTimeline>,
    completed: Vec<FailoverTimeline>,
    /// Manage mode: this agent's promotion of the replica, and when its record arrived,
    /// kept for the acquire that follows it (`promoted.rs`).
    promotion: Option<(Instant, crate::controller::promotion::PromotionSteps)>,
}

impl AgController {
    pub fn new(ag: &str, policy: AgPolicy) -> Result<AgController, PolicyError> {
        policy.validate()?;
        Ok(AgController {
            ag: ag.to_owned(),
            health: ReplicaHealth::new(policy.rise, policy.fall),
            policy,
            state: OwnershipState::Standby,
            peers: BTreeMap::new(),
            peer_loss: None,
            release_after_acquire: None,
            release_cause: ReleaseCause::Stop,
            release_failed: false,
            acquire_failures: 0,
            acquire_not_before: None,
            primary_seen: None,
            cloud: CloudClaims::default(),
            handover: Handovers::default(),
            stopped: false,
            let_go_until: None,
            startup_cleanup_pending: true,
            in_conflict: false,
            hold: None,
            conflicts: 0,
            drift_repairs: BTreeMap::new(),
            timeline: None,
            completed: Vec::new(),
            promotion: None,
        })
    }

    pub fn ag(&self) -> &str {
        &self.ag
    }

    /// The local replica's loss as PRIMARY, if one is remembered at `now`: served to peers
    /// in `/status`, from the same counts that decide ownership.
    pub fn local_loss(&self, now: Instant) -> Option<PrimaryLoss> {
        self.health.loss(now)
    }

    pub fn state(&self) -> OwnershipState {
        self.state
    }

    /// Conflict episodes so far (`tdsvip_conflicts_total{ag}`).
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Repairs decided so far for `kind` (`tdsvip_drift_repairs_total{kind}`).
    pub fn drift_repairs(&self, kind: DriftKind) -> u64 {
        self.drift_repairs.get(&kind).copied().unwrap_or(0)
    }

    /// The ownership change still being recorded, if any.
    pub fn current_timeline(&self) -> Option<&FailoverTimeline> {
        self.timeline.as_ref()
    }

    /// Timelines finished since the last call, oldest first (for metrics and `/events`).
    pub fn take_completed_timelines(&mut self) -> Vec<FailoverTimeline> {
        std::mem::take(&mut self.completed)
    }

    /// When the controller next wants [`Event::Deadline`] even if nothing else happens: the
    /// end of an acquire backoff while the local replica is PRIMARY, or the time limit of an
    /// acquire timeline still waiting. An instant already past is due at once: a deadline
    /// stays pending until an event at or after it was handled (which clears it), so that a
    /// wake-up lost to another input is never lost for good.
    pub fn next_deadline(&self) -> Option<Instant> {
        let (backoff, let_go) = match self.state {
            OwnershipState::Standby if !self.stopped && self.may_own() => {
                (self.acquire_not_before, self.let_go_until)
            }
            _ => (None, None),
        };
        let limit = self
            .timeline
            .as_ref()
            .filter(|t| t.direction == Direction::Acquire && t.node_ok == Some(true))
            .map(|t| t.decided + self.policy.timeline_limit);
        [backoff, let_go, limit].into_iter().flatten().min()
    }

    /// What the kernel ownership lease is extended from: the start of the last probe that
    /// found the local replica PRIMARY, while this node owns or is acquiring the addresses
    /// (`None` otherwise). Data, like [`Self::next_deadline`]: the driver hands it to the node
    /// executor after every local probe, which never moves a lease backwards.
    pub fn lease_basis(&self) -> Option<Instant> {
        match self.state {
            OwnershipState::Owner | OwnershipState::Acquiring => self.primary_seen,
            OwnershipState::Standby | OwnershipState::Releasing => None,
        }
    }

    /// Feeds one event seen at `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Decision> {
        let mut out = Vec::new();
        match event {
            Event::LocalProbe { verdict, started } => {
                if verdict == Verdict::Primary {
                    // The probe's start: SQL Server said PRIMARY at some moment after it.
                    self.primary_seen = Some(started);
                }
                self.forget_undone_promotion(verdict == Verdict::Primary);
                self.health.observe(&verdict, started, now);
            }
            Event::Peer(report) => self.on_peer(report),
            Event::PeersReleased {
                attempt,
                step,
                refused,
            } => self.on_peers_released(now, attempt, step, refused, &mut out),
            Event::NodeAcquired(call) => self.on_acquired(now, call, &mut out),
            Event::NodeReleased(call) => self.on_released(now, call, &mut out),
            Event::CloudClaimed {
                attempt,
                started,
                report,
            } => self.on_cloud(now, attempt, started, &report, &mut out),
            Event::LocalOverlayLogin => self.note_local_login(now),
            Event::Reconcile { drift } => self.on_reconcile(now, drift, &mut out),
            Event::Stop => self.stopped = true,
            Event::LetGo { until } => self.let_go_until = Some(until),
            Event::MayHold => self.let_go_until = None,
            Event::Promoted(p) => self.on_promoted(now, *p),
            Event::Deadline => {}
        }
        self.expire_promotion(now);
        self.track_conflict(now, &mut out);
        self.evaluate(now, &mut out);
        self.close_timeline_if_complete(now);
        out
    }

    fn evaluate(&mut self, now: Instant, out: &mut Vec<Decision>) {
        match self.state {
            OwnershipState::Standby => {
                if self.acquire_not_before.is_some_and(|at| now >= at) {
                    self.acquire_not_before = None;
                }
                self.let_go_until.take_if(|&mut until| now >= until);
                if self.stopped {
                    self.hold = None;
                    return;
                }
                if self.startup_cleanup_pending
                    && let Some((_, why)) = self.health.must_release()
                {
                    self.startup_cleanup_pending = false;
                    let reason = format!(
                        "first verdict since start says not to own ({why}): removing any address a previous agent left behind"
                    );
                    self.release(now, ReleaseCause::Startup, reason, out);
                    return;
                }
                if !self.may_own() {
                    self.hold = None;
                    return;
                }
                if let Some(until) = self.let_go_until {
                    let reason = format!(
                        "not acquiring for another {} ms: a planned switchover let go of the addresses before demoting the local replica",
                        (until - now).as_millis()
                    );
                    self.hold_once(HoldCause::LetGo, reason, out);
                    return;
                }
                let peers = self.primary_peers(now);
                if !peers.is_empty() {
                    let reason = format!(
                        "not acquiring: the local replica is PRIMARY but peer {} also reports PRIMARY",
                        peers.join(", ")
                    );
                    self.hold_once(HoldCause::Conflict, reason, out);
                    return;
                }
                if let Some(not_before) = self.acquire_not_before
                    && now < not_before
                {
                    let reason = format!(
                        "not acquiring for another {} ms: backoff after {} failed acquire(s)",
                        (not_before - now).as_millis(),
                        self.acquire_failures
                    );
                    self.hold_once(HoldCause::AcquireBackoff, reason, out);
                    return;
                }
                self.acquire(now, out);
            }
            OwnershipState::Acquiring => {
                if self.handover.awaiting.is_some() {
                    if let Some(why) = self.abandon_reason(now) {
                        self.abandon_acquire(&why, out);
                    }
                } else if self.release_after_acquire.is_none() {
                    self.release_after_acquire = self.release_reason(now);
                }
            }
            OwnershipState::Owner => {
                if let Some((cause, reason)) = self.release_reason(now) {
                    self.release(now, cause, reason, out);
                }
            }
            OwnershipState::Releasing => {
                if self.stopped || !self.may_own() {
                    self.hold = None;
                    return;
                }
                let reason = format!(
                    "not acquiring: the local replica is PRIMARY but the release ({}) is still in flight; acquiring once it completes",
                    self.release_cause
                );
                self.hold_once(HoldCause::ReleaseInFlight, reason, out);
            }
        }
    }

    fn hold_once(&mut self, cause: HoldCause, reason: String, out: &mut Vec<Decision>) {
        if self.hold != Some(cause) {
            self.hold = Some(cause);
            out.push(Decision::Hold {
                ag: self.ag.clone(),
                reason,
            });
        }
    }
}
