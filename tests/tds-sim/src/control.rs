//! The HTTP control API: `GET /state` shows the replica (and its AG state: sequence
//! number, hardened LSN, partners, discarded transactions, whether it would acknowledge a
//! commit now) and the logins with their permission rows (`principals`), `PUT /state`
//! merges a partial JSON object into it; `replication` (`running`, `stalled`, `dropped`)
//! is the replication fault.
//!
//! Every bad request gets a 4xx with `{"error": "..."}` naming the offending key, never a
//! crash: the lab drives this API from scripts, and a precise message is what makes a
//! wrong script obvious. A PUT is validated completely before anything is applied, so a
//! request with one bad key changes nothing. When a PUT changes the `refuse` fault, the
//! answer waits (up to two seconds) until the listener has actually closed or re-opened.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::ag::ReplMode;
use crate::state::{Change, DbState, Fault, Health, Role, Shared};

const MAX_BODY: usize = 64 * 1024;
const MAX_DELAY_MS: u64 = 3_600_000;

pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let mut rx = shared.state.subscribe();
    loop {
        if rx.borrow_and_update().shutting_down {
            return;
        }
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(req, shared.clone()));
                        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                            warn!(error = %e, "control connection failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

pub(crate) fn state_json(shared: &Shared) -> Value {
    let r = shared.replica();
    let s = shared.counters.snapshot();
    let dbs: Map<String, Value> = r
        .databases
        .iter()
        .map(|(n, st)| (n.clone(), json!(st.as_str())))
        .collect();
    json!({
        "server_name": r.server_name,
        "ag": r.ag,
        "role": r.role.as_str(),
        "synchronization_health": r.health.as_str(),
        "databases": dbs,
        "fault": r.fault.name(),
        "delay_ms": r.delay_ms,
        "connections": s.connections,
        "open_connections": s.open_connections,
        "logins": s.logins,
        "failed_logins": s.failed_logins,
        "queries": s.queries,
        "tls_handshakes": s.tls_handshakes,
        "login_only_encryptions": s.login_only_encryptions,
        "changed_at_unix_ms": r.changed_at_unix_ms,
        "ag_state": ag_json(shared, r.role),
        "principals": shared.logins.json(),
    })
}

fn ag_json(shared: &Shared, role: Role) -> Value {
    let cfg = &shared.ag.cfg;
    let s = shared.ag.read();
    let now = crate::state::now_unix_ms();
    let lease_ok = s.lease_ok(shared.ag.lease_configured(), now);
    let synced = s.synchronized_count();
    let partners: Vec<Value> = s
        .partners
        .iter()
        .map(|p| {
            json!({
                "name": p.conf.name,
                "endpoint": p.conf.endpoint.to_string(),
                "availability_mode": p.conf.mode.as_str(),
                "connected": p.connected,
                "synchronized": p.synchronized,
                "hardened_lsn": p.hardened_lsn,
                "last_error": p.last_error,
            })
        })
        .collect();
    json!({
        "availability_mode": cfg.mode.as_str(),
        "sequence_number": s.seq,
        "last_hardened_lsn": s.log.last_lsn(),
        "ledger_rows": s.log.ledger().len(),
        "required_synchronized_secondaries_to_commit": s.required,
        "synchronized_secondaries": synced,
        "write_lease_expires_unix_ms": s.lease_expiry_ms,
        "write_lease_valid": lease_ok,
        "would_acknowledge_commit": crate::ag::rules::would_acknowledge(role, lease_ok, synced, s.required),
        "synchronization_state": s.local_sync_state(role, cfg.mode).as_str(),
        "upstream_primary": s.upstream.as_ref().map(|u| u.primary.clone()),
        "was_synchronized_when_primary_lost": s.was_synchronized,
        "discarded_on_rejoin": s.discarded_on_rejoin,
        "replication": s.replication.as_str(),
        "partners": partners,
    })
}

fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    reply(code, &json!({ "error": msg.into() }))
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/state" {
        return Ok(error(
            StatusCode::NOT_FOUND,
            format!(
                "no such path '{}'; the API is GET or PUT /state",
                req.uri().path()
            ),
        ));
    }
    match *req.method() {
        Method::GET => Ok(reply(StatusCode::OK, &state_json(&shared))),
        Method::PUT => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body: {e} (limit {MAX_BODY} bytes)"),
                    ));
                }
            };
            let value: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"))),
            };
            let (change, repl) = match parse_change(&value, &shared) {
                Ok(c) => c,
                Err(msg) => {
                    warn!(error = %msg, "control PUT /state refused");
                    return Ok(error(StatusCode::BAD_REQUEST, msg));
                }
            };
            info!(body = %value, "control PUT /state");
            let refuse_change = change.fault.map(|f| f == Fault::Refuse);
            if let Some(m) = repl {
                shared.ag.update(|s| s.replication = m);
            }
            shared.apply(change, "control API PUT /state");
            if let Some(want_refused) = refuse_change {
                let mut l = shared.listening.subscribe();
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    l.wait_for(|listening| *listening != want_refused),
                )
                .await;
            }
            Ok(reply(StatusCode::OK, &state_json(&shared)))
        }
        _ => {
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} is not allowed on /state; use GET or PUT",
                    req.method()
                ),
            );
            resp.headers_mut()
                .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, PUT"));
            Ok(resp)
        }
    }
}

fn string<'a>(key: &str, v: &'a Value) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{key}: must be a string, got {v}"))
}

/// Validates a partial state object; the error names the key.
fn parse_change(v: &Value, shared: &Shared) -> Result<(Change, Option<ReplMode>), String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("body must be a JSON object, got {v}"))?;
    let mut c = Change::default();
    let mut repl = None;
    let mut fault_name: Option<String> = None;
    for (key, val) in obj {
        match key.as_str() {
            "role" => {
                c.role = Some(
                    string(key, val)?
                        .parse::<Role>()
                        .map_err(|e| format!("role: {e}"))?,
                )
            }
            "synchronization_health" => {
                c.health = Some(
                    string(key, val)?
                        .parse::<Health>()
                        .map_err(|e| format!("synchronization_health: {e}"))?,
                )
            }
            "databases" => {
                let dbs = val.as_object().ok_or_else(|| {
                    format!("databases: must be an object of name to state, got {val}")
                })?;
                for (name, st) in dbs {
                    if name.is_empty() || name.chars().count() > 128 {
                        return Err(format!(
                            "databases: name '{name}' must be 1 to 128 characters"
                        ));
                    }
                    let state = match st {
                        Value::Null => None,
                        Value::String(s) => Some(
                            s.parse::<DbState>()
                                .map_err(|e| format!("databases.{name}: {e}"))?,
                        ),
                        other => {
                            return Err(format!(
                                "databases.{name}: must be a state string or null, got {other}"
                            ));
                        }
                    };
                    c.databases.push((name.clone(), state));
                }
            }
            "fault" => fault_name = Some(string(key, val)?.to_string()),
            "replication" => {
                repl = Some(
                    ReplMode::parse(string(key, val)?).map_err(|e| format!("replication: {e}"))?,
                )
            }
            "delay_ms" => {
                let d = val.as_u64().ok_or_else(|| {
                    format!("delay_ms: must be a non-negative integer of milliseconds, got {val}")
                })?;
                if d > MAX_DELAY_MS {
                    return Err(format!(
                        "delay_ms: {d} exceeds the maximum of {MAX_DELAY_MS}"
                    ));
                }
                c.delay_ms = Some(d);
            }
            "server_name"
            | "ag"
            | "connections"
            | "open_connections"
            | "logins"
            | "failed_logins"
            | "queries"
            | "tls_handshakes"
            | "login_only_encryptions"
            | "changed_at_unix_ms"
            | "ag_state" => {
                return Err(format!("key '{key}' is read-only"));
            }
            "principals" => {
                return Err(
                    "key 'principals' is read-only: use CREATE LOGIN and GRANT/DENY/REVOKE".into(),
                );
            }
            other => return Err(format!("unknown key '{other}'")),
        }
    }
    if let Some(name) = fault_name {
        let delay = c.delay_ms.unwrap_or_else(|| shared.state.borrow().delay_ms);
        let f = Fault::parse(&name, delay).map_err(|e| format!("fault: {e}"))?;
        if matches!(f, Fault::Slow { delay_ms: 0 }) {
            return Err(
                "fault: 'slow' needs delay_ms > 0 (set delay_ms in the same request)".into(),
            );
        }
        c.fault = Some(f);
    }
    Ok((c, repl))
}
