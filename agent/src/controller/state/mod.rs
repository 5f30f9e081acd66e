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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tdsvip_cloud::ClaimReport;

use super::decision::{AlertKind, Decision, ReleaseCause};
use super::event::{DriftKind, Event, NodeCall, PeerReport, PeerView, PrimaryLoss, ReplicaRole};
use super::policy::{AgPolicy, LocalHealth, PolicyError};
use super::timeline::{Direction, FailoverTimeline, TimedStep};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnershipState {
    Standby,
    Acquiring,
    Owner,
    Releasing,
}

impl OwnershipState {
    pub fn name(self) -> &'static str {
        match self {
            OwnershipState::Standby => "standby",
            OwnershipState::Acquiring => "acquiring",
            OwnershipState::Owner => "owner",
            OwnershipState::Releasing => "releasing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldCause {
    Conflict,
    ReleaseInFlight,
    AcquireBackoff,
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
    health: LocalHealth,
    peers: BTreeMap<String, (Instant, PeerView)>,
    /// The latest "old primary lost" a peer reported, for the next acquire's timeline.
    peer_loss: Option<(String, PrimaryLoss)>,
    /// A reason to release that arrived while an acquire was in flight.
    release_after_acquire: Option<(ReleaseCause, String)>,
    release_cause: ReleaseCause,
    release_failed: bool,
    acquire_failures: u32,
    acquire_not_before: Option<Instant>,
    cloud: CloudClaims,
    stopped: bool,
    /// No verdict since start yet: see the module doc on leftover addresses.
    startup_cleanup_pending: bool,
    in_conflict: bool,
    hold: Option<HoldCause>,
    conflicts: u64,
    drift_repairs: BTreeMap<DriftKind, u64>,
    timeline: Option<FailoverTimeline>,
    completed: Vec<FailoverTimeline>,
}

impl AgController {
    pub fn new(ag: &str, policy: AgPolicy) -> Result<AgController, PolicyError> {
        policy.validate()?;
        Ok(AgController {
            ag: ag.to_owned(),
            health: LocalHealth::new(policy.rise, policy.fall),
            policy,
            state: OwnershipState::Standby,
            peers: BTreeMap::new(),
            peer_loss: None,
            release_after_acquire: None,
            release_cause: ReleaseCause::Stop,
            release_failed: false,
            acquire_failures: 0,
            acquire_not_before: None,
            cloud: CloudClaims::default(),
            stopped: false,
            startup_cleanup_pending: true,
            in_conflict: false,
            hold: None,
            conflicts: 0,
            drift_repairs: BTreeMap::new(),
            timeline: None,
            completed: Vec::new(),
        })
    }

    pub fn ag(&self) -> &str {
        &self.ag
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

    /// Feeds one event seen at `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Decision> {
        let mut out = Vec::new();
        match event {
            Event::LocalProbe { outcome, started } => {
                self.health.observe(&outcome, started, now);
            }
            Event::Peer(report) => self.on_peer(report),
            Event::NodeAcquired(call) => self.on_acquired(now, call, &mut out),
            Event::NodeReleased(call) => self.on_released(now, call, &mut out),
            Event::CloudClaimed {
                attempt,
                started,
                report,
            } => self.on_cloud(now, attempt, started, &report, &mut out),
            Event::OverlayLoginOk => {
                if let Some(t) = self.timeline.as_mut()
                    && t.direction == Direction::Acquire
                    && t.first_client_login.is_none()
                {
                    t.first_client_login = Some(now);
                }
            }
            Event::Reconcile { drift } => self.on_reconcile(now, drift, &mut out),
            Event::Stop => self.stopped = true,
        }
        self.track_conflict(now, &mut out);
        self.evaluate(now, &mut out);
        self.close_timeline_if_complete(now);
        out
    }

    fn on_peer(&mut self, report: PeerReport) {
        match report.view {
            None => {
                self.peers.remove(&report.peer);
            }
            Some(view) => {
                // A peer reports only its latest loss; once it reports none, its earlier one
                // must not be stamped into a later, unrelated acquire's timeline.
                match view.primary_lost {
                    Some(loss) => self.peer_loss = Some((report.peer.clone(), loss)),
                    None => {
                        if self
                            .peer_loss
                            .as_ref()
                            .is_some_and(|(p, _)| *p == report.peer)
                        {
                            self.peer_loss = None;
                        }
                    }
                }
                self.peers.insert(report.peer, (report.at, view));
            }
        }
    }

    /// Peers whose fresh report says their replica is PRIMARY, seen so no earlier than the
    /// local replica was: a peer seen PRIMARY before the local replica became PRIMARY is the
    /// old primary of a switchover or a failover, not a second primary, and waiting for a
    /// newer report of it would cost a poll interval of every failover.
    pub fn primary_peers(&self, now: Instant) -> Vec<String> {
        let local_since = self.health.first_ok_at();
        self.peers
            .iter()
            .filter(|(_, (at, view))| {
                view.role == Some(ReplicaRole::Primary)
                    && now.saturating_duration_since(*at) <= self.policy.peer_stale_after
                    && local_since.is_none_or(|since| *at >= since)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Peers seen PRIMARY that the local replica was confirmed PRIMARY after: two primaries
    /// at once. A peer seen PRIMARY after the local replica's latest `ok` is not one yet:
    /// that is what every failover looks like from the old primary (its SQL died, a peer
    /// was promoted), and it must not raise a conflict alert.
    fn conflicting_peers(&self, now: Instant) -> Vec<String> {
        let Some(confirmed) = self.health.last_ok_started() else {
            return Vec::new();
        };
        self.primary_peers(now)
            .into_iter()
            .filter(|name| self.peers.get(name).is_some_and(|(at, _)| confirmed >= *at))
            .collect()
    }

    fn track_conflict(&mut self, now: Instant, out: &mut Vec<Decision>) {
        // An episode starts on the strict condition and lasts while any fresh peer report
        // still says PRIMARY (a newer report of the same peer must not end it and start a
        // new one before the local replica is probed again).
        let peers = if self.in_conflict {
            self.primary_peers(now)
        } else {
            self.conflicting_peers(now)
        };
        let active = self.health.says_primary() && !peers.is_empty();
        if active && !self.in_conflict {
            self.conflicts += 1;
            let stance = match self.state {
                OwnershipState::Standby | OwnershipState::Releasing => "not acquiring",
                OwnershipState::Acquiring | OwnershipState::Owner => {
                    "keeping the address only while the local replica stays PRIMARY"
                }
            };
            let reason = format!(
                "conflict: the local replica and peer {} both report PRIMARY; {stance}",
                peers.join(", ")
            );
            out.push(Decision::Alert {
                ag: self.ag.clone(),
                kind: AlertKind::Conflict,
                reason,
            });
        }
        self.in_conflict = active;
    }

    fn evaluate(&mut self, now: Instant, out: &mut Vec<Decision>) {
        match self.state {
            OwnershipState::Standby => {
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
                if !self.health.may_own() {
                    self.hold = None;
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
                if self.release_after_acquire.is_none() {
                    self.release_after_acquire = self.release_reason(now);
                }
            }
            OwnershipState::Owner => {
                if let Some((cause, reason)) = self.release_reason(now) {
                    self.release(now, cause, reason, out);
                }
            }
            OwnershipState::Releasing => {
                if self.stopped || !self.health.may_own() {
                    self.hold = None;
                    return;
                }
                let reason = format!(
                    "not acquiring: the local replica is PRIMARY but the release ({}) is still in flight; acquiring once it completes",
                    self.release_cause.name()
                );
                self.hold_once(HoldCause::ReleaseInFlight, reason, out);
            }
        }
    }

    fn release_reason(&self, now: Instant) -> Option<(ReleaseCause, String)> {
        if self.stopped {
            return Some((ReleaseCause::Stop, "the agent is stopping".to_owned()));
        }
        if let Some(why) = self.health.must_release() {
            return Some(why);
        }
        let (failures, last) = self.health.unanswered()?;
        let since = self.health.last_ok_started();
        let newer: Vec<&str> = self
            .peers
            .iter()
            .filter(|(_, (at, view))| {
                view.role == Some(ReplicaRole::Primary)
                    && now.saturating_duration_since(*at) <= self.policy.peer_stale_after
                    && since.is_none_or(|s| *at >= s)
            })
            .map(|(name, _)| name.as_str())
            .collect();
        (!newer.is_empty()).then(|| {
            (
                ReleaseCause::PeerPrimary,
                format!(
                    "local SQL Server not answering ({failures} failed probe(s), fall {}, last {last}) and peer {} seen PRIMARY since the local replica last was: SQL Server has a new primary",
                    self.policy.fall,
                    newer.join(", ")
                ),
            )
        })
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

    fn start_timeline(&mut self, timeline: FailoverTimeline) {
        if let Some(mut open) = self.timeline.replace(timeline) {
            // Cut short by the next ownership change (a demotion before the first login
            // through the overlay IP, say): say what it never got.
            open.unfinished = self.still_waiting(&open);
            self.completed.push(open);
        }
    }

    /// What an acquire's timeline still waits for after a successful node call.
    fn still_waiting(&self, t: &FailoverTimeline) -> Vec<&'static str> {
        let mut waiting = Vec::new();
        if t.direction != Direction::Acquire || t.node_ok != Some(true) {
            return waiting;
        }
        if self.policy.cloud_retry.is_some() && t.cloud_done.is_none() {
            waiting.push("route_tables");
        }
        if self.policy.expect_overlay_login && t.first_client_login.is_none() {
            waiting.push("first_client_login");
        }
        waiting
    }

    fn acquire(&mut self, now: Instant, out: &mut Vec<Decision>) {
        let reason = format!(
            "local replica PRIMARY with every configured database ONLINE for {} probes in a row (rise {}), no peer reports PRIMARY",
            self.health.ok_streak(),
            self.health.rise()
        );
        self.startup_cleanup_pending = false;
        let mut timeline = FailoverTimeline::new(&self.ag, Direction::Acquire, None, &reason, now);
        timeline.local_primary_seen = self.health.first_ok_at();
        if let Some((peer, loss)) = self.peer_loss.take() {
            timeline.old_primary_failed = Some(loss.first_failure);
            timeline.old_primary_failed_by = Some(peer);
            timeline.detected = loss.detected;
        }
        self.start_timeline(timeline);
        out.push(Decision::Acquire {
            ag: self.ag.clone(),
            reason,
        });
        self.state = OwnershipState::Acquiring;
        self.hold = None;
        self.release_after_acquire = None;
        self.cloud.failures = 0;
        self.claim_cloud(
            now,
            "point the route tables here along with the acquire",
            out,
        );
    }

    /// Decides a cloud claim at `at` if a cloud executor is configured.
    fn claim_cloud(&mut self, at: Instant, reason: &str, out: &mut Vec<Decision>) {
        if self.policy.cloud_retry.is_none() {
            return;
        }
        self.cloud.last_attempt += 1;
        self.cloud.outstanding = Some(self.cloud.last_attempt);
        out.push(Decision::ClaimCloud {
            ag: self.ag.clone(),
            attempt: self.cloud.last_attempt,
            at,
            reason: reason.to_owned(),
        });
    }

    fn release(
        &mut self,
        now: Instant,
        cause: ReleaseCause,
        reason: String,
        out: &mut Vec<Decision>,
    ) {
        if cause != ReleaseCause::Startup {
            let mut timeline =
                FailoverTimeline::new(&self.ag, Direction::Release, Some(cause), &reason, now);
            if matches!(
                cause,
                ReleaseCause::NotPrimary
                    | ReleaseCause::DbNotOnline
                    | ReleaseCause::NotAnswering
                    | ReleaseCause::PeerPrimary
            ) {
                timeline.old_primary_failed = self.health.first_failure_at();
                timeline.old_primary_failed_by = Some("local".to_owned());
                // The peer's PRIMARY is what turned the failures into a verdict.
                timeline.detected = self.health.detected_at().or(Some(now));
            }
            self.start_timeline(timeline);
        }
        out.push(Decision::Release {
            ag: self.ag.clone(),
            cause,
            reason,
        });
        self.state = OwnershipState::Releasing;
        self.release_cause = cause;
        self.release_failed = false;
        self.hold = None;
        // A claim still running belongs to the ownership being given up: its result is stale.
        self.cloud.outstanding = None;
    }

    fn record_node_call(&mut self, now: Instant, call: &NodeCall, direction: Direction) {
        let Some(t) = self.timeline.as_mut() else {
            return;
        };
        if t.direction != direction {
            return;
        }
        t.node_steps.extend(call.steps.iter().map(|s| TimedStep {
            name: s.name.clone(),
            start: call.started + s.offset,
            duration: s.duration,
            ok: s.ok,
            detail: s.detail.clone(),
        }));
        t.node_done = Some(now);
        t.node_ok = Some(call.error.is_none());
    }

    fn on_acquired(&mut self, now: Instant, call: NodeCall, out: &mut Vec<Decision>) {
        match self.state {
            OwnershipState::Acquiring => {}
            OwnershipState::Owner => {
                // The driver repairs node drift with another (idempotent) acquire.
                if let Some(error) = call.error {
                    out.push(Decision::Alert {
                        ag: self.ag.clone(),
                        kind: AlertKind::AcquireFailed,
                        reason: format!(
                            "repairing the node state failed: {error}; retried on the next reconcile tick"
                        ),
                    });
                }
                return;
            }
            OwnershipState::Standby | OwnershipState::Releasing => return,
        }
        self.record_node_call(now, &call, Direction::Acquire);
        if let Some(error) = call.error {
            self.acquire_failures += 1;
            let delay = self.policy.acquire_retry.delay(self.acquire_failures);
            self.acquire_not_before = Some(now + delay);
            out.push(Decision::Alert {
                ag: self.ag.clone(),
                kind: AlertKind::AcquireFailed,
                reason: format!(
                    "acquire failed: {error}; releasing what was done, next acquire not before {} ms",
                    delay.as_millis()
                ),
            });
            self.release_after_acquire = None;
            self.release(
                now,
                ReleaseCause::AcquireFailed,
                format!("undo the failed acquire ({error})"),
                out,
            );
            return;
        }
        self.state = OwnershipState::Owner;
        self.acquire_failures = 0;
        self.acquire_not_before = None;
        if let Some((cause, reason)) = self.release_after_acquire.take() {
            self.release(
                now,
                cause,
                format!("{reason} (arrived during the acquire)"),
                out,
            );
        }
    }

    fn on_released(&mut self, now: Instant, call: NodeCall, out: &mut Vec<Decision>) {
        if self.state != OwnershipState::Releasing {
            return;
        }
        self.record_node_call(now, &call, Direction::Release);
        if let Some(error) = call.error {
            self.release_failed = true;
            out.push(Decision::Alert {
                ag: self.ag.clone(),
                kind: AlertKind::ReleaseFailed,
                reason: format!(
                    "release ({}) failed: {error}; retried on the next reconcile tick",
                    self.release_cause.name()
                ),
            });
            return;
        }
        self.state = OwnershipState::Standby;
        self.release_failed = false;
        self.hold = None;
    }

    fn on_cloud(
        &mut self,
        now: Instant,
        attempt: u32,
        started: Instant,
        report: &ClaimReport,
        out: &mut Vec<Decision>,
    ) {
        if self.cloud.outstanding != Some(attempt)
            || !matches!(
                self.state,
                OwnershipState::Acquiring | OwnershipState::Owner
            )
        {
            return;
        }
        self.cloud.outstanding = None;
        let all_here = report.all_point_here();
        if let Some(t) = self.timeline.as_mut()
            && t.direction == Direction::Acquire
            && t.cloud_done.is_none()
        {
            t.cloud_first_start.get_or_insert(started);
            t.route_tables
                .extend(report.tables.iter().map(|table| TimedStep {
                    name: table.id.clone(),
                    start: started,
                    duration: millis(table.ms),
                    ok: table.points_here(),
                    detail: match (&table.error, table.points_here()) {
                        (Some(error), _) => error.clone(),
                        (None, true) => "points here".to_owned(),
                        (None, false) => "not pointing here".to_owned(),
                    },
                }));
            if all_here {
                t.cloud_done = started.checked_add(millis(report.total_ms));
            }
        }
        if all_here {
            self.cloud.failures = 0;
            return;
        }
        self.cloud.failures += 1;
        let Some(backoff) = self.policy.cloud_retry else {
            return;
        };
        let delay = backoff.delay(self.cloud.failures);
        let here = report.tables.iter().filter(|t| t.points_here()).count();
        let errors: Vec<String> = report
            .tables
            .iter()
            .filter(|t| !t.points_here())
            .map(|t| match &t.error {
                Some(e) => format!("{}: {e}", t.id),
                None => format!("{}: not pointing here", t.id),
            })
            .collect();
        let config = if report.has_config_problem() {
            " (a configuration or IAM problem: fix it, retries continue)"
        } else {
            ""
        };
        out.push(Decision::Alert {
            ag: self.ag.clone(),
            kind: AlertKind::CloudClaimFailed,
            reason: format!(
                "cloud claim attempt {attempt}: {here} of {} route tables point here ({}){config}; the node-level takeover stands; retry in {} ms",
                report.tables.len(),
                errors.join("; "),
                delay.as_millis()
            ),
        });
        let reason = format!(
            "retry {} of the cloud claim after {} failure(s)",
            self.cloud.last_attempt + 1,
            self.cloud.failures
        );
        self.claim_cloud(now + delay, &reason, out);
    }

    fn on_reconcile(
        &mut self,
        now: Instant,
        drift: Vec<super::event::Drift>,
        out: &mut Vec<Decision>,
    ) {
        match self.state {
            OwnershipState::Owner => {
                let mut claim = false;
                for d in drift {
                    *self.drift_repairs.entry(d.kind).or_insert(0) += 1;
                    claim |= d.kind == DriftKind::RouteTable;
                    out.push(Decision::Repair {
                        ag: self.ag.clone(),
                        kind: d.kind,
                        reason: format!("drift: {}", d.detail),
                    });
                }
                if claim && self.cloud.outstanding.is_none() {
                    self.claim_cloud(now, "repair route-table drift", out);
                }
            }
            OwnershipState::Releasing if self.release_failed => {
                self.release_failed = false;
                out.push(Decision::Release {
                    ag: self.ag.clone(),
                    cause: self.release_cause,
                    reason: format!(
                        "retrying the failed release ({})",
                        self.release_cause.name()
                    ),
                });
            }
            _ => {}
        }
    }

    fn close_timeline_if_complete(&mut self, now: Instant) {
        let waiting = match &self.timeline {
            Some(t) => self.still_waiting(t),
            None => return,
        };
        let Some(t) = &mut self.timeline else {
            return;
        };
        let complete = match t.direction {
            Direction::Release => self.state == OwnershipState::Standby && t.node_ok == Some(true),
            Direction::Acquire => match t.node_ok {
                Some(false) => true,
                Some(true) => {
                    let mut waiting = waiting;
                    if !waiting.is_empty()
                        && now.saturating_duration_since(t.decided) >= self.policy.timeline_limit
                    {
                        t.unfinished = waiting.clone();
                        waiting.clear();
                    }
                    waiting.is_empty()
                }
                None => false,
            },
        };
        if complete && let Some(done) = self.timeline.take() {
            self.completed.push(done);
        }
    }
}

/// The cloud reports' milliseconds as a `Duration`; a value no clock could produce (negative,
/// NaN, infinite) counts as zero rather than panicking.
fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default()
}
