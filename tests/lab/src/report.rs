//! What the lab prints for each trial: the human timeline, times relative to the fault, with
//! the new owner's own agent timeline. The run's JSON summary is `summary.rs`.

use crate::lab::Lab;
use crate::measure::dual_mac_samples;
use crate::measure::idle::ResetBy;
use crate::scenario::Trial;
use crate::summary::f;

fn node_label(i: usize) -> String {
    if i == usize::MAX {
        "client".into()
    } else {
        format!("node{}", i + 1)
    }
}

/// The human timeline of one trial, times relative to the (first) fault.
pub fn timeline(lab: &Lab, t: &Trial) -> String {
    let t0 = t.faults.first().copied().unwrap_or(t.start);
    let rel = |x: f64| format!("{:+9.1} ms", x - t0);
    let mut lines: Vec<(f64, String)> = Vec::new();
    for (at, node, what) in &t.actions {
        lines.push((
            *at,
            format!("{}  lab: {} {what}", rel(*at), node_label(*node)),
        ));
    }
    for (at, owners) in &t.owner_changes {
        let who: Vec<String> = owners
            .iter()
            .enumerate()
            .filter(|(_, o)| **o)
            .map(|(i, _)| format!("node{}", i + 1))
            .collect();
        let who = if who.is_empty() {
            "nobody".to_owned()
        } else {
            who.join(" + ")
        };
        lines.push((*at, format!("{}  owner sample: {who}", rel(*at))));
    }
    for (at, guards) in &t.guard_changes {
        let states: Vec<String> = guards
            .iter()
            .enumerate()
            .map(|(i, g)| format!("node{} {}", i + 1, g.label()))
            .collect();
        lines.push((
            *at,
            format!("{}  guard sample: {}", rel(*at), states.join(", ")),
        ));
    }
    let mac_node = |m: &str| {
        lab.nodes
            .iter()
            .position(|n| n.mac.eq_ignore_ascii_case(m))
            .map_or(m.to_owned(), |i| format!("node{}", i + 1))
    };
    let mut last_arp: Option<Vec<String>> = None;
    for (at, macs) in &t.arp {
        let who: Vec<String> = macs.iter().map(|m| mac_node(m)).collect();
        if last_arp.as_ref() != Some(&who) {
            let text = if who.is_empty() {
                "no answer".into()
            } else {
                who.join(" + ")
            };
            lines.push((*at, format!("{}  ARP from client: {text}", rel(*at))));
            last_arp = Some(who);
        }
    }
    for (at, targets) in &t.route_changes {
        let who: Vec<String> = targets
            .iter()
            .map(|x| match x {
                None => "none".to_owned(),
                Some(eni) => lab
                    .cloud
                    .as_ref()
                    .and_then(|c| c.enis.iter().position(|e| e == eni))
                    .map_or(eni.clone(), |i| format!("node{}", i + 1)),
            })
            .collect();
        lines.push((
            *at,
            format!("{}  route tables point at: {}", rel(*at), who.join(", ")),
        ));
    }
    for (k, p) in t.promotions.iter().enumerate() {
        if let Some(s) = t.result.settle.get(k).copied().flatten() {
            lines.push((
                s,
                format!(
                    "{}  client: first ok answer from {} as PRIMARY ({} ms after its promotion)",
                    rel(s),
                    p.server,
                    f(Some(s - p.at))
                ),
            ));
        } else {
            lines.push((
                p.at,
                format!(
                    "{}  client: NO ok answer from {} after its promotion",
                    rel(p.at),
                    p.server
                ),
            ));
        }
    }
    for (k, (opened, closed)) in t.idle_sessions.iter().enumerate() {
        let by = match t.result.idle_reset_by.get(k).copied().flatten() {
            Some(ResetBy::Tickle) => "the new owner's tickle",
            Some(ResetBy::SockDestroy) => "the old owner's SOCK_DESTROY",
            _ => "not tdsvip",
        };
        match closed {
            Some((at, how)) => lines.push((
                *at,
                format!(
                    "{}  idle session {k} (opened {}) closed: {how} (by {by})",
                    rel(*at),
                    rel(*opened).trim()
                ),
            )),
            None => lines.push((
                t.end,
                format!(
                    "{}  idle session {k}: never reset in the window",
                    rel(t.end)
                ),
            )),
        }
    }
    lines.extend(ag_lines(t, &rel));
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = format!(
        "trial {} ({}): node{} -> node{}\n",
        t.index + 1,
        t.scenario,
        t.old + 1,
        t.new + 1
    );
    for (_, l) in lines {
        out.push_str("  ");
        out.push_str(&l);
        out.push('\n');
    }
    if let Some(tl) = &t.timeline {
        out.push_str(&format!(
            "  new owner's agent timeline (/events, s from its own origin): detected {} decided {} local_primary_seen {} first_local_login {} first_client_login {} (by {})\n",
            tl["detected"],
            tl["decided"],
            tl["local_primary_seen"],
            tl["first_local_login"],
            tl["first_client_login"],
            tl["first_client_login_by"]
        ));
        if let Some(steps) = tl["node_steps"].as_array() {
            for s in steps {
                out.push_str(&format!(
                    "    step {:<8} at {:.6} s  took {:.3} ms  ok={}  {}\n",
                    s["name"].as_str().unwrap_or("?"),
                    s["at"].as_f64().unwrap_or(f64::NAN),
                    s["duration"].as_f64().unwrap_or(f64::NAN) * 1000.0,
                    s["ok"],
                    s["detail"].as_str().unwrap_or("")
                ));
            }
        }
        out.push_str(&format!("    phases (s): {}\n", tl["phases"]));
    }
    let r = &t.result;
    out.push_str(&format!(
        "  => promotion->client {:?} ms, outage {:?} ms, takeover {} ms after the fault, idle resets by tdsvip after takeover {:?} ms (closed by others {:?}), dual-owner samples {} (unknown samples {}, sample spread max {} ms), ARP answered by two MACs {}, fenced-holder samples {}, non-primary answers after settle {} (before settle {}), failed attempts {} ({} after the client was served again)\n",
        r.promotion_to_client.iter().map(|x| f(*x)).collect::<Vec<_>>(),
        r.client_outage.iter().map(|x| f(*x)).collect::<Vec<_>>(),
        f(r.takeover.map(|x| x - t0)),
        r.idle_reset.iter().map(|x| f(*x)).collect::<Vec<_>>(),
        r.idle_reset_not_by_tdsvip
            .iter()
            .map(|x| f(*x))
            .collect::<Vec<_>>(),
        r.dual_owner_samples,
        r.unknown_samples,
        f(r.owner_sample_spreads.iter().copied().reduce(f64::max)),
        dual_mac_samples(&t.arp),
        r.fenced_holder_samples,
        r.non_primary_answers,
        r.non_primary_before_settle,
        r.failed_attempts,
        r.failed_after_first_success,
    ));
    out.push_str(&format!(
        "  => sims: {} samples, {} with two that would acknowledge a commit, {} unknown; lease renewals {} (slowest {} ms), {} failed\n",
        t.primaries.samples,
        t.primaries.dual,
        t.primaries.unknown,
        t.lease_renewals.len(),
        f(t.lease_renewals.iter().map(|r| r.took_ms).reduce(f64::max)),
        t.lease_failures.len()
    ));
    out.push_str(&format!(
        "  => writer: {} commits acknowledged, {} lost {:?}, write outage {} ms, old primary discarded {} on rejoin\n",
        t.commits.acked,
        t.commits.lost.len(),
        t.commits.lost.iter().take(5).collect::<Vec<_>>(),
        f(t.commits.write_outage_ms),
        t.discarded_on_rejoin,
    ));
    out
}

/// Timeline lines of the sims' would-acknowledge samples (on change) and of failed lease
/// renewals.
fn ag_lines(t: &Trial, rel: &dyn Fn(f64) -> String) -> Vec<(f64, String)> {
    let mut lines = Vec::new();
    for (at, nodes) in &t.primary_changes {
        let who: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, r)| format!("node{} {}", i + 1, r.label()))
            .collect();
        lines.push((
            *at,
            format!("{}  would-acknowledge sample: {}", rel(*at), who.join(", ")),
        ));
    }
    lines.extend(write_failure_lines(t, rel));
    for (start, end, outcome) in &t.result.failures {
        lines.push((
            *start,
            format!(
                "{}  client: attempt failed ({outcome}) after {:.1} ms",
                rel(*start),
                end - start
            ),
        ));
    }
    for f in &t.lease_failures {
        lines.push((
            f.at,
            format!(
                "{}  lab: node{} lease renewal FAILED: {}",
                rel(f.at),
                f.node + 1,
                f.error
            ),
        ));
    }
    lines
}

/// The writer's failures from just before the fault: the first ones one by one, then a
/// count of the rest (the anatomy of the write outage).
fn write_failure_lines(t: &Trial, rel: &dyn Fn(f64) -> String) -> Vec<(f64, String)> {
    let t0 = t.faults.first().copied().unwrap_or(t.start);
    let after: Vec<&crate::writer::WriteFailure> = t
        .write_failures
        .iter()
        .filter(|f| f.at >= t0 - 50.0)
        .collect();
    let mut lines: Vec<(f64, String)> = after
        .iter()
        .take(12)
        .map(|f| {
            (
                f.at,
                format!(
                    "{}  writer: {} failed after {:.1} ms: {}",
                    rel(f.at),
                    if f.what.starts_with("login") {
                        "login"
                    } else {
                        "commit"
                    },
                    f.took_ms,
                    f.what
                ),
            )
        })
        .collect();
    if let Some(last) = after.get(12..).and_then(|r| r.last()) {
        lines.push((
            last.at,
            format!(
                "{}  writer: {} more failures up to here",
                rel(last.at),
                after.len() - 12
            ),
        ));
    }
    lines
}
