//! The running agent: the one loop that joins probes, controllers, the node executor, the
//! status store, metrics and HTTP.
//!
//! The controllers are sans-I/O and the node executor takes `&mut self`, so a single task owns
//! all of them and everything else reaches it as a message on one channel. That keeps the
//! order of events per AG exactly the order the controller sees them, and node calls never
//! overlap (the controller's "never two owners" argument assumes one call at a time). Node
//! calls are awaited inline: they take milliseconds, and the probe runner's bounded channel
//! turns any delay into skipped ticks rather than a backlog.
//!
//! Cloud claims and observations run in tasks of their own (EC2 calls take up to seconds and
//! must not hold back a release) and come back through the same channel.
//!
//! A second login probe runs through the overlay IP (to this node once it owns the address):
//! its first success after an acquire is the timeline's `first_client_login`, the moment a
//! client could really use the address. Results of probes that started before the acquire
//! finished are ignored, since they may have reached the old primary.
//!
//! Peers (`[[peer]]`): each peer agent's `/status` is read every `peer_poll.interval_ms` and
//! each peer replica's TDS endpoint is probed at the local probe rate; both become
//! `Event::Peer` reports (roles for conflicts, "primary lost" for the timeline). Before an
//! acquire, every peer is asked at once whether it still holds the AG's addresses: the node
//! waits (bounded) for a holder that answers to let go, so that a demoted or failing old
//! primary's agent releases before this one acquires, and it tickles the clients that the
//! answers (or, for a peer that no longer answers, its last `/status`) list.
//!
//! At start, one login probe decides whether addresses a killed predecessor left on the
//! interface are adopted (replica PRIMARY: they keep serving) or fenced.
//!
//! - `inputs.rs`: the probes and peer readers that feed the loop;
//! - `peering.rs`: peer reports, the handover before an acquire, published clients;
//! - `reload.rs`: what a SIGHUP may change while running.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tdsvip_cloud::{AwsExecutor, CloudExecutor, Identity, ObserveReport, RouteState};
use tdsvip_node::executor::{Step, TakeoverFailure};
use tdsvip_node::{Connection, NodeConfig, NodeExecutor, NodeTakeover, Timeline};
use tdsvip_probes::{
    AnyProbe, HysteresisConfig, LoginConfig, Mode, Password, ProbeConfig, ProbeResult, ProbeRunner,
    ScheduleConfig, Tls,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, PeerPollConfig, StopAddresses, TlsSetting};
use crate::controller::{
    AgController, AgPolicy, Decision, Drift, DriftKind, Event, LossTracker, NodeCall, PeerReport,
    PeerView, PrimaryLoss, ReplicaRole, StepRecord,
};
use crate::http::client::{Bearer, Target, parse_url};
use crate::http::{HttpServer, HttpState, load_token};
use crate::metrics::{AgentMetrics, PacketVerdict};
use crate::peers::{fetch_status, parse_status};
use crate::status::{AgStatus, AgentStatus, PeerStatus, RouteOwner, StatusStore};
use crate::systemd::{Notifier, watchdog_interval};

mod inputs;
mod peering;
mod reload;

use inputs::*;
use peering::*;
pub use reload::live_part;

/// Connections a peer listed more than this long ago are not tickled.
const PEER_CONNECTIONS_MAX_AGE: Duration = Duration::from_secs(60);
/// How recent a peer's "I do not hold the addresses" must be to skip asking it again.
const HOLD_REPORT_FRESH: Duration = Duration::from_secs(1);
/// Between two handover questions to a peer that still holds the addresses.
const HANDOVER_RETRY: Duration = Duration::from_millis(10);

/// Why the agent could not start (or stopped badly). `Config` problems exit 2.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Stop(String),
}

fn cfg_err(key: impl Into<String>, reason: impl Into<String>) -> DriverError {
    DriverError::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

/// One AG as the loop holds it.
struct AgRuntime {
    controller: AgController,
    node: NodeExecutor,
    addresses: Vec<IpAddr>,
    owned: bool,
    /// When the last successful acquire returned (overlay logins before it do not count).
    acquired_at: Option<Instant>,
    cloud: Option<Arc<AwsExecutor>>,
    /// The local replica's loss, served to peers as `primary_loss`.
    loss: LossTracker,
    /// Whether a local probe result has arrived (READY=1 waits for every AG's first).
    probed: bool,
    /// The login through the overlay IP, run at once after an acquire.
    overlay_probe: Option<OverlayProbe>,
}

/// What reaches the loop.
enum Input {
    Probe(usize, Box<ProbeResult>),
    /// A successful login through the overlay IP, and when that probe started.
    OverlayLogin(usize, Instant),
    /// A cloud claim's result (already an event for the controller).
    Cloud(usize, Event),
    /// A cloud observation made during reconciliation.
    Observed(usize, Box<ObserveReport>),
    /// A read of peer `.0`'s `/status`, answered (or given up) at `.1`. Peers are named,
    /// not numbered: after a reload, a late answer of a removed peer is simply dropped.
    PeerStatus(String, Instant, Result<serde_json::Value, String>),
    /// A probe of peer `.0`'s replica for AG `.1`.
    PeerProbe(String, usize, Box<ProbeResult>),
    /// SIGHUP.
    Reload,
    Stop(&'static str),
}

/// Reads the configuration (and the password) again, for SIGHUP; the errors are `KEY: reason`.
pub type Reloader = Box<dyn Fn() -> Result<(AgentConfig, Password), Vec<String>> + Send + Sync>;

/// Runs the agent until SIGTERM/SIGINT (or `shutdown`) and its release complete. SIGHUP
/// calls `reload` (when given) and applies what can change while running (see [`live_part`]).
pub async fn run(
    config: AgentConfig,
    password: Password,
    shutdown: CancellationToken,
    reload: Option<Reloader>,
) -> Result<(), DriverError> {
    let mut config = config;
    let identity = match &config.cloud {
        Some(cloud) => Some(Identity::resolve(cloud).await.map_err(|e| {
            if e.is_config_problem() {
                cfg_err("cloud", e.to_string())
            } else {
                DriverError::Start(format!("cloud: cannot tell this node's ENI: {e}"))
            }
        })?),
        None => None,
    };
    let node_name = config.node_name();
    let notifier = Notifier::from_env().map_err(DriverError::Start)?;
    let metrics = Arc::new(AgentMetrics::new().map_err(|e| DriverError::Start(e.to_string()))?);
    let mut initial = AgentStatus::new(&node_name);
    for ag in &config.ags {
        let ips = ag.overlay_addresses().iter().map(|a| a.ip).collect();
        initial.ags.insert(ag.name.clone(), AgStatus::new(ips));
    }
    for peer in &config.peers {
        initial.peers.insert(
            peer.name.clone(),
            PeerStatus {
                url: peer.status_url.clone(),
                checked_unix: None,
                view: None,
                error: None,
            },
        );
    }
    let status = Arc::new(StatusStore::new(initial, config.http.events));
    let token = match &config.http.token_file {
        Some(path) => {
            Some(load_token(path).map_err(|e| cfg_err("http.token_file", e.to_string()))?)
        }
        None => None,
    };

    let mut ags = Vec::new();
    for (i, ag) in config.ags.iter().enumerate() {
        let mut policy = AgPolicy::from_config(&config.probe, config.cloud.as_ref());
        policy.expect_overlay_login = true;
        // A peer's report is renewed every poll; a PRIMARY it saw stays evidence for a few.
        policy.peer_stale_after =
            Duration::from_millis(3 * config.peer_poll.interval_ms + config.peer_poll.timeout_ms);
        let controller =
            AgController::new(&ag.name, policy).map_err(|e| cfg_err("probe", e.to_string()))?;
        let overlay: Vec<tdsvip_node::OverlayAddress> = ag
            .overlay_addresses()
            .iter()
            .map(|a| tdsvip_node::OverlayAddress {
                ip: a.ip,
                prefix_len: a.prefix,
                label: None,
            })
            .collect();
        let mut node_cfg = NodeConfig::new(&config.interface, overlay);
        node_cfg.tracked_ports = vec![ag.port];
        node_cfg.ebpf = config.ebpf.enabled;
        node_cfg.adopt_present = local_replica_is_primary(&config, &password, &ag.name, ag).await;
        let node = NodeExecutor::new(node_cfg).map_err(|e| {
            DriverError::Start(format!(
                "ag[{i}] ({}): node executor on {}: {e}",
                ag.name, config.interface
            ))
        })?;
        if node.adopted().is_empty() {
            tracing::info!(ag = %ag.name, interface = %config.interface, ebpf = config.ebpf.enabled, "node executor ready (addresses fenced)");
        } else {
            tracing::info!(ag = %ag.name, interface = %config.interface, ebpf = config.ebpf.enabled, adopted = ?node.adopted(), "node executor ready: the replica answered PRIMARY at start, so the addresses a previous agent left keep serving (the controller confirms with its rise count)");
        }
        let addresses: Vec<IpAddr> = ag.overlay_addresses().iter().map(|a| a.ip).collect();
        let cloud = match (&config.cloud, &identity) {
            (Some(cloud), Some(identity)) => {
                let v4: Vec<Ipv4Addr> = addresses
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(ip) => Some(*ip),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                let [address] = v4.as_slice() else {
                    return Err(cfg_err(
                        format!("ag[{i}].addresses"),
                        "with [cloud], an AG needs exactly one IPv4 overlay address (routes are IPv4 /32)",
                    ));
                };
                let exec = AwsExecutor::connect(cloud, identity, *address)
                    .await
                    .map_err(|e| {
                        if e.is_config_problem() {
                            cfg_err("cloud", e.to_string())
                        } else {
                            DriverError::Start(format!("cloud: cannot reach EC2: {e}"))
                        }
                    })?;
                Some(Arc::new(exec))
            }
            _ => None,
        };
        ags.push(AgRuntime {
            controller,
            node,
            addresses,
            owned: false,
            acquired_at: None,
            cloud,
            loss: LossTracker::new(config.probe.fall),
            probed: false,
            overlay_probe: overlay_probe(&config, &password, ag),
        });
    }
    let peers: Vec<PeerRuntime> = config
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            parse_url(&p.status_url)
                .map(|url| PeerRuntime {
                    name: p.name.clone(),
                    url,
                    connections: BTreeMap::new(),
                    holds: BTreeMap::new(),
                    last_error: None,
                })
                .map_err(|e| cfg_err(format!("peer[{i}].status_url"), e))
        })
        .collect::<Result<_, _>>()?;

    let cancel = shutdown.child_token();
    let (tx, mut rx) = mpsc::channel::<Input>(64);

    let token_text = token.as_ref().map(|t| Bearer {
        value: t.secret().to_owned(),
        source: "http.token_file (this node's own, sent to its peers)".to_owned(),
    });
    let mut inputs_cancel = cancel.child_token();
    spawn_inputs(
        &config,
        &password,
        &peers,
        token_text.as_ref(),
        &tx,
        &inputs_cancel,
    )?;

    // Signals.
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| DriverError::Start(format!("SIGTERM handler: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| DriverError::Start(format!("SIGINT handler: {e}")))?;
        let mut hup = signal(SignalKind::hangup())
            .map_err(|e| DriverError::Start(format!("SIGHUP handler: {e}")))?;
        let hup_tx = tx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if hup_tx.send(Input::Reload).await.is_err() {
                    break;
                }
            }
        });
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let why = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = shutdown.cancelled() => "shutdown requested",
            };
            let _ = tx.send(Input::Stop(why)).await;
        });
    }

    // HTTP.
    let server = HttpServer::bind(
        config.http.listen,
        HttpState {
            metrics: metrics.clone(),
            status: status.clone(),
            token,
        },
    )
    .await
    .map_err(|e| {
        cfg_err(
            "http.listen",
            format!("cannot listen on {}: {e}", config.http.listen),
        )
    })?;
    let http_cancel = CancellationToken::new();
    let http_task = tokio::spawn(server.run(http_cancel.clone()));
    tracing::info!(node = %node_name, listen = %config.http.listen, ags = ags.len(), "tdsvip running");

    let replica_watch = replica_watches(&peers, &config);
    let mut driver = Loop {
        ags,
        metrics,
        status,
        node_name,
        tx: tx.clone(),
        peers,
        replica_watch,
        token: token_text,
        peer_poll: config.peer_poll.clone(),
        notifier,
        ready: false,
    };
    drop(tx);
    let mut reconcile =
        tokio::time::interval(Duration::from_millis(config.reconcile.interval_ms.max(1)));
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish_connections =
        tokio::time::interval(Duration::from_millis(config.peer_poll.interval_ms));
    publish_connections.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog_every = driver.notifier.as_ref().and(watchdog_interval());
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    if let Some(every) = watchdog_every {
        tracing::info!(
            every_ms = every.as_millis() as u64,
            "feeding the systemd watchdog from the control loop"
        );
    }
    let stop_reason = loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(Input::Probe(i, result)) => driver.on_probe(i, *result).await,
                Some(Input::OverlayLogin(i, started)) => {
                    let rt = &driver.ags[i];
                    if rt.owned && rt.acquired_at.is_some_and(|at| started >= at) {
                        driver.process(i, Event::OverlayLoginOk).await;
                    }
                }
                Some(Input::Cloud(i, event)) => {
                    if let Event::CloudClaimed { report, .. } = &event {
                        driver.on_claim_report(i, report);
                    }
                    driver.process(i, event).await;
                }
                Some(Input::Observed(i, report)) => driver.on_observed(i, *report).await,
                Some(Input::PeerStatus(p, at, answer)) => driver.on_peer_status(&p, at, answer).await,
                Some(Input::PeerProbe(p, i, result)) => driver.on_peer_probe(&p, i, *result).await,
                Some(Input::Reload) => {
                    let Some(reload) = &reload else {
                        tracing::warn!("SIGHUP ignored: the agent was not started from a config file");
                        continue;
                    };
                    match reload() {
                        Err(issues) => {
                            for issue in &issues {
                                tracing::error!(issue = %issue, "reload refused: the running configuration stays in force");
                            }
                            driver.metrics.count_reload(false);
                        }
                        Ok((new, new_password)) => {
                            let (effective, restart) = live_part(&config, new);
                            for key in &restart {
                                tracing::warn!(key, "changed in the file: takes effect at the next restart (the running value stays)");
                            }
                            inputs_cancel.cancel();
                            inputs_cancel = cancel.child_token();
                            match driver.reload_peers(&effective) {
                                Ok(gone) => driver.forget_peers(gone).await,
                                Err(e) => {
                                    tracing::error!(error = %e, "reload refused");
                                    driver.metrics.count_reload(false);
                                    continue;
                                }
                            }
                            if let Err(e) = spawn_inputs(&effective, &new_password, &driver.peers, driver.token.as_ref(), &driver.tx, &inputs_cancel) {
                                tracing::error!(error = %e, "reload: probes could not be restarted with the new settings");
                                driver.metrics.count_reload(false);
                                continue;
                            }
                            for (rt, ag) in driver.ags.iter_mut().zip(&effective.ags) {
                                rt.overlay_probe = overlay_probe(&effective, &new_password, ag);
                            }
                            reconcile = tokio::time::interval(Duration::from_millis(effective.reconcile.interval_ms.max(1)));
                            reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            config = effective;
                            driver.metrics.count_reload(true);
                            tracing::info!(restart_needed = ?restart, "configuration reloaded: probes, peers, peer_poll, reconcile, sql and shutdown now follow the file");
                        }
                    }
                }
                Some(Input::Stop(why)) => break why,
                None => break "every input closed",
            },
            _ = reconcile.tick() => driver.reconcile().await,
            _ = publish_connections.tick() => driver.publish_connections(),
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                if let Some(n) = &driver.notifier {
                    n.send("WATCHDOG=1");
                }
            }
        }
    };
    if let Some(n) = &driver.notifier {
        n.send("STOPPING=1");
    }
    cancel.cancel();
    let mut failed = Vec::new();
    match config.shutdown.addresses {
        StopAddresses::Release => {
            tracing::info!(reason = stop_reason, "stopping: releasing owned addresses");
            for i in 0..driver.ags.len() {
                driver.process(i, Event::Stop).await;
                if driver.ags[i].owned {
                    failed.push(driver.ags[i].controller.ag().to_owned());
                }
            }
        }
        StopAddresses::Keep => {
            let kept: Vec<String> = driver
                .ags
                .iter()
                .filter(|rt| rt.owned)
                .map(|rt| rt.controller.ag().to_owned())
                .collect();
            tracing::warn!(reason = stop_reason, kept = ?kept, "stopping with shutdown.addresses = \"keep\": owned addresses stay on the interface, unfenced, until an agent starts again");
        }
    }
    http_cancel.cancel();
    let _ = http_task.await;
    if failed.is_empty() {
        tracing::info!("stopped");
        Ok(())
    } else {
        Err(DriverError::Stop(format!(
            "the release failed for {}: the address may still be on the interface",
            failed.join(", ")
        )))
    }
}

struct Loop {
    ags: Vec<AgRuntime>,
    metrics: Arc<AgentMetrics>,
    status: Arc<StatusStore>,
    node_name: String,
    /// For cloud tasks to report back; the loop also holds the receiver, so `recv` never
    /// sees the channel closed.
    tx: mpsc::Sender<Input>,
    peers: Vec<PeerRuntime>,
    /// Keyed by peer name and AG index.
    replica_watch: BTreeMap<(String, usize), PeerReplicaWatch>,
    /// The bearer token, sent to peers (one token per cluster).
    token: Option<Bearer>,
    peer_poll: PeerPollConfig,
    notifier: Option<Notifier>,
    /// READY=1 sent.
    ready: bool,
}

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
            }
        })
        .collect()
}

fn step_records(t: &Timeline) -> Vec<StepRecord> {
    t.steps.iter().map(step_record).collect()
}

fn step_record(s: &Step) -> StepRecord {
    StepRecord {
        name: s.kind.name().to_owned(),
        offset: s.offset,
        duration: s.duration,
        ok: s.ok,
        detail: s.detail.clone(),
    }
}

fn node_call(started: Instant, r: &Result<Timeline, TakeoverFailure>) -> NodeCall {
    match r {
        Ok(t) => NodeCall {
            started,
            steps: step_records(t),
            error: None,
        },
        Err(f) => NodeCall {
            started,
            steps: step_records(&f.timeline),
            error: Some(f.error.to_string()),
        },
    }
}

fn log_steps(ag: &str, what: &str, call: &NodeCall) {
    for s in &call.steps {
        tracing::info!(
            ag,
            call = what,
            step = %s.name,
            offset_us = s.offset.as_micros() as u64,
            duration_us = s.duration.as_micros() as u64,
            ok = s.ok,
            detail = %s.detail,
            "node step"
        );
    }
    match &call.error {
        None => tracing::info!(
            ag,
            call = what,
            total_us = call.started.elapsed().as_micros() as u64,
            "node call done"
        ),
        Some(e) => tracing::error!(ag, call = what, error = %e, "node call failed"),
    }
}

impl Loop {
    async fn on_probe(&mut self, i: usize, result: ProbeResult) {
        let ag = self.ags[i].controller.ag().to_owned();
        self.metrics.observe_probe(&result);
        let role = result
            .server
            .role
            .as_deref()
            .map(ReplicaRole::from_role_desc);
        self.metrics.set_role(&ag, &self.node_name, role.as_ref());
        let summary = crate::status::ProbeSummary::from(&result);
        let rt = &mut self.ags[i];
        rt.loss
            .observe(&result.outcome, result.started, Instant::now());
        let loss = rt.loss.loss(Instant::now());
        rt.probed = true;
        self.status.update_ag(&ag, |a| {
            a.last_local_probe = Some(summary);
            a.replica_role = result.server.role.clone();
            a.primary_loss = loss;
        });
        if !self.ready && self.ags.iter().all(|rt| rt.probed) {
            self.ready = true;
            if let Some(n) = &self.notifier {
                n.send("READY=1");
            }
            tracing::info!("every AG's local replica probed once: ready");
        }
        let event = Event::LocalProbe {
            outcome: result.outcome.clone(),
            started: result.started,
        };
        self.process(i, event).await;
    }

    /// Feeds `event` to AG `i`'s controller and applies every decision, feeding executor
    /// results back in, until nothing is left to do.
    async fn process(&mut self, i: usize, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let decisions = self.ags[i].controller.handle(Instant::now(), event);
            for d in decisions {
                if let Some(next) = self.apply(i, d).await {
                    queue.push_back(next);
                }
            }
            self.publish(i);
        }
    }

    async fn apply(&mut self, i: usize, d: Decision) -> Option<Event> {
        let rt = &mut self.ags[i];
        let ag = rt.controller.ag().to_owned();
        match &d {
            Decision::Acquire { .. } | Decision::Repair { .. } => {
                if let Decision::Repair {
                    kind: DriftKind::RouteTable,
                    ..
                } = d
                {
                    tracing::warn!(ag, decision = %d, "decision (route tables repaired by the claim that follows)");
                    return None;
                }
                tracing::info!(ag, decision = %d, "decision");
                let started = Instant::now();
                let mut handover = None;
                if matches!(d, Decision::Acquire { .. }) && !self.peers.is_empty() {
                    let h = await_peer_release(
                        &self.peers,
                        self.token.as_ref(),
                        &self.peer_poll,
                        &ag,
                        started,
                    )
                    .await;
                    if let Some(refused) = &h.refused {
                        let call = NodeCall {
                            started,
                            steps: vec![h.step.clone()],
                            error: Some(refused.clone()),
                        };
                        log_steps(&ag, "acquire", &call);
                        return Some(Event::NodeAcquired(call));
                    }
                    handover = Some(h);
                }
                let rt = &mut self.ags[i];
                let mut clients: Vec<Connection> = Vec::new();
                if let Some(h) = &handover {
                    clients.extend(h.connections.iter().copied());
                }
                for peer in &self.peers {
                    if let Some((at, list)) = peer.connections.get(&ag)
                        && at.elapsed() <= PEER_CONNECTIONS_MAX_AGE
                    {
                        clients.extend(list.iter().copied());
                    }
                }
                clients.sort();
                clients.dedup();
                let node_started = Instant::now();
                let r = rt.node.acquire(&clients).await;
                let mut call = node_call(node_started, &r);
                // Node step offsets count from the node call; the call counts from `started`.
                let shift = node_started - started;
                for step in &mut call.steps {
                    step.offset += shift;
                }
                call.started = started;
                if let Some(h) = handover {
                    call.steps.insert(0, h.step);
                }
                log_steps(&ag, "acquire", &call);
                if call.error.is_none() {
                    rt.owned = true;
                    if matches!(d, Decision::Acquire { .. }) {
                        rt.acquired_at = Some(Instant::now());
                        self.spawn_first_overlay_login(i);
                    }
                }
                Some(Event::NodeAcquired(call))
            }
            Decision::Release { .. } => {
                tracing::info!(ag, decision = %d, "decision");
                let started = Instant::now();
                let r = rt.node.release().await;
                let call = node_call(started, &r);
                log_steps(&ag, "release", &call);
                if call.error.is_none() {
                    rt.owned = false;
                }
                Some(Event::NodeReleased(call))
            }
            Decision::ClaimCloud { attempt, at, .. } => {
                let Some(exec) = rt.cloud.clone() else {
                    tracing::error!(ag, decision = %d, "decision ignored: no cloud executor");
                    return None;
                };
                tracing::info!(ag, decision = %d, delay_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64, "decision");
                let (attempt, at, tx) = (*attempt, *at, self.tx.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    let started = Instant::now();
                    let report = exec.claim().await;
                    let event = Event::CloudClaimed {
                        attempt,
                        started,
                        report: Box::new(report),
                    };
                    let _ = tx.send(Input::Cloud(i, event)).await;
                });
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

    /// Status and metrics after an event of AG `i`.
    fn publish(&mut self, i: usize) {
        let rt = &mut self.ags[i];
        let ag = rt.controller.ag().to_owned();
        for ip in &rt.addresses {
            self.metrics.set_owner(&ag, *ip, rt.owned);
        }
        self.metrics.observe_controller(&rt.controller);
        let state = rt.controller.state();
        let conflicts = rt.controller.conflicts();
        let peers_primary = rt.controller.primary_peers(Instant::now());
        let owned = if rt.owned {
            rt.addresses.clone()
        } else {
            Vec::new()
        };
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

    fn on_claim_report(&mut self, i: usize, report: &tdsvip_cloud::ClaimReport) {
        let ag = self.ags[i].controller.ag().to_owned();
        for t in &report.tables {
            self.metrics.record_cloud_calls(&t.calls);
            tracing::info!(ag, table = %t.id, ms = t.ms, attempts = t.attempts, points_here = t.points_here(), error = ?t.error, "route table claim");
        }
        let owners = route_owners(
            report
                .tables
                .iter()
                .map(|t| (t.id.clone(), t.after.clone())),
        );
        self.status.update_ag(&ag, |a| a.route_tables = owners);
    }

    async fn on_observed(&mut self, i: usize, report: ObserveReport) {
        let ag = self.ags[i].controller.ag().to_owned();
        let mut drift = Vec::new();
        for t in &report.tables {
            self.metrics.record_cloud_calls(&t.calls);
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

    async fn reconcile(&mut self) {
        for i in 0..self.ags.len() {
            let rt = &mut self.ags[i];
            let ag = rt.controller.ag().to_owned();
            if let Some(exec) = rt.cloud.clone()
                && rt.controller.state() == crate::controller::OwnershipState::Owner
            {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let report = exec.observe().await;
                    let _ = tx.send(Input::Observed(i, Box::new(report))).await;
                });
            }
            for ip in rt.addresses.clone() {
                if let Ok(c) = rt.node.counters(ip) {
                    self.metrics
                        .set_overlay_packets(ip, PacketVerdict::Pass, c.passed_packets);
                    self.metrics
                        .set_overlay_packets(ip, PacketVerdict::Drop, c.dropped_packets);
                }
            }
            let drift = match rt.node.verify().await {
                Ok(v) => {
                    let mut drift = Vec::new();
                    for (ip, presence) in &v.addresses {
                        if *presence != tdsvip_node::address::AddressPresence::AsConfigured {
                            drift.push(Drift {
                                kind: DriftKind::Address,
                                detail: format!("address {ip}: {presence:?}"),
                            });
                        }
                    }
                    for (ip, guard) in &v.guard {
                        if *guard == Some(false) {
                            drift.push(Drift {
                                kind: DriftKind::Ebpf,
                                detail: format!("eBPF guard fences {ip}"),
                            });
                        }
                    }
                    drift
                }
                Err(e) => {
                    tracing::warn!(ag, error = %e, "verify failed");
                    continue;
                }
            };
            if !drift.is_empty()
                && rt.controller.state() == crate::controller::OwnershipState::Owner
            {
                tracing::warn!(ag, drift = ?drift, "reconcile found drift");
            }
            self.process(i, Event::Reconcile { drift }).await;
        }
    }
}
