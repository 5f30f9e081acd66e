//! The certificates of the agent tests' tds-sim: a CA and a server certificate signed by it,
//! so that the agent runs as production requires (`encrypt = "mandatory"` with `ca_file`)
//! instead of trusting whatever the simulator shows. One CA per lab, made with rcgen.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where the files are: the CA the agent verifies against, the sim's certificate and key.
#[derive(Debug, Clone)]
pub struct SimPki {
    pub ca_file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SimPki {
    /// Writes `ca.pem`, `sim.pem` and `sim.key` into `dir`; the server certificate carries
    /// every name in `sans` (IP addresses become IP SANs, as the agent checks the target's
    /// address when no `host_name_in_certificate` is set).
    pub fn create(dir: &Path, sans: &[String]) -> SimPki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tdsvip test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut p = CertificateParams::new(sans.to_vec()).unwrap();
        p.distinguished_name.push(DnType::CommonName, &sans[0]);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        let pki = SimPki {
            ca_file: dir.join("ca.pem"),
            cert: dir.join("sim.pem"),
            key: dir.join("sim.key"),
        };
        std::fs::write(&pki.ca_file, ca_pem).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}
