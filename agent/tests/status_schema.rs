//! The published JSON Schema of `GET /status` (`agent/status.schema.json`): it is the one the
//! wire type generates (set `TDSVIP_BLESS=1` to write it after changing the type), and the
//! agent's real answer, read from its HTTP server, validates against it with an independent
//! validator (ajv, installed by deploy/setup.sh) — while a document with a field of another
//! type does not, so the check can fail.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tdsvip::controller::promotion::{
    ClusterView, CommitMode, CommitRule, LeaderKey, MemberRole, MemberState, PromotionCause,
    PromotionSteps, Refusal, VacancySign,
};
use tdsvip::controller::{Direction, FailoverTimeline, TimedStep};
use tdsvip::{
    AgStatus, AgentMetrics, AgentStatus, HttpServer, HttpState, PeerStatus, StatusStore,
    status_schema,
};
use tdsvip_node::Connection;
use tokio_util::sync::CancellationToken;

const SCHEMA: &str = "status.schema.json";

fn tools_dir() -> PathBuf {
    std::env::var_os("TDSVIP_GRAFANA_SCHEMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/tdsvip/grafana-schema")
        })
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ajv_validate(data: &Path) -> Output {
    let schema = std::fs::canonicalize(SCHEMA).unwrap();
    Command::new("npx")
        .args([
            "--no-install",
            "ajv",
            "validate",
            "--spec=draft2020",
            "--strict=false",
        ])
        .arg("-s")
        .arg(schema)
        .arg("-d")
        .arg(data)
        .current_dir(tools_dir())
        .output()
        .unwrap_or_else(|e| panic!("npx not runnable (deploy/setup.sh installs it): {e}"))
}

#[test]
fn the_published_schema_is_the_wire_types() {
    let generated = serde_json::to_string_pretty(&status_schema()).unwrap() + "\n";
    if std::env::var_os("TDSVIP_BLESS").is_some() {
        std::fs::write(SCHEMA, &generated).unwrap();
    }
    let published = std::fs::read_to_string(SCHEMA)
        .unwrap_or_else(|e| panic!("agent/{SCHEMA}: {e} (TDSVIP_BLESS=1 writes it)"));
    assert_eq!(
        published, generated,
        "agent/{SCHEMA} is not what the wire type generates: run the tests with TDSVIP_BLESS=1"
    );
}

/// A status with every field filled: an owned address, a probe, a timeline, a loss, clients,
/// manage mode's election and a peer.
fn full_status() -> AgentStatus {
    let ip: IpAddr = "10.9.0.10".parse().unwrap();
    let mut ag = AgStatus::new(vec![ip]);
    ag.owned_addresses = vec![ip];
    ag.replica_role = Some("PRIMARY".into());
    ag.tracked_connections = vec![Connection {
        server: "10.9.0.10:1433".parse().unwrap(),
        client: "10.9.0.50:50000".parse().unwrap(),
    }];
    ag.primary_loss = Some(tdsvip::controller::PrimaryLoss {
        first_failure: Instant::now(),
        detected: None,
    });
    ag.conflicts = 1;
    ag.cluster = Some(cluster());
    ag.overlay_login = Some(tdsvip::OverlayRun {
        target: SocketAddr::new(ip, 1433),
        server: "SQL1".into(),
        since: Instant::now(),
    });
    let mut s = AgentStatus::new("sql1");
    s.ags.insert("AG1".into(), ag);
    s.peers
        .insert("sql2".into(), PeerStatus::new("http://10.9.0.2:9477"));
    s
}

/// A vacancy seen by a candidate that may not be promoted, with a member published.
fn cluster() -> ClusterView {
    ClusterView {
        leader: Some(LeaderKey {
            holder: "sql2".into(),
            token: 42,
        }),
        leading: false,
        members: vec![MemberState {
            node: "sql1".into(),
            role: MemberRole::Secondary,
            commit_mode: CommitMode::Asynchronous,
            sequence_number: 7,
            synchronized: false,
            voters: 2,
        }],
        lease_alive: true,
        refusal: Some(Refusal::NotSynchronousCommit),
        candidates_wait_until: Some(Instant::now() + Duration::from_millis(500)),
        failsafe: false,
        acknowledged_until: Some(Instant::now() + Duration::from_millis(2400)),
        commit_rule: Some((
            CommitRule {
                synchronous_replicas: 2,
                required: 1,
            },
            0,
        )),
    }
}

fn timeline() -> FailoverTimeline {
    let t0 = Instant::now();
    let mut t = FailoverTimeline::new("AG1", Direction::Acquire, None, "primary", t0);
    t.node_steps.push(TimedStep {
        name: "address".into(),
        start: t0,
        duration: Duration::from_millis(2),
        ok: true,
        detail: String::new(),
    });
    t.node_done = Some(t0 + Duration::from_millis(3));
    t.node_ok = Some(true);
    // Manage mode: the promotion this acquire followed.
    let before = |ms: u64| t0 - Duration::from_millis(ms);
    t.local_primary_seen = Some(before(5));
    t.promotion = Some(PromotionSteps {
        cause: PromotionCause::PrimaryDown,
        term: 43,
        vacancy: VacancySign::Handoff {
            from: "sql2".into(),
            term: 42,
        },
        detected: before(20),
        elected: before(18),
        failover_sent: before(17),
        failover_answered: before(9),
    });
    t
}

/// The body of `GET /status` from the agent's HTTP server on loopback.
fn served_status(status: AgentStatus) -> String {
    let store = Arc::new(StatusStore::new(status, 8));
    store.push_timeline(timeline());
    let state = HttpState {
        metrics: Arc::new(AgentMetrics::new().unwrap()),
        status: store,
        token: None,
        failsafe: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), state)
            .await
            .unwrap();
        let addr: SocketAddr = server.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.run(cancel.clone()));
        let body = tokio::task::spawn_blocking(move || common::raw_get(addr, "/status", None))
            .await
            .unwrap();
        cancel.cancel();
        let _ = task.await;
        body
    })
}

#[test]
fn the_agents_real_answer_validates_and_a_wrong_one_does_not() {
    let body = served_status(full_status());
    let dir = std::env::temp_dir().join(format!("tdsvip-status-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("status.json");
    std::fs::write(&good, &body).unwrap();
    let out = ajv_validate(&good);
    assert!(out.status.success(), "{}\n{body}", said(&out));
    assert!(said(&out).contains("valid"), "{}", said(&out));

    let mut v: Value = serde_json::from_str(&body).unwrap();
    let promotion = &v["ags"]["AG1"]["last_timeline"]["promotion"];
    assert_eq!(promotion["cause"], "primary_down", "{body}");
    v["ags"]["AG1"]["owned_addresses"] = Value::from("10.9.0.10");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let out = ajv_validate(&bad);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("owned_addresses"), "{}", said(&out));

    let mut v: Value = serde_json::from_str(&body).unwrap();
    v["ags"]["AG1"]["last_timeline"]["promotion"]["failover_sent"] = Value::from("soon");
    std::fs::write(&bad, v.to_string()).unwrap();
    let out = ajv_validate(&bad);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("failover_sent"), "{}", said(&out));
    let _ = std::fs::remove_dir_all(dir);
}
