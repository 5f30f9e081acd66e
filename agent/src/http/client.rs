//! The HTTP client that reads an agent's `GET /status`: `tdsvip status` asks the local agent
//! with it, and every agent asks its peers. One client so that both say the same precise
//! thing when an agent cannot be read (refused, timeout, 401 with which token, not JSON, …)
//! and bound what they read the same way.
//!
//! Plain `http://` only: agents serve plain HTTP on loopback or the cluster's private
//! network, and an `https://` URL is refused rather than silently sent in clear.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Where an agent listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9477";
/// The environment variable that may carry the bearer token (named in the 401 message).
pub const TOKEN_ENV: &str = "TDSVIP_HTTP_TOKEN";
/// An agent's status is a few KiB; a peer list with tracked connections stays far below this.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A bearer token and where it came from (for messages, never the token itself).
#[derive(Clone)]
pub struct Bearer {
    pub value: String,
    pub source: String,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bearer(<redacted> from {})", self.source)
    }
}

/// The request to make: where to connect and what to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// For messages: the URL as the user knows it.
    pub url: String,
    /// Host as given (brackets of an IPv6 literal removed) and port.
    pub host: String,
    pub port: u16,
    /// The `Host` header.
    pub authority: String,
    /// `/status`, under the URL's path if it has one.
    pub path: String,
}

/// Parses `--url`: an `http://HOST[:PORT][/PREFIX]` base URL (a URL already ending in
/// `/status` is taken as it is).
pub fn parse_url(text: &str) -> Result<Target, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL ({e}); give e.g. {DEFAULT_URL}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text:?}: https is not supported, the agent serves plain HTTP (give http://…)"
            ));
        }
        Some(other) => return Err(format!("{text:?}: scheme {other:?} is not http")),
        None => return Err(format!("{text:?} has no scheme; give e.g. {DEFAULT_URL}")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: credentials in the URL are not supported (use --token-file)"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?}: a query string is not expected"));
    }
    let port = uri.port_u16().unwrap_or(80);
    let base = uri.path().trim_end_matches('/');
    let path = if base.ends_with("/status") {
        base.to_owned()
    } else {
        format!("{base}/status")
    };
    Ok(Target {
        url: text.to_owned(),
        host,
        port,
        authority: authority.as_str().to_owned(),
        path,
    })
}

impl Target {
    /// Another endpoint of the same agent: `path_and_query` in place of `/status`.
    pub fn sibling(&self, path_and_query: &str) -> Target {
        let base = self.path.strip_suffix("/status").unwrap_or(&self.path);
        Target {
            path: format!("{base}{path_and_query}"),
            ..self.clone()
        }
    }
}

/// The URL of a listen address; an unspecified address (0.0.0.0, ::) is reached on loopback.
pub fn url_of_listen(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// What a [`FetchError::Timeout`] was waiting for once the connection stood: the agent's
/// node answered, its agent did not (in time).
pub(crate) const AWAITING_ANSWER: &str = "answer";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error(
        "cannot reach the agent at {url}: connection refused by {addr} (is `tdsvip run` running, and is this its http.listen?)"
    )]
    Refused { url: String, addr: SocketAddr },
    #[error("cannot reach the agent at {url}: {addr}: {source}")]
    Connect {
        url: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("timeout: the agent at {url} did not {what} within {ms} ms")]
    Timeout {
        url: String,
        what: &'static str,
        ms: u128,
    },
    #[error("the agent at {url} broke off the HTTP exchange: {source}")]
    Http { url: String, source: hyper::Error },
    #[error(
        "the agent at {url} requires a bearer token (401 Unauthorized): give --token-file, {TOKEN_ENV} or a --config with http.token_file"
    )]
    NoToken { url: String },
    #[error("the agent at {url} refused the token from {from} (401 Unauthorized): {detail}")]
    BadToken {
        url: String,
        from: String,
        detail: String,
    },
    #[error("{url}: {method} {path} answered {status}: {detail}")]
    Status {
        url: String,
        method: Method,
        path: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: cannot read the answer: {detail}")]
    Body { url: String, detail: String },
    #[error("{url}: the answer is not a tdsvip status ({detail}); is this the agent's URL?")]
    NotStatus { url: String, detail: String },
}

/// What an error answer says: the agent's `{"error": "..."}`, else the start of the body.
fn error_detail(body: &[u8]) -> String {
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::String(e)) = m.get("error")
    {
        return e.clone();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no reason given".into();
    }
    text.chars().take(200).collect()
}

/// The agent's answer to a GET, parsed and as text (a JSON object, so valid UTF-8).
pub async fn fetch(
    target: &Target,
    token: Option<&Bearer>,
    deadline: Duration,
) -> Result<(Value, String), FetchError> {
    ask(Method::GET, target, token, deadline).await
}

/// The agent's answer to a POST without a body (`/failsafe`), as [`fetch`] gives it.
pub async fn post(
    target: &Target,
    token: Option<&Bearer>,
    deadline: Duration,
) -> Result<(Value, String), FetchError> {
    ask(Method::POST, target, token, deadline).await
}

async fn ask(
    method: Method,
    target: &Target,
    token: Option<&Bearer>,
    deadline: Duration,
) -> Result<(Value, String), FetchError> {
    let start = Instant::now();
    let timeout = |what| FetchError::Timeout {
        url: target.url.clone(),
        what,
        ms: deadline.as_millis(),
    };
    let left = || deadline.saturating_sub(start.elapsed());
    let stream = connect(target, left, timeout).await?;
    let exchanged = exchange(&method, target, token, stream);
    let (status, body) = tokio::time::timeout(left(), exchanged)
        .await
        .map_err(|_| timeout(AWAITING_ANSWER))??;
    check_answer(&method, target, token, status, &body)?;
    parse_answer(&target.url, body)
}

/// A TCP connection to the first of the target's addresses that accepts one.
async fn connect(
    target: &Target,
    left: impl Fn() -> Duration,
    timeout: impl Fn(&'static str) -> FetchError,
) -> Result<TcpStream, FetchError> {
    let url = &target.url;
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        left(),
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| timeout("resolve its host"))?
    .map_err(|source| FetchError::Resolve {
        host: target.host.clone(),
        source,
    })?
    .collect();
    let mut last_err = None;
    for addr in &addrs {
        match tokio::time::timeout(left(), TcpStream::connect(addr)).await {
            Err(_) => return Err(timeout("accept the connection")),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last_err = Some((*addr, e)),
        }
    }
    Err(match last_err {
        Some((addr, e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            FetchError::Refused {
                url: url.clone(),
                addr,
            }
        }
        Some((addr, source)) => FetchError::Connect {
            url: url.clone(),
            addr,
            source,
        },
        None => FetchError::Resolve {
            host: target.host.clone(),
            source: std::io::Error::other("no address found"),
        },
    })
}

/// The request with its headers (the bearer token when there is one).
fn request(
    method: &Method,
    target: &Target,
    token: Option<&Bearer>,
) -> Result<Request<Empty<Bytes>>, FetchError> {
    let body_err = |detail: String| FetchError::Body {
        url: target.url.clone(),
        detail,
    };
    let mut req = Request::builder()
        .method(method.clone())
        .uri(target.path.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close")
        .header(
            header::USER_AGENT,
            concat!("tdsvip-status/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| body_err(format!("cannot build the request: {e}")))?;
    let host =
        HeaderValue::from_str(&target.authority).map_err(|e| body_err(format!("bad host: {e}")))?;
    req.headers_mut().insert(header::HOST, host);
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {}", t.value)).map_err(|_| {
            body_err(format!(
                "the token from {} cannot be sent in a header",
                t.source
            ))
        })?;
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    Ok(req)
}

/// One HTTP/1.1 exchange on `stream`: the status and the body (at most `MAX_BODY_BYTES`).
async fn exchange(
    method: &Method,
    target: &Target,
    token: Option<&Bearer>,
    stream: TcpStream,
) -> Result<(StatusCode, Bytes), FetchError> {
    let http = |source| FetchError::Http {
        url: target.url.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection task ends when the exchange does (or with this runtime).
    tokio::spawn(conn);
    let resp = sender
        .send_request(request(method, target, token)?)
        .await
        .map_err(http)?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Body {
            url: target.url.clone(),
            detail: e.to_string(),
        })?
        .to_bytes();
    Ok((status, body))
}

/// A 401 names the token (or its absence); any other non-2xx names the status.
fn check_answer(
    method: &Method,
    target: &Target,
    token: Option<&Bearer>,
    status: StatusCode,
    body: &[u8],
) -> Result<(), FetchError> {
    let url = target.url.clone();
    if status == StatusCode::UNAUTHORIZED {
        return Err(match token {
            None => FetchError::NoToken { url },
            Some(t) => FetchError::BadToken {
                url,
                from: t.source.clone(),
                detail: error_detail(body),
            },
        });
    }
    if !status.is_success() {
        return Err(FetchError::Status {
            url,
            method: method.clone(),
            path: target.path.clone(),
            status,
            detail: error_detail(body),
        });
    }
    Ok(())
}

/// The body as a JSON object and as text.
fn parse_answer(url: &str, body: Bytes) -> Result<(Value, String), FetchError> {
    let not_status = |detail: String| FetchError::NotStatus {
        url: url.to_owned(),
        detail,
    };
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| not_status(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(not_status("not a JSON object".into()));
    }
    let text =
        String::from_utf8(body.to_vec()).map_err(|e| not_status(format!("not UTF-8: {e}")))?;
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        let t = parse_url("http://127.0.0.1:9477").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9477));
        assert_eq!(t.path, "/status");
        assert_eq!(t.authority, "127.0.0.1:9477");
        let t = parse_url("http://[::1]:19477/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 19477, "/status")
        );
        let t = parse_url("http://agent.example/tdsvip/status").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/tdsvip/status"));
        let t = parse_url("http://h:1/prefix").unwrap();
        assert_eq!(t.path, "/prefix/status");
        for (bad, why) in [
            ("127.0.0.1:9477", "no scheme"),
            ("https://h:1", "https is not supported"),
            ("ftp://h", "is not http"),
            ("http://", "not a URL"),
            ("http://u:p@h:1", "credentials"),
            ("http://h:1/status?x=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_sibling_endpoint_keeps_the_base_path() {
        let t = parse_url("http://10.0.1.12:9477/agent").unwrap();
        let f = t.sibling("/failsafe?ag=a&leader=n&term=3");
        assert_eq!(f.path, "/agent/failsafe?ag=a&leader=n&term=3");
        assert_eq!((f.host.as_str(), f.port), ("10.0.1.12", 9477));
        let t = parse_url("http://h/status").unwrap();
        assert_eq!(t.sibling("/failsafe").path, "/failsafe");
    }

    #[test]
    fn listen_addresses_become_reachable_urls() {
        assert_eq!(
            url_of_listen("0.0.0.0:9477".parse().unwrap()),
            "http://127.0.0.1:9477"
        );
        assert_eq!(url_of_listen("[::]:1".parse().unwrap()), "http://[::1]:1");
        assert_eq!(
            url_of_listen("10.0.0.5:9477".parse().unwrap()),
            "http://10.0.0.5:9477"
        );
    }
}
