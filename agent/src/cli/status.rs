//! `tdsvip status`: the running agent's `GET /status`, for a person or (with `--json`) for a
//! script.
//!
//! The answer is read as untyped JSON on purpose: this command may be newer or older than
//! the agent it asks, so fields it does not know (peer views, tracked connections, …) are
//! printed generically instead of failing, and fields the agent does not send are skipped.
//!
//! Exit status: 0 when the agent answered, 1 when it could not be reached or did not answer
//! 2xx with JSON (the message says which: refused, timeout, 401, …), 2 on bad arguments or
//! configuration (the message names the argument).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Map, Value};

use super::{EXIT_USAGE, block_on, usage_error};
use tdsvip::config::AgentConfig;
use tdsvip::http::client::{
    Bearer as Token, DEFAULT_URL, TOKEN_ENV, fetch, parse_url, url_of_listen,
};

/// Arrays longer than this are cut short in the human output.
const MAX_LIST: usize = 20;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's HTTP base URL [default: the config's http.listen, else http://127.0.0.1:9477].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The agent's TOML config file: its http.listen and http.token_file are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the bearer token [default: the TDSVIP_HTTP_TOKEN variable, else the
    /// config's http.token_file].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the agent's JSON (pretty) instead of text.
    #[arg(long)]
    json: bool,
    /// Deadline for connecting and for the whole answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
}

/// The token as the agent's own reader accepts it: trailing newlines dropped, nothing else
/// that a header could not carry.
fn check_token(text: &str) -> Result<&str, &'static str> {
    let t = text.trim_end_matches(['\n', '\r']);
    if t.is_empty() {
        return Err("the token is empty");
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token contains whitespace or control characters");
    }
    Ok(t)
}

fn token_from_file(path: &Path, arg: &str) -> Result<Token, (String, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            arg.to_owned(),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let value = check_token(&text)
        .map_err(|e| (arg.to_owned(), format!("{}: {e}", path.display())))?
        .to_owned();
    Ok(Token {
        value,
        source: format!("{arg} {}", path.display()),
    })
}

/// `--token-file`, else `TDSVIP_HTTP_TOKEN`, else the config's `http.token_file`, else none.
/// Errors are `(argument, reason)`.
fn pick_token(
    token_file: Option<&Path>,
    env: Option<String>,
    config: Option<&AgentConfig>,
) -> Result<Option<Token>, (String, String)> {
    if let Some(path) = token_file {
        return token_from_file(path, "--token-file").map(Some);
    }
    if let Some(text) = env {
        let value = check_token(&text)
            .map_err(|e| (TOKEN_ENV.to_owned(), e.to_owned()))?
            .to_owned();
        return Ok(Some(Token {
            value,
            source: TOKEN_ENV.to_owned(),
        }));
    }
    match config.and_then(|c| c.http.token_file.as_deref()) {
        Some(path) => token_from_file(path, "http.token_file").map(Some),
        None => Ok(None),
    }
}

pub fn run(args: StatusArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => match AgentConfig::load(path) {
            Ok(c) => Some(c),
            Err(errors) => {
                for issue in &errors.0 {
                    eprintln!("{}: {issue}", path.display());
                }
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => None,
    };
    let url = match (&args.url, &config) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => url_of_listen(c.http.listen),
        (None, None) => DEFAULT_URL.to_owned(),
    };
    let target = match parse_url(&url) {
        Ok(t) => t,
        Err(reason) => {
            let arg = if args.url.is_some() {
                "--url"
            } else {
                "http.listen"
            };
            return usage_error(arg, reason);
        }
    };
    let env = std::env::var_os(TOKEN_ENV).map(|v| v.to_string_lossy().into_owned());
    let token = match pick_token(args.token_file.as_deref(), env, config.as_ref()) {
        Ok(t) => t,
        Err((arg, reason)) => return usage_error(&arg, reason),
    };
    let deadline = Duration::from_millis(args.timeout_ms);
    block_on(async move {
        let (value, body) = match fetch(&target, token.as_ref(), deadline).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if args.json {
            // The agent's own text, re-indented: its field order stays.
            println!("{}", pretty(&body));
        } else {
            print!("{}", render(&value, &target.url, unix_now()));
        }
        ExitCode::SUCCESS
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Re-indents JSON text that already parsed, two spaces a level as `serde_json`'s pretty
/// printer does, but keeping the text's own key order (a `Value` would sort the keys).
fn pretty(json: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    let mut out = String::with_capacity(json.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.next_if_eq(&close).is_some() {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The human rendering. Everything is optional: a missing field is skipped, a field of an
// unexpected type or an unknown field is printed generically.

const TOP_KNOWN: &[&str] = &["node", "version", "ags", "peers"];
const AG_KNOWN: &[&str] = &[
    "state",
    "overlay_ips",
    "owned_addresses",
    "last_local_probe",
    "replica_role",
    "route_tables",
    "last_timeline",
];
const TIMELINE_KNOWN: &[&str] = &[
    "ag",
    "direction",
    "reason_label",
    "reason",
    "old_primary_failed",
    "old_primary_failed_by",
    "detected",
    "local_primary_seen",
    "decided",
    "node_steps",
    "node_done",
    "node_ok",
    "route_tables",
    "route_tables_done",
    "first_client_login",
    "unfinished",
    "phases",
];
const PEER_KNOWN: &[&str] = &["url", "checked_unix", "view", "error"];
/// The phases in the order they happen, as `tdsvip_failover_phase_duration_seconds{phase}`.
const PHASES: &[&str] = &tdsvip::controller::PHASE_NAMES;

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

fn list_of_scalars(v: &Value) -> Option<String> {
    let items = v.as_array()?;
    if items.is_empty() {
        return Some("none".into());
    }
    if items.iter().any(|i| i.is_object() || i.is_array()) {
        return None;
    }
    let shown: Vec<String> = items.iter().take(MAX_LIST).map(scalar).collect();
    let more = items.len().saturating_sub(MAX_LIST);
    Some(if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    })
}

/// `key=value` pairs of an object on one line (nested values as compact JSON).
fn inline_object(m: &Map<String, Value>) -> String {
    m.iter()
        .map(|(k, v)| match v {
            Value::Object(_) | Value::Array(_) => format!("{k}={v}"),
            _ => format!("{k}={}", scalar(v)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Any JSON value under `key`, indented; used for fields this command does not know.
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
                    match item {
                        Value::Object(m) => {
                            let _ = writeln!(out, "{pad}  - {}", inline_object(m));
                        }
                        other => {
                            let _ = writeln!(out, "{pad}  - {other}");
                        }
                    }
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

fn unknown_fields(out: &mut String, indent: usize, m: &Map<String, Value>, known: &[&str]) {
    for (k, v) in m {
        if !known.contains(&k.as_str()) {
            generic(out, indent, k, v);
        }
    }
}

/// A labelled line, labels aligned.
fn line(out: &mut String, indent: usize, label: &str, text: impl std::fmt::Display) {
    let _ = writeln!(out, "{}{label:<18}{text}", " ".repeat(indent));
}

fn render_probe(p: &Value, now_unix: f64) -> String {
    let Some(m) = p.as_object() else {
        return scalar(p);
    };
    let outcome = m.get("outcome").map_or("unknown".into(), scalar);
    let mut s = outcome.clone();
    if let Some(detail) = m.get("detail").and_then(Value::as_str)
        && detail != outcome
    {
        let _ = write!(s, " ({detail})");
    }
    if let Some(l) = m.get("latency_seconds").and_then(Value::as_f64) {
        let _ = write!(s, " in {}", ms(l));
    }
    // The agent's own monotonic age when it has one, else its wall clock against ours.
    if let Some(a) = m.get("age_ms").and_then(Value::as_f64) {
        let _ = write!(s, ", {}", age(a / 1000.0, 0.0));
    } else if let Some(t) = m.get("started_unix").and_then(Value::as_f64)
        && t > 0.0
    {
        let _ = write!(s, ", {}", age(now_unix, t));
    }
    let mut how = Vec::new();
    if let Some(mode) = m.get("mode").and_then(Value::as_str) {
        how.push(mode.to_owned());
    }
    if let Some(t) = m.get("target") {
        how.push(format!("to {}", scalar(t)));
    }
    if let Some(r) = m.get("role").filter(|r| !r.is_null()) {
        how.push(format!("role {}", scalar(r)));
    }
    if !how.is_empty() {
        let _ = write!(s, " [{}]", how.join(" "));
    }
    s
}

fn render_route_tables(v: &Value) -> Vec<String> {
    let Some(items) = v.as_array() else {
        return vec![scalar(v)];
    };
    items
        .iter()
        .map(|r| {
            let Some(m) = r.as_object() else {
                return scalar(r);
            };
            let table = m.get("route_table").map_or("?".into(), scalar);
            let target = match m.get("target") {
                None | Some(Value::Null) => "no route".to_owned(),
                Some(t) => scalar(t),
            };
            let here = match m.get("this_node").and_then(Value::as_bool) {
                Some(true) => " (this node)",
                Some(false) => " (another node)",
                None => "",
            };
            let mut rest = m.clone();
            for k in ["route_table", "target", "this_node"] {
                rest.remove(k);
            }
            let extra = if rest.is_empty() {
                String::new()
            } else {
                format!(" [{}]", inline_object(&rest))
            };
            format!("{table} → {target}{here}{extra}")
        })
        .collect()
}

fn step_label(kind: &str, step: &Map<String, Value>) -> String {
    let name = step.get("name").map_or("?".into(), scalar);
    let ok = match step.get("ok").and_then(Value::as_bool) {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "?",
    };
    let mut s = format!("{kind}{name} {ok}");
    if let Some(d) = step.get("duration").and_then(Value::as_f64) {
        let _ = write!(s, " (took {})", ms(d));
    }
    if let Some(detail) = step.get("detail").and_then(Value::as_str)
        && !detail.is_empty()
    {
        let _ = write!(s, ": {detail}");
    }
    s
}

fn render_timeline(out: &mut String, indent: usize, t: &Value) {
    let pad = " ".repeat(indent);
    let Some(m) = t.as_object() else {
        generic(out, indent, "last failover", t);
        return;
    };
    let get_str = |k: &str| m.get(k).and_then(Value::as_str);
    let direction = get_str("direction").unwrap_or("?");
    let mut head = direction.to_owned();
    if let Some(l) = get_str("reason_label") {
        let _ = write!(head, " ({l})");
    }
    if let Some(r) = get_str("reason") {
        let _ = write!(head, ": {r}");
    }
    line(out, indent, "last failover", head);

    let mut events: Vec<(f64, String)> = Vec::new();
    let mut at = |key: &str, label: String| {
        if let Some(t) = m.get(key).and_then(Value::as_f64) {
            events.push((t, label));
        }
    };
    let by = get_str("old_primary_failed_by")
        .map(|b| format!(" (seen by {b})"))
        .unwrap_or_default();
    at(
        "old_primary_failed",
        format!("old primary's first failed probe{by}"),
    );
    at("detected", "failure detected".into());
    at("local_primary_seen", "local replica seen PRIMARY".into());
    at("decided", format!("decided: {direction}"));
    let node_ok = match m.get("node_ok").and_then(Value::as_bool) {
        Some(false) => " (FAILED)",
        _ => "",
    };
    at("node_done", format!("node executor done{node_ok}"));
    at("route_tables_done", "every route table points here".into());
    at(
        "first_client_login",
        "first client login through the overlay IP".into(),
    );
    for (key, kind) in [("node_steps", ""), ("route_tables", "route table ")] {
        for step in m.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = step.as_object()
                && let Some(t) = s.get("at").and_then(Value::as_f64)
            {
                events.push((t, step_label(kind, s)));
            }
        }
    }
    // Stable: equal offsets keep the order above (cause before effect).
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, label) in &events {
        let _ = writeln!(
            out,
            "{pad}  {:>12}  {label}",
            format!("+{:.3} ms", t * 1000.0)
        );
    }
    if let Some(phases) = m.get("phases").and_then(Value::as_object) {
        let mut known: Vec<String> = PHASES
            .iter()
            .filter_map(|p| Some(format!("{p} {}", ms(phases.get(*p)?.as_f64()?))))
            .collect();
        // Phases this command does not know yet.
        for (k, v) in phases {
            if !PHASES.contains(&k.as_str())
                && let Some(s) = v.as_f64()
            {
                known.push(format!("{k} {}", ms(s)));
            }
        }
        if !known.is_empty() {
            line(out, indent + 2, "phases", known.join(", "));
        }
    }
    let unfinished: Vec<&str> = m
        .get("unfinished")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !unfinished.is_empty() {
        line(out, indent + 2, "never came", unfinished.join(", "));
    }
    let mut other = String::new();
    unknown_fields(&mut other, indent + 4, m, TIMELINE_KNOWN);
    if !other.is_empty() {
        let _ = writeln!(out, "{pad}  other fields:");
        out.push_str(&other);
    }
}

fn render_ag(out: &mut String, name: &str, ag: &Value, now_unix: f64) {
    let Some(m) = ag.as_object() else {
        generic(out, 0, &format!("AG {name}"), ag);
        return;
    };
    let state = m.get("state").map_or("unknown".into(), scalar);
    let _ = writeln!(out, "AG {name}: {state}");
    let role = match m.get("replica_role") {
        None | Some(Value::Null) => "unknown".into(),
        Some(r) => scalar(r),
    };
    line(out, 2, "replica role", role);
    if let Some(v) = m.get("overlay_ips") {
        line(
            out,
            2,
            "overlay addresses",
            list_of_scalars(v).unwrap_or_else(|| v.to_string()),
        );
    }
    if let Some(v) = m.get("owned_addresses") {
        line(
            out,
            2,
            "owned addresses",
            list_of_scalars(v).unwrap_or_else(|| v.to_string()),
        );
    }
    match m.get("last_local_probe") {
        None => {}
        Some(Value::Null) => line(out, 2, "last local probe", "none yet"),
        Some(p) => line(out, 2, "last local probe", render_probe(p, now_unix)),
    }
    if let Some(v) = m.get("route_tables") {
        let tables = render_route_tables(v);
        if tables.is_empty() {
            line(out, 2, "route tables", "none configured");
        }
        for (i, t) in tables.iter().enumerate() {
            line(out, 2, if i == 0 { "route tables" } else { "" }, t);
        }
    }
    match m.get("last_timeline") {
        None => {}
        Some(Value::Null) => line(out, 2, "last failover", "none since the agent started"),
        Some(t) => render_timeline(out, 2, t),
    }
    unknown_fields(out, 2, m, AG_KNOWN);
}

fn render_peer(out: &mut String, name: &str, p: &Value, now_unix: f64) {
    let Some(m) = p.as_object() else {
        generic(out, 2, name, p);
        return;
    };
    let mut head = format!("  {name}");
    if let Some(u) = m.get("url").and_then(Value::as_str) {
        let _ = write!(head, " ({u})");
    }
    match m.get("checked_unix").and_then(Value::as_f64) {
        Some(t) => {
            let _ = write!(head, ": checked {}", age(now_unix, t));
        }
        None => head.push_str(": not checked yet"),
    }
    let _ = writeln!(out, "{head}");
    if let Some(e) = m.get("error").filter(|e| !e.is_null()) {
        line(out, 4, "error", scalar(e));
    }
    if let Some(view) = m.get("view").and_then(Value::as_object) {
        if let Some(n) = view.get("node") {
            line(out, 4, "its node", scalar(n));
        }
        for (ag, a) in view
            .get("ags")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let state = a.get("state").map_or("unknown".into(), scalar);
            let role = a
                .get("replica_role")
                .filter(|r| !r.is_null())
                .map_or("unknown".into(), scalar);
            let owned = a
                .get("owned_addresses")
                .and_then(list_of_scalars)
                .unwrap_or_else(|| "unknown".into());
            let mut text = format!("{state}, replica {role}, owns {owned}");
            if let Some(a) = a.as_object() {
                for (k, v) in a {
                    if !["state", "replica_role", "owned_addresses"].contains(&k.as_str()) {
                        let _ = write!(text, ", {k} {}", scalar(v));
                    }
                }
            }
            line(out, 4, &format!("AG {ag}"), text);
        }
        let mut rest = view.clone();
        for k in ["node", "ags", "version", "peers"] {
            rest.remove(k);
        }
        unknown_fields(out, 4, &rest, &[]);
    }
    unknown_fields(out, 4, m, PEER_KNOWN);
}

/// The whole status for a person.
fn render(v: &Value, url: &str, now_unix: f64) -> String {
    let mut out = String::new();
    let empty = Map::new();
    let m = v.as_object().unwrap_or(&empty);
    let node = m.get("node").map_or("unknown".into(), scalar);
    let _ = write!(out, "node {node}");
    if let Some(ver) = m.get("version") {
        let _ = write!(out, " (tdsvip {})", scalar(ver));
    }
    let _ = writeln!(out, " at {url}");
    match m.get("ags") {
        Some(Value::Object(ags)) if !ags.is_empty() => {
            for (name, ag) in ags {
                out.push('\n');
                render_ag(&mut out, name, ag, now_unix);
            }
        }
        Some(Value::Object(_)) | None => out.push_str("\nno availability group configured\n"),
        Some(other) => generic(&mut out, 0, "ags", other),
    }
    match m.get("peers") {
        Some(Value::Object(peers)) if !peers.is_empty() => {
            out.push_str("\npeers\n");
            for (name, p) in peers {
                render_peer(&mut out, name, p, now_unix);
            }
        }
        Some(Value::Object(_)) | None => {}
        Some(other) => generic(&mut out, 0, "peers", other),
    }
    let mut other = String::new();
    unknown_fields(&mut other, 2, m, TOP_KNOWN);
    if !other.is_empty() {
        out.push_str("\nother\n");
        out.push_str(&other);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_like_the_agent_does() {
        assert_eq!(check_token("abc\r\n"), Ok("abc"));
        assert!(check_token("\n").is_err());
        assert!(check_token("a b").is_err());
        let t = pick_token(None, Some("envtoken\n".into()), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.value.as_str(), t.source.as_str()),
            ("envtoken", TOKEN_ENV)
        );
        let (arg, _) = pick_token(None, Some(String::new()), None).err().unwrap();
        assert_eq!(arg, TOKEN_ENV);
        let (arg, why) = pick_token(Some(Path::new("/nonexistent/t")), None, None)
            .err()
            .unwrap();
        assert_eq!(arg, "--token-file");
        assert!(why.contains("/nonexistent/t"), "{why}");
        assert!(pick_token(None, None, None).unwrap().is_none());
    }

    #[test]
    fn pretty_keeps_the_key_order_and_matches_serde_json() {
        // Keys already sorted, with every kind of value: the same text as serde_json's.
        let sorted = r#"{"a":[],"b":{},"c":[1,{"x":null,"y":"q\"{[,:]}\\"}],"d":-1500.0,"e":true, "f" : [ { } ]}"#;
        let v: Value = serde_json::from_str(sorted).unwrap();
        assert_eq!(pretty(sorted), serde_json::to_string_pretty(&v).unwrap());
        // Unsorted keys stay in their order, and the text means the same.
        let unsorted = r#"{"node":"n1","version":"1","ags":{"b":1,"a":2},"peers":{}}"#;
        let p = pretty(unsorted);
        assert_eq!(
            serde_json::from_str::<Value>(&p).unwrap(),
            serde_json::from_str::<Value>(unsorted).unwrap()
        );
        let at = |k: &str| p.find(k).unwrap();
        assert!(at("\"node\"") < at("\"version\"") && at("\"version\"") < at("\"ags\""));
        assert!(at("\"b\": 1") < at("\"a\": 2"), "{p}");
        assert!(p.contains("\n  \"peers\": {}\n}"), "{p}");
    }

    #[test]
    fn render_survives_unknown_and_odd_fields() {
        let v = serde_json::json!({
            "node": "n1",
            "ags": {
                "AG1": {
                    "state": "owner",
                    "replica_role": null,
                    "owned_addresses": "not-a-list",
                    "conflicts": 2,
                    "last_timeline": {"direction": "acquire", "decided": 0.5,
                        "phases": {"decide": 0.25, "tickle": 0.001}, "new_thing": [1, 2],
                        "unfinished": ["first_client_login"]}
                },
                "AG2": 7
            },
            "peers": {"n2": {"url": "http://n2", "error": "refused",
                "tracked_connections": [{"client": "10.0.0.9:5000", "port": 1433}]}},
            "future": {"a": [], "b": {"c": true}}
        });
        let s = render(&v, "http://x", 100.0);
        for needle in [
            "node n1 at http://x",
            "AG AG1: owner",
            "replica role      unknown",
            "owned addresses   \"not-a-list\"",
            "conflicts: 2",
            "+500.000 ms  decided: acquire",
            "decide 250.000 ms, tickle 1.000 ms",
            "new_thing: 1, 2",
            "never came        first_client_login",
            "AG2: 7",
            "n2 (http://n2): not checked yet",
            "error             refused",
            "tracked_connections: 1 entries",
            "- client=10.0.0.9:5000, port=1433",
            "future:",
            "a: none",
            "c: true",
        ] {
            assert!(s.contains(needle), "no {needle:?} in:\n{s}");
        }
    }
}
