//! What the agent needs to know to reach its etcd cluster, as plain data (the agent's config
//! fills it in), and its translation into etcd-client's connection options: TLS files read
//! here so that an unreadable file is named, HTTP/2 pings so that a dead connection under a
//! watch is noticed.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::EtcdError;

/// How to reach etcd and where tdsvip's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://host:port`, `https://host:port`, or `host:port` (https when `tls` is set).
    pub endpoints: Vec<String>,
    /// Every key tdsvip writes starts with `{prefix}/`.
    pub prefix: String,
    /// Bound on `Etcd::connect` (connection, authentication and a first read).
    pub connect_timeout: Duration,
    /// Bound on every later call (a watch only while it is being set up).
    pub request_timeout: Duration,
    /// User name and password, when etcd has authentication enabled.
    pub user: Option<(String, String)>,
    pub tls: Option<EtcdTls>,
}

/// TLS towards etcd: the CA that signed etcd's certificate, and a client certificate when etcd
/// asks for one (`--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// HTTP/2 pings while a stream (a watch, a keep-alive) is open. etcd 3.4 sends GOAWAY
/// ("too many pings") to a client pinging more often than every 5 s, or pinging with no
/// stream open, so the interval stays above that and idle pings stay off.
const PING_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) fn connect_options(settings: &EtcdSettings) -> Result<ConnectOptions, EtcdError> {
    if settings.endpoints.is_empty() {
        return Err(EtcdError::Settings {
            reason: "no endpoints".to_owned(),
        });
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_keep_alive(PING_INTERVAL, settings.request_timeout)
        .with_keep_alive_while_idle(false);
    if let Some((user, password)) = &settings.user {
        // etcd's tokens expire (5 min by default): get a new one when a call is refused for it.
        options = options
            .with_user(user, password)
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &settings.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    Ok(options)
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, EtcdError> {
    let ca = read("CA", &tls.ca)?;
    // etcd 3.4 does not always negotiate ALPN h2; it speaks HTTP/2 on its client port anyway.
    let mut options = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .assume_http2(true);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(EtcdError::Settings {
                reason: "TLS client certificate and key go together: give both or neither"
                    .to_owned(),
            });
        }
    }
    Ok(options)
}

fn read(role: &'static str, path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::TlsFile {
        role,
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EtcdSettings {
        EtcdSettings {
            endpoints: vec!["http://127.0.0.1:1".to_owned()],
            prefix: "/tdsvip".to_owned(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            user: None,
            tls: None,
        }
    }

    #[test]
    fn no_endpoints_is_a_settings_error() {
        let err = connect_options(&EtcdSettings {
            endpoints: vec![],
            ..settings()
        })
        .unwrap_err();
        assert!(matches!(err, EtcdError::Settings { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_tls_file_is_named() {
        let err = connect_options(&EtcdSettings {
            tls: Some(EtcdTls {
                ca: "/nonexistent/tdsvip-ca.pem".into(),
                cert: None,
                key: None,
            }),
            ..settings()
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("CA file /nonexistent/tdsvip-ca.pem"),
            "{text}"
        );
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let ca = std::env::temp_dir().join(format!("tdsvip-etcd-unit-ca-{}", std::process::id()));
        std::fs::write(&ca, b"not read as PEM here").unwrap();
        let err = connect_options(&EtcdSettings {
            tls: Some(EtcdTls {
                ca: ca.clone(),
                cert: Some(ca.clone()),
                key: None,
            }),
            ..settings()
        })
        .unwrap_err();
        std::fs::remove_file(&ca).unwrap();
        assert!(err.to_string().contains("give both or neither"), "{err}");
    }
}
