//! The router: the one task that owns every AG's runtime. It takes inputs (probe results,
//! executor and peer answers, signals, timers) in arrival order, hands each to the AG's
//! controller as an event, and runs the decisions that come back on that AG's executors,
//! feeding their results back in until nothing is left to do.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tdsvip_cloud::CloudExecutor;
use tdsvip_node::{Connection, NodeTakeover};
use tdsvip_probes::ProbeResult;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use super::handover::HandoverQuestion;
use super::peer_reports::{PeerReplicaWatch, PeerRuntime};
use super::reload::InputTasks;
use super::runtime::AgRuntime;
use super::verdict::{claim_summary, classify};
use super::{Input, Reloader};
use crate::config::{AgentConfig, PeerPollConfig};
use crate::controller::{Decision, DriftKind, Event, ReplicaRole};
use crate::http::client::Bearer;
use crate::metrics::AgentMetrics;
use crate::status::{ProbeSummary, StatusStore};
use crate::systemd::{Notifier, watchdog_interval};

/// Connections a peer listed more than this long ago are not tickled.
const PEER_CONNECTIONS_MAX_AGE: Duration = Duration::from_secs(60);

pub(super) struct EventRouter<N, C> {
    pub(super) ags: Vec<AgRuntime<N, C>>,
    pub(super) metrics: Arc<AgentMetrics>,
    pub(super) status: Arc<StatusStore>,
    pub(super) node_name: String,
    /// For tasks to report back; the router also holds the receiver while it runs, so
    /// `recv` never sees the channel closed.
    pub(super) tx: mpsc::Sender<Input>,
    pub(super) peers: Vec<PeerRuntime>,
    /// Keyed by peer name and AG index.
    pub(super) replica_watch: BTreeMap<(String, usize), PeerReplicaWatch>,
    /// The bearer token, sent to peers (one token per cluster).
    pub(super) token: Option<Bearer>,
    pub(super) peer_poll: PeerPollConfig,
    pub(super) notifier: Option<Notifier>,
    /// READY=1 sent.
    pub(super) ready: bool,
    /// The running configuration and the input tasks built from it (SIGHUP replaces both).
    pub(super) config: AgentConfig,
    pub(super) inputs: InputTasks,
    /// Reads the file again on SIGHUP (`None`: not started from a file).
    pub(super) reloader: Option<Reloader>,
}

/// The router's clocks: reconciliation, the published client lists, the systemd watchdog.
struct Timers {
    reconcile: Interval,
    publish: Interval,
    watchdog: Option<Interval>,
}

fn interval(every: Duration) -> Interval {
    let mut i = tokio::time::interval(every);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Timers {
    fn new(config: &AgentConfig, watchdog: bool) -> Timers {
        let watchdog = watchdog.then(watchdog_interval).flatten().map(|every| {
            tracing::info!(
                every_ms = every.as_millis() as u64,
                "feeding the systemd watchdog from the control loop"
            );
            interval(every)
        });
        Timers {
            reconcile: interval(Duration::from_millis(config.reconcile.interval_ms.max(1))),
            publish: interval(Duration::from_millis(config.peer_poll.interval_ms)),
            watchdog,
        }
    }
}

/// Sleeps until `at` (at once when it is past), or forever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The next tick of an optional interval, or never.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl<N: NodeTakeover, C: CloudExecutor + 'static> EventRouter<N, C> {
    /// Routes inputs until a stop; returns why it stopped.
    pub(super) async fn run(&mut self, mut rx: mpsc::Receiver<Input>) -> &'static str {
        let mut timers = Timers::new(&self.config, self.notifier.is_some());
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Stop(why)) => return why,
                    None => return "every input closed",
                    Some(Input::Reload) => {
                        if self.reload().await {
                            timers = Timers::new(&self.config, self.notifier.is_some());
                        }
                    }
                    Some(input) => self.route(input).await,
                },
                _ = until(deadline) => self.on_deadline().await,
                _ = timers.reconcile.tick() => self.reconcile().await,
                _ = timers.publish.tick() => self.publish_connections(),
                _ = tick(&mut timers.watchdog) => {
                    if let Some(n) = &self.notifier {
                        n.send("WATCHDOG=1");
                    }
                }
            }
        }
    }

    async fn route(&mut self, input: Input) {
        match input {
            Input::Probe(i, result) => self.on_probe(i, *result).await,
            Input::OverlayProbe(i, result) => self.on_overlay_probe(i, *result).await,
            Input::OverlayRelogin(i, result) => self.on_overlay_relogin(i, result).await,
            Input::Handover(i, attempt, answer) => {
                self.ags[i].handover_clients = answer.connections;
                let event = Event::PeersReleased {
                    attempt,
                    step: answer.step,
                    refused: answer.refused,
                };
                self.process(i, event).await;
            }
            Input::Claimed(i, attempt, started, report) => {
                self.on_claim_report(i, &report);
                let report = Box::new(claim_summary(&report));
                let event = Event::CloudClaimed {
                    attempt,
                    started,
                    report,
                };
                self.process(i, event).await;
            }
            Input::Observed(i, report) => self.on_observed(i, *report).await,
            Input::PeerStatus(p, at, answer) => self.on_peer_status(&p, at, answer).await,
            Input::PeerProbe(p, i, result) => self.on_peer_probe(&p, i, *result).await,
            Input::Ownership(i, event) => self.process(i, event).await,
            Input::Reload | Input::Stop(_) => {}
        }
    }

    /// The earliest instant some controller wants to be asked again (maybe already past).
    fn next_deadline(&self) -> Option<Instant> {
        self.ags
            .iter()
            .filter_map(|rt| rt.controller.next_deadline())
            .min()
    }

    /// Some controller's deadline came: every controller re-evaluates (a no-op for those
    /// with nothing due: holds are reported once, and nothing else changes without news).
    async fn on_deadline(&mut self) {
        for i in 0..self.ags.len() {
            self.process(i, Event::Deadline).await;
        }
    }

    async fn on_probe(&mut self, i: usize, result: ProbeResult) {
        let ag = self.ags[i].controller.ag().to_owned();
        self.metrics.observe_probe(&result);
        let role = result
            .server
            .role
            .as_deref()
            .map(ReplicaRole::from_role_desc);
        self.metrics.set_role(&ag, &self.node_name, role.as_ref());
        let summary = ProbeSummary::from(&result);
        let rt = &mut self.ags[i];
        let now = Instant::now();
        let verdict = classify(&result.outcome);
        // The controller counts the probe; its loss is read right after, before any node call.
        let decisions = rt.controller.handle(
            now,
            Event::LocalProbe {
                verdict,
                started: result.started,
            },
        );
        let loss = rt.controller.local_loss(now);
        rt.probed = true;
        if result.server.server_name.is_some() && rt.server_name != result.server.server_name {
            rt.server_name = result.server.server_name.clone();
        }
        self.status.update_ag(&ag, |a| {
            a.last_local_probe = Some(summary);
            a.replica_role = result.server.role.clone();
            a.primary_loss = loss;
        });
        self.notify_ready_once();
        self.execute(i, decisions).await;
        self.renew_lease(i);
    }

    /// Extends AG `i`'s kernel ownership lease from its controller's last PRIMARY verdict (the
    /// executor ignores it when the node does not own, and never moves a lease backwards).
    fn renew_lease(&mut self, i: usize) {
        let rt = &mut self.ags[i];
        let Some(seen) = rt.controller.lease_basis() else {
            return;
        };
        if let Err(e) = rt.node.renew_lease(seen) {
            let ag = rt.controller.ag();
            tracing::warn!(ag, error = %e, "cannot renew the ownership lease: the guard fences the address when it runs out");
        }
    }

    /// READY=1 once every AG's local replica was probed.
    fn notify_ready_once(&mut self) {
        if self.ready || !self.ags.iter().all(|rt| rt.probed) {
            return;
        }
        self.ready = true;
        if let Some(n) = &self.notifier {
            n.send("READY=1");
        }
        tracing::info!("every AG's local replica probed once: ready");
    }

    /// Feeds `event` to AG `i`'s controller and applies every decision, feeding executor
    /// results back in, until nothing is left to do.
    pub(super) async fn process(&mut self, i: usize, event: Event) {
        let decisions = self.ags[i].controller.handle(Instant::now(), event);
        self.execute(i, decisions).await;
    }

    /// Applies `decisions` in order; each executor's result goes back to the controller, and
    /// the decisions it returns are applied in turn, until none is left.
    async fn execute(&mut self, i: usize, mut decisions: Vec<Decision>) {
        let mut results = VecDeque::new();
        loop {
            for d in decisions {
                if let Some(next) = self.apply(i, d).await {
                    results.push_back(next);
                }
            }
            self.publish(i);
            let Some(event) = results.pop_front() else {
                return;
            };
            decisions = self.ags[i].controller.handle(Instant::now(), event);
        }
    }

    async fn apply(&mut self, i: usize, d: Decision) -> Option<Event> {
        let ag = self.ags[i].controller.ag().to_owned();
        match &d {
            Decision::AwaitPeerRelease { attempt, .. } => {
                tracing::info!(ag, decision = %d, "decision");
                self.ask_peers(i, *attempt);
                None
            }
            Decision::Repair {
                kind: DriftKind::RouteTable,
                ..
            } => {
                tracing::warn!(ag, decision = %d, "decision (route tables repaired by the claim that follows)");
                None
            }
            Decision::Acquire { .. } | Decision::Repair { .. } => {
                tracing::info!(ag, decision = %d, "decision");
                let first = matches!(d, Decision::Acquire { .. });
                Some(Event::NodeAcquired(self.acquire(i, first).await))
            }
            Decision::Release { .. } => {
                tracing::info!(ag, decision = %d, "decision");
                Some(Event::NodeReleased(self.ags[i].release().await))
            }
            Decision::ClaimCloud { attempt, at, .. } => {
                self.claim_cloud(i, &d, *attempt, *at);
                None
            }
            Decision::Alert { .. } => {
                tracing::warn!(ag, decision = %d, "alert");
                None
            }
            Decision::Hold { .. } => {
                tracing::info!(ag, decision = %d, "decision");
                None
            }
        }
    }

    /// The handover question, in a task whose answer comes back as `Input::Handover`.
    fn ask_peers(&self, i: usize, attempt: u32) {
        let ag = self.ags[i].controller.ag();
        let lease = self
            .config
            .ebpf
            .enabled
            .then(|| Duration::from_millis(self.config.ebpf.lease_ms));
        let question =
            HandoverQuestion::new(ag, &self.peers, self.token.as_ref(), &self.peer_poll, lease);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let answer = question.ask().await;
            let _ = tx.send(Input::Handover(i, attempt, answer)).await;
        });
    }

    /// The node acquire of AG `i` (`first`: an ownership change, not a repair), tickling the
    /// clients the handover answer and the peers' latest `/status` listed.
    async fn acquire(&mut self, i: usize, first: bool) -> crate::controller::NodeCall {
        let ag = self.ags[i].controller.ag().to_owned();
        let mut clients: Vec<Connection> = std::mem::take(&mut self.ags[i].handover_clients);
        for peer in &self.peers {
            if let Some((at, list)) = peer.connections.get(&ag)
                && at.elapsed() <= PEER_CONNECTIONS_MAX_AGE
            {
                clients.extend(list.iter().copied());
            }
        }
        clients.sort();
        clients.dedup();
        let call = self.ags[i].acquire(&clients).await;
        if call.error.is_none() && first {
            self.ags[i].acquired_at = Some(Instant::now());
            self.spawn_overlay_relogin(i);
        }
        call
    }

    /// A cloud claim at `at`, in a task whose report comes back as `Input::Claimed`.
    fn claim_cloud(&self, i: usize, d: &Decision, attempt: u32, at: Instant) {
        let ag = d.ag();
        let Some(exec) = self.ags[i].cloud.clone() else {
            tracing::error!(ag, decision = %d, "decision ignored: no cloud executor");
            return;
        };
        let delay_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64;
        tracing::info!(ag, decision = %d, delay_ms, "decision");
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let started = Instant::now();
            let report = Box::new(exec.claim().await);
            let _ = tx.send(Input::Claimed(i, attempt, started, report)).await;
        });
    }

    /// Status and metrics after an event of AG `i`.
    fn publish(&mut self, i: usize) {
        let rt = &mut self.ags[i];
        let ag = rt.controller.ag().to_owned();
        for ip in &rt.addresses {
            self.metrics.set_owner(&ag, *ip, rt.owned);
        }
        self.metrics.observe_controller(&rt.controller);
        let (state, conflicts) = (rt.controller.state(), rt.controller.conflicts());
        let peers_primary = rt.controller.primary_peers(Instant::now());
        let owned = rt.owned_addresses();
        self.status.update_ag(&ag, |a| {
            a.state = state;
            a.owned_addresses = owned;
            a.conflicts = conflicts;
            a.peers_primary = peers_primary;
        });
        for t in rt.controller.take_completed_timelines() {
            tracing::info!(ag, timeline = %serde_json::to_string(&t).unwrap_or_default(), "failover timeline");
            self.metrics.record_timeline(&t);
            self.status.push_timeline(t);
        }
    }

    /// After the loop: release what is owned (or keep it, with `shutdown.addresses = "keep"`);
    /// the AGs whose release failed.
    pub(super) async fn shut_down(&mut self, reason: &str) -> Vec<String> {
        if let Some(n) = &self.notifier {
            n.send("STOPPING=1");
        }
        self.inputs.stop();
        match self.config.shutdown.addresses {
            crate::config::StopAddresses::Release => {
                tracing::info!(reason, "stopping: releasing owned addresses");
                let mut failed = Vec::new();
                for i in 0..self.ags.len() {
                    self.process(i, Event::Stop).await;
                    if self.ags[i].owned {
                        failed.push(self.ags[i].controller.ag().to_owned());
                    }
                }
                failed
            }
            crate::config::StopAddresses::Keep => {
                let kept: Vec<&str> = self
                    .ags
                    .iter()
                    .filter(|rt| rt.owned)
                    .map(|rt| rt.controller.ag())
                    .collect();
                tracing::warn!(reason, kept = ?kept, "stopping with shutdown.addresses = \"keep\": owned addresses stay on the interface, passing the pinned guard until their ownership lease runs out (ebpf.lease_ms) or an agent starts again and adopts them");
                Vec::new()
            }
        }
    }
}
