//! Certificate checks against certificates made here with rcgen: a refusal names what did
//! not match (the name, the CA), and `trust_server_certificate` accepts but reports it.

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
}

/// A CA named `name` and a leaf for `sql1.lab.test` and 127.0.0.1 signed by it.
fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["sql1.lab.test".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "sql1.lab.test");
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf: leaf.der().clone(),
    }
}

fn write_ca(pki: &Pki, tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tdsvip-ca-{}-{tag}.pem", std::process::id()));
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

fn client(tls: TlsConfig) -> TlsClient {
    TlsClient::new(&tls, "127.0.0.1".parse().unwrap()).unwrap()
}

fn verify(c: &TlsClient, leaf: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    c.verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            describe_tls_error(&io)
        })
}

#[test]
fn a_certificate_from_the_configured_ca_for_the_name_passes() {
    let p = pki("Lab CA");
    let c = client(TlsConfig {
        ca_file: Some(write_ca(&p, "good")),
        ..TlsConfig::default()
    });
    verify(&c, &p.leaf, "sql1.lab.test").unwrap();
    verify(&c, &p.leaf, "127.0.0.1").unwrap();
}

#[test]
fn a_wrong_name_is_refused_naming_both_names() {
    let p = pki("Lab CA");
    let c = client(TlsConfig {
        ca_file: Some(write_ca(&p, "name")),
        ..TlsConfig::default()
    });
    let why = verify(&c, &p.leaf, "sql9.lab.test").unwrap_err();
    assert!(why.contains("\"sql9.lab.test\""), "{why}");
    assert!(why.contains("sql1.lab.test"), "{why}");
    assert!(why.contains("host_name_in_certificate"), "{why}");
}

#[test]
fn a_wrong_ca_is_refused_naming_the_issuer_and_the_ca_file() {
    let p = pki("Lab CA");
    let other = pki("Other CA");
    let path = write_ca(&other, "wrong");
    let c = client(TlsConfig {
        ca_file: Some(path.clone()),
        ..TlsConfig::default()
    });
    let why = verify(&c, &p.leaf, "sql1.lab.test").unwrap_err();
    assert!(why.contains("CN=Lab CA"), "{why}");
    assert!(why.contains(&path.display().to_string()), "{why}");
    assert!(why.contains("not signed by a CA"), "{why}");
}

#[test]
fn trust_server_certificate_accepts_but_says_why_it_would_not() {
    let p = pki("Lab CA");
    let other = pki("Other CA");
    let c = client(TlsConfig {
        ca_file: Some(write_ca(&other, "trust")),
        trust_server_certificate: true,
        ..TlsConfig::default()
    });
    verify(&c, &p.leaf, "sql1.lab.test").unwrap();
    let name = ServerName::try_from("sql1.lab.test").unwrap();
    let why = c
        .verifier
        .check(std::slice::from_ref(&p.leaf), &name)
        .unwrap_err();
    assert!(why.contains("not signed"), "{why}");
}

#[test]
fn ca_file_problems_name_the_key() {
    let missing = TlsConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsConfig::default()
    };
    let e = TlsClient::new(&missing, "127.0.0.1".parse().unwrap()).unwrap_err();
    assert_eq!(e.key, "ca_file");
    assert!(e.reason.contains("/nonexistent/ca.pem"), "{}", e.reason);
    let path = std::env::temp_dir().join(format!("tdsvip-empty-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let empty = TlsConfig {
        ca_file: Some(path),
        ..TlsConfig::default()
    };
    let e = TlsClient::new(&empty, "127.0.0.1".parse().unwrap()).unwrap_err();
    assert_eq!(e.key, "ca_file");
}

#[test]
fn strict_offers_alpn_tds8_and_7x_none() {
    let p = pki("Lab CA");
    let ca = write_ca(&p, "alpn");
    let strict = client(TlsConfig {
        encrypt: Encrypt::Strict,
        ca_file: Some(ca.clone()),
        ..TlsConfig::default()
    });
    assert_eq!(strict.config.alpn_protocols, vec![b"tds/8.0".to_vec()]);
    let mandatory = client(TlsConfig {
        ca_file: Some(ca),
        ..TlsConfig::default()
    });
    assert!(mandatory.config.alpn_protocols.is_empty());
}

#[test]
fn the_sql_connections_use_ring() {
    let p = pki("Lab CA");
    let c = client(TlsConfig {
        ca_file: Some(write_ca(&p, "ring")),
        ..TlsConfig::default()
    });
    assert!(uses_ring(Some(c.config.crypto_provider())));
    assert!(!uses_ring(None));
    assert!(install_process_crypto_provider());
    assert!(uses_ring(
        rustls::crypto::CryptoProvider::get_default().map(Arc::as_ref)
    ));
}
