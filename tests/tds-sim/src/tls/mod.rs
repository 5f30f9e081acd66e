//! TLS as SQL Server does it: the `--encryption` setting, the server certificate, and the
//! transport a session runs on.
//!
//! SQL Server always has a certificate: one configured by the administrator, or a
//! self-signed one it makes at start-up (CN `SSL_Self_Signed_Fallback`). tds-sim does the
//! same with `--tls-cert`/`--tls-key` or `rcgen`, so that clients that encrypt by default
//! (Microsoft's drivers, tedious, FreeTDS with `encryption = require`) can be tested
//! against it. TDS 7.x connections get TLS 1.2 only, as SQL Server offers TLS 1.3 only
//! with TDS 8.0; `strict` offers 1.2 and 1.3 and accepts the ALPN protocol `tds/8.0`.
//! Crypto is rustls with the ring provider, chosen explicitly (never a process default).
//! [`negotiate`] holds the PRELOGIN table, [`framing`] the handshake's packet wrapping.

pub mod framing;
pub mod negotiate;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use framing::Framing;
pub use negotiate::{Mode, Negotiated, Outcome, negotiate};

/// The ALPN protocol of TDS 8.0.
pub const ALPN_TDS8: &[u8] = b"tds/8.0";
/// The subject SQL Server gives the certificate it makes for itself.
pub const FALLBACK_CN: &str = "SSL_Self_Signed_Fallback";

/// The encryption part of a simulator's configuration.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub mode: Mode,
    /// PEM certificate chain (the server's certificate first) and its PEM private key; both
    /// or neither. Neither: a self-signed certificate is made at start-up.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Default for TlsSettings {
    /// SQL Server's default: encryption `off` (at the client's request, and for the login
    /// packet) with a self-signed certificate.
    fn default() -> Self {
        TlsSettings {
            mode: Mode::Off,
            cert: None,
            key: None,
        }
    }
}

/// What sessions need: the setting and, unless `not-supported`, the rustls configuration.
pub(crate) struct Setup {
    pub mode: Mode,
    pub config: Option<Arc<ServerConfig>>,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_pem(cert: &Path, key: &Path) -> io::Result<Identity> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("--tls-cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(format!(
            "--tls-cert {}: no PEM certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(format!("--tls-key {}: {e}", key.display())))?;
    Ok((chain, key))
}

/// A self-signed certificate like the one SQL Server makes when it has none configured
/// (SQL Server's is RSA 2048; this one is ECDSA P-256, which every client here accepts).
pub fn self_signed() -> io::Result<Identity> {
    let fail = |e: rcgen::Error| io::Error::other(format!("self-signed certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, FALLBACK_CN);
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}

/// A rustls server configuration for `mode` (TDS 7.x or TDS 8.0) with this identity.
pub fn server_config(mode: Mode, (chain, key): Identity) -> io::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if mode == Mode::Strict {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            bad(format!(
                "the certificate and key do not make a TLS identity: {e}"
            ))
        })?;
    // Session tickets would be written after the handshake, when a TDS 7.x client no
    // longer expects PRELOGIN packets; SQL Server does not resume sessions either.
    c.send_tls13_tickets = 0;
    // Nor TLS 1.2 session ids (rustls keeps a cache by default). A resumed handshake ends
    // on the server's read of the client's Finished, and tokio-rustls keeps reading while
    // rustls wants to: the client's LOGIN7, sent right behind its Finished, was read by the
    // framing as a PRELOGIN header ("unknown packet type 0x17") and the login reset. Every
    // client that logged in again with the same configuration (the agents' kept sessions,
    // after a timeout) met it.
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    if mode == Mode::Strict {
        c.alpn_protocols = vec![ALPN_TDS8.to_vec()];
    }
    Ok(c)
}

impl Setup {
    pub(crate) fn new(s: &TlsSettings) -> io::Result<Setup> {
        let identity = match (&s.cert, &s.key) {
            (Some(c), Some(k)) => Some((load_pem(c, k)?, format!("certificate {}", c.display()))),
            (None, None) => None,
            _ => return Err(bad("--tls-cert and --tls-key go together".into())),
        };
        if !s.mode.uses_tls() {
            if identity.is_some() {
                tracing::warn!(
                    "--encryption not-supported: the configured certificate is not used"
                );
            }
            tracing::info!(encryption = s.mode.name(), "no TLS");
            return Ok(Setup {
                mode: s.mode,
                config: None,
            });
        }
        let (identity, source) = match identity {
            Some(i) => i,
            None => (self_signed()?, format!("self-signed CN={FALLBACK_CN}")),
        };
        tracing::info!(encryption = s.mode.name(), certificate = %source, "TLS setting");
        Ok(Setup {
            mode: s.mode,
            config: Some(Arc::new(server_config(s.mode, identity)?)),
        })
    }
}

pub(crate) type TlsStream = tokio_rustls::server::TlsStream<Framing<TcpStream>>;

/// A session's byte stream: clear text, or TLS over the (possibly unwrapped) framing.
/// `Detached` only while a TLS handshake owns the stream.
pub(crate) enum Transport {
    Clear(Framing<TcpStream>),
    Tls(Box<TlsStream>),
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the stream is inside a TLS handshake",
    )
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Clear(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Clear(s) => Pin::new(s).poll_write(cx, data),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Clear(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Clear(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_setup_makes_a_self_signed_certificate() {
        let s = Setup::new(&TlsSettings::default()).unwrap();
        assert_eq!(s.mode, Mode::Off);
        assert!(s.config.is_some());
        let (chain, _) = self_signed().unwrap();
        let der: &[u8] = chain[0].as_ref();
        assert!(
            der.windows(FALLBACK_CN.len())
                .any(|w| w == FALLBACK_CN.as_bytes()),
            "the subject is SQL Server's fallback CN"
        );
        let none = Setup::new(&TlsSettings {
            mode: Mode::NotSupported,
            ..TlsSettings::default()
        })
        .unwrap();
        assert!(none.config.is_none());
    }

    #[test]
    fn strict_offers_tls13_and_alpn_tds8_7x_only_tls12_and_neither_resumes() {
        let strict = server_config(Mode::Strict, self_signed().unwrap()).unwrap();
        assert_eq!(strict.alpn_protocols, vec![b"tds/8.0".to_vec()]);
        let off = server_config(Mode::Off, self_signed().unwrap()).unwrap();
        assert!(off.alpn_protocols.is_empty());
        assert_eq!(off.send_tls13_tickets, 0);
        for c in [&strict, &off] {
            assert!(!c.session_storage.can_cache(), "no session resumption");
        }
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("tds-sim-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Setup::new(&TlsSettings {
            mode: Mode::Force,
            cert: Some(empty.clone()),
            key: Some(empty.clone()),
        })
        .err()
        .expect("an empty PEM file is refused");
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let e = Setup::new(&TlsSettings {
            mode: Mode::Force,
            cert: Some(empty),
            key: None,
        })
        .err()
        .expect("a certificate without its key is refused");
        assert!(e.to_string().contains("go together"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
