//! tiberius against the in-process library: login, the health query as a batch and per
//! statement, a parameterised query (sp_executesql), a role change seen by an open session,
//! 18456 for a wrong password, an error (not a hang) for an unknown statement.

mod common;

fn login_err<T>(r: Result<T, String>, why: &str) -> String {
    match r {
        Ok(_) => panic!("{why}"),
        Err(e) => e,
    }
}

use std::time::Duration;

use common::{PASSWORD, health_query, query, tiberius};
use tds_sim::{DbState, Role, SimConfig};

const T: Duration = Duration::from_secs(5);

async fn sim() -> tds_sim::SimHandle {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.password = PASSWORD.into();
    cfg.databases = vec![
        ("db1".into(), DbState::Online),
        ("db2".into(), DbState::Offline),
    ];
    tds_sim::start(cfg).await.expect("start")
}

#[tokio::test]
async fn health_query_role_change_and_errors() {
    let sim = sim().await;
    let mut c = tiberius(sim.tds_addr(), PASSWORD, T).await.expect("login");
    let q = health_query("AG1", &["db1", "db2", "db3"]);
    let sets = query(&mut c, &q, T).await.unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0], vec![vec!["SQL1", "PRIMARY", "HEALTHY"]]);
    assert_eq!(sets[1], vec![vec!["db1", "ONLINE"], vec!["db2", "OFFLINE"]]);

    // Each statement alone, and another AG's name: zero rows.
    let (first, second) = q.split_once(";\n").unwrap();
    assert_eq!(query(&mut c, first, T).await.unwrap()[0].len(), 1);
    assert_eq!(query(&mut c, second, T).await.unwrap()[0].len(), 2);
    let other = query(&mut c, &health_query("AG2", &[]), T).await.unwrap();
    assert!(other.iter().all(|s| s.is_empty()), "{other:?}");

    // The same session sees changes made after it logged in.
    sim.set_role(Role::Resolving);
    sim.set_database("db1", DbState::Suspect);
    let sets = query(&mut c, &q, T).await.unwrap();
    assert_eq!(sets[0], vec![vec!["SQL1", "RESOLVING", "HEALTHY"]]);
    assert_eq!(sets[1][0], vec!["db1", "SUSPECT"]);

    let err = query(&mut c, "SELECT * FROM dbo.no_such_table", T)
        .await
        .unwrap_err();
    assert!(
        err.contains("Invalid object name 'dbo.no_such_table'"),
        "{err}"
    );
    let err = query(&mut c, "MAKE ME A SANDWICH", T).await.unwrap_err();
    assert!(err.contains("Incorrect syntax near 'MAKE'"), "{err}");
    // Still usable.
    assert_eq!(
        query(&mut c, "SELECT 1; SELECT @@SERVERNAME", T)
            .await
            .unwrap(),
        vec![vec![vec!["1"]], vec![vec!["SQL1"]]]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn parameterised_query_goes_through_sp_executesql() {
    let sim = sim().await;
    let mut c = tiberius(sim.tds_addr(), PASSWORD, T).await.expect("login");
    let rows = tokio::time::timeout(T, async {
        c.query(
            "SELECT ars.role_desc FROM sys.dm_hadr_availability_replica_states AS ars JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id WHERE ag.name = @P1 AND ars.is_local = @P2",
            &[&"AG1", &1i32],
        )
        .await?
        .into_first_result()
        .await
    })
    .await
    .expect("no timeout")
    .expect("query");
    assert_eq!(
        rows.iter().map(common::row_strings).collect::<Vec<_>>(),
        vec![vec!["PRIMARY"]]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_login_failed_18456() {
    let sim = sim().await;
    let err = login_err(tiberius(sim.tds_addr(), "nope", T).await, "login must fail");
    assert!(
        err.contains("18456") || err.contains("Login failed for user 'tdsvip'"),
        "{err}"
    );
    assert_eq!(sim.stats().failed_logins, 1);
    assert_eq!(sim.stats().logins, 0);
    sim.shutdown().await;
}
