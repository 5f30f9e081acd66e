//! What the lab prints and writes: the human timeline of each trial and the JSON summary
//! of a run, in the shape issue 5 specifies.

use serde_json::{Value, json};

use crate::lab::{Impl, Lab, Settings};
use crate::measure::dual_mac_samples;
use crate::measure::idle::ResetBy;
use crate::scenario::{Scenario, Trial};
use crate::stats::{Summary, summarize_optional};

/// The run's summary over its trials.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub implementation: Impl,
    pub scenario: Scenario,
    pub trials: usize,
    pub client_outage_ms: Summary,
    pub promotion_to_client_ms: Summary,
    /// Only the sessions tdsvip reset (tickle, SOCK_DESTROY); the others count as never.
    pub idle_session_reset_ms: Summary,
    pub idle_resets_by_tickle: usize,
    pub idle_resets_by_sock_destroy: usize,
    /// Closed by something else (a FIN, or an RST before either agent acted, e.g. the
    /// kernel of a killed sim), and when, relative to the takeover.
    pub idle_resets_not_by_tdsvip: usize,
    pub idle_reset_not_by_tdsvip_ms: Summary,
    pub route_tables_ms: Option<Summary>,
    pub dual_owner_samples: usize,
    /// Owner samples in which some node's read could not tell (see [`crate::sampler`]).
    pub unknown_samples: usize,
    /// The sampling error bound: per owner sample, first read start to last read end.
    pub owner_sample_spread_ms: Summary,
    /// ARP probes of the overlay IP answered by two MACs.
    pub arp_dual_mac_samples: usize,
    /// Failed client attempts after the client was served again, per trial, and in all.
    pub failed_after_first_success: Summary,
    pub failed_after_first_success_total: usize,
    /// Samples in which two sims would have acknowledged a commit, and samples in which
    /// unreadable sims could have made two.
    pub dual_primary_samples: usize,
    pub dual_primary_unknown_samples: usize,
    pub fenced_holder_samples: usize,
    pub non_primary_answers: usize,
    pub acked_commits: usize,
    pub lost_commits: usize,
    pub discarded_on_rejoin: u64,
    pub write_outage_ms: Summary,
    pub settings: Value,
}

pub fn settings_json(s: &Settings) -> Value {
    let mut v = json!({
        "nodes": s.nodes,
        "promote_delay_ms": s.promote_delay_ms,
        "client_every_ms": s.client_every_ms,
        "client_deadline_ms": s.client_deadline_ms,
        "owner_sample_ms": s.sample_ms,
        "idle_sessions": s.idle_sessions,
        "lease_ms": s.lease_ms,
        "flaps": s.flaps,
        "flap_interval_ms": s.flap_interval_ms,
        "promote": "lab",
        "session_timeout_ms": s.session_timeout_ms,
        "required_synchronized_secondaries_to_commit": s.required_synchronized,
        "writer_every_ms": s.writer_every_ms,
        "writer_deadline_ms": s.writer_deadline_ms,
        "write_lease_validity_s": s.write_lease_validity_s,
        "lease_renew_every_ms": s.lease_renew_every_ms,
        "primary_sample_ms": s.sample_ms,
    });
    match s.implementation {
        Impl::Tdsvip => {
            v["probe_interval_ms"] = json!(s.agent.interval_ms);
            if let Some(n) = s.cloud_tables {
                v["cloud"] = json!({"ec2": "moto_server", "route_tables": n});
            }
            v["probe_timeout_ms"] = json!(s.agent.timeout_ms);
            v["rise"] = json!(s.agent.rise);
            v["fall"] = json!(s.agent.fall);
        }
        Impl::Keepalived => {
            v["vrrp_version"] = json!(3);
            v["advert_int_s"] = json!(s.keepalived.advert_int);
            v["track_file_interval_ms"] = json!(s.agent.interval_ms);
            v["check_timeout_ms"] = json!(s.agent.timeout_ms);
            v["rise"] = json!(s.agent.rise);
            v["fall"] = json!(s.agent.fall);
            v["check"] = json!(
                "track_file kept by tdsvip probe --watch (one login session per node): 1 while the local replica is PRIMARY with its database ONLINE, else 0; weight 50"
            );
        }
        Impl::KeepalivedScript => {
            let k = s.keepalived;
            v["vrrp_version"] = json!(3);
            v["advert_int_s"] = json!(k.advert_int);
            v["vrrp_script_interval_s"] = json!(k.script_interval);
            v["vrrp_script_timeout_s"] = json!(k.script_timeout);
            v["vrrp_script_fall"] = json!(k.script_fall);
            v["vrrp_script_rise"] = json!(k.script_rise);
            v["check"] = json!(
                "tdsvip probe --mode login (login + role query), exit 0 only when the local replica is PRIMARY"
            );
            v["check_timeout_ms"] = json!(k.check_timeout_ms);
        }
    }
    v
}

pub fn summarize(lab: &Lab, scenario: Scenario, trials: &[Trial]) -> RunSummary {
    let all = |f: &dyn Fn(&Trial) -> Vec<Option<f64>>| -> Vec<Option<f64>> {
        trials.iter().flat_map(f).collect()
    };
    RunSummary {
        implementation: lab.settings.implementation,
        scenario,
        trials: trials.len(),
        client_outage_ms: summarize_optional(&all(&|t| t.result.client_outage.clone())),
        promotion_to_client_ms: summarize_optional(&all(&|t| t.result.promotion_to_client.clone())),
        idle_session_reset_ms: summarize_optional(&all(&|t| t.result.idle_reset.clone())),
        idle_resets_by_tickle: count_by(trials, ResetBy::Tickle),
        idle_resets_by_sock_destroy: count_by(trials, ResetBy::SockDestroy),
        idle_resets_not_by_tdsvip: count_by(trials, ResetBy::NotTdsvip),
        idle_reset_not_by_tdsvip_ms: summarize_optional(&all(&|t| {
            t.result.idle_reset_not_by_tdsvip.clone()
        })),
        route_tables_ms: lab
            .cloud
            .as_ref()
            .map(|_| summarize_optional(&all(&|t| t.route_tables.clone()))),
        dual_owner_samples: trials.iter().map(|t| t.result.dual_owner_samples).sum(),
        unknown_samples: trials.iter().map(|t| t.result.unknown_samples).sum(),
        owner_sample_spread_ms: crate::stats::summarize(
            &trials
                .iter()
                .flat_map(|t| t.result.owner_sample_spreads.iter().copied())
                .collect::<Vec<f64>>(),
        ),
        arp_dual_mac_samples: trials.iter().map(|t| dual_mac_samples(&t.arp)).sum(),
        failed_after_first_success: summarize_optional(&all(&|t| {
            vec![Some(t.result.failed_after_first_success as f64)]
        })),
        failed_after_first_success_total: trials
            .iter()
            .map(|t| t.result.failed_after_first_success)
            .sum(),
        dual_primary_samples: trials.iter().map(|t| t.primaries.dual).sum(),
        dual_primary_unknown_samples: trials.iter().map(|t| t.primaries.unknown).sum(),
        fenced_holder_samples: trials.iter().map(|t| t.result.fenced_holder_samples).sum(),
        non_primary_answers: trials.iter().map(|t| t.result.non_primary_answers).sum(),
        acked_commits: trials.iter().map(|t| t.commits.acked).sum(),
        lost_commits: trials.iter().map(|t| t.commits.lost.len()).sum(),
        discarded_on_rejoin: trials.iter().map(|t| t.discarded_on_rejoin).sum(),
        write_outage_ms: summarize_optional(&all(&|t| vec![t.commits.write_outage_ms])),
        settings: settings_json(&lab.settings),
    }
}

fn count_by(trials: &[Trial], by: ResetBy) -> usize {
    trials
        .iter()
        .flat_map(|t| &t.result.idle_reset_by)
        .filter(|b| **b == Some(by))
        .count()
}

impl RunSummary {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "impl": self.implementation.name(),
            "scenario": self.scenario.name(),
            "trials": self.trials,
            "client_outage_ms": self.client_outage_ms,
            "promotion_to_client_ms": self.promotion_to_client_ms,
            "idle_session_reset_ms": self.idle_session_reset_ms,
            "idle_resets_by_tickle": self.idle_resets_by_tickle,
            "idle_resets_by_sock_destroy": self.idle_resets_by_sock_destroy,
            "idle_resets_not_by_tdsvip": self.idle_resets_not_by_tdsvip,
            "idle_reset_not_by_tdsvip_ms": self.idle_reset_not_by_tdsvip_ms,
            "dual_owner_samples": self.dual_owner_samples,
            "unknown_samples": self.unknown_samples,
            "owner_sample_spread_ms": self.owner_sample_spread_ms,
            "arp_dual_mac_samples": self.arp_dual_mac_samples,
            "failed_attempts_after_first_success": {
                "per_trial": self.failed_after_first_success,
                "total": self.failed_after_first_success_total,
            },
            "dual_primary_samples": self.dual_primary_samples,
            "dual_primary_unknown_samples": self.dual_primary_unknown_samples,
            "fenced_holder_samples": self.fenced_holder_samples,
            "non_primary_answers": self.non_primary_answers,
            "acked_commits": self.acked_commits,
            "lost_commits": self.lost_commits,
            "discarded_on_rejoin": self.discarded_on_rejoin,
            "write_outage_ms": self.write_outage_ms,
            "settings": self.settings,
        });
        if let Some(r) = &self.route_tables_ms {
            v["route_tables_ms"] = json!(r);
        }
        v
    }
}

fn f(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

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
            "  new owner's agent timeline (/events, s from its own origin): detected {} decided {} local_primary_seen {} first_client_login {}\n",
            tl["detected"], tl["decided"], tl["local_primary_seen"], tl["first_client_login"]
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

pub fn summary_text(s: &RunSummary) -> String {
    let line = |name: &str, x: &Summary| {
        format!(
            "  {name:<24} p50 {:>7}  p90 {:>7}  p99 {:>7}  max {:>7}\n",
            f(x.p50),
            f(x.p90),
            f(x.p99),
            f(x.max)
        )
    };
    let mut out = format!(
        "{} / {}: {} trial(s)\n",
        s.implementation.name(),
        s.scenario,
        s.trials
    );
    out.push_str(&line("client outage ms", &s.client_outage_ms));
    out.push_str(&line("promotion->client ms", &s.promotion_to_client_ms));
    out.push_str(&line("idle reset by tdsvip ms", &s.idle_session_reset_ms));
    out.push_str(&format!(
        "  idle sessions reset by tickle {}, by SOCK_DESTROY {}, closed by others {}\n",
        s.idle_resets_by_tickle, s.idle_resets_by_sock_destroy, s.idle_resets_not_by_tdsvip
    ));
    out.push_str(&line("owner sample spread ms", &s.owner_sample_spread_ms));
    if let Some(r) = &s.route_tables_ms {
        out.push_str(&line("route tables ms", r));
    }
    out.push_str(&format!(
        "  dual-owner samples {} (unknown samples {}), ARP answered by two MACs {}, fenced-holder samples {}, non-primary answers {}\n",
        s.dual_owner_samples, s.unknown_samples, s.arp_dual_mac_samples, s.fenced_holder_samples, s.non_primary_answers
    ));
    out.push_str(&line("failed after served", &s.failed_after_first_success));
    out.push_str(&format!(
        "  dual-primary samples {} (unknown {})\n",
        s.dual_primary_samples, s.dual_primary_unknown_samples
    ));
    out.push_str(&line("write outage ms", &s.write_outage_ms));
    out.push_str(&format!(
        "  commits acknowledged {}, lost {}, discarded on rejoin {}\n",
        s.acked_commits, s.lost_commits, s.discarded_on_rejoin
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
