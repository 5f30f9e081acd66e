//! `tdsvip run` as a real process in a network namespace against `tds-sim`: the one test that
//! shows the loop joins probes, controller, node executor, status, metrics and HTTP, and that
//! a role change on the replica moves the overlay address on the interface.
//!
//! tds-sim runs in this process on a thread that entered the node namespace (its sockets stay
//! there), which avoids finding its binary in the target dir. HTTP requests to the namespace's
//! loopback go through a short-lived thread that enters the namespace too. Namespaces carry
//! the prefix `tvr<pid>x<n>` and are removed on Drop, also when an assertion fails, and labs
//! of dead test processes are removed first.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "tvr";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Enters `ns` for the rest of the calling thread's life (only used on threads of our own).
fn enter_netns(ns: &str) {
    let f = File::open(format!("/var/run/netns/{ns}")).expect("open netns");
    // SAFETY: setns with a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

fn remove_stale_labs() {
    for line in sh(&["ip", "netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

/// Node namespace (`eth0` 10.232.7.2/24) and client namespace (`eth0` .1) on a veth pair.
struct Lab {
    node: String,
    client: String,
    dir: PathBuf,
    agent: Option<Child>,
}

impl Lab {
    /// Writes `config` and starts `tdsvip run` inside the node namespace with `env` added
    /// (and no AWS profile), logging to the lab's `agent.log`; returns the agent's pid.
    fn start_agent(&mut self, config: &str, env: &[(&str, &str)]) -> u32 {
        let config_file = self.dir.join("tdsvip.toml");
        std::fs::write(&config_file, config).unwrap();
        let log = File::create(self.dir.join("agent.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                env!("CARGO_BIN_EXE_tdsvip"),
                "run",
            ])
            .arg("--config")
            .arg(&config_file)
            .envs(env.iter().copied())
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tdsvip run");
        let pid = child.id();
        self.agent = Some(child);
        pid
    }

    fn new() -> Lab {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test creates network namespaces: run as root"
        );
        remove_stale_labs();
        let name = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&name);
        let lab = Lab {
            node: format!("{name}-a"),
            client: format!("{name}-c"),
            dir,
            agent: None,
        };
        std::fs::create_dir_all(&lab.dir).expect("temp dir");
        sh(&["ip", "netns", "add", &lab.node]);
        sh(&["ip", "netns", "add", &lab.client]);
        sh(&[
            "ip",
            "-n",
            &lab.node,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.client,
        ]);
        for (ns, ip) in [(&lab.node, "10.232.7.2/24"), (&lab.client, "10.232.7.1/24")] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    fn has_overlay(&self) -> bool {
        self.has_address("10.232.7.100/32")
    }

    fn has_address(&self, cidr: &str) -> bool {
        sh(&["ip", "-n", &self.node, "-4", "addr", "show", "dev", "eth0"]).contains(cidr)
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.node, &self.client] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 request from inside `ns`; returns (status, body).
fn http(
    ns: &str,
    method: &str,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (ns, method, path, token, body) = (
        ns.to_owned(),
        method.to_owned(),
        path.to_owned(),
        token.map(str::to_owned),
        body.to_owned(),
    );
    std::thread::spawn(move || {
        enter_netns(&ns);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .join()
    .expect("http thread")
}

/// Polls `f` until it is true or `limit` passes; true if it became true.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// tds-sim as PRIMARY of AG1 on the node namespace's loopback; returns (tds, control).
fn start_sim(ns: &str) -> (SocketAddr, SocketAddr) {
    let ns = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = tds_sim::SimConfig::new("NODEA", "AG1", tds_sim::Role::Primary);
            // Every address, so that the overlay IP reaches it once the agent adds it.
            cfg.listen = SocketAddr::from(([0, 0, 0, 0], 0));
            cfg.control = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            cfg.databases = vec![("sales".into(), tds_sim::DbState::Online)];
            let sim = tds_sim::start(cfg).await.expect("tds-sim start");
            let control = sim.control_addr().expect("control addr");
            let tds = SocketAddr::from(([127, 0, 0, 1], sim.tds_addr().port()));
            tx.send((tds, control)).unwrap();
            // Serve until the process ends (the namespace goes with the lab).
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("tds-sim did not start")
}

fn owner_metric(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with("tdsvip_owner{") && l.contains("address=\"10.232.7.100\""))
        .map(str::to_owned)
}

#[test]
fn run_follows_the_replica_role_in_a_netns() {
    let mut lab = Lab::new();
    let (tds, control) = start_sim(&lab.node);
    let token = "run-netns-test-token-0123456789abcdef";
    let token_file = lab.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let pw_file = lab.dir.join("pw");
    std::fs::write(&pw_file, "secret\n").unwrap();
    let http_addr = SocketAddr::from(([127, 0, 0, 1], 19477));
    let config = format!(
        r#"
node = "nodea"
interface = "eth0"

[sql]
endpoint = "{tds}"
user = "tdsvip"
password_file = "{pw}"

[probe]
interval_ms = 20
timeout_ms = 200
rise = 2
fall = 3

[[ag]]
name = "AG1"
addresses = ["10.232.7.100"]
port = {port}
databases = ["sales"]

[http]
listen = "{http_addr}"
token_file = "{token_file}"

[ebpf]
enabled = true

[reconcile]
interval_ms = 200
"#,
        pw = pw_file.display(),
        port = tds.port(),
        token_file = token_file.display(),
    );
    let pid = lab.start_agent(&config, &[]);
    let ns = lab.node.clone();
    let get = |path: &str| http(&ns, "GET", http_addr, path, Some(token), "");
    let http_up = |lab: &Lab| {
        within(Duration::from_secs(5), || {
            // The listener is in the namespace: connect from there.
            let ns = lab.node.clone();
            std::thread::spawn(move || {
                enter_netns(&ns);
                TcpStream::connect(http_addr).is_ok()
            })
            .join()
            .unwrap_or(false)
        })
    };
    assert!(
        http_up(&lab),
        "agent HTTP never came up:\n{}",
        lab.agent_log()
    );

    // PRIMARY: the address arrives, /primary 200, owner metric 1.
    assert!(
        within(Duration::from_secs(2), || lab.has_overlay()),
        "overlay address not acquired within 2 s:\n{}",
        lab.agent_log()
    );
    assert!(
        within(Duration::from_secs(1), || get("/primary").0 == 200),
        "/primary not 200 while owning: {:?}\n{}",
        get("/primary"),
        lab.agent_log()
    );
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    let owner = owner_metric(&metrics).expect("tdsvip_owner for the overlay address");
    assert!(owner.ends_with(" 1"), "{owner}");
    assert!(owner.contains("ag=\"AG1\""), "{owner}");

    // Packets from the client to the overlay address pass the eBPF guard and are counted
    // (read from the guard on each reconcile tick).
    let client = lab.client.clone();
    std::thread::spawn(move || {
        enter_netns(&client);
        for _ in 0..3 {
            // Nothing listens on the overlay address's port 9: each SYN passes, a RST answers.
            let target = SocketAddr::from(([10, 232, 7, 100], 9));
            let r = TcpStream::connect_timeout(&target, Duration::from_secs(1));
            assert!(r.is_err(), "nothing should listen on {target}");
        }
    })
    .join()
    .expect("client thread");
    let passed = |metrics: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("tdsvip_overlay_packets_total{")
                    && l.contains("address=\"10.232.7.100\"")
                    && l.contains("verdict=\"pass\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        within(Duration::from_secs(2), || passed(&get("/metrics").1) >= 3.0),
        "overlay packet counter: {}",
        get("/metrics").1
    );

    // SECONDARY: the address goes at once, /primary 503, status and events show the release.
    let (code, body) = http(
        &lab.node,
        "PUT",
        control,
        "/state",
        None,
        r#"{"role":"SECONDARY"}"#,
    );
    assert_eq!(code, 200, "tds-sim PUT /state: {body}");
    assert!(
        within(Duration::from_secs(1), || !lab.has_overlay()),
        "overlay address still present 1 s after demotion:\n{}",
        lab.agent_log()
    );
    assert!(
        within(Duration::from_secs(1), || get("/primary").0 == 503),
        "/primary still {:?}",
        get("/primary")
    );
    let release_seen = within(Duration::from_secs(1), || {
        let (code, body) = get("/status");
        assert_eq!(code, 200, "/status: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let ag = &v["ags"]["AG1"];
        ag["state"] == "standby"
            && ag["owned_addresses"].as_array().is_some_and(Vec::is_empty)
            && ag["last_timeline"]["direction"] == "release"
            && ag["last_timeline"]["reason_label"] == "not_primary"
    });
    assert!(
        release_seen,
        "/status: {}\n{}",
        get("/status").1,
        lab.agent_log()
    );
    let (code, body) = get("/events");
    assert_eq!(code, 200);
    let events: serde_json::Value = serde_json::from_str(&body).expect("events JSON");
    let list = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .unwrap_or_else(|| panic!("events: {body}"));
    assert!(
        list.iter().any(|t| t["direction"] == "acquire"
            && t["phases"]["address"].is_number()
            && t["phases"]["first_client_login"].is_number()),
        "no acquire timeline with the address and first-login phases: {body}"
    );
    assert!(
        list.iter()
            .any(|t| t["direction"] == "release" && t["reason_label"] == "not_primary"),
        "no release timeline: {body}"
    );
    let owner = owner_metric(&get("/metrics").1).expect("tdsvip_owner");
    assert!(owner.ends_with(" 0"), "{owner}");

    // PRIMARY again: the address returns.
    let (code, body) = http(
        &lab.node,
        "PUT",
        control,
        "/state",
        None,
        r#"{"role":"PRIMARY"}"#,
    );
    assert_eq!(code, 200, "tds-sim PUT /state: {body}");
    assert!(
        within(Duration::from_secs(2), || lab.has_overlay()),
        "overlay address not re-acquired:\n{}",
        lab.agent_log()
    );
    assert!(within(Duration::from_secs(1), || get("/primary").0 == 200));

    // SIGTERM: release, exit 0.
    // SAFETY: signalling the child we started (ip netns exec execs the agent in place).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let mut child = lab.agent.take().expect("agent child");
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait agent") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "agent did not exit within 3 s of SIGTERM:\n{}",
                lab.agent_log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        lab.agent_log()
    );
    assert!(
        !lab.has_overlay(),
        "address left after SIGTERM:\n{}",
        lab.agent_log()
    );
    let log = lab.agent_log();
    assert!(log.contains("release (stop)"), "{log}");
    assert!(!log.contains("secret"), "the password leaked into the log");
}

#[test]
fn run_refuses_a_bad_config_with_key_reason_lines_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("tdsvip-run-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "interface = \"eth0\"\nbogus = 1\n[sql]\nuser = \"u\"\npassword_env = \"TDSVIP_PW\"\n[[ag]]\nname = \"AG1\"\naddresses = [\"not-an-ip\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tdsvip"))
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .expect("run tdsvip");
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bogus: unknown key"), "{stderr}");
    assert!(stderr.contains("ag[0].addresses[0]: "), "{stderr}");
    assert!(!stderr.contains("tdsvip running"), "{stderr}");
}

/// Runs `f` on a new thread inside `ns` and returns its result.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .expect("netns thread")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// With `[cloud]`, the acquire also points every route table at this node's ENI (moto's EC2
/// server, started inside the node namespace so the agent reaches it on its loopback).
#[test]
fn run_claims_the_route_tables_with_the_address() {
    use tdsvip_cloud::moto::{Moto, OVERLAY, World, route_target, setup_api};
    let overlay = format!("{OVERLAY}/32");
    let mut lab = Lab::new();
    let (tds, _control) = start_sim(&lab.node);
    let moto = in_ns(&lab.node, Moto::start);
    let endpoint = moto.endpoint();
    let world = {
        let endpoint = endpoint.clone();
        in_ns(&lab.node, move || {
            runtime().block_on(async move {
                let api = setup_api(&endpoint).await;
                let world = World::build(api.client(), 2).await;
                world
                    .route_to(api.client(), &world.tables, &world.b.eni)
                    .await;
                world
            })
        })
    };
    let pw_file = lab.dir.join("pw");
    std::fs::write(&pw_file, "secret\n").unwrap();
    let http_addr = SocketAddr::from(([127, 0, 0, 1], 19478));
    let tables: Vec<String> = world.tables.iter().map(|t| format!("\"{t}\"")).collect();
    let config = format!(
        r#"
interface = "eth0"
[sql]
endpoint = "{tds}"
user = "tdsvip"
password_file = "{pw}"
[[ag]]
name = "AG1"
addresses = ["{OVERLAY}"]
port = {port}
databases = ["sales"]
[http]
listen = "{http_addr}"
[cloud]
provider = "aws"
region = "us-east-1"
route_tables = [{tables}]
eni_id = "{eni}"
endpoint_url = "{endpoint}"
call_timeout_ms = 2000
"#,
        pw = pw_file.display(),
        tables = tables.join(", "),
        eni = world.a.eni,
        port = tds.port(),
    );
    let pid = lab.start_agent(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );

    assert!(
        within(Duration::from_secs(3), || lab.has_address(&overlay)),
        "overlay address not acquired:\n{}",
        lab.agent_log()
    );
    let targets = |lab: &Lab| {
        let (endpoint, tables) = (endpoint.clone(), world.tables.clone());
        in_ns(&lab.node, move || {
            runtime().block_on(async move {
                let api = setup_api(&endpoint).await;
                let mut out = Vec::new();
                for t in &tables {
                    out.push(route_target(api.client(), t).await);
                }
                out
            })
        })
    };
    let mine = Some(world.a.eni.clone());
    assert!(
        within(Duration::from_secs(5), || targets(&lab)
            .iter()
            .all(|t| *t == mine)),
        "route tables not claimed: {:?}\n{}",
        targets(&lab),
        lab.agent_log()
    );
    let status_ok = within(Duration::from_secs(2), || {
        let (code, body) = http(&lab.node, "GET", http_addr, "/status", None, "");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let rts = v["ags"]["AG1"]["route_tables"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        rts.len() == 2 && rts.iter().all(|r| r["this_node"] == true)
    });
    assert!(
        status_ok,
        "{}",
        http(&lab.node, "GET", http_addr, "/status", None, "").1
    );
    let (_, metrics) = http(&lab.node, "GET", http_addr, "/metrics", None, "");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tdsvip_route_table_calls_total{") && l.contains("ok")),
        "{metrics}"
    );
    let (_, events) = http(&lab.node, "GET", http_addr, "/events", None, "");
    let parsed: serde_json::Value = serde_json::from_str(&events).expect("events JSON");
    let list = parsed
        .as_array()
        .or_else(|| parsed["events"].as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        list.iter().any(|t| t["direction"] == "acquire"
            && t["phases"]["route_table"].is_number()
            && t["route_tables"].as_array().is_some_and(|r| r.len() == 2)),
        "no acquire timeline with the route-table phase: {events}"
    );

    // SAFETY: signalling the child we started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let mut child = lab.agent.take().expect("agent child");
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait agent") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            lab.agent_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        lab.agent_log()
    );
    assert!(!lab.has_address(&overlay));
    drop(moto);
}
