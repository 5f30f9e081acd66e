//! The AG model end to end: real `tds-sim` processes replicating to each other over TCP on
//! loopback, driven with the T-SQL an HA manager sends (tiberius) and the control API.
//! Covers replication, the commit rule, the session timeout, failover refusals, forced
//! failover with discarded transactions, write-lease expiry, rejoin and catch-up, and a
//! restart that keeps the hardened log.

mod common;

use std::time::{Duration, Instant};

use common::{PASSWORD, SimProcess, free_port, get_state, put_state};

const T: Duration = Duration::from_secs(5);
const EXT: &str = "EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes';";

/// One replica of a test AG: its name, endpoint port and process.
struct Node {
    name: &'static str,
    sim: SimProcess,
}

/// Starts replicas `(name, role, mode)` that all know each other, with `extra` flags.
fn ag(nodes: &[(&'static str, &str, &str)], extra: &[&str]) -> Vec<Node> {
    let ports: Vec<u16> = nodes.iter().map(|_| free_port()).collect();
    nodes
        .iter()
        .enumerate()
        .map(|(i, (name, role, mode))| {
            let mut args: Vec<String> = vec![
                "--database".into(),
                "db1".into(),
                "--endpoint".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--availability-mode".into(),
                mode.to_string(),
            ];
            for (j, (other, _, omode)) in nodes.iter().enumerate() {
                if j != i {
                    args.push("--replica".into());
                    args.push(format!("{other}=127.0.0.1:{},{omode}", ports[j]));
                }
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Node {
                name,
                sim: SimProcess::start_named(name, role, &refs),
            }
        })
        .collect()
}

async fn sql(n: &Node, batch: &str) -> Result<Vec<Vec<Vec<String>>>, String> {
    sql_within(n, batch, T).await
}

async fn sql_within(n: &Node, batch: &str, t: Duration) -> Result<Vec<Vec<Vec<String>>>, String> {
    let mut c = common::tiberius(n.sim.tds, PASSWORD, T).await?;
    common::query(&mut c, batch, t).await
}

fn ag_state(n: &Node) -> serde_json::Value {
    get_state(n.sim.control)["ag_state"].clone()
}

/// Polls `f` on the node's state until it holds, or fails naming `what`.
fn wait_for(n: &Node, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + T;
    loop {
        let s = get_state(n.sim.control);
        if f(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} never held: {s}",
            n.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn synchronized(n: &Node, partner: &str) -> bool {
    ag_state(n)["partners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == partner && p["synchronized"] == true)
}

async fn insert(n: &Node, ids: std::ops::RangeInclusive<i64>) -> Result<(), String> {
    for id in ids {
        sql(
            n,
            &format!("INSERT INTO dbo.ledger (id, at) VALUES ({id}, {})", id * 10),
        )
        .await?;
    }
    Ok(())
}

fn rows(n: &Node) -> u64 {
    ag_state(n)["ledger_rows"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_under_the_commit_rule_and_reports_it_in_the_dmvs() {
    let g = ag(
        &[
            ("A", "PRIMARY", "sync"),
            ("B", "SECONDARY", "sync"),
            ("C", "SECONDARY", "async"),
        ],
        &[
            "--required-synchronized-secondaries-to-commit",
            "1",
            "--session-timeout-ms",
            "400",
        ],
    );
    let (a, b, c) = (&g[0], &g[1], &g[2]);
    wait_for(a, "B synchronized", |_| synchronized(a, "B"));
    insert(a, 1..=20).await.unwrap();
    // Acknowledged means hardened on the synchronous partner already.
    assert_eq!(rows(b), 20);
    wait_for(c, "async partner caught up", |s| {
        s["ag_state"]["ledger_rows"] == 20
    });
    let sets = sql(
        a,
        "SELECT COUNT(*), MAX(id) FROM dbo.ledger; SELECT id FROM dbo.ledger WHERE id BETWEEN 5 AND 7",
    )
    .await
    .unwrap();
    assert_eq!(sets[0], vec![vec!["20".to_string(), "20".into()]]);
    assert_eq!(sets[1].len(), 3);
    let dmv = sql(
        a,
        "SELECT ar.replica_server_name, drs.synchronization_state_desc, drs.is_local, drs.last_hardened_lsn \
         FROM sys.dm_hadr_database_replica_states AS drs \
         JOIN sys.availability_replicas AS ar ON ar.replica_id = drs.replica_id ORDER BY ar.replica_server_name",
    )
    .await
    .unwrap();
    let states: Vec<(String, String)> = dmv[0]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        states,
        [
            ("A".into(), "SYNCHRONIZED".into()),
            ("B".into(), "SYNCHRONIZED".into()),
            ("C".into(), "SYNCHRONIZING".into())
        ],
        "{dmv:?}"
    );
    let ag_row = sql(
        b,
        "SELECT cluster_type_desc, sequence_number, required_synchronized_secondaries_to_commit FROM sys.availability_groups",
    )
    .await
    .unwrap();
    assert_eq!(ag_row[0][0][0], "external");
    assert!(ag_row[0][0][1].parse::<u64>().unwrap() >= 1, "{ag_row:?}");
    assert_eq!(ag_row[0][0][2], "1");
    // Writes on a secondary are refused as on a read-only database.
    let e = sql(b, "INSERT INTO dbo.ledger (id, at) VALUES (99, 1)")
        .await
        .unwrap_err();
    assert!(e.contains("3906") || e.contains("read-only"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_for_a_synchronized_secondary_and_the_session_timeout_drops_a_silent_one() {
    let mut g = ag(
        &[("A", "PRIMARY", "sync"), ("B", "SECONDARY", "sync")],
        &[
            "--required-synchronized-secondaries-to-commit",
            "1",
            "--session-timeout-ms",
            "300",
        ],
    );
    wait_for(&g[0], "B synchronized", |_| synchronized(&g[0], "B"));
    insert(&g[0], 1..=3).await.unwrap();
    // B stops reading (its TCP window fills, it acknowledges nothing): silent.
    put_state(g[1].sim.control, r#"{"replication": "stalled"}"#);
    let t0 = Instant::now();
    let e = sql_within(
        &g[0],
        "INSERT INTO dbo.ledger (id, at) VALUES (4, 40)",
        Duration::from_millis(1500),
    )
    .await
    .unwrap_err();
    assert_eq!(e, "timeout", "the commit must wait, not fail");
    assert!(t0.elapsed() >= Duration::from_millis(1400));
    // The session timeout marked B NOT SYNCHRONIZING on the primary.
    wait_for(&g[0], "B not synchronizing", |s| {
        s["ag_state"]["synchronized_secondaries"] == 0
    });
    let st = sql(&g[0], "SELECT synchronization_state_desc FROM sys.dm_hadr_database_replica_states WHERE is_local = 0")
        .await
        .unwrap();
    assert_eq!(st[0], vec![vec!["NOT SYNCHRONIZING".to_string()]]);
    assert_eq!(
        get_state(g[0].sim.control)["ag_state"]["would_acknowledge_commit"],
        false
    );
    // Lowering the requirement lets commits through again.
    sql(
        &g[0],
        "ALTER AVAILABILITY GROUP [AG1] SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 0)",
    )
    .await
    .unwrap();
    insert(&g[0], 5..=5).await.unwrap();
    // B resumes, catches up (row 4 was committed locally before the timeout) and counts again.
    put_state(g[1].sim.control, r#"{"replication": "running"}"#);
    wait_for(&g[1], "B caught up", |s| s["ag_state"]["ledger_rows"] == 5);
    drop(g.pop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_needs_external_cluster_and_a_synchronized_replica() {
    let mut g = ag(
        &[
            ("A", "PRIMARY", "sync"),
            ("B", "SECONDARY", "sync"),
            ("C", "SECONDARY", "async"),
        ],
        &["--session-timeout-ms", "300"],
    );
    wait_for(&g[0], "B synchronized", |_| synchronized(&g[0], "B"));
    insert(&g[0], 1..=5).await.unwrap();
    wait_for(&g[2], "C caught up", |s| s["ag_state"]["ledger_rows"] == 5);
    let e = sql(&g[1], "ALTER AVAILABILITY GROUP AG1 FAILOVER")
        .await
        .unwrap_err();
    assert!(e.contains("47104") || e.contains("EXTERNAL"), "{e}");
    // The primary dies.
    let a = g.remove(0);
    drop(a);
    wait_for(&g[0], "B lost its primary", |s| {
        s["ag_state"]["upstream_primary"].is_null()
    });
    let st = sql(&g[0], "SELECT synchronization_state_desc FROM sys.dm_hadr_database_replica_states WHERE is_local = 1")
        .await
        .unwrap();
    assert_eq!(st[0], vec![vec!["NOT SYNCHRONIZING".to_string()]]);
    assert_eq!(ag_state(&g[0])["was_synchronized_when_primary_lost"], true);
    // The asynchronous replica was never synchronized: 41142.
    let e = sql(
        &g[1],
        &format!("{EXT} ALTER AVAILABILITY GROUP AG1 FAILOVER"),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("41142") || e.contains("cannot become the primary"),
        "{e}"
    );
    // B was: FAILOVER returns, and B is PRIMARY a moment later with a new sequence_number.
    let seq_before = ag_state(&g[0])["sequence_number"].as_u64().unwrap();
    sql(
        &g[0],
        &format!("{EXT} ALTER AVAILABILITY GROUP AG1 FAILOVER"),
    )
    .await
    .unwrap();
    wait_for(&g[0], "B PRIMARY", |s| s["role"] == "PRIMARY");
    assert!(ag_state(&g[0])["sequence_number"].as_u64().unwrap() > seq_before);
    // C follows B and no acknowledged commit is lost.
    insert(&g[0], 6..=6).await.unwrap();
    wait_for(&g[1], "C follows B", |s| s["ag_state"]["ledger_rows"] == 6);
    let c = sql(
        &g[0],
        "SELECT COUNT(*) FROM dbo.ledger WHERE id BETWEEN 1 AND 5",
    )
    .await
    .unwrap();
    assert_eq!(c[0], vec![vec!["5".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_failover_loses_what_the_async_replica_missed_and_the_old_primary_discards_it() {
    let g = ag(
        &[("A", "PRIMARY", "sync"), ("B", "SECONDARY", "async")],
        &["--session-timeout-ms", "300"],
    );
    let (a, b) = (&g[0], &g[1]);
    insert(a, 1..=3).await.unwrap();
    wait_for(b, "B caught up", |s| s["ag_state"]["ledger_rows"] == 3);
    put_state(b.sim.control, r#"{"replication": "stalled"}"#);
    insert(a, 4..=8).await.unwrap();
    assert_eq!(rows(b), 3);
    let e = sql(
        b,
        "ALTER AVAILABILITY GROUP AG1 FORCE_FAILOVER_ALLOW_DATA_LOSS",
    )
    .await
    .unwrap_err();
    assert!(e.contains("47104") || e.contains("EXTERNAL"), "{e}");
    sql(
        b,
        &format!("{EXT} ALTER AVAILABILITY GROUP AG1 FORCE_FAILOVER_ALLOW_DATA_LOSS"),
    )
    .await
    .unwrap();
    wait_for(b, "B PRIMARY", |s| s["role"] == "PRIMARY");
    put_state(b.sim.control, r#"{"replication": "running"}"#);
    insert(b, 100..=101).await.unwrap();
    // The old primary, demoted the way Pacemaker's agent does, rejoins as secondary.
    sql(a, "ALTER AVAILABILITY GROUP AG1 OFFLINE")
        .await
        .unwrap();
    assert_eq!(get_state(a.sim.control)["role"], "RESOLVING");
    sql(
        a,
        &format!("{EXT} ALTER AVAILABILITY GROUP AG1 SET (ROLE = SECONDARY)"),
    )
    .await
    .unwrap();
    wait_for(a, "A caught up with B", |s| {
        s["ag_state"]["ledger_rows"] == 5
    });
    assert_eq!(
        ag_state(a)["discarded_on_rejoin"],
        5,
        "ids 4..=8 were only on A"
    );
    let left = sql(
        b,
        "SELECT COUNT(*) FROM dbo.ledger WHERE id BETWEEN 4 AND 8",
    )
    .await
    .unwrap();
    assert_eq!(left[0], vec![vec!["0".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_cannot_feed_a_replica_that_saw_a_newer_sequence_number() {
    let g = ag(
        &[
            ("A", "PRIMARY", "sync"),
            ("B", "SECONDARY", "sync"),
            ("C", "SECONDARY", "sync"),
        ],
        &[
            "--session-timeout-ms",
            "300",
            "--required-synchronized-secondaries-to-commit",
            "1",
        ],
    );
    let (a, b, c) = (&g[0], &g[1], &g[2]);
    wait_for(a, "B and C synchronized", |s| {
        s["ag_state"]["synchronized_secondaries"] == 2
    });
    // Cut A off (its sessions stop being read), promote B; C follows B's newer sequence.
    put_state(a.sim.control, r#"{"replication": "dropped"}"#);
    wait_for(b, "B lost A", |s| {
        s["ag_state"]["upstream_primary"].is_null()
    });
    sql(b, &format!("{EXT} ALTER AVAILABILITY GROUP AG1 FAILOVER"))
        .await
        .unwrap();
    wait_for(c, "C follows B", |s| {
        s["ag_state"]["upstream_primary"] == "B"
    });
    // A's links come back; it is still PRIMARY but nobody takes its log: it cannot commit.
    put_state(a.sim.control, r#"{"replication": "running"}"#);
    let e = sql_within(
        a,
        "INSERT INTO dbo.ledger (id, at) VALUES (1, 1)",
        Duration::from_millis(1000),
    )
    .await
    .unwrap_err();
    assert_eq!(e, "timeout");
    let a_state = ag_state(a);
    assert!(
        a_state["partners"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["synchronized"] == false),
        "{a_state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_write_lease_takes_the_primary_to_resolving() {
    let g = ag(
        &[("A", "PRIMARY", "sync")],
        &["--write-lease-validity", "1"],
    );
    let a = &g[0];
    insert(a, 1..=1).await.unwrap();
    sql(
        a,
        "ALTER AVAILABILITY GROUP AG1 SET (WRITE_LEASE_VALIDITY = 2)",
    )
    .await
    .unwrap();
    // Earlier than the current expiry: refused.
    let e = sql(
        a,
        "ALTER AVAILABILITY GROUP AG1 SET (WRITE_LEASE_VALIDITY = 1)",
    )
    .await
    .unwrap_err();
    assert!(e.contains("47119") && e.contains("earlier"), "{e}");
    let t0 = Instant::now();
    wait_for(a, "RESOLVING after the lease", |s| s["role"] == "RESOLVING");
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let e = sql(a, "INSERT INTO dbo.ledger (id, at) VALUES (2, 2)")
        .await
        .unwrap_err();
    assert!(
        e.contains("983") || e.contains("PRIMARY or SECONDARY"),
        "{e}"
    );
    // A late renewal does not bring it back (it is accepted, as on the promotion target
    // before FAILOVER, but only FAILOVER makes a replica PRIMARY).
    let _ = sql(
        a,
        "ALTER AVAILABILITY GROUP AG1 SET (WRITE_LEASE_VALIDITY = 5)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get_state(a.sim.control)["role"], "RESOLVING");
    // An AG created without the option has no lease to renew.
    let g2 = ag(&[("Z", "PRIMARY", "sync")], &[]);
    let e = sql(
        &g2[0],
        "ALTER AVAILABILITY GROUP AG1 SET (WRITE_LEASE_VALIDITY = 5)",
    )
    .await
    .unwrap_err();
    assert!(e.contains("47116"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_keeps_its_hardened_log_comes_back_resolving_and_catches_up() {
    let dir = std::env::temp_dir().join(format!("tds-sim-ag-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (pa, pb) = (free_port(), free_port());
    let b_args = |dir: &std::path::Path| {
        vec![
            "--database".to_string(),
            "db1".into(),
            "--endpoint".into(),
            format!("127.0.0.1:{pb}"),
            "--replica".into(),
            format!("A=127.0.0.1:{pa}"),
            "--session-timeout-ms".into(),
            "300".into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ]
    };
    let a_args: Vec<String> = vec![
        "--database".into(),
        "db1".into(),
        "--endpoint".into(),
        format!("127.0.0.1:{pa}"),
        "--replica".into(),
        format!("B=127.0.0.1:{pb}"),
        "--session-timeout-ms".into(),
        "300".into(),
        "--required-synchronized-secondaries-to-commit".into(),
        "1".into(),
    ];
    let start = |name: &'static str, role: &str, args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Node {
            name,
            sim: SimProcess::start_named(name, role, &refs),
        }
    };
    let a = start("A", "PRIMARY", &a_args);
    let b = start("B", "SECONDARY", &b_args(&dir));
    wait_for(&a, "B synchronized", |_| synchronized(&a, "B"));
    insert(&a, 1..=4).await.unwrap();
    drop(b);
    let b = start("B", "SECONDARY", &b_args(&dir));
    let s = get_state(b.sim.control);
    assert_eq!(s["role"], "RESOLVING", "{s}");
    assert_eq!(s["ag_state"]["ledger_rows"], 4, "{s}");
    assert_eq!(s["ag_state"]["last_hardened_lsn"], 4, "{s}");
    // RESOLVING takes no log; the HA manager makes it a secondary, and it catches up.
    sql(
        &a,
        "ALTER AVAILABILITY GROUP AG1 SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 0)",
    )
    .await
    .unwrap();
    insert(&a, 5..=6).await.unwrap();
    assert_eq!(rows(&b), 4);
    sql(&b, "ALTER AVAILABILITY GROUP AG1 SET (ROLE = SECONDARY)")
        .await
        .unwrap();
    wait_for(&b, "B caught up", |s| s["ag_state"]["ledger_rows"] == 6);
    assert_eq!(ag_state(&b)["discarded_on_rejoin"], 0);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
