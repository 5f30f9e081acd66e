//! Which endpoint answers what: routing, methods, the token check and the bodies, as a
//! synchronous function of the request head and the shared state (no I/O here, so nothing
//! in it can hang a connection).
//!
//! Errors are JSON `{"error": "..."}` with a reason a person can act on; `/primary` answers
//! one line of text, because load balancers and people with `curl` read it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::HttpState;
use crate::status::PrimaryVerdict;

pub(crate) type Body = Full<Bytes>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
/// The Prometheus text exposition format, as scrapers expect it.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Healthz,
    Status,
    Primary,
    Events,
    Failsafe,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/metrics" => Endpoint::Metrics,
            "/healthz" => Endpoint::Healthz,
            "/status" => Endpoint::Status,
            "/primary" => Endpoint::Primary,
            "/events" => Endpoint::Events,
            "/failsafe" => Endpoint::Failsafe,
            _ => return None,
        })
    }

    /// What operators need without the token: scrapers, liveness checks, load balancers.
    fn is_open(self) -> bool {
        matches!(
            self,
            Endpoint::Metrics | Endpoint::Healthz | Endpoint::Primary
        )
    }

    /// `/failsafe` changes what this agent may do (a promise), so it is a POST; every other
    /// endpoint only reads.
    fn allows(self, method: &Method) -> bool {
        match self {
            Endpoint::Failsafe => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }

    fn allow_header(self) -> &'static str {
        match self {
            Endpoint::Failsafe => "POST",
            _ => "GET, HEAD",
        }
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Everything here is live state: a cached /primary would mislead a load balancer.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn error(status: StatusCode, reason: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": reason }).to_string();
    response(status, JSON, body)
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(StatusCode::OK, JSON, body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialize the answer: {e}"),
        ),
    }
}

/// A query parameter, if any. AG and node names are plain identifiers, so no
/// percent-decoding: an encoded name simply does not match.
fn param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `POST /failsafe?ag=AG&leader=NODE&term=T`: a leader whose etcd key cannot be renewed
/// asks this agent to promise not to promote (`crate::failsafe`).
fn failsafe(state: &HttpState, query: Option<&str>) -> Response<Body> {
    let (Some(ag), Some(leader), Some(term)) = (
        param(query, "ag"),
        param(query, "leader"),
        param(query, "term"),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ag, leader and term are required: /failsafe?ag=AG&leader=NODE&term=N",
        );
    };
    let Ok(term) = term.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("term {term:?} is not an integer"),
        );
    };
    let Some(gate) = state.failsafe.get(ag) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("this agent does not manage AG {ag:?} (not in [[ag]], or mode is not manage)"),
        );
    };
    match gate.acknowledge(leader, term, std::time::Instant::now()) {
        Ok(ack) => json(&ack),
        Err(why) => error(StatusCode::CONFLICT, &why),
    }
}

pub(crate) fn handle<B>(state: &HttpState, req: &Request<B>) -> Response<Body> {
    let Some(endpoint) = Endpoint::from_path(req.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let head = req.method() == Method::HEAD;
    if !endpoint.allows(req.method()) {
        let allow = endpoint.allow_header();
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("only {allow} allowed here"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return r;
    }
    if !endpoint.is_open()
        && let Some(token) = &state.token
        && !token.accepts(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
    {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut r = match endpoint {
        Endpoint::Healthz => response(StatusCode::OK, TEXT, "ok\n"),
        Endpoint::Metrics => match state.metrics.encode() {
            Ok(text) => response(StatusCode::OK, METRICS, text),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Endpoint::Status => json(&state.status.snapshot()),
        Endpoint::Events => json(&state.status.events()),
        Endpoint::Failsafe => failsafe(state, req.uri().query()),
        Endpoint::Primary => match state.status.primary(param(req.uri().query(), "ag")) {
            Ok(PrimaryVerdict::Primary) => response(StatusCode::OK, TEXT, "primary\n"),
            Ok(PrimaryVerdict::NotPrimary(reason)) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not primary: {reason}\n"),
            ),
            Err(e @ crate::status::PrimaryQueryError::UnknownAg(_)) => {
                error(StatusCode::NOT_FOUND, &e.to_string())
            }
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
    };
    if head {
        // Same status and headers as GET, without the body; the length still describes
        // the GET body, as RFC 9110 §9.3.2 allows and load balancers expect.
        let size = hyper::body::Body::size_hint(r.body()).exact().unwrap_or(0);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}
