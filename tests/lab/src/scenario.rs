//! The drills: one trial of a scenario (the fault and promotion are `inject.rs`), how long it
//! watches, what it records, and (through `aftermath.rs`) how it puts the old primary back as
//! a SECONDARY before the next trial.

use std::str::FromStr;
use std::time::Duration;

use crate::aftermath::{commit_result, discarded, restarts, restore};
use crate::inject::{Injected, inject, nft_loss};
use crate::lab::{Impl, Lab};
use crate::measure::{Promotion, TrialInput, TrialResult, analyze};

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
    /// `--promote agent`: the primary's agent is frozen (SIGSTOP) for longer than its keys
    /// live; the other agents promote, and the old primary must stop writing first.
    FreezeAgent,
    /// `--promote agent`: etcd's raft leader is killed; no failover, no outage.
    EtcdLeaderKill,
    /// `--promote agent`: two of the three etcd members are killed for longer than the
    /// keys live, then restarted; no outage and no second primary (rule 5, failsafe).
    EtcdQuorumLoss,
    /// `--promote agent`: the synchronous secondary is gone when the primary dies, and only
    /// the asynchronous one is left: no automatic promotion, the reason reported; service
    /// comes back, without losing a commit, when the replicas do.
    NoSyncCandidate,
}

impl Scenario {
    pub const ALL: [Scenario; 15] = [
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
        Scenario::FreezeAgent,
        Scenario::EtcdLeaderKill,
        Scenario::EtcdQuorumLoss,
        Scenario::NoSyncCandidate,
    ];

    /// The scenarios only the agents can run (their fault is in the agents' own machinery).
    pub fn agents_only(self) -> bool {
        matches!(
            self,
            Scenario::FreezeAgent
                | Scenario::EtcdLeaderKill
                | Scenario::EtcdQuorumLoss
                | Scenario::NoSyncCandidate
        )
    }

    /// The scenarios the agents run (`--promote agent`); the others need the lab's failover.
    pub fn agents_run(self) -> bool {
        self.agents_only()
            || matches!(
                self,
                Scenario::KillPrimary
                    | Scenario::Switchover
                    | Scenario::Loss
                    | Scenario::HangPrimary
                    | Scenario::CrashNode
                    | Scenario::PartitionPrimary
                    | Scenario::KillAgent
            )
    }

    /// Whether the scenario needs an asynchronous replica (node 3).
    pub fn needs_async_replica(self) -> bool {
        matches!(self, Scenario::AsyncReplica | Scenario::NoSyncCandidate)
    }

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
    /// The new owner's acquire timeline of this trial from its `/events` (tdsvip only;
    /// `None` when none came within `TIMELINE_WAIT`).
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
    /// `--promote agent`: etcd's raft leader (member id) before the fault and after the
    /// watch, so that a trial in which etcd itself changed leaders is known as such.
    pub etcd_leaders: Option<(Option<u64>, Option<u64>)>,
    /// `--promote agent`: (node, reason) for each refusal an agent counted (no-sync-candidate).
    pub refusals: Vec<(usize, String)>,
    /// `--promote agent`: the primary's REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT after
    /// the trial, as its tds-sim reports it (the agents keep it).
    pub required_synchronized: Option<u64>,
    /// `--fence-aws`: the nodes whose instance moto had stopped (or was stopping) at the end
    /// of the trial; all were running before it.
    pub stopped_instances: Option<Vec<usize>>,
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
    if lab.settings.promote == crate::lab::Promote::Agent {
        crate::agent_drills::await_agents_may_promote(lab, Duration::from_secs(10))?;
    }
    let acquires_before = (0..lab.nodes.len()).map(|i| last_acquire(lab, i)).collect();
    let actions_before = lab.actions.len();
    let start = lab.clock.now();
    let idle = lab.client().open_idle(lab.settings.idle_sessions)?;
    if scenario == Scenario::Loss {
        nft_loss(lab, 30)?;
        let t = lab.clock.now();
        lab.actions
            .push((t, usize::MAX, "client link: 30 % random loss (nft)".into()));
    }
    // A random phase before the fault, so that periodic timers (probe intervals, keepalived's
    // once-a-second script) are not sampled at the same phase in every trial.
    sleep_ms(300 + random_below(1000));
    if let (true, Some(c)) = (lab.settings.fence_aws, &lab.cloud) {
        c.start_stopped_instances()?;
    }
    let etcd_before = lab.etcd.as_ref().map(|e| e.leader());
    let injected = inject(lab, scenario, old, new)?;
    watch(lab, scenario, &injected);
    let etcd_leaders = etcd_before.map(|b| (b, lab.etcd.as_ref().and_then(|e| e.leader())));
    let end = lab.clock.now();
    let window = Window {
        index,
        old,
        start,
        end,
        idle,
        actions_before,
        acquires_before,
    };
    let discarded_before = if restarts(scenario) {
        0
    } else {
        discarded(lab, old)
    };
    let mut trial = record(lab, scenario, window, injected)?;
    trial.etcd_leaders = etcd_leaders;
    trial.stopped_instances = crate::cloud::stopped_instances(lab)?;
    restore(lab, scenario, old, trial.new)?;
    trial.required_synchronized = crate::aftermath::required_synchronized(lab, trial.new);
    if scenario != Scenario::KillAgent {
        trial.discarded_on_rejoin = discarded(lab, old).saturating_sub(discarded_before);
    }
    Ok(trial)
}

/// Waits for the client to be served by the primary after the last promotion, then a little
/// longer for idle resets and stray answers from the old primary.
fn watch(lab: &Lab, scenario: Scenario, injected: &Injected) {
    let server = lab.nodes[injected.primary].server.clone();
    let last = injected
        .promotions
        .last()
        .map_or(injected.faults[0], |p| p.at);
    // A failover while the old owner's agent is dead or frozen waits for its lease.
    let serve_within = match scenario {
        Scenario::KillAgentThenFailover | Scenario::FreezeAgentThenFailover => {
            lab.settings.agent.lease_ms + 3000
        }
        _ => 3000,
    };
    wait_client(lab, &server, last, serve_within);
    // Without a failover, long enough to see a late one or a stray failure.
    sleep_ms(if injected.promotions.is_empty() {
        2000
    } else {
        700
    });
}

/// A trial's place in time and what it opened.
struct Window {
    index: usize,
    old: usize,
    start: f64,
    end: f64,
    idle: Vec<usize>,
    actions_before: usize,
    /// Each node's last acquire timeline before the fault (tdsvip only).
    acquires_before: Vec<Option<serde_json::Value>>,
}

/// Everything the samplers, the client, the writer and the agents recorded in the window.
fn record(
    lab: &mut Lab,
    scenario: Scenario,
    w: Window,
    injected: Injected,
) -> Result<Trial, String> {
    let Injected {
        faults,
        promotions,
        primary,
        refusals,
    } = injected;
    let (start, end) = (w.start, w.end);
    let server = lab.nodes[primary].server.clone();
    let attempts = lab.client().attempts_between(start, end);
    let owners = lab.samplers().owners_between(start, end);
    let idle_sessions = idle_sessions_of(lab, &w.idle);
    lab.client().close_idle();
    let result = analyze(&TrialInput {
        start,
        end,
        faults: faults.clone(),
        promotions: promotions.clone(),
        // Without a promotion the primary was meant to keep serving.
        steady_server: promotions.is_empty().then(|| server.clone()),
        attempts: &attempts,
        owners: &owners,
        idle: &idle_sessions,
    });
    let (owner_changes, guard_changes) = owner_and_guard_changes(&owners);
    let arp = lab.samplers().arp_between(start, end);
    let (route_tables, route_changes) = crate::cloud::route_results(lab, start, end, &promotions);
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
    Ok(Trial {
        scenario,
        index: w.index,
        old: w.old,
        new: primary,
        start,
        end,
        faults,
        promotions,
        idle: w.idle,
        result,
        timeline: new_owner_timeline(lab, primary, &w.acquires_before[primary]),
        actions: lab.actions[w.actions_before..].to_vec(),
        owner_changes,
        guard_changes,
        arp: arp.into_iter().map(|a| (a.at, a.macs)).collect(),
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
        etcd_leaders: None,
        refusals,
        required_synchronized: None,
        stopped_instances: None,
    })
}

/// The trial's idle sessions (by index into the client's list), as they ended.
fn idle_sessions_of(lab: &Lab, idle: &[usize]) -> Vec<crate::client::IdleSession> {
    let all = lab
        .client()
        .idle
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    idle.iter().filter_map(|&i| all.get(i).cloned()).collect()
}

/// Node `i`'s last acquire timeline from its `/events` (tdsvip only).
fn last_acquire(lab: &Lab, i: usize) -> Option<serde_json::Value> {
    if lab.settings.implementation != Impl::Tdsvip {
        return None;
    }
    let (_, body) = lab.agent_get(i, "/events").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v.as_array()?
        .iter()
        .rev()
        .find(|t| t["direction"] == "acquire")
        .cloned()
}

/// How long the lab waits for the new owner's acquire timeline after the watch window.
const TIMELINE_WAIT: Duration = Duration::from_secs(5);

/// The new owner's acquire timeline of this trial: one it did not have before the fault. An
/// acquire's timeline is published when complete, after the peers reported their first login
/// through the overlay IP (a poll interval or two after the client was served), so it is
/// waited for, up to [`TIMELINE_WAIT`].
fn new_owner_timeline(
    lab: &Lab,
    primary: usize,
    before: &Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    if lab.settings.implementation != Impl::Tdsvip {
        return None;
    }
    let give_up = std::time::Instant::now() + TIMELINE_WAIT;
    loop {
        let last = last_acquire(lab, primary);
        if last.is_some() && last != *before {
            return last;
        }
        if std::time::Instant::now() >= give_up {
            return None;
        }
        sleep_ms(50);
    }
}

type OwnerChanges = Vec<(f64, Vec<bool>)>;
type GuardChanges = Vec<(f64, Vec<crate::guard::GuardState>)>;

/// The owner samples where who owns, or a guard's state, changed.
fn owner_and_guard_changes(owners: &[crate::sampler::OwnerSample]) -> (OwnerChanges, GuardChanges) {
    let mut owner_changes: OwnerChanges = Vec::new();
    let mut guard_changes: GuardChanges = Vec::new();
    for o in owners {
        if owner_changes.last().map(|(_, v)| v) != Some(&o.owners) {
            owner_changes.push((o.at, o.owners.clone()));
        }
        if guard_changes.last().map(|(_, v)| v) != Some(&o.guard) {
            guard_changes.push((o.at, o.guard.clone()));
        }
    }
    (owner_changes, guard_changes)
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
    (crate::primaries::count(&samples, start, end), changes)
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
