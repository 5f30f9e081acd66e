//! The control API and every fault, observed from the client side: refused connects, hangs
//! that only a client timeout ends, RST (ECONNRESET), garbage (a protocol error, quickly),
//! slow answers, rejected logins; and 4xx answers naming the key for bad requests.

mod common;

fn login_err<T>(r: Result<T, String>, why: &str) -> String {
    match r {
        Ok(_) => panic!("{why}"),
        Err(e) => e,
    }
}

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{PASSWORD, Raw, http, put_state, query, tiberius};
use tds_codec::tds_version;
use tds_sim::{Fault, Role, SimConfig, SimHandle};

const T: Duration = Duration::from_secs(5);
/// How long a hanging server is given before the client's own timeout is declared the winner.
const HANG: Duration = Duration::from_millis(800);

async fn sim() -> SimHandle {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.password = PASSWORD.into();
    cfg.control = Some("127.0.0.1:0".parse().unwrap());
    cfg.databases = vec![("db1".into(), tds_sim::DbState::Online)];
    tds_sim::start(cfg).await.expect("start")
}

/// Runs blocking socket code off the async runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn wait_open_connections(sim: &SimHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while sim.stats().open_connections != n {
        assert!(
            Instant::now() < deadline,
            "open connections stuck at {} (want {n})",
            sim.stats().open_connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refuse_closes_the_listener_resets_sessions_and_rebinds_the_same_port() {
    let sim = sim().await;
    let ctl = sim.control_addr().unwrap();
    let addr = sim.tds_addr();
    let mut open = tiberius(addr, PASSWORD, T).await.expect("login");
    let state = blocking(move || put_state(ctl, r#"{"fault":"refuse"}"#)).await;
    assert_eq!(state["fault"], "refuse");
    let e = TcpStream::connect_timeout(&addr, T).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    let err = query(&mut open, "SELECT 1", T).await.unwrap_err();
    assert_ne!(
        err, "timeout",
        "the open session must be reset, not left hanging"
    );
    blocking(move || put_state(ctl, r#"{"fault":"none"}"#)).await;
    let mut c = tiberius(addr, PASSWORD, T)
        .await
        .expect("login after the fault cleared, same port");
    assert_eq!(
        query(&mut c, "SELECT 1", T).await.unwrap(),
        vec![vec![vec!["1"]]]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_after_accept_times_the_client_out_and_the_task_ends_when_it_leaves() {
    let sim = sim().await;
    sim.set_fault(Fault::HangAfterAccept);
    let err = login_err(
        tiberius(sim.tds_addr(), PASSWORD, HANG).await,
        "must not log in",
    );
    assert_eq!(err, "timeout");
    wait_open_connections(&sim, 0).await;
    sim.shutdown().await;
}

/// What the lab's `hang-primary` drill under `--promote agent` relies on: a hung server
/// answers nothing on the sessions a client already holds either (the agents poll and renew
/// the write lease on kept sessions: if those still answered, the primary's agent would
/// never see the hang and would keep the lease alive), a renewal sent into the hang does
/// not reach the lease, the lease still runs out by the replica's own clock (RESOLVING), and
/// once the hang is lifted a new session answers and shows RESOLVING.
#[tokio::test]
async fn hang_after_accept_hangs_open_sessions_too_and_the_write_lease_still_expires() {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.password = PASSWORD.into();
    cfg.databases = vec![("db1".into(), tds_sim::DbState::Online)];
    cfg.ag_config.write_lease_validity_s = Some(1);
    let sim = tds_sim::start(cfg).await.expect("start");
    let addr = sim.tds_addr();
    let mut kept = tiberius(addr, PASSWORD, T).await.expect("login");
    assert_eq!(
        query(&mut kept, "SELECT 1", T).await.unwrap(),
        vec![vec![vec!["1"]]]
    );
    let expiry =
        |sim: &SimHandle| sim.state_json()["ag_state"]["write_lease_expires_unix_ms"].clone();
    let before = expiry(&sim);
    assert!(before.is_u64(), "a new PRIMARY has a lease: {before}");
    sim.set_fault(Fault::HangAfterAccept);
    assert_eq!(
        query(
            &mut kept,
            "ALTER AVAILABILITY GROUP AG1 SET (WRITE_LEASE_VALIDITY = 2)",
            HANG
        )
        .await
        .unwrap_err(),
        "timeout",
        "a session opened before the hang must hang too"
    );
    assert_eq!(expiry(&sim), before, "a renewal sent into the hang renewed");
    let deadline = Instant::now() + T;
    while sim.state_json()["role"] != "RESOLVING" {
        assert!(
            Instant::now() < deadline,
            "still {} after the lease: {}",
            sim.state_json()["role"],
            sim.state_json()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.state_json()["fault"], "hang_after_accept");
    sim.set_fault(Fault::None);
    let mut after = tiberius(addr, PASSWORD, T)
        .await
        .expect("login once the hang is lifted");
    let role = "SELECT role_desc FROM sys.dm_hadr_availability_replica_states WHERE is_local = 1";
    assert_eq!(
        query(&mut after, role, T).await.unwrap(),
        vec![vec![vec!["RESOLVING"]]]
    );
    drop((kept, after));
    wait_open_connections(&sim, 0).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_after_prelogin_answers_prelogin_only() {
    let sim = sim().await;
    sim.set_fault(Fault::HangAfterPrelogin);
    let addr = sim.tds_addr();
    let timed_out = blocking(move || {
        let mut r = Raw::connect(addr).unwrap();
        r.stream.set_read_timeout(Some(HANG)).unwrap();
        r.prelogin().unwrap();
        let (ty, _) = r.read_message().expect("PRELOGIN is answered");
        assert_eq!(ty, 0x04);
        r.login(tds_version::V7_4, PASSWORD).unwrap();
        let e = r.read_message().unwrap_err();
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    })
    .await;
    assert!(timed_out, "LOGIN7 must go unanswered");
    assert_eq!(
        tiberius(sim.tds_addr(), PASSWORD, HANG)
            .await
            .err()
            .as_deref(),
        Some("timeout")
    );
    wait_open_connections(&sim, 0).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_after_login_applies_to_open_sessions_too() {
    let sim = sim().await;
    let mut before = tiberius(sim.tds_addr(), PASSWORD, T).await.expect("login");
    sim.set_fault(Fault::HangAfterLogin);
    let mut after = tiberius(sim.tds_addr(), PASSWORD, T)
        .await
        .expect("logins still succeed");
    assert_eq!(
        query(&mut after, "SELECT 1", HANG).await.unwrap_err(),
        "timeout"
    );
    assert_eq!(
        query(&mut before, "SELECT 1", HANG).await.unwrap_err(),
        "timeout"
    );
    drop((before, after));
    wait_open_connections(&sim, 0).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_sends_rst_to_new_and_open_connections() {
    let sim = sim().await;
    let addr = sim.tds_addr();
    let open = blocking(move || Raw::logged_in(addr)).await;
    sim.set_fault(Fault::Reset);
    let kinds = blocking(move || {
        let mut open = open;
        let mut buf = [0u8; 16];
        let existing = std::io::Read::read(&mut open.stream, &mut buf)
            .map(|_| ())
            .unwrap_err()
            .kind();
        let mut fresh = Raw::connect(addr).unwrap();
        let _ = fresh.prelogin();
        let new = std::io::Read::read(&mut fresh.stream, &mut buf)
            .map(|_| ())
            .unwrap_err()
            .kind();
        (existing, new)
    })
    .await;
    assert_eq!(
        kinds,
        (ErrorKind::ConnectionReset, ErrorKind::ConnectionReset)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_is_a_quick_protocol_error() {
    let sim = sim().await;
    sim.set_fault(Fault::Garbage);
    let started = Instant::now();
    let err = login_err(tiberius(sim.tds_addr(), PASSWORD, T).await, "must fail");
    assert_ne!(err, "timeout");
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    let lower = err.to_lowercase();
    assert!(
        !lower.contains("reset") && !lower.contains("refused"),
        "not a protocol error: {err}"
    );
    // After login too.
    sim.set_fault(Fault::None);
    let mut c = tiberius(sim.tds_addr(), PASSWORD, T).await.expect("login");
    sim.set_fault(Fault::Garbage);
    let err = query(&mut c, "SELECT 1", T).await.unwrap_err();
    assert_ne!(err, "timeout");
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_delays_every_answer_by_at_least_delay_ms() {
    let sim = sim().await;
    let ctl = sim.control_addr().unwrap();
    let mut c = tiberius(sim.tds_addr(), PASSWORD, T).await.expect("login");
    let state = blocking(move || put_state(ctl, r#"{"fault":"slow","delay_ms":300}"#)).await;
    assert_eq!(
        (state["fault"].as_str(), state["delay_ms"].as_u64()),
        (Some("slow"), Some(300))
    );
    let t = Instant::now();
    assert_eq!(
        query(&mut c, "SELECT 1", T).await.unwrap(),
        vec![vec![vec!["1"]]]
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    tiberius(sim.tds_addr(), PASSWORD, T)
        .await
        .expect("slow login");
    // PRELOGIN and LOGIN7 are both delayed.
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reject_login_fails_every_login_with_18456() {
    let sim = sim().await;
    sim.set_fault(Fault::RejectLogin);
    let err = login_err(tiberius(sim.tds_addr(), PASSWORD, T).await, "must fail");
    assert!(
        err.contains("18456") || err.contains("Login failed"),
        "{err}"
    );
    sim.set_fault(Fault::None);
    tiberius(sim.tds_addr(), PASSWORD, T)
        .await
        .expect("login after the fault cleared");
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_control_requests_are_4xx_naming_the_key() {
    let sim = sim().await;
    let ctl = sim.control_addr().unwrap();
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("PUT", "/state", Some(r#"{"rol":"PRIMARY"}"#), 400, "rol"),
        ("PUT", "/state", Some(r#"{"role":"BOSS"}"#), 400, "role"),
        ("PUT", "/state", Some(r#"{"role":1}"#), 400, "role"),
        (
            "PUT",
            "/state",
            Some(r#"{"databases":{"db1":"SLEEPY"}}"#),
            400,
            "databases.db1",
        ),
        (
            "PUT",
            "/state",
            Some(r#"{"databases":["db1"]}"#),
            400,
            "databases",
        ),
        (
            "PUT",
            "/state",
            Some(r#"{"fault":"explode"}"#),
            400,
            "fault",
        ),
        (
            "PUT",
            "/state",
            Some(r#"{"fault":"slow"}"#),
            400,
            "delay_ms",
        ),
        ("PUT", "/state", Some(r#"{"delay_ms":-5}"#), 400, "delay_ms"),
        (
            "PUT",
            "/state",
            Some(r#"{"synchronization_health":"GREAT"}"#),
            400,
            "synchronization_health",
        ),
        (
            "PUT",
            "/state",
            Some(r#"{"server_name":"x"}"#),
            400,
            "server_name",
        ),
        ("PUT", "/state", Some(r#"{"role": "#), 400, "invalid JSON"),
        ("PUT", "/state", Some("[1,2]"), 400, "object"),
        ("DELETE", "/state", None, 405, "DELETE"),
        ("GET", "/nope", None, 404, "/nope"),
    ];
    let results = blocking(move || {
        cases
            .into_iter()
            .map(|(m, p, b, want, key)| {
                let (status, body) = http(ctl, m, p, b);
                (m, p, b, want, key, status, body)
            })
            .collect::<Vec<_>>()
    })
    .await;
    for (m, p, b, want, key, status, body) in results {
        assert_eq!(status, want, "{m} {p} {b:?}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error key: {body}"));
        assert!(
            msg.contains(key),
            "{m} {p} {b:?}: {msg:?} does not name {key:?}"
        );
    }
    // Nothing was applied by the bad requests, and the server still works.
    let state = blocking(move || common::get_state(ctl)).await;
    assert_eq!(
        (state["role"].as_str(), state["fault"].as_str()),
        (Some("PRIMARY"), Some("none"))
    );
    // A good partial PUT merges.
    let state = blocking(move || put_state(ctl, r#"{"databases":{"db2":"RESTORING","db1":null},"synchronization_health":"NOT_HEALTHY"}"#)).await;
    assert_eq!(state["databases"], serde_json::json!({"db2": "RESTORING"}));
    assert_eq!(state["synchronization_health"], "NOT_HEALTHY");
    assert_eq!(state["role"], "PRIMARY");
    sim.shutdown().await;
}
