//! The probes that feed the loop: the local replica's login probe, the one through the
//! overlay IP (periodic, and once at once after each acquire), the start-up probe that
//! decides adoption, and the tasks that read the peers. A reload cancels them all and starts
//! a new set from the new config.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tdsvip_probes::{
    AnyProbe, LoginConfig, Mode, Outcome, Password, ProbeConfig, ProbeResult, ProbeRunner,
    ScheduleConfig,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::overlay::spawn_overlay_watch;
use super::peer_reports::PeerRuntime;
use super::{DriverError, Input, cfg_err};
use crate::config::{AgConfig, AgentConfig, PeerPollConfig};
use crate::http::client::Bearer;
use crate::peer_status::fetch_status;

/// Starts every task that feeds the router from the config: the local and overlay probes
/// per AG, each peer's `/status` poll and each peer replica's probe. They stop with
/// `cancel` (a reload starts a new set).
pub(super) fn spawn_inputs(
    config: &AgentConfig,
    password: &Password,
    peers: &[PeerRuntime],
    token: Option<&Bearer>,
    tx: &mpsc::Sender<Input>,
    cancel: &CancellationToken,
) -> Result<(), DriverError> {
    for (i, ag) in config.ags.iter().enumerate() {
        let local = login_runner(
            config,
            password,
            &ag.name,
            &ag.databases,
            config.sql.endpoint,
        )?;
        forward(local, cancel, tx, move |r| {
            Some(Input::Probe(i, Box::new(r)))
        });
        // Through the overlay IP, as a client goes (see `overlay.rs`).
        if let Some(overlay) = overlay_probe(config, password, ag) {
            let every = Duration::from_millis(config.probe.interval_ms);
            spawn_overlay_watch(overlay, every, i, tx.clone(), cancel.clone())?;
        }
    }
    for (p, peer) in peers.iter().enumerate() {
        spawn_peer_poll(peer, token, &config.peer_poll, tx, cancel);
        let Some(endpoint) = config.peers[p].sql_endpoint else {
            continue;
        };
        for (i, ag) in config.ags.iter().enumerate() {
            let runner = login_runner(config, password, &ag.name, &ag.databases, endpoint)?;
            let name = peer.name.clone();
            forward(runner, cancel, tx, move |r| {
                Some(Input::PeerProbe(name.clone(), i, Box::new(r)))
            });
        }
    }
    Ok(())
}

/// Runs `runner` until `cancel`, sending what `input` makes of each result to the router.
fn forward(
    runner: ProbeRunner,
    cancel: &CancellationToken,
    tx: &mpsc::Sender<Input>,
    input: impl Fn(ProbeResult) -> Option<Input> + Send + 'static,
) {
    let (_handle, mut observations) = runner.spawn(4, cancel.clone());
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Some(o) = observations.recv().await {
            if let Some(input) = input(o.result)
                && tx.send(input).await.is_err()
            {
                break;
            }
        }
    });
}

/// Reads `peer`'s `/status` every `poll.interval_ms` until `cancel`.
fn spawn_peer_poll(
    peer: &PeerRuntime,
    token: Option<&Bearer>,
    poll: &PeerPollConfig,
    tx: &mpsc::Sender<Input>,
    cancel: &CancellationToken,
) {
    let (name, url, token, tx, cancel) = (
        peer.name.clone(),
        peer.url.clone(),
        token.cloned(),
        tx.clone(),
        cancel.clone(),
    );
    let (every, deadline) = (
        Duration::from_millis(poll.interval_ms),
        Duration::from_millis(poll.timeout_ms),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let answer = fetch_status(&url, token.as_ref(), deadline).await;
            let input = Input::PeerStatus(name.clone(), Instant::now(), answer);
            if tx.send(input).await.is_err() {
                break;
            }
        }
    });
}

/// The login probe the agent runs against `target` for AG `ag` (the local replica, a peer
/// replica, or the overlay IP).
pub(super) fn login_probe(
    config: &AgentConfig,
    password: &Password,
    ag: &str,
    databases: &[String],
    target: SocketAddr,
) -> Result<AnyProbe, DriverError> {
    let probe = OverlayProbe::new(config, password, ag, databases, target);
    probe.build()
}

/// What it takes to build a login probe again (the one through the overlay IP is rebuilt
/// for each quick re-login, see `overlay.rs`).
#[derive(Clone)]
pub(super) struct OverlayProbe {
    pub(super) target: SocketAddr,
    pub(super) config: ProbeConfig,
    pub(super) login: LoginConfig,
}

impl OverlayProbe {
    pub(super) fn new(
        config: &AgentConfig,
        password: &Password,
        ag: &str,
        databases: &[String],
        target: SocketAddr,
    ) -> OverlayProbe {
        let timeout = Duration::from_millis(config.probe.timeout_ms);
        // The one mapping of `[sql]` to the probe, shared with the start-up checks.
        let login = config.login_config(password, ag, databases);
        let probe_cfg = ProbeConfig {
            timeout,
            ..ProbeConfig::default()
        };
        OverlayProbe {
            target,
            config: probe_cfg,
            login,
        }
    }

    pub(super) fn build(&self) -> Result<AnyProbe, DriverError> {
        AnyProbe::new(
            Mode::Login,
            self.target,
            self.config.clone(),
            Some(self.login.clone()),
        )
        .map_err(|e| cfg_err("probe", e.to_string()))
    }
}

/// The AG's first overlay address (IPv4 first, as clients mostly use it) and its port.
pub(super) fn overlay_probe(
    config: &AgentConfig,
    password: &Password,
    ag: &AgConfig,
) -> Option<OverlayProbe> {
    let mut overlay = ag.overlay_addresses();
    overlay.sort_by_key(|a| !a.ip.is_ipv4());
    let first = overlay.first()?;
    let target = SocketAddr::new(first.ip, ag.port);
    Some(OverlayProbe::new(
        config,
        password,
        &ag.name,
        &ag.databases,
        target,
    ))
}

pub(super) fn login_runner(
    config: &AgentConfig,
    password: &Password,
    ag: &str,
    databases: &[String],
    target: SocketAddr,
) -> Result<ProbeRunner, DriverError> {
    let probe = login_probe(config, password, ag, databases, target)?;
    let schedule = ScheduleConfig {
        interval: Duration::from_millis(config.probe.interval_ms),
        jitter: Duration::from_millis(config.probe.jitter_ms),
    };
    ProbeRunner::new(probe, schedule).map_err(|e| cfg_err("probe", e.to_string()))
}

/// The local replica's answer at start: whether addresses a killed predecessor left on the
/// interface may keep serving (see `NodeConfig::adopt_present`). A replica that says it is not
/// PRIMARY fences at once; one that does not answer is asked again, up to `probe.fall` times
/// as the controller would before releasing a running owner (a restart on a busy host, with a
/// slow TLS login, must not take a healthy primary's address away). Any remaining doubt fences.
pub(super) async fn local_replica_is_primary(
    config: &AgentConfig,
    password: &Password,
    name: &str,
    ag: &AgConfig,
) -> bool {
    let Ok(mut probe) = login_probe(config, password, name, &ag.databases, config.sql.endpoint)
    else {
        return false;
    };
    for attempt in 1..=config.probe.fall.max(1) {
        let result = probe.probe().await;
        let primary = result.outcome.is_ok();
        let sql_says_no = matches!(
            result.outcome,
            Outcome::NotPrimary { .. } | Outcome::DbNotOnline { .. }
        );
        tracing::info!(ag = name, attempt, outcome = %result.outcome, adopt = primary, "start-up probe of the local replica");
        if primary || sql_says_no {
            return primary;
        }
    }
    false
}
