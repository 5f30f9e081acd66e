//! What the lab does to the primary in each scenario: the fault (a killed, hung, demoted,
//! crashed or cut-off primary; a killed or frozen agent; a lossy client link) and the
//! promotion of a secondary that follows it, the way SQL Server's failover machinery would.

use std::time::Duration;

use crate::lab::{Lab, Promote};
use crate::measure::Promotion;
use crate::netns::sh_stdin;
use crate::scenario::{Scenario, sleep_ms};

/// How long systemd waits before it restarts a dead agent (`RestartSec=` of the unit).
pub(crate) const RESTART_SEC_MS: u64 = 500;

/// What a trial's fault phase did.
pub(crate) struct Injected {
    /// When each fault took effect.
    pub faults: Vec<f64>,
    pub promotions: Vec<Promotion>,
    /// The primary afterwards.
    pub primary: usize,
    /// `--promote agent`: (node, reason) for each refusal an agent counted.
    pub refusals: Vec<(usize, String)>,
}

impl Injected {
    /// A fault after which `primary` is still the primary: nobody was promoted.
    pub(crate) fn without_promotion(fault: f64, primary: usize) -> Injected {
        Injected {
            faults: vec![fault],
            promotions: Vec::new(),
            primary,
            refusals: Vec::new(),
        }
    }
}

/// Injects `scenario`'s fault into primary `old` and promotes `new` where the scenario does.
pub(crate) fn inject(
    lab: &mut Lab,
    scenario: Scenario,
    old: usize,
    new: usize,
) -> Result<Injected, String> {
    if lab.settings.promote == Promote::Agent {
        return crate::agent_drills::inject(lab, scenario, old, new);
    }
    let mut done = Injected {
        faults: Vec::new(),
        promotions: Vec::new(),
        primary: new,
        refusals: Vec::new(),
    };
    let fault = match scenario {
        Scenario::KillPrimary | Scenario::Loss => lab.kill_sim(old),
        Scenario::AsyncReplica => kill_with_async_partner_stalled(lab, old, new)?,
        Scenario::Switchover => {
            wait_synchronized(lab, new)?;
            lab.demote(old, false)?
        }
        Scenario::HangPrimary => hang(lab, old)?,
        Scenario::CrashNode => crash_node(lab, old)?,
        Scenario::PartitionPrimary => partition(lab, old)?,
        Scenario::Flap => return flap(lab, scenario, old, new),
        Scenario::KillAgent => {
            let fault = lab.kill_agent(old);
            // As systemd brings it back (`RestartSec=500ms` in deploy/tdsvip.service).
            sleep_ms(RESTART_SEC_MS);
            lab.restart_agent(old)?;
            return Ok(Injected::without_promotion(fault, old));
        }
        Scenario::KillAgentThenFailover => agent_gone_then_failover(lab, old, new, false)?,
        Scenario::FreezeAgentThenFailover => agent_gone_then_failover(lab, old, new, true)?,
        other => return Err(format!("{other} runs with --promote agent only")),
    };
    done.faults.push(fault);
    promote(lab, scenario, new, &mut done.promotions)?;
    Ok(done)
}

/// Promotes `node` after the configured delay and records it.
fn promote(
    lab: &mut Lab,
    scenario: Scenario,
    node: usize,
    promotions: &mut Vec<Promotion>,
) -> Result<(), String> {
    sleep_ms(lab.settings.promote_delay_ms);
    let at = lab.promote(node, scenario == Scenario::AsyncReplica)?;
    promotions.push(Promotion {
        at,
        node,
        server: lab.nodes[node].server.clone(),
    });
    Ok(())
}

/// The asynchronous partner stops hardening first, or it is usually caught up and the loss
/// this drill must show would not happen; then the primary's SQL Server is killed.
fn kill_with_async_partner_stalled(lab: &mut Lab, old: usize, new: usize) -> Result<f64, String> {
    lab.sim_put(
        new,
        r#"{"replication":"stalled"}"#,
        "replication stalled (async partner)",
    )?;
    sleep_ms(300);
    Ok(lab.kill_sim(old))
}

/// The primary's SQL Server hangs after accepting connections. It cannot be demoted, so it
/// is fenced by its write lease: promoting before that expired made two replicas acknowledge
/// commits (dual-primary samples).
fn hang(lab: &mut Lab, old: usize) -> Result<f64, String> {
    let at = lab.sim_put(
        old,
        r#"{"fault":"hang_after_accept"}"#,
        "tds-sim hangs after accept",
    )?;
    lab.stop_renewing(old, "its SQL Server does not answer");
    lab.wait_lease_expired(old)?;
    Ok(at)
}

/// The whole node at once: link, agent and SQL Server; the fault time is when the link was
/// down (after the command returned).
pub(crate) fn crash_node(lab: &mut Lab, old: usize) -> Result<f64, String> {
    lab.node_cmd(old, &["ip", "link", "set", "eth0", "down"])?;
    let t = lab.clock.now();
    lab.actions.push((t, old, "eth0 down (node crash)".into()));
    lab.kill_node_processes(old);
    Ok(t)
}

/// The primary's node loses its network; its SQL Server stays PRIMARY for the lab's lease,
/// then goes RESOLVING (demoted as partitioned).
fn partition(lab: &mut Lab, old: usize) -> Result<f64, String> {
    nft_partition(lab, old)?;
    let t = lab.clock.now();
    lab.actions.push((
        t,
        old,
        "nft drops everything on eth0 (partition in effect)".into(),
    ));
    lab.stop_renewing(old, "partitioned from the majority");
    sleep_ms(lab.settings.lease_ms);
    lab.demote(old, true)?;
    Ok(t)
}

/// The primary role bounces between `old` and `new`, `flaps` times.
fn flap(lab: &mut Lab, scenario: Scenario, old: usize, new: usize) -> Result<Injected, String> {
    let (mut cur, mut other) = (old, new);
    let (mut faults, mut promotions) = (Vec::new(), Vec::new());
    for k in 0..lab.settings.flaps.max(1) {
        if k > 0 {
            sleep_ms(lab.settings.flap_interval_ms);
        }
        wait_synchronized(lab, other)?;
        faults.push(lab.demote(cur, false)?);
        promote(lab, scenario, other, &mut promotions)?;
        std::mem::swap(&mut cur, &mut other);
    }
    Ok(Injected {
        faults,
        promotions,
        primary: cur,
        refusals: Vec::new(),
    })
}

/// The owner's agent is killed (or frozen) and stays so; then SQL Server fails over.
fn agent_gone_then_failover(
    lab: &mut Lab,
    old: usize,
    new: usize,
    freeze: bool,
) -> Result<f64, String> {
    let at = if freeze {
        lab.freeze_agent(old)?
    } else {
        lab.kill_agent(old)
    };
    wait_synchronized(lab, new)?;
    lab.demote(old, false)?;
    Ok(at)
}

/// A planned role change waits, as an HA manager does, until the target replica has caught
/// up: SQL Server refuses `FAILOVER` to a replica that was not SYNCHRONIZED (41142). After a
/// previous role change, the demoted primary needs a moment to catch up before it can be
/// promoted back (flap), longer in a debug build on a loaded machine.
pub(crate) fn wait_synchronized(lab: &mut Lab, i: usize) -> Result<(), String> {
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

pub(crate) const NFT_TABLE: &str = "tdsviplab";

pub(crate) fn nft_partition(lab: &Lab, i: usize) -> Result<(), String> {
    let rules = format!(
        "table netdev {NFT_TABLE} {{\n  chain in {{ type filter hook ingress device \"eth0\" priority 0; policy drop; }}\n  chain out {{ type filter hook egress device \"eth0\" priority 0; policy drop; }}\n}}\n"
    );
    sh_stdin(
        &["ip", "netns", "exec", &lab.nodes[i].ns, "nft", "-f", "-"],
        &rules,
    )
}

/// Drops `percent` % of the client's packets either way.
pub(crate) fn nft_loss(lab: &Lab, percent: u32) -> Result<(), String> {
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
