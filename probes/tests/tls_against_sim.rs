//! The login probe's encryption against tds-sim speaking TLS as SQL Server does: each
//! `encrypt` setting against the server settings it meets (force, off, strict), the
//! certificate checks (CA, host name, trust_server_certificate), the kept session over TLS,
//! and that the sessions use ring. Certificates are made here with rcgen.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tds_sim::tls::{Mode as ServerMode, TlsSettings};
use tds_sim::{Role, SimConfig, SimHandle};
use tdsvip_probes::*;

struct Pki {
    dir: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

impl Pki {
    /// A CA, a server certificate for sql1.lab.test and 127.0.0.1 signed by it, and an
    /// unrelated CA.
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tdsvip-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_params, ca_key, ca_pem) = ca("tdsvip test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut p =
            CertificateParams::new(vec!["sql1.lab.test".into(), "127.0.0.1".into()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "sql1.lab.test");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), ca("another CA").2).unwrap();
        Pki { dir }
    }

    async fn sim(&self, mode: ServerMode) -> SimHandle {
        let mut cfg = SimConfig::new("SQL1", "AG1", Role::Primary);
        cfg.databases = vec![("sales".into(), tds_sim::DbState::Online)];
        cfg.tls = TlsSettings {
            mode,
            cert: Some(self.dir.join("server.pem")),
            key: Some(self.dir.join("server.key")),
        };
        tds_sim::start(cfg).await.unwrap()
    }

    fn tls(&self, encrypt: Encrypt, ca: &str) -> TlsConfig {
        TlsConfig {
            encrypt,
            ca_file: Some(self.dir.join(ca)),
            ..TlsConfig::default()
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn probe(sim: &SimHandle, tls: TlsConfig) -> LoginProbe {
    let mut c = LoginConfig::new("tdsvip", "secret");
    c.ag = Some("AG1".into());
    c.databases = vec!["sales".into()];
    c.timeout = Duration::from_secs(3);
    c.tls = tls;
    LoginProbe::new(sim.tds_addr(), c).unwrap()
}

fn ring_suite(s: &TlsSession) -> bool {
    let suite = s.suite.expect("a negotiated suite");
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .any(|r| tls::same_suite(*r, suite))
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test took over 30 s");
}

#[tokio::test]
async fn mandatory_against_force_verifies_the_ca_and_keeps_the_session_encrypted() {
    bounded(async {
        let pki = Pki::new("force");
        let sim = pki.sim(ServerMode::Force).await;
        let mut p = probe(&sim, pki.tls(Encrypt::Mandatory, "ca.pem"));
        for _ in 0..3 {
            let r = p.probe().await;
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
            assert_eq!(r.server.encryption.as_deref(), Some("required"));
        }
        let s = p.tls_session().expect("an encrypted session").clone();
        assert_eq!(s.version, "TLSv1_2");
        assert_eq!(s.scope, "full");
        assert_eq!(s.certificate, "verified");
        assert_eq!(
            s.peer_certificate_subject.as_deref(),
            Some("CN=sql1.lab.test")
        );
        assert!(
            ring_suite(&s),
            "the session's suite is ring's: {}",
            s.cipher
        );
        let st = sim.stats();
        assert_eq!(
            (st.tls_handshakes, st.login_only_encryptions, st.logins),
            (1, 0, 1)
        );
        assert_eq!(p.logins(), 1, "one login, the session kept over TLS");
        sim.shutdown().await;
    })
    .await
}

/// A kept session that is dropped (a timeout, a hang) logs in again with the same client
/// configuration, and so offers to resume its TLS 1.2 session with the same server. The
/// agents do this to their local replica after every failed poll or statement; against a
/// tds-sim that accepted resumption, the server's handshake ended on a read (the client's
/// Finished), and the client's LOGIN7, sent right behind it, was read as a TDS header by
/// the still-framing handshake ("unknown packet type 0x17"): the reconnect was reset, seen
/// in the lab after a hang was lifted (five in a row).
#[tokio::test]
async fn a_dropped_session_logs_in_again_over_tls_every_time() {
    bounded(async {
        let pki = Pki::new("again");
        let sim = pki.sim(ServerMode::Off).await;
        let mut p = probe(&sim, pki.tls(Encrypt::Mandatory, "ca.pem"));
        let mut failed = Vec::new();
        for i in 0..30 {
            let r = p.probe().await;
            if r.outcome != Outcome::Ok {
                failed.push((i, r.outcome.to_string()));
            }
            p.disconnect();
        }
        assert!(failed.is_empty(), "reconnects that failed: {failed:?}");
        assert_eq!(sim.stats().tls_handshakes, 30);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn optional_against_off_encrypts_the_login_only() {
    bounded(async {
        let pki = Pki::new("loginonly");
        let sim = pki.sim(ServerMode::Off).await;
        let mut p = probe(&sim, pki.tls(Encrypt::Optional, "ca.pem"));
        for _ in 0..2 {
            let r = p.probe().await;
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
            assert_eq!(r.server.encryption.as_deref(), Some("off"));
        }
        let s = p.tls_session().expect("the login was encrypted");
        assert_eq!(s.scope, "login_only");
        let st = sim.stats();
        assert_eq!(
            (st.tls_handshakes, st.login_only_encryptions, st.logins),
            (1, 1, 1)
        );
        // mandatory against the same server encrypts everything.
        let mut full = probe(&sim, pki.tls(Encrypt::Mandatory, "ca.pem"));
        assert_eq!(full.probe().await.outcome, Outcome::Ok);
        assert_eq!(full.tls_session().unwrap().scope, "full");
        assert_eq!(sim.stats().login_only_encryptions, 1);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn strict_does_tls_first_with_tls13_and_mandatory_cannot_talk_to_strict() {
    bounded(async {
        let pki = Pki::new("strict");
        let sim = pki.sim(ServerMode::Strict).await;
        let mut p = probe(&sim, pki.tls(Encrypt::Strict, "ca.pem"));
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let s = p.tls_session().unwrap();
        assert_eq!((s.version.as_str(), s.scope), ("TLSv1_3", "full"));
        assert!(ring_suite(s));
        let mut seven = probe(&sim, pki.tls(Encrypt::Mandatory, "ca.pem"));
        let r = seven.probe().await;
        assert!(
            !r.outcome.is_ok(),
            "a TDS 7.x PRELOGIN in clear against strict: {r:?}"
        );
        assert_eq!(sim.stats().logins, 1);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_wrong_ca_or_host_name_fails_naming_what_did_not_match() {
    bounded(async {
        let pki = Pki::new("wrong");
        let sim = pki.sim(ServerMode::Force).await;
        let mut p = probe(&sim, pki.tls(Encrypt::Mandatory, "other-ca.pem"));
        match p.probe().await.outcome {
            Outcome::LoginFailed {
                code: None,
                message,
            } => {
                assert!(
                    message.contains("not signed by a CA in ca_file"),
                    "{message}"
                );
                assert!(message.contains("other-ca.pem"), "{message}");
                assert!(message.contains("CN=tdsvip test CA"), "{message}");
            }
            other => panic!("{other}"),
        }
        let mut tls = pki.tls(Encrypt::Mandatory, "ca.pem");
        tls.host_name_in_certificate = Some("sql2.lab.test".into());
        let mut p = probe(&sim, tls);
        match p.probe().await.outcome {
            Outcome::LoginFailed {
                code: None,
                message,
            } => {
                assert!(message.contains("\"sql2.lab.test\""), "{message}");
                assert!(message.contains("sql1.lab.test"), "{message}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            sim.stats().logins,
            0,
            "no LOGIN7 after a refused certificate"
        );
        // The right name passes.
        let mut tls = pki.tls(Encrypt::Mandatory, "ca.pem");
        tls.host_name_in_certificate = Some("sql1.lab.test".into());
        assert_eq!(probe(&sim, tls).probe().await.outcome, Outcome::Ok);
        sim.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn trust_server_certificate_passes_the_wrong_ca_and_says_so() {
    bounded(async {
        let pki = Pki::new("trust");
        let sim = pki.sim(ServerMode::Force).await;
        let mut tls = pki.tls(Encrypt::Mandatory, "other-ca.pem");
        tls.trust_server_certificate = true;
        let mut p = probe(&sim, tls);
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let s = p.tls_session().unwrap();
        assert!(
            s.certificate.starts_with("NOT verified"),
            "{}",
            s.certificate
        );
        assert!(s.certificate.contains("not signed"), "{}", s.certificate);
        sim.shutdown().await;
    })
    .await
}
