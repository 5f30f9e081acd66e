//! The login probe under a login that lacks permissions, against tds-sim's permission
//! model: the HADR DMVs refused without VIEW SERVER STATE are `query_failed` with SQL
//! Server's error number (300), and the session is dropped as after any failure; with the
//! permission but none on the AG, `sys.availability_groups` hides the AG and the probe
//! says `not_primary` "AG not found"; with both, `ok`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::bounded;
use tds_sim::{DbState, Role, SimConfig, SimHandle};
use tdsvip_probes::*;

const WATCHER: &str = "watcher";
const WATCHER_PW: &str = "w4tch";

async fn sim(major: u8) -> SimHandle {
    let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
    cfg.databases = vec![("db1".to_owned(), DbState::Online)];
    cfg.logins = vec![(WATCHER.to_owned(), WATCHER_PW.to_owned())];
    cfg.product_version.major = major;
    tds_sim::start(cfg).await.unwrap()
}

/// A clear-text login probe (TLS is not what these tests are about) with a relaxed deadline.
fn probe(addr: SocketAddr, user: &str, password: &str, ag: Option<&str>) -> LoginProbe {
    let mut c = LoginConfig::new(user, password);
    c.tls = TlsConfig {
        encrypt: Encrypt::Off,
        allow_cleartext_login: true,
        ..TlsConfig::default()
    };
    c.ag = ag.map(str::to_owned);
    c.databases = if ag.is_some() {
        vec!["db1".to_owned()]
    } else {
        Vec::new()
    };
    c.timeout = Duration::from_secs(2);
    LoginProbe::new(addr, c).unwrap()
}

/// Runs `sql` as the sysadmin login, through the probe's own TDS client.
async fn as_admin(addr: SocketAddr, sql: &str) {
    let mut admin = probe(addr, "tdsvip", "secret", None);
    assert_eq!(admin.probe().await.outcome, Outcome::Ok);
    admin
        .query_text(sql)
        .await
        .unwrap_or_else(|o| panic!("{sql}: {o}"));
}

#[tokio::test]
async fn a_refused_dmv_is_query_failed_with_the_error_number() {
    bounded(async {
        let sim = sim(16).await;
        let addr = sim.tds_addr();
        let mut p = probe(addr, WATCHER, WATCHER_PW, Some("AG1"));
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::QueryFailed {
                code: 300,
                message: "VIEW SERVER PERFORMANCE STATE permission was denied on object 'server', database 'master'.".to_owned(),
            },
            "{r:?}"
        );
        let json = serde_json::to_value(&r.outcome).unwrap();
        assert_eq!((json["outcome"].as_str(), json["code"].as_u64()), (Some("query_failed"), Some(300)));
        assert!(!p.has_session(), "the session is dropped after a failure");
        // The next call logs in again and fails the same way.
        assert_eq!(p.probe().await.outcome.name(), "query_failed");
        assert_eq!(p.logins(), 2);
        assert_eq!(sim.stats().failed_logins, 0, "the login itself succeeded");

        // VIEW SERVER STATE alone: the DMV answers, the AG is hidden from the catalog.
        as_admin(addr, "GRANT VIEW SERVER STATE TO [watcher]").await;
        let r = p.probe().await;
        assert!(
            matches!(&r.outcome, Outcome::NotPrimary { role: None, detail } if detail.starts_with("AG not found")),
            "{r:?}"
        );
        // And a permission on the AG makes it visible: ok, on the kept session.
        as_admin(addr, "GRANT VIEW DEFINITION ON AVAILABILITY GROUP::[AG1] TO [watcher]").await;
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.session_reused, Some(true));
        // A DENY takes it away again at the next probe.
        as_admin(addr, "DENY VIEW SERVER STATE TO [watcher]").await;
        assert!(matches!(p.probe().await.outcome, Outcome::QueryFailed { code: 300, .. }));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn before_sql_server_2022_the_error_names_view_server_state() {
    bounded(async {
        let sim = sim(15).await;
        let mut p = probe(sim.tds_addr(), WATCHER, WATCHER_PW, Some("AG1"));
        match p.probe().await.outcome {
            Outcome::QueryFailed { code, message } => {
                assert_eq!(code, 300);
                assert!(
                    message.starts_with("VIEW SERVER STATE permission was denied"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Without an AG the probe's query needs no permission at all.
        let mut plain = probe(sim.tds_addr(), WATCHER, WATCHER_PW, None);
        assert_eq!(plain.probe().await.outcome, Outcome::Ok);
        sim.shutdown().await;
    })
    .await;
}
