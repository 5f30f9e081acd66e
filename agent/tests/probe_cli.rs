//! `tdsvip probe` as a user runs it: the real binary against a real tds-sim on loopback,
//! checking the JSON report, the human output and the exit codes (0 all ok, 1 any failure,
//! 2 bad arguments).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::json;

use tds_sim::{DbState, Role, SimConfig, SimHandle};

async fn sim() -> SimHandle {
    let mut cfg = SimConfig::new("SQLNODE1", "AG1", Role::Primary);
    cfg.databases = vec![
        ("sales".into(), DbState::Online),
        ("hr".into(), DbState::Online),
    ];
    tds_sim::start(cfg).await.expect("tds-sim starts")
}

fn password_file(content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tdsvip-probe-cli-{}-{}",
        std::process::id(),
        content.len()
    ));
    std::fs::write(&path, format!("{content}\n")).expect("write password file");
    path
}

/// Runs the binary off the runtime's thread so the in-process simulator keeps serving.
async fn tdsvip(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tdsvip"))
            .args(&args)
            .env_remove("TDSVIP_PASSWORD")
            .output()
            .expect("run tdsvip")
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `probe TARGET --mode login --user tdsvip --password-file PW` followed by `extra`.
fn login_args(target: &str, pw: &std::path::Path, extra: &str) -> Vec<String> {
    let pw = pw.to_str().expect("utf-8 temp path");
    let mut v = args(&[
        "probe",
        target,
        "--mode",
        "login",
        "--user",
        "tdsvip",
        "--password-file",
        pw,
    ]);
    v.extend(extra.split_whitespace().map(str::to_owned));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prelogin_json_report_has_the_documented_shape() {
    let sim = sim().await;
    let target = sim.tds_addr().to_string();
    let out = tdsvip(args(&[
        "probe",
        &target,
        "--mode",
        "prelogin",
        "--count",
        "5",
        "--interval-ms",
        "10",
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json(&out);
    assert_eq!(r["mode"], "prelogin");
    assert_eq!(r["target"], target);
    assert_eq!(
        (r["sent"].as_u64(), r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(5), Some(5), Some(0))
    );
    assert_eq!(r["outcomes"]["ok"], 5);
    assert_eq!(r["server"]["version"], "16.0.1000");
    assert_eq!(r["server"]["encryption"], "not_supported");
    let l = &r["latency_ms"];
    for k in ["min", "p50", "p90", "p99", "max"] {
        assert!(
            l[k].as_f64().is_some_and(|v| v > 0.0),
            "latency_ms.{k} in {l}"
        );
    }
    assert!(l["min"].as_f64() <= l["max"].as_f64());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reads_role_and_databases_and_reuses_one_session() {
    let sim = sim().await;
    let target = sim.tds_addr().to_string();
    let pw = password_file("secret");
    // Encrypted and verified by default: tds-sim's self-signed certificate is refused, by
    // name, before any LOGIN7.
    let out = tdsvip(login_args(&target, &pw, "--ag AG1 --json")).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = json(&out);
    assert_eq!(r["outcomes"]["login_failed"], 1, "{r}");
    assert!(r["tls"].is_null(), "{r}");
    assert_eq!(sim.stats().logins, 0);
    let out = tdsvip(login_args(&target, &pw, "--ag AG1")).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CN=SSL_Self_Signed_Fallback") && text.contains("not signed by a CA"),
        "{text}"
    );

    let out = tdsvip(login_args(
        &target,
        &pw,
        "--ag AG1 --database sales --database hr --count 4 --interval-ms 10 --json --trust-server-certificate",
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json(&out);
    assert_eq!(r["ok"], 4);
    assert_eq!(r["tls"]["version"], "TLSv1_2", "{r}");
    assert!(
        r["tls"]["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS_ECDHE")),
        "{r}"
    );
    assert_eq!(
        r["tls"]["peer_certificate_subject"],
        "CN=SSL_Self_Signed_Fallback"
    );
    assert!(
        r["tls"]["certificate"]
            .as_str()
            .unwrap()
            .starts_with("NOT verified"),
        "{r}"
    );
    assert_eq!(r["server"]["name"], "SQLNODE1");
    assert_eq!(r["server"]["role"], "PRIMARY");
    assert_eq!(r["server"]["databases"]["hr"], "ONLINE");
    assert_eq!(sim.stats().logins, 1, "the probe keeps one session");

    // Demoted: every probe fails as not_primary and the exit code says so.
    sim.set_role(Role::Secondary);
    let out = tdsvip(login_args(
        &target,
        &pw,
        "--ag AG1 --count 2 --interval-ms 10 --json --trust-server-certificate",
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = json(&out);
    assert_eq!(r["outcomes"]["not_primary"], 2);
    assert_eq!(r["server"]["role"], "SECONDARY");
    assert!(r["latency_ms"].is_null(), "no successful probe, no latency");

    // A database in recovery.
    sim.set_role(Role::Primary);
    sim.set_database("hr", DbState::RecoveryPending);
    let out = tdsvip(login_args(
        &target,
        &pw,
        "--ag AG1 --database hr --encrypt off --allow-cleartext-login",
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("db_not_online: hr is RECOVERY_PENDING"),
        "{text}"
    );
    assert!(text.contains("1 sent, 0 ok, 1 failed"), "{text}");
    std::fs::remove_file(pw).ok();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_login_failed_and_refused_port_is_refused() {
    let sim = sim().await;
    let target = sim.tds_addr().to_string();
    let pw = password_file("not-the-password");
    let out = tdsvip(login_args(
        &target,
        &pw,
        "--json --trust-server-certificate",
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(json(&out)["outcomes"]["login_failed"], 1);
    assert_eq!(
        sim.stats().failed_logins,
        1,
        "the wrong password reached the server, in TLS"
    );
    std::fs::remove_file(pw).ok();

    sim.shutdown().await;
    let out = tdsvip(args(&["probe", &target, "--mode", "tcp", "--json"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["outcomes"]["refused"], 1);
}

#[tokio::test]
async fn bad_arguments_exit_2_naming_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["probe", "127.0.0.1", "--mode", "tcp"], "ADDR:PORT"),
        (
            &["probe", "127.0.0.1:1", "--mode", "tcp", "--ag", "AG1"],
            "--ag",
        ),
        (&["probe", "127.0.0.1:1", "--mode", "login"], "--user"),
        (
            &["probe", "127.0.0.1:1", "--mode", "login", "--user", "u"],
            "--password-file",
        ),
        (&["probe", "127.0.0.1:1", "--mode", "udp"], "--mode"),
        (
            &["probe", "127.0.0.1:1", "--mode", "tcp", "--timeout-ms", "5"],
            "--timeout-ms",
        ),
        (
            &["probe", "127.0.0.1:1", "--mode", "tcp", "--count", "0"],
            "--count",
        ),
    ];
    for (argv, named) in cases {
        let out = tdsvip(args(argv)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(err.contains(named), "{argv:?} should name {named}: {err}");
    }
}

/// A `probe --watch` process and the file it keeps, in a directory of its own.
struct Watcher {
    child: std::process::Child,
    dir: PathBuf,
    file: PathBuf,
}

impl Watcher {
    /// `--rise 1 --fall 1` so that each role change shows at the next 10 ms probe.
    fn start(target: &str, name: &str) -> Watcher {
        let dir =
            std::env::temp_dir().join(format!("tdsvip-probe-watch-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create watch dir");
        let pw = dir.join("password");
        std::fs::write(&pw, "secret\n").expect("write password file");
        let file = dir.join("primary");
        let track = file.to_str().expect("utf-8 temp path").to_owned();
        let mut argv = login_args(
            target,
            &pw,
            "--ag AG1 --database sales --encrypt off --allow-cleartext-login --watch --interval-ms 10 --rise 1 --fall 1 --track-file",
        );
        argv.push(track);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tdsvip"))
            .args(&argv)
            .env_remove("TDSVIP_PASSWORD")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tdsvip probe --watch");
        Watcher { child, dir, file }
    }

    /// Waits (up to 5 s) until the file holds `value`; the line keepalived would read.
    async fn wait_for(&mut self, value: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = std::fs::read_to_string(&self.file).unwrap_or_default();
            if now == format!("{value}\n") {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the watcher exited ({st}) with the file at {now:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the file stayed {now:?}, expected {value:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM; the exit status and what the watcher printed.
    async fn stop(self) -> (Output, PathBuf) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let child = self.child;
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("wait for the watcher");
        (out, self.dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_the_track_file_on_the_role_with_one_session() {
    let sim = sim().await;
    let target = sim.tds_addr().to_string();
    let mut w = Watcher::start(&target, "role");
    w.wait_for("1").await;
    sim.set_role(Role::Secondary);
    w.wait_for("0").await;
    sim.set_role(Role::Primary);
    w.wait_for("1").await;
    sim.set_database("sales", DbState::RecoveryPending);
    w.wait_for("0").await;
    sim.set_database("sales", DbState::Online);
    w.wait_for("1").await;
    assert_eq!(
        sim.stats().logins,
        1,
        "one kept session across role changes"
    );

    // The sim gone: the file says 0 after the failed probe, and the watcher keeps trying.
    sim.shutdown().await;
    w.wait_for("0").await;
    let file = w.file.clone();
    let (out, dir) = w.stop().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 (SIGTERM)"), "{text}");
    assert!(text.contains(": 1 after login#"), "{text}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
    std::fs::remove_dir_all(dir).ok();
}

/// A reader racing the writer never sees a partial or empty file: every write is a rename
/// of a complete file. (Writing in place, truncate then write, shows "" to such a reader.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replaces_the_file_atomically() {
    let sim = sim().await;
    let target = sim.tds_addr().to_string();
    let mut w = Watcher::start(&target, "atomic");
    w.wait_for("1").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let file = w.file.clone();
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut reads, mut bad) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("{e}"));
                reads += 1;
                if text != "0\n" && text != "1\n" {
                    bad.push(text);
                }
            }
            (reads, bad)
        })
    };
    for i in 0..40 {
        let role = if i % 2 == 0 {
            Role::Secondary
        } else {
            Role::Primary
        };
        sim.set_role(role);
        w.wait_for(if i % 2 == 0 { "0" } else { "1" }).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, bad) = reader.join().expect("reader");
    assert!(bad.is_empty(), "partial reads among {reads}: {bad:?}");
    assert!(reads > 100, "the reader raced the writer ({reads} reads)");
    let (out, dir) = w.stop().await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::remove_dir_all(dir).ok();
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_bad_arguments_exit_2_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("tdsvip-probe-watch-args-{}", std::process::id()));
    let missing = dir.join("no-such-dir").join("f");
    let missing = missing.to_str().expect("utf-8 temp path");
    let cases: &[(&[&str], &str)] = &[
        (
            &["probe", "127.0.0.1:1", "--mode", "tcp", "--watch"],
            "--track-file",
        ),
        (
            &[
                "probe",
                "127.0.0.1:1",
                "--mode",
                "tcp",
                "--track-file",
                "/tmp/t",
            ],
            "--watch",
        ),
        (
            &[
                "probe",
                "127.0.0.1:1",
                "--mode",
                "tcp",
                "--watch",
                "--track-file",
                "/tmp/t",
            ],
            "--watch",
        ),
        (
            &[
                "probe",
                "127.0.0.1:1",
                "--mode",
                "login",
                "--user",
                "u",
                "--ag",
                "AG1",
                "--watch",
                "--track-file",
                missing,
            ],
            "--track-file",
        ),
        (
            &[
                "probe",
                "127.0.0.1:1",
                "--mode",
                "login",
                "--user",
                "u",
                "--ag",
                "AG1",
                "--watch",
                "--track-file",
                "/tmp/t",
                "--count",
                "3",
            ],
            "--count",
        ),
        (
            &[
                "probe",
                "127.0.0.1:1",
                "--mode",
                "login",
                "--user",
                "u",
                "--ag",
                "AG1",
                "--watch",
                "--track-file",
                "/tmp/t",
                "--fall",
                "0",
            ],
            "--fall",
        ),
    ];
    for (argv, named) in cases {
        let out = tdsvip(args(argv)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(err.contains(named), "{argv:?} should name {named}: {err}");
    }
}
