//! Reading the other agents: each `[[peer]]`'s `GET /status`, turned into what this node's
//! controller and node executor need from it.
//!
//! A peer is another tdsvip, but its answer is still bytes from the network: it is read as
//! the one `/status` wire type (`status::StatusDocument`), every list and string is
//! bounded, and an error names the field that was wrong.
//! From each AG entry it takes:
//! - the peer replica's role, with the age of the probe that saw it (served as an age, so
//!   that clocks of different nodes never meet): the controller only counts a PRIMARY seen
//!   no earlier than its own replica became PRIMARY as a conflict;
//! - `primary_loss`: when the peer saw its own replica, which was PRIMARY, fail (ages too),
//!   for the start of this node's failover timeline;
//! - `tracked_connections`: the clients of the overlay IP that the peer's `conn_track` saw,
//!   so that a new owner can tickle them even when the old owner is gone;
//! - `overlay_login`: which server has been answering the peer's logins through the overlay
//!   IP and since when (an age), for the new owner's `first_client_login`.
//!
//! The request itself is `http::client`'s, the one `tdsvip status` uses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tdsvip_node::Connection;

use crate::controller::ReplicaRole;
use crate::http::client::{self, Bearer, Target};
use crate::status::{AgDocument, PeerAgSummary, PeerSummary, StatusDocument};

/// Most connections taken from one peer for one AG.
pub(crate) const MAX_CONNECTIONS: usize = 65_536;

/// Why a peer's `/status` could not be read, and whether its node answered at all.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unreadable {
    /// The client's precise message: refused, timeout, 401, not JSON, …
    pub text: String,
    /// The peer's node took part: it refused the connection (its kernel answered: the agent
    /// is not listening), accepted it without an answer in time (the agent is frozen or
    /// starved), or answered something that is not a status. Such a node may still hold
    /// the address, until its kernel lease runs out. `false`: nothing came back at all (no
    /// SYN-ACK, host unreachable), as from a crashed or cut-off node.
    pub node_answered: bool,
}

impl Unreadable {
    fn of(err: &client::FetchError) -> Unreadable {
        use client::FetchError as E;
        let node_answered = match err {
            // Nothing but silence or a routing error: the node itself is not there.
            E::Resolve { .. } | E::Connect { .. } => false,
            E::Timeout { what, .. } => *what == client::AWAITING_ANSWER,
            _ => true,
        };
        Unreadable {
            text: err.to_string(),
            node_answered,
        }
    }
}

/// `GET /status` of a peer within `deadline`: the JSON, or why not.
pub(crate) async fn fetch_status(
    target: &Target,
    token: Option<&Bearer>,
    deadline: Duration,
) -> Result<Value, Unreadable> {
    client::fetch(target, token, deadline)
        .await
        .map(|(value, _)| value)
        .map_err(|e| Unreadable::of(&e))
}

/// What a peer's `/status` says about one AG.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct PeerAgView {
    /// The peer replica's role and how long before the answer its probe started; `None`
    /// when its latest probe did not get a role (failed) or there was no probe yet.
    pub role: Option<(ReplicaRole, Duration)>,
    /// The peer's `primary_loss`, as ages: first failure and (if reached) detection.
    pub loss: Option<(Duration, Option<Duration>)>,
    pub owned: bool,
    pub connections: Vec<Connection>,
    /// The server answering the peer's logins through the overlay IP, and how long before
    /// the answer the first login of that run completed.
    pub overlay_login: Option<(String, Duration)>,
}

/// A parsed peer `/status`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerDocument {
    /// What this node keeps for its own `/status`.
    pub summary: PeerSummary,
    pub ags: BTreeMap<String, PeerAgView>,
}

/// An age in milliseconds as a `Duration`, refusing what no clock could have measured.
fn age(ms: f64, at: &str) -> Result<Duration, String> {
    if ms.is_finite() && (0.0..=1e12).contains(&ms) {
        Ok(Duration::from_secs_f64(ms / 1000.0))
    } else {
        Err(format!("{at}: not an age in milliseconds"))
    }
}

fn bounded_str(s: &Option<String>, at: &str) -> Result<(), String> {
    match s {
        Some(s) if s.len() > 256 => Err(format!("{at}: a string of more than 256 bytes")),
        _ => Ok(()),
    }
}

/// `status.PATH: what`, with a missing field's name added to the path.
pub fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let mut path = match e.path().to_string() {
        p if p == "." => "status".to_owned(),
        p => format!("status.{p}"),
    };
    let inner = e.inner().to_string();
    if let Some(field) = inner
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        path = format!("{path}.{field}");
    }
    format!("{path}: {inner}")
}

/// Parses a peer's `/status` document (the wire type, with every list and string bounded);
/// an error names the field that is wrong.
pub(crate) fn parse_status(doc: &Value) -> Result<PeerDocument, String> {
    let doc: StatusDocument = serde_path_to_error::deserialize(doc).map_err(field_error)?;
    bounded_str(&Some(doc.node.clone()), "status.node")?;
    if doc.ags.len() > 1024 {
        return Err("status.ags: more than 1024 AGs".into());
    }
    let mut ags = BTreeMap::new();
    let mut summaries = BTreeMap::new();
    for (name, entry) in doc.ags {
        let at = format!("status.ags[{name:?}]");
        let view = ag_view(&entry, &at)?;
        summaries.insert(
            name.clone(),
            PeerAgSummary {
                state: entry.state,
                replica_role: entry.replica_role,
                owned_addresses: entry.owned_addresses,
                tracked_connections: view.connections.len(),
                other: Map::new(),
            },
        );
        ags.insert(name, view);
    }
    Ok(PeerDocument {
        summary: PeerSummary {
            node: doc.node,
            ags: summaries,
            other: Map::new(),
        },
        ags,
    })
}

/// One AG entry of a peer's document, checked.
fn ag_view(entry: &AgDocument, at: &str) -> Result<PeerAgView, String> {
    bounded_str(&entry.replica_role, &format!("{at}.replica_role"))?;
    if entry.owned_addresses.len() > 64 {
        return Err(format!("{at}.owned_addresses: more than 64 addresses"));
    }
    if entry.tracked_connections.len() > MAX_CONNECTIONS {
        return Err(format!(
            "{at}.tracked_connections: more than {MAX_CONNECTIONS} connections"
        ));
    }
    let role = match (&entry.replica_role, &entry.last_local_probe) {
        (Some(role), Some(probe)) => match probe.age_ms {
            Some(ms) => {
                let age = age(ms, &format!("{at}.last_local_probe.age_ms"))?;
                Some((ReplicaRole::from_role_desc(role), age))
            }
            None => None,
        },
        _ => None,
    };
    let loss = match &entry.primary_loss {
        None => None,
        Some(l) => {
            let loss_at = format!("{at}.primary_loss");
            let first = age(
                l.first_failure_age_ms,
                &format!("{loss_at}.first_failure_age_ms"),
            )?;
            let detected = l
                .detected_age_ms
                .map(|ms| age(ms, &format!("{loss_at}.detected_age_ms")))
                .transpose()?;
            Some((first, detected))
        }
    };
    let overlay_login = match &entry.overlay_login {
        None => None,
        Some(o) => {
            bounded_str(
                &Some(o.server.clone()),
                &format!("{at}.overlay_login.server"),
            )?;
            let since = age(o.since_age_ms, &format!("{at}.overlay_login.since_age_ms"))?;
            Some((o.server.clone(), since))
        }
    };
    Ok(PeerAgView {
        role,
        loss,
        owned: !entry.owned_addresses.is_empty(),
        connections: entry.tracked_connections.clone(),
        overlay_login,
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
                "overlay_login": {"target": "10.9.0.10:1433", "server": "SQL2", "since_age_ms": 40.0},
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
        assert_eq!(
            ag.overlay_login,
            Some(("SQL2".to_owned(), Duration::from_millis(40)))
        );
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
            (
                Box::new(|v| v["ags"]["AG1"]["overlay_login"]["since_age_ms"] = json!(-5.0)),
                "overlay_login.since_age_ms",
            ),
            (
                Box::new(|v| v["ags"]["AG1"]["overlay_login"]["server"] = json!("x".repeat(300))),
                "overlay_login.server",
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

    /// Only silence from the node itself (no SYN-ACK, unreachable, unresolvable) makes a
    /// peer gone at once; anything its node did (refuse, accept and stall, answer oddly)
    /// means it may still hold the address.
    #[test]
    fn a_peer_is_gone_only_when_its_node_is_silent_too() {
        use client::FetchError as E;
        let url = "http://10.0.0.2:9477".to_owned();
        let addr: std::net::SocketAddr = "10.0.0.2:9477".parse().unwrap();
        let timeout = |what| E::Timeout {
            url: url.clone(),
            what,
            ms: 50,
        };
        let unreachable = E::Connect {
            url: url.clone(),
            addr,
            source: std::io::Error::from_raw_os_error(libc::EHOSTUNREACH),
        };
        for (err, node_answered) in [
            (timeout("accept the connection"), false),
            (timeout("resolve its host"), false),
            (unreachable, false),
            (
                E::Refused {
                    url: url.clone(),
                    addr,
                },
                true,
            ),
            (timeout(client::AWAITING_ANSWER), true),
            (
                E::NotStatus {
                    url: url.clone(),
                    detail: "x".into(),
                },
                true,
            ),
        ] {
            let u = Unreadable::of(&err);
            assert_eq!(u.node_answered, node_answered, "{err}");
            assert_eq!(u.text, err.to_string());
        }
    }
}
