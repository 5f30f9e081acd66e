//! The router against fake executors that record their calls, with real probe results fed
//! through its channel and a real peer agent's `/status` served on loopback: the order of
//! executor calls in a failover, a handover wait that blocks neither other AGs nor a fresh
//! verdict, and a backoff that ends by itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tdsvip_cloud::{ClaimMode as CloudMode, ClaimReport, CloudExecutor, ObserveReport};
use tdsvip_node::executor::{Action, NodeError, TakeoverFailure, Verification};
use tdsvip_node::guard::Counters;
use tdsvip_node::{CallSteps, Connection, NodeTakeover};
use tdsvip_probes::{Mode, Outcome, PhaseTimes, ProbeResult, ServerInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Input;
use super::peer_reports::{PeerRuntime, replica_watches};
use super::reload::InputTasks;
use super::router::EventRouter;
use super::runtime::AgRuntime;
use crate::config::AgentConfig;
use crate::controller::{AgController, AgPolicy};
use crate::http::client::parse_url;
use crate::metrics::AgentMetrics;
use crate::status::{AgStatus, AgentStatus, StatusStore};

type CallLog = Arc<Mutex<Vec<(Instant, String)>>>;

/// A node executor that records `AG:call` and fails the first `fail_acquires` acquires.
struct FakeNode {
    ag: &'static str,
    log: CallLog,
    fail_acquires: u32,
}

impl FakeNode {
    fn record(&self, call: &str) {
        let entry = (Instant::now(), format!("{}:{call}", self.ag));
        self.log.lock().unwrap().push(entry);
    }
}

impl NodeTakeover for FakeNode {
    async fn acquire(&mut self, _: &[Connection]) -> Result<CallSteps, TakeoverFailure> {
        self.record("acquire");
        if self.fail_acquires > 0 {
            self.fail_acquires -= 1;
            return Err(TakeoverFailure {
                action: Action::Acquire,
                error: NodeError::Config("address add: permission denied".into()),
                timeline: CallSteps::new(Action::Acquire),
            });
        }
        Ok(CallSteps::new(Action::Acquire))
    }

    async fn release(&mut self) -> Result<CallSteps, TakeoverFailure> {
        self.record("release");
        Ok(CallSteps::new(Action::Release))
    }

    async fn verify(&mut self) -> Result<Verification, TakeoverFailure> {
        Ok(Verification {
            owned: false,
            addresses: vec![],
            guard: vec![],
            timeline: CallSteps::new(Action::Verify),
        })
    }

    async fn announce(&mut self) -> Result<CallSteps, TakeoverFailure> {
        Ok(CallSteps::new(Action::Announce))
    }

    fn renew_lease(&mut self, _: Instant) -> Result<(), NodeError> {
        Ok(())
    }

    fn counters(&self, _: IpAddr) -> Result<Counters, NodeError> {
        Err(NodeError::EbpfDisabled)
    }

    fn tracked_connections(&self) -> Result<Vec<Connection>, NodeError> {
        Err(NodeError::EbpfDisabled)
    }
}

/// No cloud: the AGs here have no `[cloud]`, so the router never calls it.
struct NoCloud;

impl CloudExecutor for NoCloud {
    async fn claim(&self) -> ClaimReport {
        ClaimReport {
            address: "192.0.2.1".parse().unwrap(),
            eni: String::new(),
            mode: CloudMode::Route,
            tables: vec![],
            total: Duration::ZERO,
            budget: Duration::ZERO,
        }
    }

    async fn observe(&self) -> ObserveReport {
        ObserveReport {
            address: "192.0.2.1".parse().unwrap(),
            eni: String::new(),
            mode: CloudMode::Route,
            tables: vec![],
            total: Duration::ZERO,
        }
    }
}

/// A peer agent on loopback whose `/status` says it holds `ag1`'s address while `holds` is
/// set (and never `ag2`'s).
async fn peer_agent(holds: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let holds = holds.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf).await;
                let body = peer_document(holds);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

fn peer_document(holds_ag1: bool) -> String {
    let mut doc = AgentStatus::new("node-b");
    for (ag, ip) in [("ag1", "10.9.0.10"), ("ag2", "10.9.0.20")] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut status = AgStatus::new(vec![ip]);
        if holds_ag1 && ag == "ag1" {
            status.owned_addresses = vec![ip];
        }
        doc.ags.insert(ag.to_owned(), status);
    }
    serde_json::to_string(&doc).unwrap()
}

fn config(peer: Option<SocketAddr>) -> AgentConfig {
    let mut text = r#"
interface = "eth0"
[sql]
user = "tdsvip"
password_file = "/etc/tdsvip/sql-password"
[probe]
interval_ms = 20
rise = 2
fall = 3
[ebpf]
enabled = false
[[ag]]
name = "ag1"
addresses = ["10.9.0.10"]
[[ag]]
name = "ag2"
addresses = ["10.9.0.20"]
"#
    .to_owned();
    if let Some(peer) = peer {
        text.push_str(&format!(
            "[[peer]]\nname = \"node-b\"\nstatus_url = \"http://{peer}\"\n"
        ));
    }
    AgentConfig::parse(&text).unwrap()
}

/// A router over fake nodes for `ag1` and `ag2`, running in a task; its input channel.
fn start(config: AgentConfig, log: &CallLog, fail_acquires: u32) -> mpsc::Sender<Input> {
    let (tx, rx) = mpsc::channel(64);
    let mut status = AgentStatus::new("node-a");
    let mut ags = Vec::new();
    for (ag, ip) in [("ag1", "10.9.0.10"), ("ag2", "10.9.0.20")] {
        let ip: IpAddr = ip.parse().unwrap();
        status.ags.insert(ag.to_owned(), AgStatus::new(vec![ip]));
        let mut policy = AgPolicy::new(2, 3);
        policy.handover = !config.peers.is_empty();
        let controller = AgController::new(ag, policy).unwrap();
        let node = FakeNode {
            ag,
            log: log.clone(),
            fail_acquires,
        };
        ags.push(AgRuntime::<FakeNode, NoCloud>::new(
            controller,
            node,
            vec![ip],
            None,
        ));
    }
    let peers: Vec<PeerRuntime> = config
        .peers
        .iter()
        .map(|p| PeerRuntime {
            name: p.name.clone(),
            url: parse_url(&p.status_url).unwrap(),
            connections: BTreeMap::new(),
            holds: BTreeMap::new(),
            last_error: None,
            silent_since: None,
        })
        .collect();
    let mut router = EventRouter {
        ags,
        metrics: Arc::new(AgentMetrics::new().unwrap()),
        status: Arc::new(StatusStore::new(status, 8)),
        node_name: "node-a".into(),
        tx: tx.clone(),
        replica_watch: replica_watches(&peers, &config),
        peers,
        token: None,
        peer_poll: config.peer_poll.clone(),
        notifier: None,
        ready: false,
        inputs: InputTasks::idle(),
        reloader: None,
        config,
    };
    tokio::spawn(async move {
        let why = router.run(rx).await;
        router.shut_down(why).await;
    });
    tx
}

fn probe(outcome: Outcome, role: &str) -> Box<ProbeResult> {
    Box::new(ProbeResult {
        target: "127.0.0.1:1433".parse().unwrap(),
        mode: Mode::Login,
        outcome,
        started_wall: SystemTime::now(),
        started: Instant::now(),
        latency: Duration::from_millis(1),
        phases: PhaseTimes::default(),
        session_reused: None,
        server: ServerInfo {
            role: Some(role.to_owned()),
            ..ServerInfo::default()
        },
    })
}

fn primary() -> Box<ProbeResult> {
    probe(Outcome::Ok, "PRIMARY")
}

fn secondary() -> Box<ProbeResult> {
    let outcome = Outcome::NotPrimary {
        role: Some("SECONDARY".into()),
        detail: "role SECONDARY".into(),
    };
    probe(outcome, "SECONDARY")
}

fn calls(log: &CallLog) -> Vec<String> {
    log.lock().unwrap().iter().map(|(_, c)| c.clone()).collect()
}

async fn send(tx: &mpsc::Sender<Input>, input: Input) {
    tx.send(input).await.unwrap();
}

#[tokio::test]
async fn a_failover_runs_the_executors_in_order() {
    let log = CallLog::default();
    let tx = start(config(None), &log, 0);
    send(&tx, Input::Probe(0, secondary())).await;
    send(&tx, Input::Probe(0, primary())).await;
    send(&tx, Input::Probe(0, primary())).await;
    send(&tx, Input::Probe(0, secondary())).await;
    send(&tx, Input::Stop("test")).await;
    tx.closed().await;
    // The first verdict (SECONDARY) removes any leftover address once; then rise 2 acquires
    // and the demotion releases. Nothing happens to ag2, which was never probed.
    assert_eq!(calls(&log), ["ag1:release", "ag1:acquire", "ag1:release"]);
}

#[tokio::test]
async fn a_handover_wait_blocks_neither_other_ags_nor_a_fresh_verdict() {
    let holds = Arc::new(AtomicBool::new(true));
    let peer = peer_agent(holds.clone()).await;
    let log = CallLog::default();
    let tx = start(config(Some(peer)), &log, 0);
    let begin = Instant::now();
    // ag1: PRIMARY with rise met, but the peer holds its address: the handover waits.
    send(&tx, Input::Probe(0, primary())).await;
    send(&tx, Input::Probe(0, primary())).await;
    // ag2 meanwhile: nobody holds it, so it is acquired without waiting for ag1.
    send(&tx, Input::Probe(1, primary())).await;
    send(&tx, Input::Probe(1, primary())).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        calls(&log),
        ["ag2:acquire"],
        "ag2 waited for ag1's handover"
    );
    // ag1's replica is demoted during the wait; the peer lets go afterwards.
    send(&tx, Input::Probe(0, secondary())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    holds.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        begin.elapsed() < Duration::from_millis(900),
        "within release_wait_ms"
    );
    // Never acquired on a verdict older than the wait: no acquire, so nothing to release.
    assert_eq!(calls(&log), ["ag2:acquire"]);
    send(&tx, Input::Stop("test")).await;
    tx.closed().await;
}

#[tokio::test]
async fn a_failed_acquire_is_retried_when_its_backoff_ends_without_any_other_event() {
    let log = CallLog::default();
    let tx = start(config(None), &log, 1);
    send(&tx, Input::Probe(0, primary())).await;
    send(&tx, Input::Probe(0, primary())).await;
    // No probe after this: only the controller's own deadline can start the retry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log_now = log.lock().unwrap().clone();
    let names: Vec<&str> = log_now.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(names, ["ag1:acquire", "ag1:release", "ag1:acquire"]);
    let backoff = log_now[2].0 - log_now[0].0;
    assert!(
        backoff >= Duration::from_millis(195) && backoff < Duration::from_millis(400),
        "retried after {backoff:?} (backoff 200 ms)"
    );
    send(&tx, Input::Stop("test")).await;
    tx.closed().await;
}
