//! A run's summary over its trials: the JSON object `bench` and `--json` write (the shape
//! issue 5 specifies, grown by later issues) and its text form. The per-trial human timeline
//! is `report.rs`.

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
    /// Fault → the first owner sample in which the old owner no longer owns (absent, or
    /// fenced by its guard).
    pub old_owner_gone_ms: Summary,
    /// The new owner agent's own timeline (tdsvip only): decision → its own first login
    /// through the overlay IP (the local route), and → the first one a peer agent made across
    /// the network and reported.
    pub agent_first_local_login_ms: Summary,
    pub agent_first_client_login_ms: Summary,
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
    /// `--promote agent`: trials in which etcd's leader changed (or could not be read).
    pub etcd_leader_changes: Option<usize>,
    /// Replicas made PRIMARY during the trials (by the lab or by the agents).
    pub promotions: usize,
    /// `--promote agent`: each distinct reason an agent counted a refusal for, with how
    /// many trials reported it.
    pub refusals: std::collections::BTreeMap<String, usize>,
    /// `--fence-aws`: trials that ended with the old primary's instance stopped, and with
    /// any other node's instance stopped (the latter must stay 0).
    pub fenced: Option<(usize, usize)>,
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
        "promote": s.promote.name(),
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
                v["cloud"] =
                    json!({"ec2": "moto_server", "route_tables": n, "fence_aws": s.fence_aws});
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
        old_owner_gone_ms: summarize_optional(&all(&|t| vec![old_owner_gone_ms(t)])),
        agent_first_local_login_ms: summarize_optional(&all(&|t| {
            vec![agent_phase_ms(t, "first_local_login")]
        })),
        agent_first_client_login_ms: summarize_optional(&all(&|t| {
            vec![agent_phase_ms(t, "first_client_login")]
        })),
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
        etcd_leader_changes: lab.etcd.as_ref().map(|_| {
            trials
                .iter()
                .filter(|t| t.etcd_leaders.is_some_and(|(a, b)| a.is_none() || a != b))
                .count()
        }),
        promotions: trials.iter().map(|t| t.promotions.len()).sum(),
        refusals: refusal_counts(trials),
        fenced: lab.settings.fence_aws.then(|| fenced_counts(trials)),
        settings: settings_json(&lab.settings),
    }
}

/// (trials whose old primary was stopped, trials in which another node was).
fn fenced_counts(trials: &[Trial]) -> (usize, usize) {
    let stopped = |t: &Trial| t.stopped_instances.clone().unwrap_or_default();
    let old = trials
        .iter()
        .filter(|t| stopped(t).contains(&t.old))
        .count();
    let others = trials
        .iter()
        .filter(|t| stopped(t).iter().any(|&n| n != t.old))
        .count();
    (old, others)
}

fn refusal_counts(trials: &[Trial]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for t in trials {
        let reasons: std::collections::BTreeSet<&String> =
            t.refusals.iter().map(|(_, r)| r).collect();
        for r in reasons {
            *out.entry(r.clone()).or_default() += 1;
        }
    }
    out
}

/// Fault → the first owner sample after it in which the old owner does not own; `None` when
/// it still owned at the end of the trial.
pub fn old_owner_gone_ms(t: &Trial) -> Option<f64> {
    let fault = *t.faults.first()?;
    t.owner_changes
        .iter()
        .find(|(at, owners)| *at >= fault && !owners.get(t.old).copied().unwrap_or(false))
        .map(|(at, _)| at - fault)
}

/// A phase of the new owner's agent timeline (`/events`), in milliseconds.
fn agent_phase_ms(t: &Trial, phase: &str) -> Option<f64> {
    let seconds = t.timeline.as_ref()?["phases"][phase].as_f64()?;
    Some(seconds * 1000.0)
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
            "old_owner_gone_ms": self.old_owner_gone_ms,
            "agent_first_local_login_ms": self.agent_first_local_login_ms,
            "agent_first_client_login_ms": self.agent_first_client_login_ms,
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
            "etcd_leader_changes": self.etcd_leader_changes,
            "promotions": self.promotions,
            "refusals": self.refusals,
            "settings": self.settings,
        });
        if let Some(r) = &self.route_tables_ms {
            v["route_tables_ms"] = json!(r);
        }
        if let Some((old, others)) = self.fenced {
            v["fenced_old_primary"] = json!(old);
            v["fenced_others"] = json!(others);
        }
        v
    }
}

pub(crate) fn f(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
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
    out.push_str(&line("old owner gone ms", &s.old_owner_gone_ms));
    if s.implementation == Impl::Tdsvip {
        out.push_str(&line("agent: own login ms", &s.agent_first_local_login_ms));
        out.push_str(&line(
            "agent: client login ms",
            &s.agent_first_client_login_ms,
        ));
    }
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
    out.push_str(&format!("  replicas promoted {}\n", s.promotions));
    if let Some(n) = s.etcd_leader_changes {
        out.push_str(&format!(
            "  trials in which etcd's own leader changed (or was unreadable): {n}\n"
        ));
    }
    if let Some((old, others)) = s.fenced {
        out.push_str(&format!(
            "  fence: old primary's instance stopped in {old} trial(s), another node's in {others}\n"
        ));
    }
    if !s.refusals.is_empty() {
        out.push_str(&format!(
            "  promotions refused by reason (trials): {:?}\n",
            s.refusals
        ));
    }
    out
}
