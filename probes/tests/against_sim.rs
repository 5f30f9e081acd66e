//! The probes against the TDS replica simulator (`tds-sim`): every outcome through a real
//! TDS server that parses and runs the health query, plus the login probe's session
//! handling (one login reused across calls, a new one after a failure, a role change seen
//! on the open session).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::bounded;
use tds_sim::{DbState, Fault, Role, SimConfig, SimHandle};
use tdsvip_probes::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Generous for success paths (a debug build on a shared 2-core machine), short where the
/// test waits for the deadline on purpose.
const RELAXED: u64 = 2000;
const SHORT: u64 = 150;

async fn sim(role: Role, dbs: &[(&str, DbState)]) -> SimHandle {
    let mut cfg = SimConfig::new("SQL1", "AG1", role);
    cfg.databases = dbs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
    tds_sim::start(cfg).await.unwrap()
}

/// These tests are about the health query, not TLS (tls_against_sim.rs): they log in in
/// clear (ENCRYPT_NOT_SUP, which tds-sim's default `off` accepts), with the explicit opt-in.
fn cleartext() -> TlsConfig {
    TlsConfig {
        encrypt: Encrypt::Off,
        allow_cleartext_login: true,
        ..TlsConfig::default()
    }
}

fn login(addr: SocketAddr, ag: Option<&str>, dbs: &[&str], timeout_ms: u64) -> LoginProbe {
    let mut c = LoginConfig::new("tdsvip", "secret");
    c.tls = cleartext();
    c.ag = ag.map(str::to_owned);
    c.databases = dbs.iter().map(|d| (*d).to_owned()).collect();
    c.timeout = ms(timeout_ms);
    LoginProbe::new(addr, c).unwrap()
}

fn prelogin(addr: SocketAddr, timeout_ms: u64) -> PreloginProbe {
    PreloginProbe::new(
        addr,
        ProbeConfig {
            timeout: ms(timeout_ms),
            ..Default::default()
        },
    )
    .unwrap()
}

fn timeout(phase: Phase) -> Outcome {
    Outcome::Timeout { phase }
}

#[tokio::test]
async fn primary_with_online_databases_is_ok() {
    bounded(async {
        let sim = sim(
            Role::Primary,
            &[("db1", DbState::Online), ("db2", DbState::Online)],
        )
        .await;
        let mut p = login(sim.tds_addr(), Some("AG1"), &["db1", "db2"], RELAXED);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.session_reused, Some(false));
        assert_eq!(r.server.server_name.as_deref(), Some("SQL1"));
        assert_eq!(r.server.role.as_deref(), Some("PRIMARY"));
        assert_eq!(r.server.synchronization_health.as_deref(), Some("HEALTHY"));
        let dbs: Vec<(&str, Option<&str>)> = r
            .server
            .databases
            .iter()
            .map(|d| (d.name.as_str(), d.state.as_deref()))
            .collect();
        assert_eq!(dbs, [("db1", Some("ONLINE")), ("db2", Some("ONLINE"))]);
        assert!(r.phases.connect.is_some() && r.phases.login.is_some() && r.phases.query.is_some());

        // Without an AG: SELECT @@SERVERNAME only.
        let mut p = login(sim.tds_addr(), None, &[], RELAXED);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.server.server_name.as_deref(), Some("SQL1"));
        assert_eq!(r.server.role, None);

        // The PRELOGIN probe reports the simulator's product version.
        let r = prelogin(sim.tds_addr(), RELAXED).probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert!(r.server.version.is_some());
        assert_eq!(r.server.encryption.as_deref(), Some("not_supported"));
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn session_is_reused_and_sees_role_changes() {
    bounded(async {
        let sim = sim(Role::Primary, &[("db1", DbState::Online)]).await;
        let mut p = login(sim.tds_addr(), Some("AG1"), &["db1"], RELAXED);
        for i in 0..30 {
            let r = p.probe().await;
            assert_eq!(r.outcome, Outcome::Ok, "call {i}: {r:?}");
            assert_eq!(r.session_reused, Some(i > 0));
        }
        assert_eq!(p.logins(), 1);
        assert_eq!(sim.stats().logins, 1);
        assert!(sim.stats().queries >= 30);

        for (role, name) in [
            (Role::Secondary, "SECONDARY"),
            (Role::Resolving, "RESOLVING"),
        ] {
            sim.set_role(role);
            let r = p.probe().await;
            assert_eq!(
                r.outcome,
                Outcome::NotPrimary {
                    role: Some(name.to_owned()),
                    detail: format!("local replica of AG \"AG1\" is {name}"),
                },
                "{r:?}"
            );
            assert_eq!(r.session_reused, Some(true));
            assert!(p.has_session(), "an answer is not a session failure");
        }
        sim.set_role(Role::Primary);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);
        assert_eq!(sim.stats().logins, 1, "all on the first session");
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn wrong_ag_is_not_primary() {
    bounded(async {
        let sim = sim(Role::Primary, &[]).await;
        let mut p = login(sim.tds_addr(), Some("AG2"), &[], RELAXED);
        let r = p.probe().await;
        match &r.outcome {
            Outcome::NotPrimary { role: None, detail } => {
                assert!(detail.contains("AG not found"), "{detail}")
            }
            other => panic!("{other}"),
        }
        assert!(p.has_session());
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn database_not_online_or_missing() {
    bounded(async {
        let sim = sim(
            Role::Primary,
            &[("db1", DbState::Online), ("db2", DbState::Online)],
        )
        .await;
        let mut p = login(sim.tds_addr(), Some("AG1"), &["db1", "db2"], RELAXED);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);
        for (state, name) in [
            (DbState::Restoring, "RESTORING"),
            (DbState::RecoveryPending, "RECOVERY_PENDING"),
            (DbState::Offline, "OFFLINE"),
        ] {
            sim.set_database("db2", state);
            let r = p.probe().await;
            assert_eq!(
                r.outcome,
                Outcome::DbNotOnline {
                    database: "db2".into(),
                    state: Some(name.into())
                },
                "{r:?}"
            );
        }
        sim.set_database("db2", DbState::Online);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);

        let mut p = login(sim.tds_addr(), Some("AG1"), &["db1", "nope"], RELAXED);
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::DbNotOnline {
                database: "nope".into(),
                state: None
            },
            "{r:?}"
        );
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn login_failures() {
    bounded(async {
        let sim = sim(Role::Primary, &[]).await;
        let mut c = LoginConfig::new("tdsvip", "wrong");
        c.tls = cleartext();
        c.timeout = ms(RELAXED);
        let mut p = LoginProbe::new(sim.tds_addr(), c).unwrap();
        let r = p.probe().await;
        match &r.outcome {
            Outcome::LoginFailed {
                code: Some(18456),
                message,
            } => assert!(message.contains("tdsvip"), "{message}"),
            other => panic!("{other}"),
        }
        assert!(!p.has_session());

        sim.set_fault(Fault::RejectLogin);
        let mut p = login(sim.tds_addr(), Some("AG1"), &[], RELAXED);
        let r = p.probe().await;
        assert!(
            matches!(
                r.outcome,
                Outcome::LoginFailed {
                    code: Some(18456),
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(sim.stats().logins, 0);
        assert!(sim.stats().failed_logins >= 2);
        sim.set_fault(Fault::None);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn timeouts_name_their_phase() {
    bounded(async {
        let sim = sim(Role::Primary, &[]).await;
        let addr = sim.tds_addr();

        sim.set_fault(Fault::HangAfterAccept);
        let r = prelogin(addr, SHORT).probe().await;
        assert_eq!(r.outcome, timeout(Phase::Prelogin), "{r:?}");
        let r = login(addr, Some("AG1"), &[], SHORT).probe().await;
        assert_eq!(r.outcome, timeout(Phase::Prelogin), "{r:?}");

        sim.set_fault(Fault::HangAfterPrelogin);
        let r = prelogin(addr, SHORT).probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "PRELOGIN is still answered: {r:?}");
        let r = login(addr, Some("AG1"), &[], SHORT).probe().await;
        assert_eq!(r.outcome, timeout(Phase::Login), "{r:?}");

        sim.set_fault(Fault::HangAfterLogin);
        let mut p = login(addr, Some("AG1"), &[], SHORT);
        let r = p.probe().await;
        assert_eq!(r.outcome, timeout(Phase::Query), "{r:?}");
        assert!(!p.has_session(), "a timed-out session is dropped");

        // An open, healthy session whose server then stops answering: the deadline ends
        // the call, the session is dropped, and the next call logs in again.
        sim.set_fault(Fault::None);
        let mut p = login(addr, Some("AG1"), &[], 500);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);
        let logins = sim.stats().logins;
        sim.set_fault(Fault::HangAfterLogin);
        let r = p.probe().await;
        assert_eq!(r.outcome, timeout(Phase::Query), "{r:?}");
        assert_eq!(r.session_reused, Some(true));
        assert!(r.latency < ms(800), "{:?}", r.latency);
        assert!(!p.has_session());
        sim.set_fault(Fault::None);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.session_reused, Some(false), "logged in again");
        assert_eq!(sim.stats().logins, logins + 1);

        // Slow answers: within the deadline they are fine, beyond it a timeout.
        sim.set_fault(Fault::Slow { delay_ms: 40 });
        let mut p = login(addr, Some("AG1"), &[], RELAXED);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert!(r.latency >= ms(40), "{:?}", r.latency);
        sim.set_fault(Fault::Slow { delay_ms: 1000 });
        let r = login(addr, Some("AG1"), &[], SHORT).probe().await;
        assert!(matches!(r.outcome, Outcome::Timeout { .. }), "{r:?}");
        assert!(r.latency < ms(SHORT + 300), "{:?}", r.latency);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn reset_drops_the_session_and_the_next_call_logs_in_again() {
    bounded(async {
        let sim = sim(Role::Primary, &[]).await;
        let addr = sim.tds_addr();
        let mut p = login(addr, Some("AG1"), &[], RELAXED);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);
        assert_eq!(sim.stats().logins, 1);

        sim.set_fault(Fault::Reset);
        // The open session was reset by the server: the query fails.
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Reset {
                phase: Phase::Query
            },
            "{r:?}"
        );
        assert!(!p.has_session());
        // New connections are reset right after accept.
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Reset {
                phase: Phase::Prelogin
            },
            "{r:?}"
        );
        let r = prelogin(addr, RELAXED).probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Reset {
                phase: Phase::Prelogin
            },
            "{r:?}"
        );

        sim.set_fault(Fault::None);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.session_reused, Some(false));
        assert_eq!(p.logins(), 2);
        assert_eq!(sim.stats().logins, 2);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn garbage_is_a_protocol_error() {
    bounded(async {
        let sim = sim(Role::Primary, &[]).await;
        sim.set_fault(Fault::Garbage);
        let r = prelogin(sim.tds_addr(), SHORT).probe().await;
        assert!(
            matches!(
                r.outcome,
                Outcome::ProtocolError {
                    phase: Phase::Prelogin,
                    ..
                }
            ),
            "{r:?}"
        );
        let r = login(sim.tds_addr(), Some("AG1"), &[], SHORT).probe().await;
        assert!(
            matches!(
                r.outcome,
                Outcome::ProtocolError {
                    phase: Phase::Prelogin,
                    ..
                }
            ),
            "{r:?}"
        );
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn refuse_closes_the_port() {
    bounded(async {
        let sim = sim(Role::Primary, &[]).await;
        let addr = sim.tds_addr();
        let mut p = login(addr, Some("AG1"), &[], RELAXED);
        assert_eq!(p.probe().await.outcome, Outcome::Ok);
        sim.set_fault(Fault::Refuse);
        // The open session is reset, then nothing listens.
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Reset {
                phase: Phase::Query
            },
            "{r:?}"
        );
        let tcp = TcpProbe::new(addr, ProbeConfig::default()).unwrap();
        let mut refused = false;
        for _ in 0..20 {
            if tcp.probe().await.outcome == Outcome::Refused {
                refused = true;
                break;
            }
            tokio::time::sleep(ms(10)).await;
        }
        assert!(refused, "the listener never closed");
        assert_eq!(
            prelogin(addr, SHORT).probe().await.outcome,
            Outcome::Refused
        );
        assert_eq!(p.probe().await.outcome, Outcome::Refused);
        sim.shutdown().await;
    })
    .await
}

/// The runner on a login probe: PRIMARY answers, then the demotion reported as it happens,
/// on one kept session.
#[tokio::test]
async fn runner_follows_a_demotion() {
    bounded(async {
        let sim = sim(Role::Primary, &[("db1", DbState::Online)]).await;
        let probe = login(sim.tds_addr(), Some("AG1"), &["db1"], RELAXED);
        let runner = ProbeRunner::new(
            probe.into(),
            ScheduleConfig {
                interval: ms(20),
                jitter: Duration::ZERO,
            },
        )
        .unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let (handle, mut rx) = runner.spawn(8, cancel.clone());
        for _ in 0..2 {
            assert_eq!(rx.recv().await.unwrap().result.outcome, Outcome::Ok);
        }
        sim.set_role(Role::Secondary);
        let down = loop {
            let o = rx.recv().await.unwrap();
            if o.result.outcome != Outcome::Ok {
                break o.result.outcome;
            }
        };
        assert!(matches!(down, Outcome::NotPrimary { .. }), "{down:?}");
        cancel.cancel();
        handle.await.unwrap();
        assert_eq!(sim.stats().logins, 1);
        sim.shutdown().await;
    })
    .await
}

/// A server that answers ENCRYPT_NOT_SUP (tds-sim `not-supported`) is refused by
/// `mandatory` (the default) and by `optional` without `allow_cleartext_login`, before any
/// LOGIN7 is sent; `optional` with the opt-in logs in in clear.
#[tokio::test]
async fn a_server_that_cannot_encrypt_is_refused_unless_cleartext_is_allowed() {
    bounded(async {
        let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
        cfg.tls.mode = tds_sim::tls::Mode::NotSupported;
        let sim = tds_sim::start(cfg).await.unwrap();
        let refused = |encrypt: Encrypt, allow: bool| {
            let mut c = LoginConfig::new("tdsvip", "secret");
            c.ag = Some("AG1".into());
            c.timeout = ms(RELAXED);
            c.tls = TlsConfig {
                encrypt,
                allow_cleartext_login: allow,
                ..TlsConfig::default()
            };
            LoginProbe::new(sim.tds_addr(), c).unwrap()
        };
        for (encrypt, key) in [
            (Encrypt::Mandatory, "mandatory"),
            (Encrypt::Optional, "allow_cleartext_login"),
        ] {
            let mut p = refused(encrypt, false);
            let r = p.probe().await;
            match &r.outcome {
                Outcome::LoginFailed {
                    code: None,
                    message,
                } => assert!(message.contains(key), "{encrypt}: {message}"),
                other => panic!("{encrypt}: {other}"),
            }
            assert_eq!(r.server.encryption.as_deref(), None);
            assert!(p.tls_session().is_none());
        }
        assert_eq!(sim.stats().logins, 0, "no LOGIN7 may reach the server");
        let mut p = refused(Encrypt::Optional, true);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.server.encryption.as_deref(), Some("not_supported"));
        assert!(p.tls_session().is_none(), "a cleartext session has no TLS");
        assert_eq!(sim.stats().logins, 1);
        sim.shutdown().await;
    })
    .await
}
