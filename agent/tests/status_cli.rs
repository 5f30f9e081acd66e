//! `tdsvip status` as a process against the agent's real HTTP server (`tdsvip::http`, on
//! 127.0.0.1 with a `StatusStore` this test fills), against hand-written answers carrying
//! fields this build does not know, and against sockets that refuse or never answer.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tdsvip::controller::{Direction, FailoverTimeline, OwnershipState, TimedStep};
use tdsvip::{
    AgStatus, AgentMetrics, AgentStatus, HttpServer, HttpState, OverlayRun, ProbeSummary,
    RouteOwner, StatusStore, Token,
};
use tdsvip_probes::{Mode, Outcome, PhaseTimes, ProbeResult, ServerInfo};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "status-cli-test-token-0123456789";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The agent's HTTP server on 127.0.0.1 (a free port), on its own thread and runtime.
struct Agent {
    addr: SocketAddr,
    status: Arc<StatusStore>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start(token: Option<&str>, status: AgentStatus) -> Agent {
        let status = Arc::new(StatusStore::new(status, 8));
        let state = HttpState {
            metrics: Arc::new(AgentMetrics::new().unwrap()),
            status: status.clone(),
            token: token.map(|t| Token::parse(t, Path::new("test")).unwrap()),
            failsafe: Default::default(),
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cancel.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), state)
                    .await
                    .expect("bind the agent's HTTP server");
                tx.send(server.local_addr().unwrap()).unwrap();
                server.run(c).await;
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("HTTP server did not start");
        Agent {
            addr,
            status,
            cancel,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A scratch directory removed on Drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tdsvip-status-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn status_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tdsvip"));
    c.arg("status").args(args).env_remove("TDSVIP_HTTP_TOKEN");
    c
}

fn run(args: &[&str]) -> Output {
    status_cmd(args).output().expect("run tdsvip status")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// An owning node: probe, two route tables, and a complete acquire timeline.
fn owning_status() -> AgentStatus {
    let mut ag = AgStatus::new(vec![ip("10.9.0.10")]);
    ag.state = OwnershipState::Owner;
    ag.owned_addresses = vec![ip("10.9.0.10")];
    ag.replica_role = Some("PRIMARY".into());
    // Started 5 minutes ago by both clocks.
    let ago = Duration::from_secs(300);
    ag.last_local_probe = Some(ProbeSummary::from(&ProbeResult {
        target: "127.0.0.1:1433".parse().unwrap(),
        mode: Mode::Login,
        outcome: Outcome::Ok,
        started_wall: SystemTime::now() - ago,
        started: Instant::now().checked_sub(ago).expect("up for 5 minutes"),
        latency: Duration::from_micros(1500),
        phases: PhaseTimes::default(),
        session_reused: None,
        server: ServerInfo {
            role: Some("PRIMARY".into()),
            ..ServerInfo::default()
        },
    }));
    ag.route_tables = vec![
        RouteOwner {
            route_table: "rtb-0aaa".into(),
            target: Some("eni-here".into()),
            this_node: true,
            ..RouteOwner::default()
        },
        RouteOwner {
            route_table: "rtb-0bbb".into(),
            target: None,
            this_node: false,
            ..RouteOwner::default()
        },
    ];
    ag.overlay_login = Some(OverlayRun {
        target: "10.9.0.10:1433".parse().unwrap(),
        server: "SQL1".into(),
        since: Instant::now().checked_sub(ago).expect("up for 5 minutes"),
    });
    let mut s = AgentStatus::new("sql1");
    s.ags.insert("AG1".into(), ag);
    s
}

fn acquire_timeline() -> FailoverTimeline {
    let t0 = Instant::now();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let mut t = FailoverTimeline::new(
        "AG1",
        Direction::Acquire,
        None,
        "local replica PRIMARY",
        at(5000),
    );
    t.local_primary_seen = Some(t0);
    for (name, start, took) in [
        ("address", 5100, 200),
        ("garp", 5300, 50),
        ("ebpf", 5350, 30),
    ] {
        t.node_steps.push(TimedStep {
            name: name.into(),
            start: at(start),
            duration: Duration::from_micros(took),
            ok: true,
            detail: String::new(),
        });
    }
    t.node_done = Some(at(5400));
    t.node_ok = Some(true);
    t.cloud_first_start = Some(at(5400));
    t.route_tables.push(TimedStep {
        name: "rtb-0aaa".into(),
        start: at(5400),
        duration: Duration::from_millis(7),
        ok: true,
        detail: "ReplaceRoute".into(),
    });
    t.cloud_done = Some(at(12400));
    t.first_local_login = Some(at(20000));
    t.first_client_login = Some(at(25000));
    t.first_client_login_by = Some("sql2".into());
    t
}

#[test]
fn human_output_shows_roles_addresses_probe_routes_and_the_timeline() {
    let agent = Agent::start(Some(TOKEN), owning_status());
    agent.status.push_timeline(acquire_timeline());
    let dir = Scratch::new("human");
    let token = dir.file("token", &format!("{TOKEN}\n"));
    let out = run(&[
        "--url",
        &agent.url(),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    for needle in [
        &format!(
            "node sql1 (tdsvip {}) at {}",
            env!("CARGO_PKG_VERSION"),
            agent.url()
        ),
        "AG AG1: owner",
        "replica role      PRIMARY",
        "overlay addresses 10.9.0.10",
        "owned addresses   10.9.0.10",
        "last local probe  ok in 1.500 ms, 5 min ago [login to 127.0.0.1:1433 role PRIMARY]",
        "route tables      rtb-0aaa → eni-here (this node)",
        "overlay login     answered by SQL1 for 300",
        "rtb-0bbb → no route (another node)",
        "last failover     acquire (primary): local replica PRIMARY",
        "+0.000 ms  local replica seen PRIMARY",
        "+5.000 ms  decided: acquire",
        "+5.100 ms  address ok (took 0.200 ms)",
        "+5.300 ms  garp ok (took 0.050 ms)",
        "+5.400 ms  route table rtb-0aaa ok (took 7.000 ms): ReplaceRoute",
        "+12.400 ms  every route table points here",
        "+20.000 ms  own first login through the overlay IP (local route)",
        "+25.000 ms  first client login through the overlay IP (by sql2, across the network)",
        "phases            decide 5.000 ms, address 0.200 ms, garp 0.050 ms, ebpf 0.030 ms, route_table 7.000 ms, first_local_login 15.000 ms, first_client_login 20.000 ms",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    // Offsets are in time order.
    let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
    assert!(pos("local replica seen PRIMARY") < pos("decided: acquire"));
    assert!(pos("decided: acquire") < pos("address ok"));
    assert!(pos("every route table") < pos("first client login"));
    assert!(!text.contains(TOKEN));
}

#[test]
fn a_node_without_a_failover_says_so() {
    let mut s = AgentStatus::new("sql2");
    s.ags
        .insert("AG1".into(), AgStatus::new(vec![ip("10.9.0.10")]));
    let agent = Agent::start(None, s);
    let out = run(&["--url", &agent.url()]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    for needle in [
        "AG AG1: standby",
        "replica role      unknown",
        "owned addresses   none",
        "last local probe  none yet",
        "route tables      none configured",
        "last failover     none since the agent started",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

#[test]
fn json_passes_the_agents_answer_through() {
    let agent = Agent::start(Some(TOKEN), owning_status());
    agent.status.push_timeline(acquire_timeline());
    let out = status_cmd(&["--url", &agent.url(), "--json"])
        .env("TDSVIP_HTTP_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("\n  \"ags\": {"), "not pretty:\n{text}");
    let v = common::json(&out);
    let ag = &v["ags"]["AG1"];
    assert_eq!(v["node"], "sql1");
    assert_eq!(ag["state"], "owner");
    assert_eq!(ag["owned_addresses"], serde_json::json!(["10.9.0.10"]));
    assert_eq!(ag["route_tables"][0]["this_node"], true);
    assert_eq!(ag["last_timeline"]["direction"], "acquire");
    assert_eq!(
        ag["last_timeline"]["node_steps"].as_array().unwrap().len(),
        3
    );
    assert!(ag["last_timeline"]["phases"]["address"].is_number());
    // The agent's own text, keys in its order (not sorted as a parsed document would be).
    let served_text = common::raw_get(agent.addr, "/status", Some(TOKEN));
    assert_eq!(keys_in_order(&text), keys_in_order(&served_text), "{text}");
    assert!(keys_in_order(&text).starts_with(&["node".to_owned(), "version".to_owned()]));
    // The same document the server sends.
    let served = serde_json::to_value(agent.status.snapshot()).unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        served.as_object().unwrap().keys().collect::<Vec<_>>()
    );
}

/// Every object key of a JSON text, in the order the text has them.
fn keys_in_order(json: &str) -> Vec<String> {
    let (mut keys, mut current, mut in_string, mut escaped) =
        (Vec::new(), String::new(), false, false);
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                if chars.peek() == Some(&':') {
                    keys.push(std::mem::take(&mut current));
                }
                current.clear();
                continue;
            }
            current.push(c);
        } else if c == '"' {
            in_string = true;
        }
    }
    keys
}

#[test]
fn the_config_gives_url_and_token() {
    let agent = Agent::start(Some(TOKEN), owning_status());
    let dir = Scratch::new("config");
    let token = dir.file("token", TOKEN);
    let config = dir.file(
        "tdsvip.toml",
        &format!(
            "interface = \"eth0\"\n[sql]\nuser = \"u\"\npassword_file = \"/etc/tdsvip/pw\"\n\
             [[ag]]\nname = \"AG1\"\naddresses = [\"10.9.0.10\"]\n\
             [http]\nlisten = \"{}\"\ntoken_file = \"{}\"\n",
            agent.addr,
            token.display()
        ),
    );
    let out = run(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains("AG AG1: owner"), "{}", both(&out));

    // --token-file wins over the config's token.
    let wrong = dir.file("wrong", "not-the-token");
    let out = run(&[
        "--config",
        config.to_str().unwrap(),
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
}

#[test]
fn a_wrong_or_missing_token_exits_1_and_says_401() {
    let agent = Agent::start(Some(TOKEN), owning_status());
    let dir = Scratch::new("badtoken");
    let wrong = dir.file("token", "wrong-token\n");
    let out = run(&[
        "--url",
        &agent.url(),
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refused the token from --token-file")
            && err.contains("401 Unauthorized")
            && err.contains("a valid bearer token is required"),
        "{err}"
    );
    assert!(!err.contains("wrong-token"), "the token leaked: {err}");
    assert!(stdout(&out).is_empty());

    let out = run(&["--url", &agent.url()]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("requires a bearer token (401 Unauthorized)"),
        "{}",
        both(&out)
    );

    let out = status_cmd(&["--url", &agent.url()])
        .env("TDSVIP_HTTP_TOKEN", "also-wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("refused the token from TDSVIP_HTTP_TOKEN"),
        "{}",
        both(&out)
    );
}

#[test]
fn an_unreachable_agent_exits_1_naming_the_cause() {
    // A port that was free a moment ago: nothing listens, connection refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&["--url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!("connection refused by 127.0.0.1:{port}")),
        "{}",
        both(&out)
    );

    // A listener that never accepts: the kernel completes the handshake, nobody answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let start = Instant::now();
    let out = run(&["--url", &url, "--timeout-ms", "300"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("timeout: the agent at") && stderr(&out).contains("within 300 ms"),
        "{}",
        both(&out)
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    drop(silent);

    // Something that is not the agent: 404 for /status.
    let agent = Agent::start(None, owning_status());
    let out = run(&["--url", &format!("{}/elsewhere", agent.url())]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("GET /elsewhere/status answered 404 Not Found: no such endpoint"),
        "{}",
        both(&out)
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    for (args, needle) in [
        (vec!["--url", "127.0.0.1:9477"], "error: --url: "),
        (
            vec!["--url", "https://127.0.0.1:9477"],
            "https is not supported",
        ),
        (vec!["--url", "http://"], "error: --url: "),
        (vec!["--url", "http://h/status?x"], "error: --url: "),
        (
            vec!["--token-file", "/nonexistent/token"],
            "error: --token-file: cannot read /nonexistent/token",
        ),
        (
            vec!["--config", "/nonexistent/tdsvip.toml"],
            "cannot read /nonexistent/tdsvip.toml",
        ),
        (vec!["--timeout-ms", "0"], "--timeout-ms"),
        (vec!["--bogus"], "--bogus"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", both(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", both(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", both(&out));
    }

    let dir = Scratch::new("badargs");
    let empty = dir.file("empty", "\n");
    let out = run(&["--token-file", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(stderr(&out).contains("--token-file: ") && stderr(&out).contains("empty"));

    let out = status_cmd(&[])
        .env("TDSVIP_HTTP_TOKEN", "two words")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        stderr(&out).contains("TDSVIP_HTTP_TOKEN: "),
        "{}",
        both(&out)
    );

    let bad = dir.file("bad.toml", "interface = \"eth0\"\nbogus = 1\n");
    let out = run(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        stderr(&out).contains("bogus: unknown key"),
        "{}",
        both(&out)
    );
}

/// Serves one canned HTTP answer per connection until dropped.
struct Canned {
    addr: SocketAddr,
}

impl Canned {
    fn start(status_line: &'static str, body: String) -> Canned {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Canned { addr }
    }
}

#[test]
fn fields_this_build_does_not_know_are_printed_not_refused() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let body = serde_json::json!({
        "node": "sql1",
        "version": "9.9.9",
        "uptime_seconds": 42,
        "ags": {
            "AG1": {
                "state": "standby",
                "overlay_ips": ["10.9.0.10"],
                "owned_addresses": [],
                "replica_role": "SECONDARY",
                "last_local_probe": null,
                "route_tables": [],
                "last_timeline": null,
                "conflict_history": {"total": 3, "last_peer": "sql3"},
                "tracked_connections": [
                    {"client": "10.9.0.50:50000", "server": "10.9.0.10:1433"},
                    {"client": "10.9.0.51:50001", "server": "10.9.0.10:1433"}
                ]
            }
        },
        "peers": {
            "sql2": {
                "url": "http://10.9.0.2:9477",
                "checked_unix": now - 600.0,
                "error": null,
                "view": {"node": "sql2", "ags": {"AG1": {"state": "owner", "replica_role": "PRIMARY", "owned_addresses": ["10.9.0.10"]}}},
                "rtt_ms": 0.7
            },
            "sql3": {"url": "http://10.9.0.3:9477", "checked_unix": now - 3.0 * 3600.0, "error": "connection refused", "view": null}
        }
    })
    .to_string();
    let canned = Canned::start("200 OK", body);
    let out = run(&["--url", &format!("http://{}", canned.addr)]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    for needle in [
        "node sql1 (tdsvip 9.9.9)",
        "AG AG1: standby",
        "replica role      SECONDARY",
        "conflict_history:",
        "total: 3",
        "last_peer: sql3",
        "tracked_connections: 2 entries",
        "- client=10.9.0.50:50000, server=10.9.0.10:1433",
        "peers",
        "sql2 (http://10.9.0.2:9477): checked 10 min ago",
        "its node          sql2",
        "AG AG1            owner, replica PRIMARY, owns 10.9.0.10",
        "rtt_ms: 0.7",
        "sql3 (http://10.9.0.3:9477): checked 3.0 h ago",
        "error             connection refused",
        "other",
        "uptime_seconds: 42",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }

    let out = run(&["--url", &format!("http://{}", canned.addr), "--json"]);
    assert!(out.status.success(), "{}", both(&out));
    let v = common::json(&out);
    assert_eq!(v["ags"]["AG1"]["conflict_history"]["total"], 3);
    assert_eq!(v["peers"]["sql2"]["rtt_ms"], 0.7);
}

#[test]
fn an_answer_that_is_not_a_status_exits_1() {
    let canned = Canned::start("200 OK", "<html>hello</html>".into());
    let out = run(&["--url", &format!("http://{}", canned.addr)]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("is not a tdsvip status (not JSON"),
        "{}",
        both(&out)
    );

    let canned = Canned::start("503 Service Unavailable", "{\"error\":\"busy\"}".into());
    let out = run(&["--url", &format!("http://{}", canned.addr)]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("answered 503 Service Unavailable: busy"),
        "{}",
        both(&out)
    );
}

/// `tdsvip status` inside the node namespace of a netns lab, against a real `tdsvip run`
/// following tds-sim's role: owner with its acquire timeline, then standby after the
/// demotion, then exit 1 once the agent is gone.
#[test]
fn status_of_a_running_agent_follows_the_failover() {
    use common::netns::{Lab, within};

    let mut lab = Lab::new("tvs", 13);
    let sim = lab.start_sim();
    let token = lab.dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    // The agent refuses a token file every user can read.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let http_addr: SocketAddr = "127.0.0.1:19480".parse().unwrap();
    let overlay = lab.overlay();
    let config = lab.agent_config(
        &sim,
        &format!(
            "listen = \"{http_addr}\"\ntoken_file = \"{}\"",
            token.display()
        ),
        "[ebpf]\nenabled = false",
    );
    lab.start_agent(&config, &[]);
    let config_file = lab.dir.join("tdsvip.toml");
    let node = lab.node.clone();
    let status = |extra: &[&str]| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &node,
                env!("CARGO_BIN_EXE_tdsvip"),
                "status",
            ])
            .arg("--config")
            .arg(&config_file)
            .args(extra)
            .env_remove("TDSVIP_HTTP_TOKEN")
            .output()
            .expect("run tdsvip status in the namespace")
    };
    assert!(
        within(Duration::from_secs(5), || lab.has_overlay()),
        "not acquired:\n{}",
        lab.agent_log()
    );
    // The acquire's timeline is complete once the first login through the address is in.
    let owner = within(Duration::from_secs(3), || {
        let out = status(&[]);
        out.status.success() && stdout(&out).contains("own first login through the overlay IP")
    });
    let out = status(&[]);
    assert!(owner, "{}\n{}", both(&out), lab.agent_log());
    let text = stdout(&out);
    for needle in [
        "node nodea (tdsvip ",
        &format!("at http://{http_addr}"),
        "AG AG1: owner",
        "replica role      PRIMARY",
        &format!("owned addresses   {overlay}"),
        "last local probe  ok in ",
        "[login to 127.0.0.1:",
        "last failover     acquire (primary)",
        "decided: acquire",
        "address ok (took ",
        "phases            decide ",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    let out = status(&["--json"]);
    assert!(out.status.success(), "{}", both(&out));
    let v = common::json(&out);
    assert_eq!(v["ags"]["AG1"]["state"], "owner", "{v}");
    assert_eq!(
        v["ags"]["AG1"]["owned_addresses"][0],
        overlay.as_str(),
        "{v}"
    );

    lab.set_role(&sim, "SECONDARY");
    assert!(
        within(Duration::from_secs(2), || !lab.has_overlay()),
        "not released:\n{}",
        lab.agent_log()
    );
    let standby = within(Duration::from_secs(2), || {
        let text = stdout(&status(&[]));
        text.contains("AG AG1: standby") && text.contains("last failover     release (not_primary)")
    });
    let out = status(&[]);
    assert!(standby, "{}", both(&out));
    assert!(
        stdout(&out).contains("owned addresses   none"),
        "{}",
        both(&out)
    );
    assert!(stdout(&out).contains("decided: release"), "{}", both(&out));

    let stopped = lab.stop_agent(Duration::from_secs(3));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "{stopped:?}\n{}",
        lab.agent_log()
    );
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!("connection refused by {http_addr}")),
        "{}",
        both(&out)
    );
}
