//! Java's jTDS and Node's tedious, as a new user would use them, against the real binary:
//! log in (their session-setup batches carry SET options and @@-variables), query, insert
//! with parameters (positional sp_executesql / sp_prepare / sp_execute parameters) and
//! commit a transaction. Fails, not skips, when a driver is missing: deploy/setup.sh
//! installs Debian libjtds-java and npm tedious (into $TDSVIP_TEDIOUS_DIR, default
//! ~/.cache/tdsvip/tedious).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{PASSWORD, SimProcess, USER, run};

fn assert_checks(what: &str, ok: bool, stdout: &str, stderr: &str, sim: &SimProcess) {
    assert!(ok, "{what} failed:\n{stdout}\n{stderr}");
    for check in [
        "login OK",
        "query OK",
        "insert OK",
        "parameterised select OK",
        "transaction OK",
        "ALL OK",
    ] {
        assert!(
            stdout.contains(check),
            "{what}: missing {check:?} in:\n{stdout}\n{stderr}"
        );
    }
    let s = common::get_state(sim.control);
    assert_eq!(s["ag_state"]["ledger_rows"], 4, "{what}: {s}");
}

#[test]
fn jtds_logs_in_queries_and_inserts() {
    let jar = ["/usr/share/java/jtds.jar", "/usr/share/java/jtds-1.3.1.jar"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("jTDS jar missing: apt-get install libjtds-java (deploy/setup.sh)");
    let build = std::env::temp_dir().join(format!("tds-sim-jtds-{}", std::process::id()));
    std::fs::create_dir_all(&build).unwrap();
    let mut javac = Command::new("javac");
    javac.args([
        "-d",
        build.to_str().unwrap(),
        "-cp",
        jar,
        "tests/drivers/JtdsClient.java",
    ]);
    let (ok, out, err) = run(javac, "javac");
    assert!(ok, "javac failed:\n{out}\n{err}");
    let sim = SimProcess::start("PRIMARY", &["--database", "db1"]);
    let mut java = Command::new("java");
    java.args([
        "-cp",
        &format!("{jar}:{}", build.display()),
        "JtdsClient",
        &sim.port().to_string(),
        USER,
        PASSWORD,
    ]);
    let (ok, out, err) = run(java, "java");
    let _ = std::fs::remove_dir_all(&build);
    assert_checks("jTDS", ok, &out, &err, &sim);
}

#[test]
fn tedious_logs_in_queries_and_inserts() {
    let dir = std::env::var_os("TDSVIP_TEDIOUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tdsvip/tedious")
        });
    let modules = dir.join("node_modules");
    assert!(
        modules.join("tedious").is_dir(),
        "tedious missing in {}: run deploy/setup.sh tests",
        modules.display()
    );
    let sim = SimProcess::start("PRIMARY", &["--database", "db1"]);
    let mut node = Command::new("node");
    node.env("NODE_PATH", &modules).args([
        "tests/drivers/tedious_client.js",
        &sim.port().to_string(),
        USER,
        PASSWORD,
    ]);
    let (ok, out, err) = run(node, "node");
    assert_checks("tedious", ok, &out, &err, &sim);
}
