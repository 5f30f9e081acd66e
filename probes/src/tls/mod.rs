//! TLS for the SQL connections, done here rather than inside tiberius so that one code path
//! serves TDS 7.x (handshake inside PRELOGIN packets), TDS 8 strict (TLS before any TDS
//! byte, ALPN `tds/8.0`) and login-only encryption, with ring as the one crypto provider,
//! certificate refusals that name what did not match, and the negotiated session (version,
//! cipher, peer certificate) reported to the operator. tiberius then runs LOGIN7 and the
//! queries over the stream we hand it (see `session`), built without its TLS backends.

mod framing;
pub(crate) mod session;
mod verify;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;

pub use verify::CertificateRefused;

use crate::config::{ConfigProblem, Encrypt, TlsConfig};
use framing::HandshakeFraming;
use verify::{CertNames, SqlCertVerifier};

/// The ALPN protocol of TDS 8.0.
pub const TDS8_ALPN: &[u8] = b"tds/8.0";

/// The crypto provider of every TLS session this crate opens.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs ring as rustls's process-wide default, so that anything that asks rustls for
/// the default (rather than naming a provider, as this crate and the AWS client do) gets
/// the same one. Returns false if another provider was installed first.
pub fn install_process_crypto_provider() -> bool {
    if CryptoProvider::get_default().is_none() {
        // A concurrent install wins the race; what counts is what is installed after.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    uses_ring(CryptoProvider::get_default().map(|p| &**p))
}

/// Whether `provider` is ring's (its first TLS 1.3 suite is ring's static).
pub fn uses_ring(provider: Option<&CryptoProvider>) -> bool {
    let ring = rustls::crypto::ring::default_provider();
    provider.is_some_and(|p| {
        p.cipher_suites.len() == ring.cipher_suites.len()
            && p.cipher_suites
                .iter()
                .zip(ring.cipher_suites.iter())
                .all(|(a, b)| same_suite(*a, *b))
    })
}

/// Whether two suites are the same provider's implementation (not merely the same id).
pub fn same_suite(a: rustls::SupportedCipherSuite, b: rustls::SupportedCipherSuite) -> bool {
    use rustls::SupportedCipherSuite as S;
    match (a, b) {
        (S::Tls13(x), S::Tls13(y)) => std::ptr::eq(x, y),
        (S::Tls12(x), S::Tls12(y)) => std::ptr::eq(x, y),
        _ => false,
    }
}

/// What the operator is told about an encrypted session (`tdsvip probe --json`'s `tls`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsSession {
    /// `TLSv1_2` or `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// RFC 4514 subject of the server's certificate.
    pub peer_certificate_subject: Option<String>,
    /// `full` (everything encrypted) or `login_only` (LOGIN7 only, then plain TDS).
    pub scope: &'static str,
    /// `verified`, or why it would have been refused when `trust_server_certificate`
    /// accepted it anyway.
    pub certificate: String,
    /// The suite as negotiated, to tell which provider implemented it.
    #[serde(skip)]
    pub suite: Option<rustls::SupportedCipherSuite>,
}

/// Everything needed to open TLS sessions for one target, built once per probe.
#[derive(Debug, Clone)]
pub(crate) struct TlsClient {
    pub(crate) encrypt: Encrypt,
    pub(crate) allow_cleartext_login: bool,
    config: Arc<ClientConfig>,
    verifier: Arc<SqlCertVerifier>,
    server_name: ServerName<'static>,
    trust_anyway: bool,
}

impl TlsClient {
    /// Builds the client side for `target`; errors name the `TlsConfig` key at fault.
    pub(crate) fn new(tls: &TlsConfig, target: std::net::IpAddr) -> Result<Self, ConfigProblem> {
        let server_name = match &tls.host_name_in_certificate {
            Some(h) => ServerName::try_from(h.clone()).map_err(|_| {
                ConfigProblem::new("host_name_in_certificate", format!("{h:?} is not a name"))
            })?,
            None => ServerName::IpAddress(target.into()),
        };
        let provider = crypto_provider();
        let (roots, source) = trust_anchors(tls)?;
        let webpki = if roots.is_empty() {
            None
        } else {
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| ConfigProblem::new("ca_file", e.to_string()))?;
            Some(v)
        };
        let verifier = Arc::new(SqlCertVerifier::new(
            webpki,
            source,
            tls.trust_server_certificate,
            provider.clone(),
        ));
        // SQL Server speaks TLS 1.3 only in TDS 8; TDS 7.x stays on TLS 1.2 as it does.
        let versions: &[&rustls::SupportedProtocolVersion] = if tls.encrypt == Encrypt::Strict {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12]
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| ConfigProblem::new("encrypt", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        if tls.encrypt == Encrypt::Strict {
            config.alpn_protocols = vec![TDS8_ALPN.to_vec()];
        }
        Ok(TlsClient {
            encrypt: tls.encrypt,
            allow_cleartext_login: tls.allow_cleartext_login,
            config: Arc::new(config),
            verifier,
            server_name,
            trust_anyway: tls.trust_server_certificate,
        })
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The session report of an established connection.
    fn describe(&self, conn: &rustls::ClientConnection, scope: &'static str) -> TlsSession {
        let chain = conn.peer_certificates().unwrap_or_default();
        let certificate = match (
            self.trust_anyway,
            self.verifier.check(chain, &self.server_name),
        ) {
            (_, Ok(())) => "verified".to_owned(),
            (true, Err(why)) => format!("NOT verified (trust_server_certificate): {why}"),
            // The verifier refused it during the handshake; not reached.
            (false, Err(why)) => why,
        };
        TlsSession {
            version: conn
                .protocol_version()
                .map_or_else(String::new, |v| format!("{v:?}")),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(String::new, |s| format!("{:?}", s.suite())),
            peer_certificate_subject: chain.first().and_then(CertNames::subject_of),
            scope,
            certificate,
            suite: conn.negotiated_cipher_suite(),
        }
    }
}

/// The CA certificates to verify against: `ca_file`, or the system store (loaded once per
/// process; an empty store is an error unless the certificate is trusted anyway).
fn trust_anchors(tls: &TlsConfig) -> Result<(RootCertStore, String), ConfigProblem> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = &tls.ca_file {
        for cert in read_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| ConfigProblem::new("ca_file", format!("{}: {e}", path.display())))?;
        }
        return Ok((roots, format!("ca_file {}", path.display())));
    }
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs);
    let (added, _ignored) = roots.add_parsable_certificates(system.iter().cloned());
    if added == 0 && !tls.trust_server_certificate && tls.encrypt != Encrypt::Off {
        return Err(ConfigProblem::new(
            "ca_file",
            "the system certificate store has no usable CA certificate: set ca_file to the CA that signed the SQL Server certificate",
        ));
    }
    Ok((roots, "the system certificate store".to_owned()))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigProblem> {
    let problem = |why: String| ConfigProblem::new("ca_file", format!("{}: {why}", path.display()));
    let text = std::fs::read(path).map_err(|e| problem(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not a PEM file of certificates: {e:?}")))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// A TLS failure in words: the certificate refusal if that is what it was.
pub(crate) fn describe_tls_error(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            match other.0.downcast_ref::<CertificateRefused>() {
                Some(refused) => refused.0.clone(),
                None => format!("certificate refused: {other:?}"),
            }
        }
        Some(rustls::Error::NoApplicationProtocol) => {
            "the server did not accept ALPN tds/8.0: it does not speak TDS 8 strict".to_owned()
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
