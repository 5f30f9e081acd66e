//! Who this node is on EC2: its instance id and the ENI the overlay IP must point to.
//!
//! Taken from the config when given there (no IMDS dependency, and the only way off EC2);
//! otherwise read from IMDSv2: the MAC of the configured interface (or the primary one) and
//! `network/interfaces/macs/MAC/interface-id`. IMDSv2 needs a session token; it is cached and
//! renewed when a quarter of its lifetime is left, not fetched per call, and fetched again once
//! if IMDS still answers 401 (the token expired early, or IMDS restarted).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::config::{CloudConfig, DEFAULT_IMDS_ENDPOINT};
use crate::error::CloudError;

/// IMDS caps token lifetimes at six hours.
pub const MAX_IMDS_TOKEN_TTL: Duration = Duration::from_secs(21_600);
const TTL_REQUEST_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// IMDS answers in about a millisecond; a second means it is not there.
const DEFAULT_IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// This node's place on EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: Option<String>,
    pub eni_id: String,
}

impl Identity {
    /// From the config when `cloud.eni_id` is set; otherwise from IMDS (at
    /// `cloud.imds_endpoint`), using the MAC of `cloud.interface` or the primary MAC.
    pub async fn resolve(cfg: &CloudConfig) -> Result<Identity, CloudError> {
        if let Some(eni_id) = &cfg.eni_id {
            return Ok(Identity {
                instance_id: cfg.instance_id.clone(),
                eni_id: eni_id.clone(),
            });
        }
        let imds = ImdsClient::new(
            cfg.imds_endpoint
                .as_deref()
                .unwrap_or(DEFAULT_IMDS_ENDPOINT),
        )?;
        let mac = match &cfg.interface {
            Some(interface) => Some(interface_mac(interface)?),
            None => None,
        };
        let mut identity = Identity::from_imds(&imds, mac.as_deref()).await?;
        if let Some(configured) = &cfg.instance_id {
            identity.instance_id = Some(configured.clone());
        }
        Ok(identity)
    }

    /// Reads the instance id and the ENI behind `mac` (the primary interface's MAC when `None`).
    pub async fn from_imds(imds: &ImdsClient, mac: Option<&str>) -> Result<Identity, CloudError> {
        let instance_id = imds.get("meta-data/instance-id").await?;
        let mac = match mac {
            Some(mac) => mac.to_ascii_lowercase(),
            None => imds.get("meta-data/mac").await?,
        };
        let eni_id = imds
            .get(&format!(
                "meta-data/network/interfaces/macs/{mac}/interface-id"
            ))
            .await?;
        Ok(Identity {
            instance_id: Some(instance_id),
            eni_id,
        })
    }
}

/// The MAC of a local interface, as the kernel reports it.
pub fn interface_mac(interface: &str) -> Result<String, CloudError> {
    let path = format!("/sys/class/net/{interface}/address");
    std::fs::read_to_string(&path)
        .map(|mac| mac.trim().to_ascii_lowercase())
        .map_err(|e| CloudError::Imds {
            path,
            detail: format!(
                "cannot read the MAC of interface {interface:?} (cloud.interface): {e}"
            ),
        })
}

#[derive(Debug)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// A minimal IMDSv2 client: plain HTTP/1.1 to the link-local endpoint, one connection per
/// request (IMDS is read a handful of times at start), token cached across requests.
#[derive(Debug)]
pub struct ImdsClient {
    authority: String,
    token_ttl: Duration,
    timeout: Duration,
    token: Mutex<Option<Token>>,
}

impl ImdsClient {
    /// `endpoint` is `http://HOST[:PORT]`, e.g. `http://169.254.169.254`.
    pub fn new(endpoint: &str) -> Result<Self, CloudError> {
        let authority = endpoint
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|authority| !authority.is_empty() && !authority.contains('/'))
            .ok_or_else(|| CloudError::Imds {
                path: endpoint.to_owned(),
                detail: "the IMDS endpoint must look like http://HOST[:PORT]".into(),
            })?;
        let has_port = match authority.rsplit_once(']') {
            Some((_, tail)) => tail.starts_with(':'),
            None => authority.contains(':'),
        };
        Ok(ImdsClient {
            authority: if has_port {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            },
            token_ttl: MAX_IMDS_TOKEN_TTL,
            timeout: DEFAULT_IMDS_TIMEOUT,
            token: Mutex::new(None),
        })
    }

    /// Shorter token lifetimes limit what a leaked token is good for (1 s to 6 h).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl.clamp(Duration::from_secs(1), MAX_IMDS_TOKEN_TTL);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// GETs `/latest/PATH` with the cached token; renews the token first when it is near its
    /// end, and once more if IMDS still says 401.
    pub async fn get(&self, path: &str) -> Result<String, CloudError> {
        let path = format!("/latest/{}", path.trim_start_matches('/'));
        let mut renewed = false;
        loop {
            let token = self.token(&path, renewed).await?;
            let (status, body) = self
                .request(Method::GET, &path, &[(TOKEN_HEADER, token.as_str())])
                .await?;
            match status {
                StatusCode::OK => return Ok(body.trim().to_owned()),
                StatusCode::UNAUTHORIZED if !renewed => {
                    tracing::debug!(path, "IMDS refused the cached token; fetching a new one");
                    renewed = true;
                }
                StatusCode::NOT_FOUND => {
                    return Err(CloudError::Imds {
                        path,
                        detail: "404 not found (no such interface or attribute on this instance)"
                            .into(),
                    });
                }
                other => {
                    return Err(CloudError::Imds {
                        path,
                        detail: format!("HTTP {other}: {}", body.trim()),
                    });
                }
            }
        }
    }

    /// The cached token, or a fresh one when none is cached, the cached one is due for renewal,
    /// or `force` (IMDS refused it).
    async fn token(&self, for_path: &str, force: bool) -> Result<String, CloudError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && !force
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let requested_at = Instant::now();
        let ttl = self.token_ttl.as_secs().to_string();
        let (status, body) = self
            .request(
                Method::PUT,
                "/latest/api/token",
                &[(TTL_REQUEST_HEADER, &ttl)],
            )
            .await
            .map_err(|e| match e {
                CloudError::Imds { detail, .. } => CloudError::Imds {
                    path: for_path.to_owned(),
                    detail: format!("fetching the IMDSv2 token: {detail}"),
                },
                other => other,
            })?;
        if status != StatusCode::OK || body.trim().is_empty() {
            return Err(CloudError::Imds {
                path: for_path.to_owned(),
                detail: format!("fetching the IMDSv2 token: HTTP {status}: {}", body.trim()),
            });
        }
        let value = body.trim().to_owned();
        // Renew with a quarter of the lifetime left, counted from the request (the token's
        // clock started before the answer reached us).
        *cached = Some(Token {
            value: value.clone(),
            renew_at: requested_at + self.token_ttl.mul_f64(0.75),
        });
        Ok(value)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, String), CloudError> {
        let exchange = async {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
            let connection = tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.authority);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("building the request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            connection.abort();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(detail)) => Err(CloudError::Imds {
                path: path.to_owned(),
                detail,
            }),
            Err(_) => Err(CloudError::Imds {
                path: path.to_owned(),
                detail: format!(
                    "no answer within {} ms (not on EC2, or IMDS disabled / hop limit too low?)",
                    self.timeout.as_millis()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            ImdsClient::new("http://169.254.169.254").unwrap().authority,
            "169.254.169.254:80"
        );
        assert_eq!(
            ImdsClient::new("http://127.0.0.1:8080/").unwrap().authority,
            "127.0.0.1:8080"
        );
        assert_eq!(
            ImdsClient::new("http://[fd00:ec2::254]").unwrap().authority,
            "[fd00:ec2::254]:80"
        );
        assert!(ImdsClient::new("https://169.254.169.254").is_err());
        assert!(ImdsClient::new("http://").is_err());
        assert!(ImdsClient::new("http://host/path").is_err());
    }

    #[test]
    fn token_ttl_is_clamped() {
        let c = ImdsClient::new("http://127.0.0.1:1").unwrap();
        assert_eq!(
            c.with_token_ttl(Duration::ZERO).token_ttl,
            Duration::from_secs(1)
        );
        let c = ImdsClient::new("http://127.0.0.1:1").unwrap();
        assert_eq!(
            c.with_token_ttl(Duration::from_secs(100_000)).token_ttl,
            MAX_IMDS_TOKEN_TTL
        );
    }

    #[tokio::test]
    async fn eni_from_config_needs_no_imds() {
        let mut cfg = CloudConfig::route("us-east-1", &["rtb-89abcdef"]);
        cfg.eni_id = Some("eni-0123456789abcdef0".into());
        cfg.instance_id = Some("i-0123456789abcdef0".into());
        // An endpoint nothing listens on: resolve must not touch it.
        cfg.imds_endpoint = Some("http://127.0.0.1:1".into());
        let identity = Identity::resolve(&cfg).await.unwrap();
        assert_eq!(identity.eni_id, "eni-0123456789abcdef0");
        assert_eq!(identity.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    }

    #[tokio::test]
    async fn unreachable_imds_is_a_clear_error() {
        let imds = ImdsClient::new("http://127.0.0.1:1").unwrap();
        let err = imds.get("meta-data/instance-id").await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/latest/meta-data/instance-id"), "{text}");
        assert!(text.contains("token"), "{text}");
    }
}
