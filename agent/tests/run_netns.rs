//! `tdsvip run` as a real process in a network namespace against `tds-sim`: the one test that
//! shows the loop joins probes, controller, node executor, status, metrics and HTTP, and that
//! a role change on the replica moves the overlay address on the interface.
//!
//! The bed (namespaces, tds-sim on a namespace thread, the agent process, HTTP from inside
//! the namespace, cleanup) is `common::netns`; this file's labs carry the prefix `tvr`.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::netns::{Lab, in_ns, runtime, within};

const PREFIX: &str = "tvr";
/// The lab's 10.232.NET.0/24; the overlay address is 10.232.7.100.
const NET: u8 = 7;

fn owner_metric(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with("tdsvip_owner{") && l.contains("address=\"10.232.7.100\""))
        .map(str::to_owned)
}

#[test]
fn run_follows_the_replica_role_in_a_netns() {
    let mut lab = Lab::new(PREFIX, NET);
    let sim = lab.start_sim();
    let token = "run-netns-test-token-0123456789abcdef";
    let token_file = lab.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // The agent refuses a token file every user can read.
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let http_addr = SocketAddr::from(([127, 0, 0, 1], 19477));
    assert_eq!(lab.overlay(), "10.232.7.100");
    let config = lab.agent_config(
        &sim,
        &format!(
            "listen = \"{http_addr}\"\ntoken_file = \"{}\"",
            token_file.display()
        ),
        "[ebpf]\nenabled = true\n\n[reconcile]\ninterval_ms = 200",
    );
    lab.start_agent(&config, &[]);
    let get = |path: &str| lab.http("GET", http_addr, path, Some(token));
    assert!(
        lab.listening_within(http_addr, Duration::from_secs(5)),
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
    // The acquire's timeline completes with the agent's own first login through the overlay
    // IP, a few probe intervals after the acquire: a demotion before that would end it
    // without one (the /events check below needs the phase). With no peer agent, nobody
    // measures a client's login across the network.
    let acquire_complete = within(Duration::from_secs(2), || {
        let v: serde_json::Value = serde_json::from_str(&get("/status").1).expect("status JSON");
        let t = &v["ags"]["AG1"]["last_timeline"];
        t["direction"] == "acquire" && t["phases"]["first_local_login"].is_number()
    });
    assert!(
        acquire_complete,
        "no complete acquire timeline: {}\n{}",
        get("/status").1,
        lab.agent_log()
    );

    // Packets from the client to the overlay address pass the eBPF guard and are counted
    // (read from the guard on each reconcile tick).
    in_ns(&lab.client, || {
        for _ in 0..3 {
            // Nothing listens on the overlay address's port 9: each SYN passes, a RST answers.
            let target = SocketAddr::from(([10, 232, 7, 100], 9));
            let r = TcpStream::connect_timeout(&target, Duration::from_secs(1));
            assert!(r.is_err(), "nothing should listen on {target}");
        }
    });
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
    lab.set_role(&sim, "SECONDARY");
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
            && t["phases"]["first_local_login"].is_number()),
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
    lab.set_role(&sim, "PRIMARY");
    assert!(
        within(Duration::from_secs(2), || lab.has_overlay()),
        "overlay address not re-acquired:\n{}",
        lab.agent_log()
    );
    assert!(within(Duration::from_secs(1), || get("/primary").0 == 200));

    // SIGTERM: release, exit 0.
    let Some(status) = lab.stop_agent(Duration::from_secs(3)) else {
        panic!(
            "agent did not exit within 3 s of SIGTERM:\n{}",
            lab.agent_log()
        );
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

/// With `[cloud]`, the acquire also points every route table at this node's ENI (moto's EC2
/// server, started inside the node namespace so the agent reaches it on its loopback).
/// This agent trusts the sim's certificate (`trust_server_certificate`) and warns about it.
#[test]
fn run_claims_the_route_tables_with_the_address() {
    use tdsvip_cloud::moto::{Moto, OVERLAY, World, route_target, setup_api};
    let overlay = format!("{OVERLAY}/32");
    let mut lab = Lab::new(PREFIX, NET);
    let tds = lab.start_sim().tds;
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
# The one netns agent that trusts the certificate blindly (the explicit opt-in, which the
# agent must warn about at start); the others verify it against the lab's CA.
encrypt = "mandatory"
trust_server_certificate = true
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
[ebpf]
pin_dir = "{pin_dir}"
"#,
        pin_dir = lab.pin_dir().display(),
        pw = pw_file.display(),
        tables = tables.join(", "),
        eni = world.a.eni,
        port = tds.port(),
    );
    lab.start_agent(
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
    // Trusted blindly, and said so at start.
    let log = lab.agent_log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("sql.trust_server_certificate = true")),
        "{log}"
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
        let (code, body) = lab.http("GET", http_addr, "/status", None);
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
        lab.http("GET", http_addr, "/status", None).1
    );
    let (_, metrics) = lab.http("GET", http_addr, "/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tdsvip_route_table_calls_total{") && l.contains("ok")),
        "{metrics}"
    );
    let (_, events) = lab.http("GET", http_addr, "/events", None);
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

    let status = lab.stop_agent(Duration::from_secs(3));
    let Some(status) = status else {
        panic!("no exit after SIGTERM:\n{}", lab.agent_log());
    };
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        lab.agent_log()
    );
    assert!(!lab.has_address(&overlay));
    drop(moto);
}
