//! The lab's certificates: one CA, and for each node a server certificate signed by it, so
//! that every SQL connection in the lab (agents, peers' probes, the measuring client,
//! keepalived's check) runs with `encrypt = "mandatory"` and a verified certificate, as
//! production requires, instead of trusting whatever the server shows.
//!
//! A node's certificate names every address it is reached at: loopback (the local probe),
//! its own `eth0` address (peers' probes) and the overlay IP (clients, the overlay probe).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where one node's tds-sim finds its certificate and key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA file every client verifies against, and one certificate per node.
#[derive(Debug, Clone)]
pub struct LabPki {
    pub ca_file: PathBuf,
    pub servers: Vec<ServerCert>,
}

impl LabPki {
    /// Writes the CA and a certificate per `(server name, node address)` into `dir`.
    pub fn create(
        dir: &Path,
        nodes: &[(String, Ipv4Addr)],
        overlay: Ipv4Addr,
    ) -> Result<LabPki, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("lab PKI: {what}: {e}");
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", &e))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tdsvip lab CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
        let ca_pem = ca.self_signed(&ca_key).map_err(|e| fail("CA", &e))?.pem();
        let ca_file = dir.join("lab-ca.pem");
        write(&ca_file, &ca_pem)?;
        let issuer = Issuer::new(ca, ca_key);
        let servers = nodes
            .iter()
            .map(|(name, ip)| {
                let sans = vec![
                    name.to_lowercase(),
                    "127.0.0.1".to_owned(),
                    ip.to_string(),
                    overlay.to_string(),
                ];
                let mut p = CertificateParams::new(sans).map_err(|e| fail(name, &e))?;
                p.distinguished_name
                    .push(DnType::CommonName, name.to_lowercase());
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                let key = KeyPair::generate().map_err(|e| fail(name, &e))?;
                let cert = p.signed_by(&key, &issuer).map_err(|e| fail(name, &e))?;
                let base = name.to_lowercase();
                let paths = ServerCert {
                    cert: dir.join(format!("{base}.pem")),
                    key: dir.join(format!("{base}.key")),
                };
                write(&paths.cert, &cert.pem())?;
                write(&paths.key, &key.serialize_pem())?;
                Ok(paths)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LabPki { ca_file, servers })
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
