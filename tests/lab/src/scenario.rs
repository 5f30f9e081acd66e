//! The drills: what the lab does to the primary in each scenario, how it promotes a
//! secondary (playing SQL Server's failover machinery), how long it watches, and how it puts
//! the old primary back as a SECONDARY before the next trial.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::lab::{Impl, Lab};
use crate::measure::{Promotion, TrialInput, TrialResult, analyze};
use crate::netns::{OVERLAY, sh_stdin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::KillPrimary,
        Scenario::Switchover,
        Scenario::HangPrimary,
        Scenario::CrashNode,
        Scenario::PartitionPrimary,
        Scenario::Flap,
        Scenario::Loss,
        Scenario::KillAgent,
        Scenario::AsyncReplica,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillPrimary => "kill-primary",
            Scenario::Switchover => "switchover",
            Scenario::HangPrimary => "hang-primary",
            Scenario::CrashNode => "crash-node",
            Scenario::PartitionPrimary => "partition-primary",
            Scenario::Flap => "flap",
            Scenario::Loss => "loss",
            Scenario::KillAgent => "kill-agent",
            Scenario::AsyncReplica => "async-replica",
        }
    }

    /// Scenarios whose idle sessions must be reset within 200 ms of the takeover.
    pub fn checks_idle_reset(self) -> bool {
        matches!(self, Scenario::KillPrimary | Scenario::Switchover)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

fn sleep_ms(ms: u64) {
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

fn nft_clear(ns: &str) {
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
            faults.push(lab.demote(old, false)?);
            promote(lab, new, &mut promotions)?;
        }
        Scenario::HangPrimary => {
            faults.push(lab.sim_put(
                old,
                r#"{"fault":"hang_after_accept"}"#,
                "tds-sim hangs after accept",
            )?);
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
                faults.push(lab.demote(cur, false)?);
                promote(lab, other, &mut promotions)?;
                std::mem::swap(&mut cur, &mut other);
            }
            primary = cur;
        }
        Scenario::KillAgent => {
            faults.push(lab.kill_agent(old));
            lab.restart_agent(old)?;
            primary = old;
        }
    }
    let server = lab.nodes[primary].server.clone();
    let last = promotions.last().map_or(faults[0], |p| p.at);
    wait_client(lab, &server, last, 3000);
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
    };
    restore(lab, scenario, old, primary)?;
    if scenario != Scenario::KillAgent {
        trial.discarded_on_rejoin = discarded(lab, old).saturating_sub(discarded_before);
    }
    Ok(trial)
}

/// Waits until node `i`'s database replica is SYNCHRONIZED with its primary.
fn wait_synchronized(lab: &Lab, i: usize) -> Result<(), String> {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = lab.sim_state(i)?;
        if s["ag_state"]["synchronization_state"] == "SYNCHRONIZED" {
            return Ok(());
        }
        if std::time::Instant::now() > end {
            return Err(format!(
                "node {} never became SYNCHRONIZED: {}",
                i + 1,
                s["ag_state"]
            ));
        }
        sleep_ms(10);
    }
}

/// Scenarios whose old primary's tds-sim is restarted (its counters start over).
fn restarts(scenario: Scenario) -> bool {
    matches!(
        scenario,
        Scenario::KillPrimary | Scenario::Loss | Scenario::CrashNode | Scenario::AsyncReplica
    )
}

fn discarded(lab: &Lab, node: usize) -> u64 {
    lab.sim_state(node)
        .ok()
        .and_then(|s| s["ag_state"]["discarded_on_rejoin"].as_u64())
        .unwrap_or(0)
}

/// Asks the primary which of the trial's acknowledged ids it has.
fn commit_result(
    lab: &Lab,
    primary: usize,
    start: f64,
    end: f64,
    fault: f64,
) -> Result<crate::writer::CommitResult, String> {
    let commits = lab.writer().between(start, end);
    let acked: Vec<i64> = commits
        .iter()
        .filter(|c| c.acked.is_some())
        .map(|c| c.id)
        .collect();
    let mut present = std::collections::BTreeSet::new();
    if let (Some(lo), Some(hi)) = (acked.iter().min(), acked.iter().max()) {
        let a = lab.tsql(
            primary,
            &format!("SELECT id FROM dbo.ledger WHERE id BETWEEN {lo} AND {hi}"),
        )?;
        for row in a.sets.into_iter().flatten() {
            if let Some(tds_codec::types::Value::Int(id)) = row.first() {
                present.insert(*id);
            }
        }
    }
    Ok(crate::writer::analyze(&commits, &present, fault))
}

/// Brings the old primary back as a SECONDARY (or healthy, for kill-agent) and waits
/// until `primary` is the steady owner.
fn restore(lab: &mut Lab, scenario: Scenario, old: usize, primary: usize) -> Result<(), String> {
    match scenario {
        // A restarted replica of an EXTERNAL AG comes back RESOLVING; the HA manager makes
        // it a secondary, and it catches up (discarding what the new primary never had).
        Scenario::KillPrimary => {
            lab.start_sim(old, "SECONDARY")?;
            lab.demote(old, false)?;
        }
        Scenario::Loss => {
            nft_clear(lab.client_ns());
            lab.start_sim(old, "SECONDARY")?;
            lab.demote(old, false)?;
        }
        Scenario::AsyncReplica => {
            lab.sim_put(
                primary,
                r#"{"replication":"running"}"#,
                "replication running",
            )?;
            lab.start_sim(old, "SECONDARY")?;
            lab.demote(old, false)?;
            // Fail back to the synchronous old primary once it is SYNCHRONIZED again, so
            // that the next trial again promotes the asynchronous replica.
            lab.wait_steady(primary, Duration::from_secs(10))?;
            wait_synchronized(lab, old)?;
            lab.demote(primary, false)?;
            lab.promote(old, false)?;
            lab.wait_steady(old, Duration::from_secs(10))?;
            sleep_ms(500);
            return Ok(());
        }
        Scenario::Switchover | Scenario::Flap | Scenario::KillAgent => {}
        Scenario::HangPrimary => {
            lab.sim_put(old, r#"{"fault":"none"}"#, "restore: fault cleared")?;
            lab.demote(old, false)?;
        }
        Scenario::PartitionPrimary => {
            lab.demote(old, false)?;
            nft_clear(&lab.nodes[old].ns.clone());
        }
        Scenario::CrashNode => {
            // A reboot: kernel state is gone (the killed agent's address with it), the link
            // comes up, then SQL Server and the agent start (as with systemd's
            // network-online ordering).
            lab.reap();
            let addrs = lab.node_cmd(old, &["ip", "-4", "addr", "show", "dev", "eth0"])?;
            if addrs.contains(&format!("{OVERLAY}/")) {
                lab.node_cmd(
                    old,
                    &["ip", "addr", "del", &format!("{OVERLAY}/32"), "dev", "eth0"],
                )?;
            }
            lab.node_cmd(old, &["ip", "link", "set", "eth0", "up"])?;
            lab.start_sim(old, "SECONDARY")?;
            lab.demote(old, false)?;
            lab.start_agent(old)?;
        }
    }
    lab.wait_steady(primary, Duration::from_secs(10))?;
    // Let the restored node's agent settle (rise count, peer polls) before the next trial.
    sleep_ms(500);
    Ok(())
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
