//! The server on real sockets (127.0.0.1, port 0), asked with hyper's client or, for
//! requests no client would send, with raw bytes on a `TcpStream`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tdsvip_cloud::report::{CallRecord, CallResult, Operation};
use tdsvip_probes::{Mode, Outcome, Phase, PhaseTimes, ProbeResult, ServerInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{HttpServer, HttpState, Token};
use crate::controller::{
    AgController, AgPolicy, Direction, FailoverTimeline, OwnershipState, ReplicaRole, TimedStep,
};
use crate::failsafe::{FailsafeAck, FailsafeGate, FailsafeGates};
use crate::metrics::{AgentMetrics, PacketVerdict};
use crate::status::{AgStatus, AgentStatus, ProbeSummary, StatusStore};

const TOKEN: &str = "t0ken-for-tests";

struct Running {
    addr: SocketAddr,
    metrics: Arc<AgentMetrics>,
    status: Arc<StatusStore>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn start(token: Option<&str>, events: usize) -> Running {
    start_limited(token, events, super::MAX_CONNECTIONS).await
}

async fn start_limited(token: Option<&str>, events: usize, max_conns: usize) -> Running {
    let mut s = AgentStatus::new("sql1");
    s.ags
        .insert("ag1".into(), AgStatus::new(vec![ip("10.9.0.10")]));
    let status = Arc::new(StatusStore::new(s, events));
    let metrics = Arc::new(AgentMetrics::new().unwrap());
    let mut failsafe = FailsafeGates::default();
    failsafe.insert(FailsafeGate::new(
        "sql1",
        "ag1",
        FAILSAFE_HOLD,
        Instant::now(),
    ));
    let state = HttpState {
        metrics: metrics.clone(),
        status: status.clone(),
        token: token.map(|t| Token::parse(t, "test".as_ref()).unwrap()),
        failsafe,
    };
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap()
        .with_max_connections(max_conns);
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(server.run(cancel.clone()));
    Running {
        addr,
        metrics,
        status,
        cancel,
        task,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn ask(addr: SocketAddr, method: Method, path: &str, auth: Option<&str>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    ask(addr, Method::GET, path, None).await
}

/// Sends raw bytes and returns whatever the server answers before closing (or 5 s).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read everything (oversized heads); a write
    // error then is expected, the answer is what counts.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn error_reason(a: &Answer) -> String {
    assert_eq!(a.headers["content-type"], "application/json", "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

fn probe(outcome: Outcome, role: Option<&str>) -> ProbeResult {
    ProbeResult {
        target: "127.0.0.1:1433".parse().unwrap(),
        mode: Mode::Login,
        outcome,
        started_wall: SystemTime::now(),
        started: Instant::now(),
        latency: Duration::from_micros(1500),
        phases: PhaseTimes::default(),
        session_reused: None,
        server: ServerInfo {
            role: role.map(str::to_owned),
            ..ServerInfo::default()
        },
    }
}

fn timeline(reason: &str) -> FailoverTimeline {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut t = FailoverTimeline::new("ag1", Direction::Acquire, None, reason, ms(30));
    t.old_primary_failed = Some(t0);
    t.detected = Some(ms(20));
    t.local_primary_seen = Some(ms(25));
    for (i, name) in ["address", "garp", "ebpf"].into_iter().enumerate() {
        t.node_steps.push(TimedStep {
            name: name.into(),
            start: ms(31 + i as u64),
            duration: Duration::from_micros(200),
            ok: true,
            detail: String::new(),
        });
    }
    t.cloud_first_start = Some(ms(31));
    t.cloud_done = Some(ms(90));
    t.first_local_login = Some(ms(60));
    t.first_client_login = Some(ms(70));
    t.first_client_login_by = Some("sql2".into());
    t
}

#[tokio::test]
async fn open_endpoints_answer_without_a_token() {
    let r = start(Some(TOKEN), 8).await;
    let a = get(r.addr, "/healthz").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "ok\n");

    let a = get(r.addr, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        a.headers
    );
    assert!(
        a.body.contains("tdsvip_build_info{version=\""),
        "{}",
        a.body
    );

    let a = get(r.addr, "/primary").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.starts_with("not primary: "), "{}", a.body);
    assert_eq!(a.body.lines().count(), 1);
}

#[tokio::test]
async fn protected_endpoints_need_the_token() {
    let r = start(Some(TOKEN), 8).await;
    let good = format!("Bearer {TOKEN}");
    for path in ["/status", "/events"] {
        for auth in [None, Some("Bearer wrong"), Some(TOKEN), Some("Basic x")] {
            let a = ask(r.addr, Method::GET, path, auth).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(a.headers["www-authenticate"], "Bearer");
            assert!(!error_reason(&a).is_empty());
            assert!(!a.body.contains(TOKEN));
        }
        let a = ask(r.addr, Method::GET, path, Some(&good)).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let a = ask(r.addr, Method::GET, "/status", Some(&good)).await;
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["node"], "sql1");
    assert_eq!(v["ags"]["ag1"]["state"], "standby");
    assert_eq!(v["ags"]["ag1"]["overlay_ips"][0], "10.9.0.10");
}

#[tokio::test]
async fn without_a_configured_token_everything_is_open() {
    let r = start(None, 8).await;
    assert_eq!(get(r.addr, "/status").await.status, StatusCode::OK);
    assert_eq!(get(r.addr, "/events").await.body, "[]");
}

#[tokio::test]
async fn primary_follows_ownership_and_the_local_probe() {
    let r = start(Some(TOKEN), 8).await;
    let check = |expect: StatusCode| {
        let addr = r.addr;
        async move {
            let a = get(addr, "/primary").await;
            assert_eq!(a.status, expect, "{}", a.body);
            let h = ask(addr, Method::HEAD, "/primary", None).await;
            assert_eq!(h.status, expect);
            assert_eq!(h.body, "");
            a.body
        }
    };
    check(StatusCode::SERVICE_UNAVAILABLE).await;

    // Probe says PRIMARY, but the address is not held yet.
    let primary = probe(Outcome::Ok, Some("PRIMARY"));
    r.status.update_ag("ag1", |a| {
        a.last_local_probe = Some(ProbeSummary::from(&primary));
    });
    let body = check(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("10.9.0.10"), "{body}");

    r.status.update_ag("ag1", |a| {
        a.owned_addresses = vec![ip("10.9.0.10")];
        a.state = OwnershipState::Owner;
    });
    assert_eq!(check(StatusCode::OK).await, "primary\n");
    assert_eq!(get(r.addr, "/primary?ag=ag1").await.status, StatusCode::OK);

    // Demoted: the address is still held, but the probe says SECONDARY.
    let demoted = probe(
        Outcome::NotPrimary {
            role: Some("SECONDARY".into()),
            detail: "role SECONDARY".into(),
        },
        Some("SECONDARY"),
    );
    r.status.update_ag("ag1", |a| {
        a.last_local_probe = Some(ProbeSummary::from(&demoted));
    });
    let body = check(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("not_primary"), "{body}");

    let a = get(r.addr, "/primary?ag=nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(error_reason(&a).contains("nope"));
    r.status.update(|s| {
        s.ags
            .insert("ag2".into(), AgStatus::new(vec![ip("10.9.0.11")]));
    });
    let a = get(r.addr, "/primary").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(error_reason(&a).contains("?ag="));
}

#[tokio::test]
async fn bad_requests_get_4xx_and_the_server_stays_up() {
    let r = start(Some(TOKEN), 8).await;
    let a = get(r.addr, "/nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(!error_reason(&a).is_empty());

    for method in [Method::POST, Method::DELETE, Method::PUT] {
        let a = ask(r.addr, method.clone(), "/primary", None).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(a.headers["allow"], "GET, HEAD");
        assert!(error_reason(&a).contains("GET, HEAD"), "{}", a.body);
        assert!(!error_reason(&a).is_empty());
    }

    let answer = raw(r.addr, b"\x01\x02garbage garbage garbage\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend(b"\r\n\r\n");
    let answer = raw(r.addr, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let answer = raw(
        r.addr,
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    // HEAD: GET's status and length, and no body after the head.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("content-length: 3\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer:?}");

    let answer = raw(
        r.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(get(r.addr, "/healthz").await.status, StatusCode::OK);
}

const FAILSAFE_HOLD: Duration = Duration::from_millis(2400);

#[tokio::test]
async fn failsafe_promises_need_a_post_the_token_and_a_managed_ag() {
    let r = start(Some(TOKEN), 8).await;
    let good = format!("Bearer {TOKEN}");
    let path = "/failsafe?ag=ag1&leader=sql2&term=7";
    let a = ask(r.addr, Method::POST, path, None).await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "a promise needs the token"
    );
    for method in [Method::GET, Method::HEAD, Method::PUT] {
        let a = ask(r.addr, method.clone(), path, Some(&good)).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(a.headers["allow"], "POST");
    }
    let a = ask(r.addr, Method::POST, path, Some(&good)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let ack: FailsafeAck = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        (
            ack.node.as_str(),
            ack.leader.as_str(),
            ack.term,
            ack.hold_ms
        ),
        ("sql1", "sql2", 7, 2400)
    );
    let bad = [
        (
            "/failsafe?ag=ag1&leader=sql2",
            StatusCode::BAD_REQUEST,
            "required",
        ),
        (
            "/failsafe?ag=ag1&leader=sql2&term=x",
            StatusCode::BAD_REQUEST,
            "integer",
        ),
        (
            "/failsafe?ag=ag9&leader=sql2&term=7",
            StatusCode::NOT_FOUND,
            "ag9",
        ),
        (
            "/failsafe?ag=ag1&leader=sql1&term=7",
            StatusCode::CONFLICT,
            "this node",
        ),
    ];
    for (path, status, says) in bad {
        let a = ask(r.addr, Method::POST, path, Some(&good)).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        assert!(error_reason(&a).contains(says), "{path}: {}", a.body);
    }
}

#[tokio::test]
async fn events_keep_the_newest_n_oldest_first() {
    let r = start(None, 3).await;
    for i in 0..5 {
        r.status.push_timeline(timeline(&format!("r{i}")));
    }
    let a = get(r.addr, "/events").await;
    assert_eq!(a.status, StatusCode::OK);
    let v: Vec<serde_json::Value> = serde_json::from_str(&a.body).unwrap();
    let reasons: Vec<&str> = v.iter().map(|t| t["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["r2", "r3", "r4"]);
    assert_eq!(v[2]["phases"]["decide"], 0.005);

    let a = get(r.addr, "/status").await;
    let s: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(s["ags"]["ag1"]["last_timeline"]["reason"], "r4");
}

#[tokio::test]
async fn metrics_name_everything_and_pass_promtool() {
    let r = start(None, 8).await;
    let m = &r.metrics;
    m.observe_probe(&probe(Outcome::Ok, Some("PRIMARY")));
    m.observe_probe(&probe(
        Outcome::Timeout {
            phase: Phase::Connect,
        },
        None,
    ));
    m.record_timeline(&timeline("local replica PRIMARY"));
    m.record_cloud_calls(&[CallRecord {
        operation: Operation::ReplaceRoute,
        resource: "rtb-1".into(),
        result: CallResult::Throttled,
        elapsed: Duration::from_millis(12),
        attempts: 3,
        code: Some("RequestLimitExceeded".into()),
    }]);
    m.set_owner("ag1", ip("10.9.0.10"), true);
    m.set_role("ag1", "sql1", Some(&ReplicaRole::Primary));
    m.set_overlay_packets(ip("10.9.0.10"), PacketVerdict::Pass, 42);
    m.observe_controller(&AgController::new("ag1", AgPolicy::new(2, 2)).unwrap());

    let a = get(r.addr, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    let text = a.body;
    for needle in [
        "# TYPE tdsvip_probe_duration_seconds histogram",
        "tdsvip_probe_duration_seconds_bucket{mode=\"login\",target=\"127.0.0.1:1433\",le=\"0.0001\"}",
        "# TYPE tdsvip_probe_failures_total counter",
        "tdsvip_probe_failures_total{mode=\"login\",outcome=\"timeout\",target=\"127.0.0.1:1433\"} 1",
        "# TYPE tdsvip_replica_role gauge",
        "tdsvip_replica_role{ag=\"ag1\",replica=\"sql1\",role=\"primary\"} 1",
        "tdsvip_replica_role{ag=\"ag1\",replica=\"sql1\",role=\"secondary\"} 0",
        "# TYPE tdsvip_owner gauge",
        "tdsvip_owner{address=\"10.9.0.10\",ag=\"ag1\"} 1",
        "# TYPE tdsvip_failover_phase_duration_seconds histogram",
        "tdsvip_failovers_total{ag=\"ag1\",direction=\"acquire\",reason=\"primary\"} 1",
        "tdsvip_route_table_calls_total{operation=\"ReplaceRoute\",result=\"throttled\"} 1",
        "tdsvip_conflicts_total{ag=\"ag1\"} 0",
        "tdsvip_drift_repairs_total{kind=\"route_table\"} 0",
        "tdsvip_overlay_packets_total{address=\"10.9.0.10\",verdict=\"pass\"} 42",
        "tdsvip_build_info{version=\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    for phase in [
        "detect",
        "decide",
        "address",
        "garp",
        "ebpf",
        "route_table",
        "first_local_login",
        "first_client_login",
    ] {
        let needle = format!("tdsvip_failover_phase_duration_seconds_count{{phase=\"{phase}\"}} 1");
        assert!(text.contains(&needle), "missing {needle:?} in\n{text}");
    }

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (deploy/setup.sh tests: Debian package prometheus)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}\n{text}");
    assert!(report.trim().is_empty(), "promtool: {report}");
}

#[tokio::test]
async fn shutdown_is_graceful_and_closes_the_listener() {
    let r = start(None, 8).await;
    // An idle keep-alive connection must not hold shutdown up.
    let idle = TcpStream::connect(r.addr).await.unwrap();
    assert_eq!(get(r.addr, "/healthz").await.status, StatusCode::OK);
    r.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), r.task)
        .await
        .expect("run() returns soon after cancellation")
        .unwrap();
    assert!(TcpStream::connect(r.addr).await.is_err());
    drop(idle);
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_after_the_head_timeout() {
    let state = HttpState {
        metrics: Arc::new(AgentMetrics::new().unwrap()),
        status: Arc::new(StatusStore::new(AgentStatus::new("sql1"), 8)),
        token: None,
        failsafe: FailsafeGates::default(),
    };
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap()
        .with_head_timeout(Duration::from_millis(300));
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(server.run(cancel.clone()));

    // Never sends a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // One request, then idle on a keep-alive connection.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    for (name, conn) in [("idle", &mut idle), ("silent", &mut silent)] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{name} connection still open"))
            .ok();
        // Closed by the timeout, not at once after the answer.
        assert!(started.elapsed() >= Duration::from_millis(250), "{name}");
    }
    cancel.cancel();
}
