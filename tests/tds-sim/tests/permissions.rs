//! The permission model end to end: logins from `--login` and `CREATE LOGIN`, GRANT /
//! DENY / REVOKE by the sysadmin login, `HAS_PERMS_BY_NAME`, and the refusals a login
//! without a permission meets (Msg 300 + 297 on the HADR DMVs, the AG hidden from the
//! catalog views, 15151 on ALTER AVAILABILITY GROUP, 4613 for a GRANT it may not make).
//! Through FreeTDS `tsql` and python-tds (independent clients, against the binary) and
//! tiberius (against the library). Fails, not skips, when a client is missing.

mod common;

use std::time::Duration;

use common::{PASSWORD, SimProcess, USER, get_state, health_query, tsql_as};
use tds_sim::{Role, SimConfig};

const WATCHER: &str = "watcher";
const WATCHER_PW: &str = "w4tch:er";

fn hpbn(securable: &str, class: &str, perm: &str) -> String {
    format!("SELECT CAST(HAS_PERMS_BY_NAME({securable}, {class}, N'{perm}') AS nvarchar(10))")
}

fn ag_perm(perm: &str) -> String {
    hpbn("N'AG1'", "N'AVAILABILITY GROUP'", perm)
}

/// One batch per line of `batches`, as tsql input.
fn script(batches: &[&str]) -> String {
    batches.iter().map(|b| format!("{b}\ngo\n")).collect()
}

#[test]
fn tsql_sees_grants_denies_and_refusals_on_tds_7_1_and_7_4() {
    for v in ["7.1", "7.4"] {
        let sim = SimProcess::start(
            "PRIMARY",
            &[
                "--database",
                "db1",
                "--login",
                &format!("{WATCHER}:{WATCHER_PW}"),
            ],
        );
        let health = health_query("AG1", &["db1"]);
        let vss = hpbn("NULL", "NULL", "VIEW SERVER STATE");
        let before = script(&[
            &health,
            &vss,
            &ag_perm("ALTER"),
            "ALTER AVAILABILITY GROUP AG1 SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 0)",
            "GRANT VIEW SERVER STATE TO [tdsvip]",
            "SELECT 'still here'",
        ]);
        let (code, out) = tsql_as(v, sim.port(), WATCHER, WATCHER_PW, &before);
        let ctx = format!("TDSVER={v} as watcher, before: {out}");
        assert_eq!(code, 0, "{ctx}");
        assert!(
            out.contains("Msg 300") && out.contains("VIEW SERVER PERFORMANCE STATE permission was denied on object 'server', database 'master'."),
            "{ctx}"
        );
        assert!(
            out.contains("Msg 297")
                && out.contains("The user does not have permission to perform this action."),
            "{ctx}"
        );
        assert!(
            out.contains("Msg 15151") && out.contains("Cannot find the availability group 'AG1'"),
            "{ctx}"
        );
        assert!(out.contains("Msg 4613"), "{ctx}");
        assert!(out.contains("still here"), "{ctx}");
        assert!(!out.contains("\n1\n"), "no permission answers 1: {ctx}");

        let grants = script(&[
            "CREATE LOGIN [other] WITH PASSWORD = N'0ther', CHECK_POLICY = OFF",
            "GRANT VIEW SERVER STATE TO [watcher]",
            "GRANT ALTER, CONTROL, VIEW DEFINITION ON AVAILABILITY GROUP::AG1 TO watcher",
            "DENY VIEW DEFINITION ON AVAILABILITY GROUP :: [AG1] TO [other]",
            "GRANT VIEW SERVER STATE TO [nobody]",
            "GRANT VIEW SERVER STATE TO [tdsvip]",
            "GRANT SELECT ON dbo.ledger TO watcher",
        ]);
        let (_, out) = tsql_as(v, sim.port(), USER, PASSWORD, &grants);
        let ctx = format!("TDSVER={v} as sysadmin: {out}");
        assert!(
            out.contains("Msg 15151") && out.contains("Cannot find the login 'nobody'"),
            "{ctx}"
        );
        assert!(out.contains("Msg 4624"), "{ctx}");
        assert!(
            out.contains("Msg 50000")
                && out.contains("tds-sim does not model permissions on OBJECT"),
            "{ctx}"
        );
        assert_eq!(out.matches("Msg ").count(), 3, "{ctx}");

        let after = script(&[
            &health,
            &vss,
            &ag_perm("ALTER"),
            &ag_perm("CONTROL"),
            &ag_perm("VIEW DEFINITION"),
            "ALTER AVAILABILITY GROUP AG1 SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 0)",
            "SELECT 'done'",
        ]);
        let (code, out) = tsql_as(v, sim.port(), WATCHER, WATCHER_PW, &after);
        let ctx = format!("TDSVER={v} as watcher, after: {out}");
        assert_eq!(code, 0, "{ctx}");
        assert!(
            out.contains("SQL1\tPRIMARY\tHEALTHY") && out.contains("db1\tONLINE"),
            "{ctx}"
        );
        assert_eq!(out.matches("\n1\n").count(), 4, "{ctx}");
        assert!(!out.contains("Msg "), "{ctx}");
        assert!(out.contains("done"), "{ctx}");

        let state = get_state(sim.control);
        let principals = state["principals"].as_array().unwrap();
        let names: Vec<&str> = principals
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["other", "tdsvip", "watcher"], "{state}");
        assert_eq!(
            principals[2]["permissions"].as_array().unwrap().len(),
            4,
            "{state}"
        );
        assert_eq!(principals[0]["permissions"][0]["state"], "DENY", "{state}");
    }
}

#[test]
fn python_tds_checks_permissions_with_parameters_and_sees_the_errors() {
    let sim = SimProcess::start(
        "PRIMARY",
        &[
            "--database",
            "db1",
            "--login",
            &format!("{WATCHER}:{WATCHER_PW}"),
        ],
    );
    let port = sim.port().to_string();
    let args = [port.as_str(), USER, PASSWORD, WATCHER, WATCHER_PW];
    let (stdout, stderr) = common::python("tests/pytds_perms.py", &args);
    for check in [
        "refused dmv 300+297 OK",
        "has_perms 0 OK",
        "alter ag 15151 OK",
        "grants OK",
        "has_perms 1 OK",
        "health rows OK",
        "deny beats grant OK",
        "ALL OK",
    ] {
        assert!(
            stdout.contains(check),
            "missing {check:?} in:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test]
async fn tiberius_logins_from_the_config_and_create_login() {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.logins = vec![(WATCHER.into(), WATCHER_PW.into())];
    let sim = tds_sim::start(cfg).await.unwrap();
    let t = Duration::from_secs(5);
    let addr = sim.tds_addr();
    let mut admin = common::tiberius(addr, "secret", t).await.unwrap();
    let mut w = common::tiberius_as(addr, WATCHER, WATCHER_PW, t)
        .await
        .unwrap();
    let vss = hpbn("NULL", "NULL", "VIEW SERVER STATE");
    assert_eq!(common::query(&mut w, &vss, t).await.unwrap(), [[["0"]]]);
    let e = common::query(&mut w, "EXEC sp_server_diagnostics", t)
        .await
        .unwrap_err();
    assert!(e.contains("permission was denied"), "{e}");
    // tiberius reports the first error of the pair: Msg 300.
    let e = common::query(&mut w, &health_query("AG1", &[]), t)
        .await
        .unwrap_err();
    assert!(e.contains("code: 300"), "{e}");
    let e = common::query(&mut w, "CREATE LOGIN x WITH PASSWORD = 'y'", t)
        .await
        .unwrap_err();
    assert!(e.contains("code: 15247"), "{e}");

    common::query(
        &mut admin,
        "CREATE LOGIN [Second] WITH PASSWORD = N'pw2'; GRANT VIEW SERVER STATE TO second",
        t,
    )
    .await
    .unwrap();
    let e = common::query(&mut admin, "CREATE LOGIN [second] WITH PASSWORD = N'x'", t)
        .await
        .unwrap_err();
    assert!(e.contains("code: 15025"), "{e}");
    // Server-scope grants only from master.
    let e = common::query(
        &mut admin,
        "USE tempdb; GRANT VIEW SERVER STATE TO watcher",
        t,
    )
    .await
    .unwrap_err();
    assert!(e.contains("code: 4621"), "{e}");
    // A GRANT takes effect on the open session's next statement.
    common::query(
        &mut admin,
        "USE master; GRANT VIEW SERVER STATE TO watcher",
        t,
    )
    .await
    .unwrap();
    assert_eq!(common::query(&mut w, &vss, t).await.unwrap(), [[["1"]]]);
    assert_eq!(
        common::query(&mut w, "EXEC sp_server_diagnostics", t)
            .await
            .unwrap()[0]
            .len(),
        5
    );
    common::query(&mut admin, "REVOKE VIEW SERVER STATE FROM watcher", t)
        .await
        .unwrap();
    assert_eq!(common::query(&mut w, &vss, t).await.unwrap(), [[["0"]]]);

    let mut s = common::tiberius_as(addr, "SECOND", "pw2", t).await.unwrap();
    assert_eq!(
        common::query(&mut s, "SELECT SUSER_SNAME()", t)
            .await
            .unwrap(),
        [[["Second"]]]
    );
    assert_eq!(common::query(&mut s, &vss, t).await.unwrap(), [[["1"]]]);
    assert!(common::tiberius_as(addr, "second", "PW2", t).await.is_err());
    sim.shutdown().await;
}
