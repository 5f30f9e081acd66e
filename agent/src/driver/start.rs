//! [`run`]: the agent from its config to its stop. Everything is built before the first
//! event (cloud identity, status seed, one runtime per AG, peers, input tasks, signals,
//! HTTP), so that a problem stops the start with the key that caused it; then the router
//! runs until a stop and the owned addresses are released (or kept, as configured).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tdsvip_cloud::{AwsExecutor, Identity};
use tdsvip_node::{GuardSpec, NodeConfig, NodeExecutor, OverlayAddress, SharedGuard};
use tdsvip_probes::Password;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::inputs::{local_replica_is_primary, overlay_probe};
use super::manage::{ManagedAg, NodeFence, Wiring};
use super::peer_reports::{PeerRuntime, replica_watches};
use super::reload::InputTasks;
use super::router::EventRouter;
use super::runtime::AgRuntime;
use super::{DriverError, Input, Reloader, cfg_err, signals};
use crate::config::{AgConfig, AgentConfig, ClusterMode};
use crate::controller::{AgController, AgPolicy, Backoff};
use crate::failsafe::FailsafeGates;
use crate::http::client::{Bearer, parse_url};
use crate::http::{HttpServer, HttpState, Token, load_token};
use crate::metrics::AgentMetrics;
use crate::status::{AgStatus, AgentStatus, PeerStatus, StatusStore};
use crate::systemd::Notifier;

type Runtime = AgRuntime<NodeExecutor, AwsExecutor>;

/// Runs the agent until SIGTERM/SIGINT (or `shutdown`) and its release complete. SIGHUP
/// calls `reload` (when given) and applies what can change while running (see
/// [`super::reload::live_part`]).
pub async fn run(
    config: AgentConfig,
    password: Password,
    shutdown: CancellationToken,
    reload: Option<Reloader>,
) -> Result<(), DriverError> {
    let identity = resolve_identity(&config).await?;
    let node_name = config.node_name();
    let notifier = Notifier::from_env().map_err(DriverError::Start)?;
    let metrics = Arc::new(AgentMetrics::new().map_err(|e| DriverError::Start(e.to_string()))?);
    let seed = initial_status(&config, &node_name);
    let status = Arc::new(StatusStore::new(seed, config.http.events));
    let token = match &config.http.token_file {
        Some(path) => {
            Some(load_token(path).map_err(|e| cfg_err("http.token_file", e.to_string()))?)
        }
        None => None,
    };
    let ags = build_runtimes(&config, &password, identity.as_ref()).await?;
    let peers = peer_runtimes(&config)?;
    let (tx, rx) = mpsc::channel::<Input>(64);
    let bearer = token.as_ref().map(|t| Bearer {
        value: t.secret().to_owned(),
        source: "http.token_file (this node's own, sent to its peers)".to_owned(),
    });
    let cancel = shutdown.child_token();
    let inputs = InputTasks::start(
        cancel.clone(),
        &config,
        &password,
        &peers,
        bearer.as_ref(),
        &tx,
    )?;
    let fence = NodeFence::connect(&config, identity.as_ref()).await?;
    let manage = ManageWiring {
        cancel: &cancel,
        metrics: &metrics,
        status: &status,
        bearer: &bearer,
        router: &tx,
        fence,
    };
    let failsafe = start_manage(&config, &password, manage)?;
    signals::spawn(tx.clone(), shutdown)?;
    let http = Http::start(&config, &metrics, &status, token, failsafe).await?;
    tracing::info!(node = %node_name, listen = %config.http.listen, ags = ags.len(), "tdsvip running");
    let mut router = EventRouter {
        ags,
        metrics,
        status,
        node_name,
        tx,
        replica_watch: replica_watches(&peers, &config),
        peers,
        token: bearer,
        peer_poll: config.peer_poll.clone(),
        notifier,
        ready: false,
        config,
        inputs,
        reloader: reload,
    };
    let why = router.run(rx).await;
    let failed = router.shut_down(why).await;
    http.stop().await;
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

/// What the manage tasks share with the rest of the agent, borrowed while they start.
struct ManageWiring<'a> {
    cancel: &'a CancellationToken,
    metrics: &'a AgentMetrics,
    status: &'a Arc<StatusStore>,
    bearer: &'a Option<Bearer>,
    router: &'a mpsc::Sender<Input>,
    /// `[fence] aws`, shared by every AG's task.
    fence: Option<Arc<NodeFence>>,
}

/// In manage mode, one task per AG that runs its failover through etcd (`manage/`); the
/// gates through which the HTTP listener answers other leaders for them (`POST /failsafe`).
fn start_manage(
    config: &AgentConfig,
    password: &Password,
    w: ManageWiring<'_>,
) -> Result<FailsafeGates, DriverError> {
    let mut gates = FailsafeGates::default();
    if config.cluster.mode != ClusterMode::Manage {
        return Ok(gates);
    }
    let etcd = config
        .cluster
        .etcd_settings()
        .map_err(|problem| cfg_err(problem.key, problem.reason))?;
    for (i, ag) in config.ags.iter().enumerate() {
        let managed = ManagedAg::new(
            config,
            password,
            ag,
            etcd.clone(),
            &mut gates,
            w.bearer.clone(),
            w.fence.clone(),
        )
        .map_err(|e| cfg_err(format!("ag[{i}]"), e))?;
        managed.spawn(Wiring {
            cancel: w.cancel.clone(),
            metrics: w.metrics.manage(),
            status: w.status.clone(),
            router: w.router.clone(),
            index: i,
        });
    }
    tracing::info!(etcd = ?config.cluster.etcd, prefix = %config.cluster.prefix, "manage mode: the agents promote, through etcd");
    Ok(gates)
}

/// With `[cloud]`: this node's ENI, from IMDS or the config.
async fn resolve_identity(config: &AgentConfig) -> Result<Option<Identity>, DriverError> {
    let Some(cloud) = &config.cloud else {
        return Ok(None);
    };
    Identity::resolve(cloud).await.map(Some).map_err(|e| {
        if e.is_config_problem() {
            cfg_err("cloud", e.to_string())
        } else {
            DriverError::Start(format!("cloud: cannot tell this node's ENI: {e}"))
        }
    })
}

/// `/status` before the first event: every AG standby, every peer not read yet.
fn initial_status(config: &AgentConfig, node_name: &str) -> AgentStatus {
    let mut initial = AgentStatus::new(node_name);
    for ag in &config.ags {
        let ips = ag.overlay_addresses().iter().map(|a| a.ip).collect();
        initial.ags.insert(ag.name.clone(), AgStatus::new(ips));
    }
    for peer in &config.peers {
        initial
            .peers
            .insert(peer.name.clone(), PeerStatus::new(&peer.status_url));
    }
    initial
}

async fn build_runtimes(
    config: &AgentConfig,
    password: &Password,
    identity: Option<&Identity>,
) -> Result<Vec<Runtime>, DriverError> {
    let guard = interface_guard(config)?;
    let mut ags = Vec::new();
    for (i, ag) in config.ags.iter().enumerate() {
        ags.push(build_runtime(config, password, identity, (i, ag), guard.clone()).await?);
    }
    Ok(ags)
}

/// The one eBPF guard of `interface`, which every AG's executor shares (`None`: eBPF off).
fn interface_guard(config: &AgentConfig) -> Result<Option<SharedGuard>, DriverError> {
    if !config.ebpf.enabled {
        return Ok(None);
    }
    let defaults = NodeConfig::new(&config.interface, Vec::new());
    let spec = GuardSpec {
        interface: &config.interface,
        xdp_mode: defaults.xdp_mode,
        max_tracked_connections: defaults.max_tracked_connections,
        pin_dir: Some(&config.ebpf.pin_dir),
        addresses: config
            .ags
            .iter()
            .flat_map(|ag| {
                ag.overlay_addresses()
                    .iter()
                    .map(|a| a.ip)
                    .collect::<Vec<_>>()
            })
            .collect(),
        tracked_ports: config.ags.iter().map(|ag| ag.port).collect(),
    };
    SharedGuard::attach(&spec).map(Some).map_err(|e| {
        DriverError::Start(format!(
            "eBPF guard on {} (every AG's): {e}",
            config.interface
        ))
    })
}

/// AG `i`'s controller, node executor (adopting what a killed predecessor left only when
/// the local replica answers PRIMARY now) and cloud executor.
async fn build_runtime(
    config: &AgentConfig,
    password: &Password,
    identity: Option<&Identity>,
    (i, ag): (usize, &AgConfig),
    guard: Option<SharedGuard>,
) -> Result<Runtime, DriverError> {
    let controller = AgController::new(&ag.name, agent_policy(config))
        .map_err(|e| cfg_err("probe", e.to_string()))?;
    let overlay = ag
        .overlay_addresses()
        .iter()
        .map(|a| OverlayAddress {
            ip: a.ip,
            prefix_len: a.prefix,
            label: None,
        })
        .collect();
    let mut node_cfg = NodeConfig::new(&config.interface, overlay);
    node_cfg.tracked_ports = vec![ag.port];
    node_cfg.ebpf = config.ebpf.enabled;
    node_cfg.lease = Some(Duration::from_millis(config.ebpf.lease_ms));
    node_cfg.pin_dir = Some(config.ebpf.pin_dir.clone());
    node_cfg.adopt_present = local_replica_is_primary(config, password, &ag.name, ag).await;
    let node = NodeExecutor::with_guard(node_cfg, guard).map_err(|e| {
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
    let cloud = match (&config.cloud, identity) {
        (Some(_), Some(identity)) => Some(Arc::new(
            cloud_executor(config, identity, i, &addresses).await?,
        )),
        _ => None,
    };
    let mut rt = AgRuntime::new(controller, node, addresses, cloud);
    rt.overlay_probe = overlay_probe(config, password, ag);
    Ok(rt)
}

/// The longest pause between two cloud claims of one ownership.
const CLOUD_RETRY_CAP: Duration = Duration::from_secs(30);

/// The controller's policy for every AG of this agent. A cloud claim that failed has already
/// retried each call within its own budget, so the claim-level retries start at the
/// per-call backoff cap and double up to [`CLOUD_RETRY_CAP`]: a throttled API is not
/// hammered, and a lasting failure is still retried twice a minute.
fn agent_policy(config: &AgentConfig) -> AgPolicy {
    let mut policy = AgPolicy::new(config.probe.rise, config.probe.fall);
    policy.cloud_retry = config.cloud.as_ref().map(|c| {
        let base = Duration::from_millis(c.backoff_cap_ms.max(c.backoff_base_ms).max(1));
        Backoff::new(base, CLOUD_RETRY_CAP.max(base))
    });
    policy.expect_overlay_login = true;
    policy.handover = !config.peers.is_empty();
    // A peer's report is renewed every poll; a PRIMARY it saw stays evidence for a few.
    policy.peer_stale_after =
        Duration::from_millis(3 * config.peer_poll.interval_ms + config.peer_poll.timeout_ms);
    policy
}

async fn cloud_executor(
    config: &AgentConfig,
    identity: &Identity,
    i: usize,
    addresses: &[IpAddr],
) -> Result<AwsExecutor, DriverError> {
    let Some(cloud) = &config.cloud else {
        return Err(cfg_err("cloud", "missing"));
    };
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
    AwsExecutor::connect(cloud, identity, *address)
        .await
        .map_err(|e| {
            if e.is_config_problem() {
                cfg_err("cloud", e.to_string())
            } else {
                DriverError::Start(format!("cloud: cannot reach EC2: {e}"))
            }
        })
}

fn peer_runtimes(config: &AgentConfig) -> Result<Vec<PeerRuntime>, DriverError> {
    config
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
                    silent_since: None,
                })
                .map_err(|e| cfg_err(format!("peer[{i}].status_url"), e))
        })
        .collect()
}

/// The HTTP server's task and how to stop it.
struct Http {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Http {
    async fn start(
        config: &AgentConfig,
        metrics: &Arc<AgentMetrics>,
        status: &Arc<StatusStore>,
        token: Option<Token>,
        failsafe: FailsafeGates,
    ) -> Result<Http, DriverError> {
        let state = HttpState {
            metrics: metrics.clone(),
            status: status.clone(),
            token,
            failsafe,
        };
        let listen = config.http.listen;
        let server = HttpServer::bind(listen, state)
            .await
            .map_err(|e| cfg_err("http.listen", format!("cannot listen on {listen}: {e}")))?
            .with_config(&config.http);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.run(cancel.clone()));
        Ok(Http { cancel, task })
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> AgentConfig {
        let text = format!(
            "interface = \"eth0\"\n[sql]\nuser = \"u\"\npassword_file = \"/p\"\n[probe]\nrise = 4\nfall = 5\n{extra}[[ag]]\nname = \"AG1\"\naddresses = [\"10.0.0.100\"]\n"
        );
        AgentConfig::parse(&text).unwrap()
    }

    #[test]
    fn the_config_sets_the_counts_and_the_cloud_retries() {
        let p = agent_policy(&config(""));
        assert_eq!((p.rise, p.fall, p.cloud_retry), (4, 5, None));
        assert!(!p.handover, "no peers, no handover question");
        let cloud = "[cloud]\nprovider = \"aws\"\nbackoff_base_ms = 50\nbackoff_cap_ms = 800\nroute_tables = [\"rtb-0123456789abcdef0\"]\n";
        let retry = agent_policy(&config(cloud)).cloud_retry.unwrap();
        assert_eq!(retry.delay(1), Duration::from_millis(800));
        assert_eq!(retry.delay(2), Duration::from_millis(1600));
        assert_eq!(retry.delay(20), CLOUD_RETRY_CAP);
    }
}
