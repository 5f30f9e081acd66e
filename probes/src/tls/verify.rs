//! The server certificate check of the SQL connections.
//!
//! rustls's WebPKI verifier decides; this wrapper only turns its refusal into a sentence an
//! operator can act on (which name was expected and which names the certificate carries,
//! which CA store was used and who issued the certificate), and implements
//! `trust_server_certificate` without giving up the handshake signature check: the
//! certificate is then accepted unverified, but the server must still prove it holds its key.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

/// Why a certificate was refused, naming what did not match. Carried inside rustls's
/// error (`CertificateError::Other`) so the probe can show it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRefused(pub String);

impl fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertificateRefused {}

#[derive(Debug)]
pub(crate) struct SqlCertVerifier {
    /// `None` only with `trust_server_certificate` and no usable trust anchor.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// Where the trust anchors came from, for messages (`sql.ca_file /x.pem`, ...).
    roots: String,
    trust_anyway: bool,
    provider: Arc<CryptoProvider>,
}

impl SqlCertVerifier {
    pub(crate) fn new(
        webpki: Option<Arc<WebPkiServerVerifier>>,
        roots: String,
        trust_anyway: bool,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        SqlCertVerifier {
            webpki,
            roots,
            trust_anyway,
            provider,
        }
    }

    /// The full check, whatever `trust_server_certificate` says: `Err` explains the refusal.
    pub(crate) fn check(
        &self,
        chain: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
    ) -> Result<(), String> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err("the server sent no certificate".to_owned());
        };
        let Some(webpki) = &self.webpki else {
            return Err(format!(
                "no trust anchor to check it against ({})",
                self.roots
            ));
        };
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| explain(&e, end_entity, server_name, &self.roots))
    }
}

impl ServerCertVerifier for SqlCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.trust_anyway {
            // Reported per session (TlsSession::certificate), not refused.
            return Ok(ServerCertVerified::assertion());
        }
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        match self.check(&chain, server_name) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(why) => Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(CertificateRefused(why))),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A refusal in words: what was expected, what the certificate says.
fn explain(
    e: &Error,
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    roots: &str,
) -> String {
    let names = CertNames::of(end_entity);
    let expected = server_name.to_str();
    match e {
        Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented, ..
        }) => format!(
            "the certificate ({}) is for {}, not for {expected:?}: set host_name_in_certificate to a name it carries (without it the target's IP address is checked)",
            names.subject,
            presented.join(", ")
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "the certificate ({}) is not valid for {expected:?}: set host_name_in_certificate to a name it carries",
            names.subject
        ),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the certificate ({}, issued by {}) is not signed by a CA in {roots}",
            names.subject, names.issuer
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("the certificate ({}) has expired", names.subject),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => format!("the certificate ({}) is not valid yet", names.subject),
        other => format!("the certificate ({}) was refused: {other}", names.subject),
    }
}

/// Subject and issuer of a certificate as RFC 4514 strings (`CN=sql1, O=Example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertNames {
    pub(crate) subject: String,
    pub(crate) issuer: String,
}

impl CertNames {
    /// Never fails: a certificate that does not parse is named as such.
    pub(crate) fn of(der: &CertificateDer<'_>) -> CertNames {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, cert)) => CertNames {
                subject: format!("subject {}", cert.subject()),
                issuer: cert.issuer().to_string(),
            },
            Err(_) => CertNames {
                subject: "a certificate that does not parse as X.509".to_owned(),
                issuer: "unknown".to_owned(),
            },
        }
    }

    /// The subject alone, for the session report (`None` if it does not parse).
    pub(crate) fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
        x509_parser::parse_x509_certificate(der.as_ref())
            .ok()
            .map(|(_, cert)| cert.subject().to_string())
    }
}
