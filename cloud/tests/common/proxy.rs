//! A fault-injecting HTTP proxy of the tests' own, in front of moto: for the EC2 actions and
//! route tables (or instances) a rule names, it answers with an AWS error document (throttling,
//! 5xx, a refusal) or stalls, a given number of times; everything else is forwarded to moto
//! unchanged. It also records every request it saw, so tests can check which calls were
//! retried and with which parameters.
//! Also: a listener that accepts connections and never answers (a black-holed endpoint).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status and EC2 error code instead of forwarding.
    Error { status: u16, code: &'static str },
    /// Hold the request this long, then forward it.
    Stall(Duration),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub action: &'static str,
    /// Only requests about this route table (or instance, for instance calls); any when None.
    pub table: Option<String>,
    pub fault: Fault,
    /// How many matching requests get the fault (usize::MAX: all).
    pub times: usize,
}

/// One request the proxy saw, and whether it injected a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub action: String,
    pub table: Option<String>,
    pub faulted: bool,
    /// The request's form body (`Action=…&Force=true&…`), to check the parameters sent.
    pub body: String,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State {
            rules,
            seen: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request| handle(request, upstream, Arc::clone(&state)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("proxy state").seen.clone()
    }

    /// How many requests for `action` about `table` reached the proxy.
    pub fn count(&self, action: &str, table: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.action == action && s.table.as_deref() == Some(table))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

async fn handle(
    request: Request<Incoming>,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let action = form_value(&text, "Action").unwrap_or_default();
    let table = ["RouteTableId", "RouteTableId.1", "InstanceId.1"]
        .into_iter()
        .find_map(|key| form_value(&text, key));
    let fault = {
        let mut state = state.lock().expect("proxy state");
        let fault = state
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.action == action && (r.table.is_none() || r.table == table))
            .map(|rule| {
                rule.times = rule.times.saturating_sub(1);
                rule.fault.clone()
            });
        state.seen.push(Seen {
            action: action.clone(),
            table: table.clone(),
            faulted: fault.is_some(),
            body: text.clone().into_owned(),
        });
        fault
    };
    match fault {
        Some(Fault::Error { status, code }) => {
            let document = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                 <Message>injected by the test proxy</Message></Error></Errors>\
                 <RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
            );
            let mut response = Response::new(Full::new(Bytes::from(document)));
            *response.status_mut() = StatusCode::from_u16(status).expect("valid status");
            return Ok(response);
        }
        Some(Fault::Stall(duration)) => tokio::time::sleep(duration).await,
        None => {}
    }
    Ok(forward(parts, body, upstream).await.unwrap_or_else(|e| {
        let mut response = Response::new(Full::new(Bytes::from(format!("proxy: {e}"))));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    }))
}

async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> Result<Response<Full<Bytes>>, String> {
    let stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let request = Request::from_parts(parts, Full::new(body));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    connection.abort();
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// Accepts TCP connections and never answers: an endpoint that swallows requests.
pub struct SilentEndpoint {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentEndpoint {
    pub async fn start() -> SilentEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        SilentEndpoint { addr, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
