//! Reading the other agents: each `[[peer]]`'s `GET /status`, turned into what this node's
//! controller and node executor need from it.
//!
//! A peer is another tdsvip, but its answer is still bytes from the network: the parser
//! takes only the fields it needs, bounds every list, and names the field that was wrong.
//! From each AG entry it takes:
//! - the peer replica's role, with the age of the probe that saw it (served as an age, so
//!   that clocks of different nodes never meet): the controller only counts a PRIMARY seen
//!   no earlier than its own replica became PRIMARY as a conflict;
//! - `primary_loss`: when the peer saw its own replica, which was PRIMARY, fail (ages too),
//!   for the start of this node's failover timeline;
//! - `tracked_connections`: the clients of the overlay IP that the peer's `conn_track` saw,
//!   so that a new owner can tickle them even when the old owner is gone.
//!
//! The request itself is `http::client`'s, the one `tdsvip status` uses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tdsvip_node::Connection;

use crate::controller::ReplicaRole;
use crate::http::client::{self, Bearer, Target};

/// Most connections taken from one peer for one AG.
pub const MAX_CONNECTIONS: usize = 65_536;

/// `GET /status` of a peer within `deadline`: the parsed JSON, or why not (the client's
/// precise message: refused, timeout, 401, not JSON, …).
pub async fn fetch_status(
    target: &Target,
    token: Option<&Bearer>,
    deadline: Duration,
) -> Result<Value, String> {
    client::fetch(target, token, deadline)
        .await
        .map(|(value, _)| value)
        .map_err(|e| e.to_string())
}

/// What a peer's `/status` says about one AG.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerAgView {
    /// The peer replica's role and how long before the answer its probe started; `None`
    /// when its latest probe did not get a role (failed) or there was no probe yet.
    pub role: Option<(ReplicaRole, Duration)>,
    /// The peer's `primary_loss`, as ages: first failure and (if reached) detection.
    pub loss: Option<(Duration, Option<Duration>)>,
    pub owned: bool,
    pub connections: Vec<Connection>,
}

/// The part of a peer's `/status` this node keeps for its own `/status` (never the peer's
/// whole document: it holds the peer's view of its peers, which would nest without end).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSummary {
    pub node: String,
    pub ags: BTreeMap<String, PeerAgSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerAgSummary {
    pub state: String,
    pub replica_role: Option<String>,
    pub owned_addresses: Vec<String>,
    pub tracked_connections: usize,
}

/// A parsed peer `/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerDocument {
    pub summary: PeerSummary,
    pub ags: BTreeMap<String, PeerAgView>,
}

fn field<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("{at}.{key}: missing"))
}

fn opt_str(v: &Value, key: &str, at: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}.{key}: not a string (of at most 256 bytes)")),
    }
}

fn age(v: &Value, key: &str, at: &str) -> Result<Option<Duration>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_f64() {
            Some(ms) if ms.is_finite() && (0.0..=1e12).contains(&ms) => {
                Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
            }
            _ => Err(format!("{at}.{key}: not an age in milliseconds")),
        },
    }
}

/// Parses a peer's `/status` document.
pub fn parse_status(doc: &Value) -> Result<PeerDocument, String> {
    let node = opt_str(doc, "node", "status")?.ok_or("status.node: missing")?;
    let ags_value = field(doc, "ags", "status")?
        .as_object()
        .ok_or("status.ags: not an object")?;
    if ags_value.len() > 1024 {
        return Err("status.ags: more than 1024 AGs".into());
    }
    let mut ags = BTreeMap::new();
    let mut summaries = BTreeMap::new();
    for (name, entry) in ags_value {
        let at = format!("status.ags[{name:?}]");
        if !entry.is_object() {
            return Err(format!("{at}: not an object"));
        }
        let replica_role = opt_str(entry, "replica_role", &at)?;
        let probe = entry.get("last_local_probe").filter(|p| !p.is_null());
        let role = match (&replica_role, probe) {
            (Some(role), Some(probe)) => {
                let probe_at = format!("{at}.last_local_probe");
                age(probe, "age_ms", &probe_at)?.map(|age| (ReplicaRole::from_role_desc(role), age))
            }
            _ => None,
        };
        let loss = match entry.get("primary_loss").filter(|l| !l.is_null()) {
            None => None,
            Some(l) => {
                let loss_at = format!("{at}.primary_loss");
                let first = age(l, "first_failure_age_ms", &loss_at)?
                    .ok_or_else(|| format!("{loss_at}.first_failure_age_ms: missing"))?;
                Some((first, age(l, "detected_age_ms", &loss_at)?))
            }
        };
        let owned_addresses: Vec<String> = match entry.get("owned_addresses") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.len() <= 64 => a
                .iter()
                .map(|ip| {
                    ip.as_str()
                        .and_then(|s| s.parse::<IpAddr>().ok())
                        .map(|ip| ip.to_string())
                        .ok_or_else(|| format!("{at}.owned_addresses: {ip} is not an address"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("{at}.owned_addresses: not a list of addresses")),
        };
        let connections: Vec<Connection> = match entry.get("tracked_connections") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.len() <= MAX_CONNECTIONS => a
                .iter()
                .map(|c| {
                    serde_json::from_value::<Connection>(c.clone())
                        .map_err(|e| format!("{at}.tracked_connections: {e}"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(format!(
                    "{at}.tracked_connections: not a list of at most {MAX_CONNECTIONS} connections"
                ));
            }
        };
        let state = opt_str(entry, "state", &at)?.unwrap_or_default();
        summaries.insert(
            name.clone(),
            PeerAgSummary {
                state,
                replica_role,
                owned_addresses: owned_addresses.clone(),
                tracked_connections: connections.len(),
            },
        );
        ags.insert(
            name.clone(),
            PeerAgView {
                role,
                loss,
                owned: !owned_addresses.is_empty(),
                connections,
            },
        );
    }
    Ok(PeerDocument {
        summary: PeerSummary {
            node,
            ags: summaries,
        },
        ags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "node": "n1",
            "version": "0.1.0",
            "ags": {"AG1": {
                "state": "owner",
                "overlay_ips": ["10.9.0.10"],
                "owned_addresses": ["10.9.0.10"],
                "replica_role": "PRIMARY",
                "last_local_probe": {"outcome": "ok", "age_ms": 12.5},
                "primary_loss": {"first_failure_age_ms": 300.0, "detected_age_ms": null},
                "tracked_connections": [
                    {"server": "10.9.0.10:1433", "client": "10.9.0.1:50000"}
                ],
                "some_future_field": {"x": 1}
            }},
            "peers": {"n2": {"deep": "ignored"}}
        })
    }

    #[test]
    fn a_status_document_parses() {
        let d = parse_status(&doc()).unwrap();
        assert_eq!(d.summary.node, "n1");
        let ag = &d.ags["AG1"];
        assert_eq!(
            ag.role,
            Some((ReplicaRole::Primary, Duration::from_micros(12_500)))
        );
        assert_eq!(ag.loss, Some((Duration::from_millis(300), None)));
        assert!(ag.owned);
        assert_eq!(ag.connections.len(), 1);
        assert_eq!(ag.connections[0].client, "10.9.0.1:50000".parse().unwrap());
        assert_eq!(d.summary.ags["AG1"].tracked_connections, 1);
    }

    #[test]
    fn a_role_without_a_probe_age_is_no_role() {
        let mut v = doc();
        v["ags"]["AG1"]["last_local_probe"] = Value::Null;
        assert_eq!(parse_status(&v).unwrap().ags["AG1"].role, None);
    }

    #[test]
    fn hostile_documents_name_the_field() {
        type Spoil = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|v| v["node"] = json!(5)), "status.node"),
            (Box::new(|v| v["ags"] = json!([])), "status.ags"),
            (
                Box::new(|v| v["ags"]["AG1"]["last_local_probe"]["age_ms"] = json!(-1)),
                "age_ms",
            ),
            (
                Box::new(|v| v["ags"]["AG1"]["primary_loss"] = json!({})),
                "first_failure_age_ms",
            ),
            (
                Box::new(|v| v["ags"]["AG1"]["tracked_connections"] = json!([{"server": "x"}])),
                "tracked_connections",
            ),
            (
                Box::new(|v| v["ags"]["AG1"]["owned_addresses"] = json!(["nope"])),
                "owned_addresses",
            ),
            (
                Box::new(|v| v["ags"]["AG1"]["replica_role"] = json!("x".repeat(300))),
                "replica_role",
            ),
        ];
        for (spoil, key) in cases {
            let mut v = doc();
            spoil(&mut v);
            let e = parse_status(&v).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        assert!(parse_status(&json!(null)).is_err());
        assert!(
            parse_status(&json!({"node": "n"}))
                .unwrap_err()
                .contains("status.ags")
        );
    }
}
