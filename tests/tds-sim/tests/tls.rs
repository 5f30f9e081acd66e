//! tds-sim with encryption on, held to independent clients: FreeTDS `tsql` (`encryption =
//! require` with a CA file) against `force` and `off`, python-tds with `cafile` against
//! `force`, tiberius (rustls) with `Required` and `Off`, tedious with `encrypt: 'strict'`
//! (TDS 8.0) and `encrypt: true`. Certificates come from rcgen: a CA and a server certificate it signs, written
//! to a temp dir, and a second CA that signed nothing (the wrong CA). Negative cases: a
//! client without TLS against `force`, a clear-text PRELOGIN against `strict`, the wrong
//! CA. The server's counters (`tls_handshakes`, `login_only_encryptions`) show what was
//! encrypted, so a client that silently fell back to clear text would fail the test.
//! Fails, not skips, when a client is missing: deploy/setup.sh installs them.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{PASSWORD, Raw, SimProcess, USER, get_state};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tds_codec::packet::PacketType;
use tds_codec::{Encryption, Prelogin, Version};

/// A CA, a server certificate for localhost/127.0.0.1 signed by it, and an unrelated CA,
/// as PEM files in a temp dir removed on drop.
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
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tds-sim-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_params, ca_key, ca_pem) = ca("tds-sim test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), ca("another CA").2).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }

    /// A tds-sim process with this certificate and `--encryption mode`.
    fn sim(&self, mode: &str) -> SimProcess {
        let (cert, key) = (self.path("server.pem"), self.path("server.key"));
        SimProcess::start(
            "PRIMARY",
            &[
                "--database",
                "db1",
                "--encryption",
                mode,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` with `input` on stdin, killed after 30 s; returns (success, stdout + stderr).
fn run(mut cmd: Command, input: &str, what: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); deploy/setup.sh installs it"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut s);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send(s + &e);
    });
    let Ok(text) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within 30 s");
    };
    (child.wait().map(|s| s.success()).unwrap_or(false), text)
}

/// `tsql` through a freetds.conf of its own (FREETDSCONF) naming the server `sim`.
fn tsql(pki: &Pki, port: u16, encryption: &str, ca: &str, input: &str) -> (bool, String) {
    let conf = pki
        .dir
        .join(format!("freetds-{port}-{encryption}-{ca}.conf"));
    std::fs::write(
        &conf,
        format!(
            "[sim]\n\thost = 127.0.0.1\n\tport = {port}\n\ttds version = 7.4\n\
             \tencryption = {encryption}\n\tca file = {}\n",
            pki.path(ca)
        ),
    )
    .unwrap();
    let mut cmd = Command::new("tsql");
    cmd.args(["-S", "sim", "-U", USER, "-P", PASSWORD])
        .env("FREETDSCONF", &conf);
    run(cmd, input, "tsql")
}

const QUERY: &str = "SELECT @@SERVERNAME, 42\ngo\n";

fn counters(sim: &SimProcess) -> (u64, u64, u64) {
    let s = get_state(sim.control);
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (
        n("tls_handshakes"),
        n("login_only_encryptions"),
        n("logins"),
    )
}

#[test]
fn freetds_require_logs_in_and_queries_against_force_and_off() {
    let pki = Pki::new("freetds");
    for mode in ["force", "off"] {
        let sim = pki.sim(mode);
        let (ok, out) = tsql(&pki, sim.port(), "require", "ca.pem", QUERY);
        assert!(ok, "--encryption {mode}: {out}");
        assert!(out.contains("SQL1\t42"), "--encryption {mode}: {out}");
        // One handshake, and the session stayed encrypted (not login-only).
        assert_eq!(counters(&sim), (1, 0, 1), "--encryption {mode}: {out}");
    }
}

#[test]
fn freetds_request_against_off_encrypts_the_login_only() {
    let pki = Pki::new("freetds-request");
    let sim = pki.sim("off");
    // `request` sends ENCRYPT_OFF: SQL Server's default answers OFF, and TLS carries LOGIN7.
    let (ok, out) = tsql(&pki, sim.port(), "request", "ca.pem", QUERY);
    assert!(ok && out.contains("SQL1\t42"), "{out}");
    assert_eq!(counters(&sim), (1, 1, 1), "{out}");
}

#[test]
fn freetds_with_the_wrong_ca_fails() {
    let pki = Pki::new("freetds-wrong-ca");
    let sim = pki.sim("force");
    let (ok, out) = tsql(&pki, sim.port(), "require", "other-ca.pem", QUERY);
    assert!(!ok, "{out}");
    assert!(!out.contains("SQL1\t42"), "{out}");
    assert_eq!(counters(&sim), (0, 0, 0), "{out}");
}

/// python-tds through tests/pytds_tls_client.py; `expect` is "ok", "cert" or "required".
fn pytds(port: u16, cafile: Option<&str>, expect: &str) -> (bool, String) {
    let mut cmd = Command::new("python3");
    cmd.args([
        "tests/pytds_tls_client.py",
        &port.to_string(),
        USER,
        PASSWORD,
        cafile.unwrap_or(""),
        expect,
    ]);
    run(cmd, "", "python3")
}

#[test]
fn python_tds_with_a_ca_file_against_force_and_the_refusals() {
    let pki = Pki::new("pytds");
    let sim = pki.sim("force");
    let (ok, out) = pytds(sim.port(), Some(&pki.path("ca.pem")), "ok");
    assert!(ok && out.contains("tls query OK"), "{out}");
    assert_eq!(counters(&sim), (1, 0, 1), "{out}");
    // The wrong CA: the certificate check fails in the handshake.
    let (ok, out) = pytds(sim.port(), Some(&pki.path("other-ca.pem")), "cert");
    assert!(ok && out.contains("refused as expected"), "{out}");
    // No cafile: python-tds sends ENCRYPT_NOT_SUP; the server answers REQ and closes.
    let (ok, out) = pytds(sim.port(), None, "required");
    assert!(ok && out.contains("refused as expected"), "{out}");
    assert!(
        out.contains("encryption enabled but it is required by server"),
        "{out}"
    );
    assert_eq!(counters(&sim), (1, 0, 1), "{out}");
}

#[test]
fn a_client_offering_not_sup_gets_encrypt_req_then_a_close_from_force() {
    let pki = Pki::new("raw-force");
    let sim = pki.sim("force");
    let mut r = Raw::connect(sim.tds).unwrap();
    r.prelogin().unwrap(); // ENCRYPTION = NOT_SUP
    let (ty, payload) = r.read_message().expect("the PRELOGIN answer");
    assert_eq!(ty, PacketType::TabularResult as u8);
    let answer = Prelogin::decode(&payload).unwrap();
    assert_eq!(answer.encryption, Some(Encryption::Required));
    let mut buf = [0u8; 8];
    assert_eq!(
        r.stream.read(&mut buf).unwrap(),
        0,
        "closed after the answer"
    );
    assert_eq!(counters(&sim), (0, 0, 0));
}

#[test]
fn a_clear_prelogin_against_strict_is_refused() {
    let pki = Pki::new("raw-strict");
    let sim = pki.sim("strict");
    let mut r = Raw::connect(sim.tds).unwrap();
    let p = Prelogin {
        version: Some(Version {
            major: 1,
            minor: 0,
            build: 0,
            sub_build: 0,
        }),
        encryption: Some(Encryption::On),
        ..Default::default()
    };
    r.send(PacketType::PreLogin, &p.encode()).unwrap();
    let mut buf = [0u8; 8];
    // Closed without an answer: EOF, or a reset because the PRELOGIN was never read.
    match r.stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "a strict server answered a clear PRELOGIN: {:02x?}",
            &buf[..n]
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let s = get_state(sim.control);
    assert_eq!(
        (s["connections"].as_u64(), s["logins"].as_u64()),
        (Some(1), Some(0))
    );
}

fn tedious_dir() -> PathBuf {
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
    modules
}

/// tests/drivers/tedious_tls.js with `encrypt` (strict, true) and a CA file.
fn tedious(port: u16, encrypt: &str, ca: &Path) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", tedious_dir()).args([
        "tests/drivers/tedious_tls.js",
        &port.to_string(),
        USER,
        PASSWORD,
        encrypt,
        &ca.to_string_lossy(),
    ]);
    run(cmd, "", "node")
}

#[test]
fn tedious_strict_logs_in_and_queries_in_tls_first() {
    let pki = Pki::new("tedious");
    let sim = pki.sim("strict");
    let (ok, out) = tedious(sim.port(), "strict", &pki.dir.join("ca.pem"));
    assert!(ok && out.contains("strict query OK"), "{out}");
    assert_eq!(counters(&sim), (1, 0, 1), "{out}");
    // The wrong CA.
    let (ok, out) = tedious(sim.port(), "strict", &pki.dir.join("other-ca.pem"));
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    // A TDS 7.x client (clear PRELOGIN) is refused by a strict server.
    let (ok, out) = tedious(sim.port(), "true", &pki.dir.join("ca.pem"));
    assert!(!ok && out.contains("FAILED"), "{out}");
    assert_eq!(counters(&sim), (1, 0, 1), "{out}");
}

#[test]
fn tedious_without_encryption_is_told_force_requires_it() {
    let pki = Pki::new("tedious-force");
    let sim = pki.sim("force");
    // encrypt: false sends ENCRYPT_NOT_SUP; the answer is ENCRYPT_REQ, then a close.
    let (ok, out) = tedious(sim.port(), "false", &pki.dir.join("ca.pem"));
    assert!(!ok, "{out}");
    assert!(out.contains("Server requires encryption"), "{out}");
    // And with encrypt: true, TDS 7.x TLS after PRELOGIN, the same server lets it in.
    let (ok, out) = tedious(sim.port(), "true", &pki.dir.join("ca.pem"));
    assert!(ok && out.contains("query OK"), "{out}");
    assert_eq!(counters(&sim), (1, 0, 1), "{out}");
}

fn tiberius_config(
    addr: std::net::SocketAddr,
    level: tiberius::EncryptionLevel,
    ca: &str,
) -> tiberius::Config {
    let mut cfg = tiberius::Config::new();
    cfg.host(addr.ip());
    cfg.port(addr.port());
    cfg.authentication(tiberius::AuthMethod::sql_server(USER, PASSWORD));
    cfg.encryption(level);
    cfg.trust_cert_ca(ca);
    cfg.handshake_timeout(Some(Duration::from_secs(5)));
    cfg
}

async fn tiberius_query(
    cfg: tiberius::Config,
    addr: std::net::SocketAddr,
) -> Result<String, String> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    // tiberius' rustls backend falls back to aws-lc-rs without a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut c = tiberius::Client::connect(cfg, tcp.compat_write())
        .await
        .map_err(|e| format!("login: {e}"))?;
    let sets = common::query(&mut c, "SELECT @@SERVERNAME", Duration::from_secs(5)).await?;
    Ok(sets[0][0][0].clone())
}

#[tokio::test]
async fn tiberius_required_and_off_trusting_the_ca() {
    let pki = Pki::new("tiberius");
    let mut cfg = tds_sim::SimConfig::new("SQL1", "AG1", tds_sim::Role::Primary);
    cfg.password = PASSWORD.into();
    cfg.tls = tds_sim::tls::TlsSettings {
        mode: tds_sim::tls::Mode::Off,
        cert: Some(pki.dir.join("server.pem")),
        key: Some(pki.dir.join("server.key")),
    };
    let sim = tds_sim::start(cfg).await.expect("start");
    let addr = sim.tds_addr();
    let ca = pki.path("ca.pem");
    let req = tiberius_config(addr, tiberius::EncryptionLevel::Required, &ca);
    assert_eq!(tiberius_query(req, addr).await.unwrap(), "SQL1");
    let s = sim.stats();
    assert_eq!(
        (s.tls_handshakes, s.login_only_encryptions, s.logins),
        (1, 0, 1)
    );
    // Off: the login packet only, then the session in clear text.
    let off = tiberius_config(addr, tiberius::EncryptionLevel::Off, &ca);
    assert_eq!(tiberius_query(off, addr).await.unwrap(), "SQL1");
    let s = sim.stats();
    assert_eq!(
        (s.tls_handshakes, s.login_only_encryptions, s.logins),
        (2, 1, 2)
    );
    // The wrong CA.
    let wrong = tiberius_config(
        addr,
        tiberius::EncryptionLevel::Required,
        &pki.path("other-ca.pem"),
    );
    let e = tiberius_query(wrong, addr).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert_eq!(sim.stats().logins, 2);
    sim.shutdown().await;
}

/// Runs the binary with the base arguments plus `extra` until it exits (bad arguments).
fn exit_of(extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tds-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--server-name",
            "S",
            "--ag",
            "AG1",
            "--role",
            "PRIMARY",
            "--user",
            "u",
            "--password",
            "p",
        ])
        .args(extra)
        .output()
        .expect("run tds-sim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_encryption_flags_are_refused_by_name() {
    let (code, err) = exit_of(&["--encryption", "maybe"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--encryption") && err.contains("maybe"),
        "{err}"
    );
    let (code, err) = exit_of(&["--tls-cert", "/nonexistent/cert.pem"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    // Both given but unreadable: the start fails naming the file.
    let (code, err) = exit_of(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}

#[test]
fn the_default_is_off_with_a_self_signed_certificate() {
    // No --encryption, no certificate: ENCRYPT_ON gets ON and a TLS handshake.
    let sim = SimProcess::start("PRIMARY", &[]);
    let mut r = Raw::connect(sim.tds).unwrap();
    let p = Prelogin {
        version: Some(Version {
            major: 1,
            minor: 0,
            build: 0,
            sub_build: 0,
        }),
        encryption: Some(Encryption::On),
        ..Default::default()
    };
    r.send(PacketType::PreLogin, &p.encode()).unwrap();
    let (_, payload) = r.read_message().expect("the PRELOGIN answer");
    assert_eq!(
        Prelogin::decode(&payload).unwrap().encryption,
        Some(Encryption::On)
    );
    // And ENCRYPT_NOT_SUP gets NOT_SUP (the old behaviour, for clients without TLS).
    let mut r = Raw::connect(sim.tds).unwrap();
    r.prelogin().unwrap();
    let (_, payload) = r.read_message().expect("the PRELOGIN answer");
    assert_eq!(
        Prelogin::decode(&payload).unwrap().encryption,
        Some(Encryption::NotSupported)
    );
}
