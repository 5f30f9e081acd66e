//! python-tds (pure-Python TDS 7.4 client) against the real binary, through
//! `pytds_client.py`. Fails, not skips, when python3 or python-tds is missing.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{PASSWORD, SimProcess, USER};

#[test]
fn python_tds_autocommit_on_and_off_params_role_change_and_errors() {
    let sim = SimProcess::start(
        "PRIMARY",
        &["--database", "db1", "--database", "db2=RECOVERY_PENDING"],
    );
    // Relative to the package root, where `cargo test` runs tests: a path baked in at
    // compile time would name another checkout's file when the binary comes from a shared
    // target dir built there.
    let script = "tests/pytds_client.py";
    let mut child = Command::new("python3")
        .args([
            script,
            &sim.port().to_string(),
            &sim.control.port().to_string(),
            USER,
            PASSWORD,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); CI installs python3 and python-tds"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((s, e));
    });
    let (stdout, stderr) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pytds_client.py did not finish within 60 s");
        }
    };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "pytds_client.py failed ({status}):\n{stdout}\n{stderr}"
    );
    for check in [
        "autocommit=True select1 OK",
        "autocommit=False select1 OK",
        "autocommit=True health OK",
        "autocommit=False health OK",
        "autocommit=True params OK",
        "autocommit=False params OK",
        "autocommit=False transactions OK",
        "role change seen by open session OK",
        "unknown statement error 102 OK",
        "ledger and AG statements OK",
        "ledger transactions OK",
        "wrong password 18456 OK",
        "ALL OK",
    ] {
        assert!(
            stdout.contains(check),
            "missing {check:?} in:\n{stdout}\n{stderr}"
        );
    }
    let state = common::get_state(sim.control);
    assert_eq!(state["role"], "SECONDARY");
    assert!(state["queries"].as_u64().unwrap() >= 10, "{state}");
}
