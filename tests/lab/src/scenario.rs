//! The drills: what the lab does to the primary in each scenario, how it promotes a
//! secondary (playing SQL Server's failover machinery), how long it watches, and how it puts
//! the old primary back as a SECONDARY before the next trial.

use std::str::FromStr;
use std::time::Duration;

use crate::aftermath::{commit_result, discarded, restarts, restore};
use crate::lab::{Impl, Lab};
use crate::measure::{Promotion, TrialInput, TrialResult, analyze};
use crate::netns::sh_stdin;

/// How long systemd waits before it restarts a dead agent (`RestartSec=` of the unit).
const RESTART_SEC_MS: u64 = 500;

/// A drill; its kebab-case name is the `--scenario` value and what reports print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum Scenario {
    KillPrimary,
    Switchover,
    HangPrimary,
    CrashNode,
    PartitionPrimary,
    Flap,
    Loss,
    KillAgent,
    AsyncReplica,
    /// The owner's agent is killed (and stays dead), then SQL Server fails over: the old
    /// node's pinned guard must fence the address by itself when its lease runs out, and the
    /// new owner must wait for that (its node still answers) and no longer.
    KillAgentThenFailover,
    /// The same with the owner's agent frozen (SIGSTOP) instead of killed.
    FreezeAgentThenFailover,
}

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::KillPrimary,
        Scenario::Switchover,
        Scenario::HangPrimary,
        Scenario::CrashNode,
        Scenario::PartitionPrimary,
        Scenario::Flap,
        Scenario::Loss,
        Scenario::KillAgent,
        Scenario::AsyncReplica,
        Scenario::KillAgentThenFailover,
        Scenario::FreezeAgentThenFailover,
    ];

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Scenarios whose idle sessions must be reset within 200 ms of the takeover.
    pub fn checks_idle_reset(self) -> bool {
        matches!(self, Scenario::KillPrimary | Scenario::Switchover)
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .iter()
            .copied()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|x| x.name()).collect();
                format!(
                    "unknown scenario '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Everything recorded about one trial.
#[derive(Debug, Clone)]
pub struct Trial {
    pub scenario: Scenario,
    pub index: usize,
    pub old: usize,
    /// The node that is primary at the end.
    pub new: usize,
    pub start: f64,
    pub end: f64,
    pub faults: Vec<f64>,
    pub promotions: Vec<Promotion>,
    pub idle: Vec<usize>,
    pub result: TrialResult,
    /// The new owner's last acquire timeline from its `/events` (tdsvip only).
    pub timeline: Option<serde_json::Value>,
    /// Lab actions during the trial: (time, node, what).
    pub actions: Vec<(f64, usize, String)>,
    /// Owner changes seen by the sampler: (time, owners).
    pub owner_changes: Vec<(f64, Vec<bool>)>,
    /// Changes of the nodes' eBPF guard states for the overlay IP: (time, states).
    pub guard_changes: Vec<(f64, Vec<crate::guard::GuardState>)>,
    /// ARP answers seen from the client: (time, MACs).
    pub arp: Vec<(f64, Vec<String>)>,
    /// `--cloud`: per promotion, ms until every route table pointed at the new owner's ENI.
    pub route_tables: Vec<Option<f64>>,
    /// `--cloud`: route-table changes seen by the lab: (time, target per table).
    pub route_changes: Vec<(f64, Vec<Option<String>>)>,
    /// Idle sessions: (opened, closed at and how).
    pub idle_sessions: Vec<(f64, Option<(f64, String)>)>,
    /// The writer's commits in the trial, checked against the new primary.
    pub commits: crate::writer::CommitResult,
    /// Transactions the old primary discarded when it rejoined (from its tds-sim).
    pub discarded_on_rejoin: u64,
    /// Samples of which sims would acknowledge a commit: counts, and their changes.
    pub primaries: crate::primaries::PrimaryCount,
    pub primary_changes: Vec<(f64, Vec<crate::primaries::Reading>)>,
    /// Write-lease renewals during the trial: those that succeeded and those that failed.
    pub lease_renewals: Vec<crate::lease::Renewal>,
    pub lease_failures: Vec<crate::lease::RenewFailure>,
    /// The writer's failed logins and commits during the trial.
    pub write_failures: Vec<crate::writer::WriteFailure>,
}

/// Uniform in 0..n from /dev/urandom (0 if it cannot be read).
fn random_below(n: u64) -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() || n == 0 {
        return 0;
    }
    u64::from_le_bytes(b) % n
}

pub(crate) fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

const NFT_TABLE: &str = "tdsviplab";

fn nft_partition(lab: &Lab, i: usize) -> Result<(), String> {
    let rules = format!(
        "table netdev {NFT_TABLE} {{\n  chain in {{ type filter hook ingress device \"eth0\" priority 0; policy drop; }}\n  chain out {{ type filter hook egress device \"eth0\" priority 0; policy drop; }}\n}}\n"
    );
    sh_stdin(
        &["ip", "netns", "exec", &lab.nodes[i].ns, "nft", "-f", "-"],
        &rules,
    )
}

fn nft_loss(lab: &Lab, percent: u32) -> Result<(), String> {
    let rules = format!(
        "table inet {NFT_TABLE} {{\n  chain in {{ type filter hook input priority 0; iifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n  chain out {{ type filter hook output priority 0; oifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n}}\n"
    );
    sh_stdin(
        &["ip", "netns", "exec", lab.client_ns(), "nft", "-f", "-"],
        &rules,
    )
}

pub(crate) fn nft_clear(ns: &str) {
    for family in ["netdev", "inet"] {
        let _ = crate::netns::sh(&[
            "ip", "netns", "exec", ns, "nft", "delete", "table", family, NFT_TABLE,
        ]);
    }
}

/// Waits until the client sees `server` answer as PRIMARY after `after`, up to `limit_ms`.
fn wait_client(lab: &Lab, server: &str, after: f64, limit_ms: u64) -> bool {
    let end = std::time::Instant::now() + Duration::from_millis(limit_ms);
    while std::time::Instant::now() < end {
        let now = lab.clock.now();
        if lab
            .client()
            .attempts_between(after - 100.0, now)
            .iter()
            .any(|a| a.end > after && a.outcome == "ok" && a.primary_answer_from(server))
        {
            return true;
        }
        sleep_ms(5);
    }
    false
}

/// Runs one trial with `old` as the primary; returns it (its `new` is the primary after).
pub fn run_trial(
    lab: &mut Lab,
    scenario: Scenario,
    index: usize,
    old: usize,
    new: usize,
) -> Result<Trial, String> {
    lab.wait_steady(old, Duration::from_secs(10))?;
    let s = lab.settings.clone();
    let actions_before = lab.actions.len();
    let start = lab.clock.now();
    let idle = lab.client().open_idle(s.idle_sessions)?;
    if scenario == Scenario::Loss {
        nft_loss(lab, 30)?;
        let t = lab.clock.now();
        lab.actions
            .push((t, usize::MAX, "client link: 30 % random loss (nft)".into()));
    }
    // A random phase before the fault, so that periodic timers (probe intervals, keepalived's
    // once-a-second script) are not sampled at the same phase in every trial.
    sleep_ms(300 + random_below(1000));
    let mut faults = Vec::new();
    let mut promotions = Vec::new();
    let mut primary = new;
    let promote =
        |lab: &mut Lab, node: usize, promotions: &mut Vec<Promotion>| -> Result<(), String> {
            sleep_ms(s.promote_delay_ms);
            let at = lab.promote(node, scenario == Scenario::AsyncReplica)?;
            promotions.push(Promotion {
                at,
                node,
                server: lab.nodes[node].server.clone(),
            });
            Ok(())
        };
    match scenario {
        Scenario::KillPrimary | Scenario::Loss => {
            faults.push(lab.kill_sim(old));
            promote(lab, new, &mut promotions)?;
        }
        Scenario::AsyncReplica => {
            // The asynchronous partner stops hardening first, or it is usually caught up
            // and the loss this drill must show would not happen.
            lab.sim_put(
                new,
                r#"{"replication":"stalled"}"#,
                "replication stalled (async partner)",
            )?;
            sleep_ms(300);
            faults.push(lab.kill_sim(old));
            promote(lab, new, &mut promotions)?;
        }
        Scenario::Switchover => {
            wait_synchronized(lab, new)?;
            faults.push(lab.demote(old, false)?);
            promote(lab, new, &mut promotions)?;
        }
        Scenario::HangPrimary => {
            faults.push(lab.sim_put(
                old,
                r#"{"fault":"hang_after_accept"}"#,
                "tds-sim hangs after accept",
            )?);
            lab.stop_renewing(old, "its SQL Server does not answer");
            // It cannot be demoted, so it is fenced by its lease: promoting before it
            // expired made two replicas acknowledge commits (dual-primary samples).
            lab.wait_lease_expired(old)?;
            promote(lab, new, &mut promotions)?;
        }
        Scenario::CrashNode => {
            // The whole node at once: link, agent and SQL Server; the fault time is when
            // the link was down (after the command returned).
            lab.node_cmd(old, &["ip", "link", "set", "eth0", "down"])?;
            let t = lab.clock.now();
            lab.actions.push((t, old, "eth0 down (node crash)".into()));
            faults.push(t);
            lab.kill_node_processes(old);
            promote(lab, new, &mut promotions)?;
        }
        Scenario::PartitionPrimary => {
            nft_partition(lab, old)?;
            let t = lab.clock.now();
            lab.actions.push((
                t,
                old,
                "nft drops everything on eth0 (partition in effect)".into(),
            ));
            faults.push(t);
            lab.stop_renewing(old, "partitioned from the majority");
            sleep_ms(s.lease_ms);
            lab.demote(old, true)?;
            promote(lab, new, &mut promotions)?;
        }
        Scenario::Flap => {
            let (mut cur, mut other) = (old, new);
            for k in 0..s.flaps.max(1) {
                if k > 0 {
                    sleep_ms(s.flap_interval_ms);
                }
                wait_synchronized(lab, other)?;
                faults.push(lab.demote(cur, false)?);
                promote(lab, other, &mut promotions)?;
                std::mem::swap(&mut cur, &mut other);
            }
            primary = cur;
        }
        Scenario::KillAgent => {
            faults.push(lab.kill_agent(old));
            // As systemd brings it back (`RestartSec=500ms` in deploy/tdsvip.service).
            sleep_ms(RESTART_SEC_MS);
            lab.restart_agent(old)?;
            primary = old;
        }
        Scenario::KillAgentThenFailover | Scenario::FreezeAgentThenFailover => {
            faults.push(if scenario == Scenario::KillAgentThenFailover {
                lab.kill_agent(old)
            } else {
                lab.freeze_agent(old)?
            });
            wait_synchronized(lab, new)?;
            lab.demote(old, false)?;
            promote(lab, new, &mut promotions)?;
        }
    }
    let server = lab.nodes[primary].server.clone();
    let last = promotions.last().map_or(faults[0], |p| p.at);
    // A failover while the old owner's agent is dead or frozen waits for its lease.
    let serve_within = match scenario {
        Scenario::KillAgentThenFailover | Scenario::FreezeAgentThenFailover => {
            lab.settings.agent.lease_ms + 3000
        }
        _ => 3000,
    };
    wait_client(lab, &server, last, serve_within);
    // Watch a little longer: idle resets, stray answers from the old primary.
    sleep_ms(if scenario == Scenario::KillAgent {
        2000
    } else {
        700
    });
    let end = lab.clock.now();

    let attempts = lab.client().attempts_between(start, end);
    let owners = lab.samplers().owners_between(start, end);
    let idle_sessions: Vec<crate::client::IdleSession> = {
        let all = lab
            .client()
            .idle
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        idle.iter().filter_map(|&i| all.get(i).cloned()).collect()
    };
    lab.client().close_idle();
    let result = analyze(&TrialInput {
        start,
        end,
        faults: faults.clone(),
        promotions: promotions.clone(),
        steady_server: (scenario == Scenario::KillAgent).then(|| server.clone()),
        attempts: &attempts,
        owners: &owners,
        idle: &idle_sessions,
    });
    let timeline = if lab.settings.implementation == Impl::Tdsvip {
        lab.agent_get(primary, "/events")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| {
                v.as_array().and_then(|a| {
                    a.iter()
                        .rev()
                        .find(|t| t["direction"] == "acquire")
                        .cloned()
                })
            })
    } else {
        None
    };
    let mut owner_changes: Vec<(f64, Vec<bool>)> = Vec::new();
    let mut guard_changes: Vec<(f64, Vec<crate::guard::GuardState>)> = Vec::new();
    for o in &owners {
        if owner_changes.last().map(|(_, v)| v) != Some(&o.owners) {
            owner_changes.push((o.at, o.owners.clone()));
        }
        if guard_changes.last().map(|(_, v)| v) != Some(&o.guard) {
            guard_changes.push((o.at, o.guard.clone()));
        }
    }
    let arp = lab
        .samplers()
        .arp_between(start, end)
        .into_iter()
        .map(|a| (a.at, a.macs))
        .collect();
    let (route_tables, route_changes) = match &lab.cloud {
        None => (Vec::new(), Vec::new()),
        Some(c) => {
            let samples: Vec<(f64, Vec<Option<String>>)> = c
                .samples_between(start, end)
                .into_iter()
                .map(|s| (s.at, s.targets))
                .collect();
            let per: Vec<Option<f64>> = promotions
                .iter()
                .map(|p| crate::measure::routes_converged(&samples, p.at, &c.enis[p.node]))
                .collect();
            let mut changes: Vec<(f64, Vec<Option<String>>)> = Vec::new();
            for s in samples {
                if changes.last().map(|(_, t)| t) != Some(&s.1) {
                    changes.push(s);
                }
            }
            (per, changes)
        }
    };
    let commits = commit_result(lab, primary, start, end, faults[0])?;
    let (primaries, primary_changes) = primary_samples(lab, start, end);
    let (lease_renewals, lease_failures) = lab
        .lease
        .as_ref()
        .map(|l| {
            (
                l.renewals_between(start, end),
                l.failures_between(start, end),
            )
        })
        .unwrap_or_default();
    let discarded_before = if restarts(scenario) {
        0
    } else {
        discarded(lab, old)
    };
    let mut trial = Trial {
        scenario,
        index,
        old,
        new: primary,
        start,
        end,
        faults,
        promotions,
        idle,
        result,
        timeline,
        actions: lab.actions[actions_before..].to_vec(),
        owner_changes,
        guard_changes,
        arp,
        route_tables,
        route_changes,
        idle_sessions: idle_sessions
            .into_iter()
            .map(|s| (s.opened, s.closed))
            .collect(),
        commits,
        discarded_on_rejoin: 0,
        primaries,
        primary_changes,
        lease_renewals,
        lease_failures,
        write_failures: crate::clock::between(&lab.writer().failures, start, end),
    };
    restore(lab, scenario, old, primary)?;
    if scenario != Scenario::KillAgent {
        trial.discarded_on_rejoin = discarded(lab, old).saturating_sub(discarded_before);
    }
    Ok(trial)
}

type PrimaryChanges = Vec<(f64, Vec<crate::primaries::Reading>)>;

/// The trial's would-acknowledge samples: their counts and where they changed.
fn primary_samples(
    lab: &Lab,
    start: f64,
    end: f64,
) -> (crate::primaries::PrimaryCount, PrimaryChanges) {
    let samples = lab
        .primaries
        .as_ref()
        .map(|p| p.between(start, end))
        .unwrap_or_default();
    let mut changes: PrimaryChanges = Vec::new();
    for x in &samples {
        if changes.last().map(|(_, v)| v) != Some(&x.nodes) {
            changes.push((x.at, x.nodes.clone()));
        }
    }
    (crate::primaries::count(&samples), changes)
}

/// Runs `trials` trials, alternating the primary between nodes 1 and 2.
pub fn run(lab: &mut Lab, scenario: Scenario, trials: usize) -> Result<Vec<Trial>, String> {
    let mut out = Vec::new();
    let mut primary = lab.sole_owner().unwrap_or(0);
    for k in 0..trials {
        let other = if scenario == Scenario::AsyncReplica {
            // The asynchronous replica (node 3) is the one promoted.
            2
        } else if primary == 0 {
            1
        } else {
            0
        };
        let t = run_trial(lab, scenario, k, primary, other)?;
        if scenario != Scenario::AsyncReplica {
            primary = t.new;
        }
        out.push(t);
    }
    Ok(out)
}

/// A planned role change waits, as an HA manager does, until the target replica has caught
/// up: SQL Server refuses `FAILOVER` to a replica that was not SYNCHRONIZED (41142). After a
/// previous role change, the demoted primary needs a moment to catch up before it can be
/// promoted back (flap), longer in a debug build on a loaded machine.
fn wait_synchronized(lab: &mut Lab, i: usize) -> Result<(), String> {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = lab.sim_state(i)?;
        if state["ag_state"]["synchronization_state"] == "SYNCHRONIZED" {
            return Ok(());
        }
        if std::time::Instant::now() > end {
            return Err(format!(
                "node {}: not SYNCHRONIZED 5 s after it was chosen for a planned failover ({})",
                i + 1,
                state["ag_state"]["synchronization_state"]
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
