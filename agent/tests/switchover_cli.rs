//! `tdsvip switchover` against a real etcd, the test playing the agents: without a leader it
//! refuses; with a target that publishes nothing it refuses; with a leader and a synchronized
//! secondary it writes the request (the term-addressed JSON) and reports the switchover once
//! the target holds the leader key; when another node takes the key, nobody acts, or on
//! Ctrl-C, it gives up and its request is gone with its lease; an etcd that does not answer
//! is named.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::etcd::EtcdServer;
use tdsvip::controller::promotion::{CommitMode, MemberRole, MemberState};
use tdsvip::switchover_request::SwitchoverRequest;
use tdsvip_etcd::{AgEvent, AgWatch, Campaign, Etcd, Lease, SWITCHOVER_KEY_SUFFIX};

const AG: &str = "ag1";
const PREFIX: &str = "/switchover-test";
const TTL: Duration = Duration::from_secs(20);
/// How long the test waits for something the command or etcd does at once.
const WAIT: Duration = Duration::from_secs(15);

/// A manage-mode config that reaches etcd at `url`, with roomy etcd deadlines for a loaded
/// machine.
fn config(tag: &str, url: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tdsvip-switchover-cli-{tag}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tdsvip.toml");
    let text = format!(
        "interface = \"eth0\"\nnode = \"sql-a\"\n\
         [sql]\nendpoint = \"127.0.0.1:1433\"\nuser = \"tdsvip\"\npassword_file = \"/etc/tdsvip/sql-password\"\n\
         [[ag]]\nname = \"{AG}\"\naddresses = [\"10.0.0.100\"]\n\
         [cluster]\nmode = \"manage\"\netcd = [\"{url}\"]\nprefix = \"{PREFIX}\"\nkey_ttl_s = 5\netcd_timeout_ms = 3000\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &PathBuf, to: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tdsvip"))
        .args(["switchover", "--config"])
        .arg(config)
        .args(["--ag", AG, "--to", to])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tdsvip")
}

async fn finish(child: Child) -> (Option<i32>, String, String) {
    let out: Output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait for tdsvip")),
    )
    .await
    .expect("tdsvip did not exit within 60 s")
    .expect("join");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    // Shown with --nocapture: what an operator would read.
    eprintln!("exit {:?}\n{stdout}{stderr}", out.status.code());
    (out.status.code(), stdout, stderr)
}

async fn switchover(config: &PathBuf, to: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    finish(start(config, to, extra)).await
}

async fn lead(etcd: &Etcd, node: &str, lease: &Lease) -> i64 {
    match etcd.campaign(AG, node, lease).await.unwrap() {
        Campaign::Won { create_revision } => create_revision,
        held => panic!("{node} expected to win, got {held:?}"),
    }
}

fn member(node: &str, role: MemberRole, synchronized: bool) -> String {
    serde_json::to_string(&MemberState {
        node: node.to_owned(),
        role,
        commit_mode: CommitMode::Synchronous,
        sequence_number: 7,
        synchronized,
        voters: 2,
    })
    .unwrap()
}

/// The next put of the switchover request seen by `watch`: its value.
async fn request_seen(watch: &mut AgWatch) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match watch.next().await.unwrap() {
                AgEvent::Put {
                    key_suffix, value, ..
                } if key_suffix == SWITCHOVER_KEY_SUFFIX => return value,
                _ => {}
            }
        }
    })
    .await
    .expect("no switchover request written")
}

/// A leader `sql-a` and a secondary `sql-b` (synchronized or not), each on its own lease.
async fn two_nodes(etcd: &Etcd, synchronized: bool) -> (Lease, i64, Lease) {
    let (lease_a, lease_b) = (
        etcd.grant(TTL).await.unwrap(),
        etcd.grant(TTL).await.unwrap(),
    );
    let term = lead(etcd, "sql-a", &lease_a).await;
    etcd.put_member(
        AG,
        "sql-a",
        &member("sql-a", MemberRole::Primary, true),
        &lease_a,
    )
    .await
    .unwrap();
    let state_b = member("sql-b", MemberRole::Secondary, synchronized);
    etcd.put_member(AG, "sql-b", &state_b, &lease_b)
        .await
        .unwrap();
    (lease_a, term, lease_b)
}

#[tokio::test]
async fn without_a_leader_it_exits_1_saying_so() {
    let server = EtcdServer::start().await;
    let config = config("no-leader", &server.client_url);
    let (code, _, stderr) = switchover(&config, "sql-b", &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("AG ag1 has no leader now: a switchover needs one (see `tdsvip status`)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_target_that_publishes_nothing_is_refused_and_nothing_is_written() {
    let server = EtcdServer::start().await;
    let etcd = server.connect_under(PREFIX).await;
    let lease = etcd.grant(TTL).await.unwrap();
    lead(&etcd, "sql-a", &lease).await;
    etcd.put_member(
        AG,
        "sql-a",
        &member("sql-a", MemberRole::Primary, true),
        &lease,
    )
    .await
    .unwrap();
    let config = config("unpublished", &server.client_url);
    let (code, _, stderr) = switchover(&config, "sql-b", &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("sql-b publishes no state in AG ag1"),
        "{stderr}"
    );
    assert_eq!(etcd.get("ag1/switchover").await.unwrap(), None);

    // The leader itself: nothing to do, exit 0.
    let (code, stdout, stderr) = switchover(&config, "sql-a", &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("sql-a already leads ag1"), "{stdout}");
}

#[tokio::test]
async fn the_target_taking_the_key_is_reported_as_the_switchover() {
    let server = EtcdServer::start().await;
    let etcd = server.connect_under(PREFIX).await;
    let (_lease_a, term, lease_b) = two_nodes(&etcd, false).await;
    let mut watch = etcd.watch_ag(AG, None).await.unwrap();
    let config = config("happy", &server.client_url);
    let child = start(&config, "sql-b", &[]);

    // The leader's side, as the agents do it: read the request, hand over, the target leads.
    let value = request_seen(&mut watch).await;
    assert_eq!(value, format!(r#"{{"to":"sql-b","term":{term}}}"#));
    let request = SwitchoverRequest::from_json(&value).unwrap();
    assert_eq!((request.to.as_str(), request.term), ("sql-b", term));
    assert!(
        etcd.resign(AG, term, Some(("handoff", "to sql-b")))
            .await
            .unwrap()
    );
    let new_term = lead(&etcd, "sql-b", &lease_b).await;

    let (code, stdout, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("sql-b is not SYNCHRONIZED yet: the leader sql-a waits for it"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "switched over: sql-b leads ag1 (term {new_term}) "
        )) && stdout.contains(" ms after the request"),
        "{stdout}"
    );
    // Done, the request is withdrawn with the command's lease.
    assert_eq!(etcd.get("ag1/switchover").await.unwrap(), None);
}

#[tokio::test]
async fn when_nobody_acts_it_times_out_and_its_request_is_gone() {
    let server = EtcdServer::start().await;
    let etcd = server.connect_under(PREFIX).await;
    let (_lease_a, term, _lease_b) = two_nodes(&etcd, true).await;
    let mut watch = etcd.watch_ag(AG, None).await.unwrap();
    let config = config("timeout", &server.client_url);
    let (code, stdout, stderr) = switchover(&config, "sql-b", &["--timeout-s", "2"]).await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("no switchover of ag1 to sql-b within 2 s (the request was withdrawn)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sql-a leads (term {term})"))
            && stderr.contains("sql-b: secondary, synchronous, sequence 7, synchronized"),
        "{stderr}"
    );
    // It was written, and it is gone.
    assert!(!request_seen(&mut watch).await.is_empty());
    assert_eq!(etcd.get("ag1/switchover").await.unwrap(), None);
}

#[tokio::test]
async fn ctrl_c_withdraws_the_request_and_exits_1() {
    let server = EtcdServer::start().await;
    let etcd = server.connect_under(PREFIX).await;
    two_nodes(&etcd, true).await;
    let mut watch = etcd.watch_ag(AG, None).await.unwrap();
    let config = config("ctrl-c", &server.client_url);
    let child = start(&config, "sql-b", &[]);
    request_seen(&mut watch).await;
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (code, _, stderr) = finish(child).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted (SIGINT): the switchover request was withdrawn"),
        "{stderr}"
    );
    assert_eq!(etcd.get("ag1/switchover").await.unwrap(), None);
}

#[tokio::test]
async fn another_node_taking_the_key_voids_the_request() {
    let server = EtcdServer::start().await;
    let etcd = server.connect_under(PREFIX).await;
    let (_lease_a, term, _lease_b) = two_nodes(&etcd, true).await;
    let mut watch = etcd.watch_ag(AG, None).await.unwrap();
    let config = config("void", &server.client_url);
    let child = start(&config, "sql-b", &[]);
    request_seen(&mut watch).await;
    assert!(etcd.resign(AG, term, None).await.unwrap());
    let lease_c = etcd.grant(TTL).await.unwrap();
    let other = lead(&etcd, "sql-c", &lease_c).await;
    let (code, _, stderr) = finish(child).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sql-c took the leader key instead of sql-b (term {other}): the request to term {term} is void"
        )),
        "{stderr}"
    );
    assert_eq!(etcd.get("ag1/switchover").await.unwrap(), None);
}

#[tokio::test]
async fn an_etcd_that_does_not_answer_is_named_with_exit_1() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = config("unreachable", &url);
    let (code, _, stderr) = switchover(&config, "sql-b", &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("etcd at {url}")), "{stderr}");
}

#[tokio::test]
async fn an_ag_the_config_does_not_have_is_a_usage_error() {
    // Refused before any etcd call: nothing listens there.
    let config = config("usage", "http://127.0.0.1:9");
    let out = Command::new(env!("CARGO_BIN_EXE_tdsvip"))
        .args(["switchover", "--config"])
        .arg(&config)
        .args(["--ag", "ag9", "--to", "sql-b"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: --ag: \"ag9\" is not an [[ag]]"),
        "{stderr}"
    );
}
