//! `tdsvip status` for a person: the agent's `/status` wire type as aligned text. Fields
//! this build does not know (a newer agent's, kept in each struct's `other`) are printed
//! generically after the known ones, so nothing the agent said is hidden.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use tdsvip::{
    AgDocument, PeerEntry, ProbeDocument, RouteOwner, StatusDocument, StepDocument,
    TimelineDocument,
};

/// Arrays longer than this are cut short.
const MAX_LIST: usize = 20;

/// A scalar as a person reads it (strings without quotes).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1000.0)
}

fn age(now_unix: f64, then_unix: f64) -> String {
    let a = now_unix - then_unix;
    if a < 0.0 {
        // Another clock than this one (the agent on another host).
        "in the future by this host's clock".into()
    } else if a < 1.0 {
        format!("{:.0} ms ago", a * 1000.0)
    } else if a < 120.0 {
        format!("{a:.1} s ago")
    } else if a < 7200.0 {
        format!("{:.0} min ago", a / 60.0)
    } else {
        format!("{:.1} h ago", a / 3600.0)
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = items.iter().take(MAX_LIST).map(T::to_string).collect();
    match items.len().saturating_sub(MAX_LIST) {
        0 => shown.join(", "),
        more => format!("{} (and {more} more)", shown.join(", ")),
    }
}

fn list_of_scalars(v: &Value) -> Option<String> {
    let items = v.as_array()?;
    if items.iter().any(|i| i.is_object() || i.is_array()) {
        return None;
    }
    Some(list(&items.iter().map(scalar).collect::<Vec<_>>()))
}

/// `key=value` pairs of an object on one line (nested values as compact JSON).
pub(super) fn inline_object(m: &Map<String, Value>) -> String {
    m.iter()
        .map(|(k, v)| match v {
            Value::Object(_) | Value::Array(_) => format!("{k}={v}"),
            _ => format!("{k}={}", scalar(v)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Any JSON value under `key`, indented: for what this build does not know.
fn generic(out: &mut String, indent: usize, key: &str, v: &Value) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if m.is_empty() => {
            let _ = writeln!(out, "{pad}{key}: none");
        }
        Value::Object(m) => {
            let _ = writeln!(out, "{pad}{key}:");
            for (k, v) in m {
                generic(out, indent + 2, k, v);
            }
        }
        Value::Array(items) => match list_of_scalars(v) {
            Some(s) => {
                let _ = writeln!(out, "{pad}{key}: {s}");
            }
            None => {
                let _ = writeln!(out, "{pad}{key}: {} entries", items.len());
                for item in items.iter().take(MAX_LIST) {
                    let text = match item {
                        Value::Object(m) => inline_object(m),
                        other => other.to_string(),
                    };
                    let _ = writeln!(out, "{pad}  - {text}");
                }
                if items.len() > MAX_LIST {
                    let _ = writeln!(out, "{pad}  … {} more", items.len() - MAX_LIST);
                }
            }
        },
        other => {
            let _ = writeln!(out, "{pad}{key}: {}", scalar(other));
        }
    }
}

pub(super) fn others(out: &mut String, indent: usize, m: &Map<String, Value>) {
    for (k, v) in m {
        generic(out, indent, k, v);
    }
}

/// A labelled line, labels aligned.
pub(super) fn line(out: &mut String, indent: usize, label: &str, text: impl std::fmt::Display) {
    let _ = writeln!(out, "{}{label:<18}{text}", " ".repeat(indent));
}

fn render_probe(p: &ProbeDocument, now_unix: f64) -> String {
    let mut s = p.outcome.clone();
    if !p.detail.is_empty() && p.detail != p.outcome {
        let _ = write!(s, " ({})", p.detail);
    }
    let _ = write!(s, " in {}", ms(p.latency_seconds));
    // The agent's own monotonic age when it has one, else its wall clock against ours.
    match p.age_ms {
        Some(a) => {
            let _ = write!(s, ", {}", age(a / 1000.0, 0.0));
        }
        None if p.started_unix > 0.0 => {
            let _ = write!(s, ", {}", age(now_unix, p.started_unix));
        }
        None => {}
    }
    let mut how = vec![p.mode.clone()];
    if let Some(t) = p.target {
        how.push(format!("to {t}"));
    }
    if let Some(r) = &p.role {
        how.push(format!("role {r}"));
    }
    how.retain(|h| !h.is_empty());
    if !how.is_empty() {
        let _ = write!(s, " [{}]", how.join(" "));
    }
    if !p.other.is_empty() {
        let _ = write!(s, " [{}]", inline_object(&p.other));
    }
    s
}

fn render_route_table(r: &RouteOwner) -> String {
    let target = r.target.as_deref().unwrap_or("no route");
    let here = if r.this_node {
        " (this node)"
    } else {
        " (another node)"
    };
    let extra = if r.other.is_empty() {
        String::new()
    } else {
        format!(" [{}]", inline_object(&r.other))
    };
    format!("{} → {target}{here}{extra}", r.route_table)
}

fn step_label(kind: &str, step: &StepDocument) -> String {
    let ok = match step.ok {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "?",
    };
    let mut s = format!("{kind}{} {ok}", step.name);
    if let Some(d) = step.duration {
        let _ = write!(s, " (took {})", ms(d));
    }
    if !step.detail.is_empty() {
        let _ = write!(s, ": {}", step.detail);
    }
    s
}

/// Every event of a timeline with its offset, in time order (equal offsets keep the order
/// of cause before effect).
fn timeline_events(t: &TimelineDocument) -> Vec<(f64, String)> {
    let by = t
        .old_primary_failed_by
        .as_ref()
        .map(|b| format!(" (seen by {b})"))
        .unwrap_or_default();
    let client_by = t
        .first_client_login_by
        .as_ref()
        .map(|b| format!(" (by {b}, across the network)"))
        .unwrap_or_default();
    let re_observe = match t.promotion {
        Some(_) => " (re-observe: the promotion took)",
        None => "",
    };
    let node_ok = if t.node_ok == Some(false) {
        " (FAILED)"
    } else {
        ""
    };
    let marks = [
        (
            t.old_primary_failed,
            format!("old primary's first failed probe{by}"),
        ),
        (t.detected, "failure detected".into()),
        (
            t.local_primary_seen,
            format!("local replica seen PRIMARY{re_observe}"),
        ),
        (t.decided, format!("decided: {}", t.direction)),
        (t.node_done, format!("node executor done{node_ok}")),
        (t.route_tables_done, "every route table points here".into()),
        (
            t.first_local_login,
            "own first login through the overlay IP (local route)".into(),
        ),
        (
            t.first_client_login,
            format!("first client login through the overlay IP{client_by}"),
        ),
    ];
    // A promotion's steps come first: at equal instants they are the cause.
    let promotion = t.promotion.as_ref();
    let mut events: Vec<(f64, String)> = promotion
        .map(super::status_cluster::promotion_events)
        .unwrap_or_default();
    events.extend(
        marks
            .into_iter()
            .filter_map(|(at, label)| Some((at?, label))),
    );
    for (steps, kind) in [(&t.node_steps, ""), (&t.route_tables, "route table ")] {
        for s in steps {
            if let Some(at) = s.at {
                events.push((at, step_label(kind, s)));
            }
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    events
}

fn render_timeline(out: &mut String, indent: usize, t: &TimelineDocument) {
    let pad = " ".repeat(indent);
    let mut head = if t.direction.is_empty() {
        "?".to_owned()
    } else {
        t.direction.clone()
    };
    if !t.reason_label.is_empty() {
        let _ = write!(head, " ({})", t.reason_label);
    }
    if !t.reason.is_empty() {
        let _ = write!(head, ": {}", t.reason);
    }
    line(out, indent, "last failover", head);
    for (at, label) in timeline_events(t) {
        let _ = writeln!(
            out,
            "{pad}  {:>12}  {label}",
            format!("+{:.3} ms", at * 1000.0)
        );
    }
    let phases: Vec<String> = t
        .phases
        .measured()
        .into_iter()
        .map(|(name, s)| format!("{name} {}", ms(s)))
        .collect();
    if !phases.is_empty() {
        line(out, indent + 2, "phases", phases.join(", "));
    }
    if !t.unfinished.is_empty() {
        line(out, indent + 2, "never came", t.unfinished.join(", "));
    }
    if !t.other.is_empty() {
        let _ = writeln!(out, "{pad}  other fields:");
        others(out, indent + 4, &t.other);
    }
}

fn render_ag(out: &mut String, name: &str, ag: &AgDocument, now_unix: f64) {
    let state = if ag.state.is_empty() {
        "unknown"
    } else {
        &ag.state
    };
    let _ = writeln!(out, "AG {name}: {state}");
    line(
        out,
        2,
        "replica role",
        ag.replica_role.as_deref().unwrap_or("unknown"),
    );
    line(out, 2, "overlay addresses", list(&ag.overlay_ips));
    line(out, 2, "owned addresses", list(&ag.owned_addresses));
    match &ag.last_local_probe {
        None => line(out, 2, "last local probe", "none yet"),
        Some(p) => line(out, 2, "last local probe", render_probe(p, now_unix)),
    }
    if ag.route_tables.is_empty() {
        line(out, 2, "route tables", "none configured");
    }
    for (i, t) in ag.route_tables.iter().enumerate() {
        let label = if i == 0 { "route tables" } else { "" };
        line(out, 2, label, render_route_table(t));
    }
    let overlay = match &ag.overlay_login {
        None => "not answered".to_owned(),
        Some(o) => format!("answered by {} for {:.0} ms", o.server, o.since_age_ms),
    };
    line(out, 2, "overlay login", overlay);
    match &ag.last_timeline {
        None => line(out, 2, "last failover", "none since the agent started"),
        Some(t) => render_timeline(out, 2, t),
    }
    if let Some(c) = &ag.cluster {
        super::status_cluster::render(out, c);
    }
    render_ag_details(out, ag);
    others(out, 2, &ag.other);
}

/// The fields a peer reads more than a person does, in the generic layout.
fn render_ag_details(out: &mut String, ag: &AgDocument) {
    let loss = ag.primary_loss.as_ref().map(|l| {
        json!({"first_failure_age_ms": l.first_failure_age_ms, "detected_age_ms": l.detected_age_ms})
    });
    generic(out, 2, "primary_loss", &loss.unwrap_or(Value::Null));
    let connections: Vec<Value> = ag
        .tracked_connections
        .iter()
        .map(|c| json!({"client": c.client.to_string(), "server": c.server.to_string()}))
        .collect();
    generic(out, 2, "tracked_connections", &Value::Array(connections));
    generic(out, 2, "conflicts", &json!(ag.conflicts));
    generic(out, 2, "peers_primary", &json!(ag.peers_primary));
}

fn render_peer(out: &mut String, name: &str, p: &PeerEntry, now_unix: f64) {
    let mut head = format!("  {name}");
    if !p.url.is_empty() {
        let _ = write!(head, " ({})", p.url);
    }
    match p.checked_unix {
        Some(t) => {
            let _ = write!(head, ": checked {}", age(now_unix, t));
        }
        None => head.push_str(": not checked yet"),
    }
    let _ = writeln!(out, "{head}");
    if let Some(e) = &p.error {
        line(out, 4, "error", e);
    }
    if let Some(view) = &p.view {
        line(out, 4, "its node", &view.node);
        for (ag, a) in &view.ags {
            let state = if a.state.is_empty() {
                "unknown"
            } else {
                &a.state
            };
            let role = a.replica_role.as_deref().unwrap_or("unknown");
            let mut text = format!(
                "{state}, replica {role}, owns {}, tracked_connections {}",
                list(&a.owned_addresses),
                a.tracked_connections
            );
            for (k, v) in &a.other {
                let _ = write!(text, ", {k} {}", scalar(v));
            }
            line(out, 4, &format!("AG {ag}"), text);
        }
        others(out, 4, &view.other);
    }
    others(out, 4, &p.other);
}

/// The whole status for a person.
pub(super) fn render(doc: &StatusDocument, url: &str, now_unix: f64) -> String {
    let mut out = String::new();
    let node = if doc.node.is_empty() {
        "unknown"
    } else {
        &doc.node
    };
    let _ = write!(out, "node {node}");
    if !doc.version.is_empty() {
        let _ = write!(out, " (tdsvip {})", doc.version);
    }
    let _ = writeln!(out, " at {url}");
    if doc.ags.is_empty() {
        out.push_str("\nno availability group configured\n");
    }
    for (name, ag) in &doc.ags {
        out.push('\n');
        render_ag(&mut out, name, ag, now_unix);
    }
    if !doc.peers.is_empty() {
        out.push_str("\npeers\n");
        for (name, p) in &doc.peers {
            render_peer(&mut out, name, p, now_unix);
        }
    }
    if !doc.other.is_empty() {
        out.push_str("\nother\n");
        others(&mut out, 2, &doc.other);
    }
    out
}

#[cfg(test)]
#[path = "status_text_tests.rs"]
mod tests;
