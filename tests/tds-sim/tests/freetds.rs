//! FreeTDS `tsql` (a strict, independent client) against the real binary, TDS 7.1 to 7.4.
//! These tests fail, not skip, when `tsql` is missing: CI installs `freetds-bin`.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{PASSWORD, SimProcess, USER, health_query, put_state};

const VERSIONS: [&str; 4] = ["7.1", "7.2", "7.3", "7.4"];

/// Runs `tsql` as the test login with `input` on stdin; returns (exit code, output).
fn tsql(version: &str, port: u16, password: &str, input: &str) -> (i32, String) {
    common::tsql_as(version, port, USER, password, input)
}

#[test]
fn logs_in_and_reads_the_role_on_every_tds_version() {
    let sim = SimProcess::start(
        "SECONDARY",
        &["--database", "db1", "--database", "db2=RESTORING"],
    );
    let input = format!(
        "{}\ngo\nSELECT @@SERVERNAME, @@SPID, 1\ngo\n",
        health_query("AG1", &["db1", "db2"])
    );
    for v in VERSIONS {
        let (code, out) = tsql(v, sim.port(), PASSWORD, &input);
        assert_eq!(code, 0, "TDSVER={v}: {out}");
        assert!(
            out.contains("SQL1\tSECONDARY\tHEALTHY"),
            "TDSVER={v}: {out}"
        );
        assert!(
            out.contains("db1\tONLINE") && out.contains("db2\tRESTORING"),
            "TDSVER={v}: {out}"
        );
        assert!(out.contains("(2 rows affected)"), "TDSVER={v}: {out}");
        assert!(!out.contains("Msg "), "TDSVER={v}: {out}");
    }
    let state = common::get_state(sim.control);
    assert_eq!(state["logins"], 4);
}

#[test]
fn health_statements_alone_and_an_unknown_statement() {
    let sim = SimProcess::start("PRIMARY", &["--database", "db1"]);
    let q = health_query("AG1", &["db1"]);
    let (first, second) = q.split_once(";\n").unwrap();
    let input = format!(
        "{first}\ngo\n{second}\ngo\nSELECT name FROM sys.databases\ngo\nFROB the database\ngo\nSELECT 42\ngo\n"
    );
    for v in VERSIONS {
        let (_, out) = tsql(v, sim.port(), PASSWORD, &input);
        assert!(out.contains("SQL1\tPRIMARY\tHEALTHY"), "TDSVER={v}: {out}");
        assert!(out.contains("db1\tONLINE"), "TDSVER={v}: {out}");
        assert!(
            out.contains("Msg 102") && out.contains("Incorrect syntax near 'FROB'"),
            "TDSVER={v}: {out}"
        );
        // The session survives the error and answers the next batch.
        assert!(out.contains("\n42\n"), "TDSVER={v}: {out}");
    }
}

#[test]
fn wrong_password_is_18456_on_every_tds_version() {
    let sim = SimProcess::start("PRIMARY", &[]);
    for v in VERSIONS {
        let (code, out) = tsql(v, sim.port(), "not-the-password", "SELECT 1\ngo\n");
        assert_ne!(code, 0, "TDSVER={v}: {out}");
        assert!(
            out.contains("Msg 18456") && out.contains("Login failed for user 'tdsvip'"),
            "TDSVER={v}: {out}"
        );
    }
    assert_eq!(common::get_state(sim.control)["failed_logins"], 4);
}

#[test]
fn role_change_is_seen_by_an_open_tsql_session() {
    let sim = SimProcess::start("PRIMARY", &[]);
    let mut child = Command::new("tsql")
        .args([
            "-H",
            "127.0.0.1",
            "-p",
            &sim.port().to_string(),
            "-U",
            USER,
            "-P",
            PASSWORD,
        ])
        .env("TDSVER", "7.4")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run tsql ({e}); install freetds-bin (Debian) — this test must not skip")
        });
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    // tsql's stdout is block-buffered into a pipe, so progress is watched on the server:
    // the first batch has been answered once the query counter moves.
    writeln!(stdin, "{}\ngo", health_query("AG1", &[])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::get_state(sim.control)["queries"] != 1 {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tsql's first batch never reached the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    put_state(sim.control, r#"{"role":"SECONDARY"}"#);
    writeln!(stdin, "{}\ngo", health_query("AG1", &[])).unwrap();
    drop(stdin);
    let out = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let out = out.expect("tsql did not finish within 20 s");
    let primary = out.find("SQL1\tPRIMARY").unwrap_or_else(|| panic!("{out}"));
    let secondary = out
        .find("SQL1\tSECONDARY")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(primary < secondary, "{out}");
    let state = common::get_state(sim.control);
    assert_eq!(
        (state["logins"].as_u64(), state["queries"].as_u64()),
        (Some(1), Some(2)),
        "one session ran both batches"
    );
}

#[test]
fn ledger_writes_ag_statements_and_dmvs_on_every_tds_version() {
    for (k, v) in VERSIONS.iter().enumerate() {
        // A fresh replica per version: ids and sequence numbers start over.
        let sim = SimProcess::start("PRIMARY", &["--database", "db1"]);
        let input = "INSERT INTO dbo.ledger (id, at) VALUES (1, 10), (2, 20)\ngo\n\
             BEGIN TRAN INSERT INTO dbo.ledger (id, at) VALUES (3, 30) COMMIT\ngo\n\
             SELECT COUNT(*), MAX(id) FROM dbo.ledger\ngo\n\
             SELECT id FROM dbo.ledger WHERE id BETWEEN 2 AND 3\ngo\n\
             ALTER AVAILABILITY GROUP AG1 SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 0)\ngo\n\
             SELECT synchronization_state_desc, is_primary_replica, last_hardened_lsn FROM sys.dm_hadr_database_replica_states\ngo\n\
             SELECT cluster_type_desc, sequence_number, required_synchronized_secondaries_to_commit FROM sys.availability_groups\ngo\n\
             SELECT replica_server_name, availability_mode_desc, failover_mode_desc FROM sys.availability_replicas\ngo\n\
             EXEC sp_server_diagnostics\ngo\n\
             ALTER AVAILABILITY GROUP AG1 FAILOVER\ngo\n\
             EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes'\n\
             ALTER AVAILABILITY GROUP AG1 FAILOVER\ngo\n\
             INSERT INTO dbo.ledger (id, at) VALUES (3, 1)\ngo\n";
        let (_, out) = tsql(v, sim.port(), PASSWORD, input);
        let ctx = format!("TDSVER={v} (#{k}): {out}");
        assert!(out.contains("(2 rows affected)"), "{ctx}");
        assert!(out.contains("(1 row affected)"), "{ctx}");
        assert!(out.contains("3\t3"), "{ctx}");
        assert!(out.contains("\n2\n3\n"), "{ctx}");
        assert!(out.contains("SYNCHRONIZED\t1\t2"), "{ctx}");
        assert!(out.contains("external\t2\t0"), "{ctx}");
        assert!(out.contains("SQL1\tSYNCHRONOUS_COMMIT\tEXTERNAL"), "{ctx}");
        assert!(out.contains("clean"), "{ctx}");
        // Without the session context, then on a replica that is already primary.
        assert!(out.contains("Msg 47104"), "{ctx}");
        assert!(out.contains("Msg 41122"), "{ctx}");
        assert!(out.contains("Msg 2627"), "{ctx}");
        assert_eq!(
            common::get_state(sim.control)["ag_state"]["ledger_rows"],
            3,
            "{ctx}"
        );
    }
}
