//! python-tds (pure-Python TDS 7.4 client) against the real binary, through
//! `pytds_client.py`. Fails, not skips, when python3 or python-tds is missing.

mod common;

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
    let (port, control) = (sim.port().to_string(), sim.control.port().to_string());
    let (stdout, stderr) = common::python(script, &[&port, &control, USER, PASSWORD]);
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
