//! After each trial: which acknowledged commits the new primary still has, what the old
//! primary discarded when it rejoined, and putting the old primary back as a SECONDARY (the
//! HA manager's part) so that the next trial starts from a steady AG.

use std::time::Duration;

use crate::inject::nft_clear;
use crate::lab::{Lab, Promote};
use crate::netns::OVERLAY;
use crate::scenario::{Scenario, sleep_ms};

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
pub(crate) fn restarts(scenario: Scenario) -> bool {
    matches!(
        scenario,
        Scenario::KillPrimary | Scenario::Loss | Scenario::CrashNode | Scenario::AsyncReplica
    )
}

/// `--promote agent`: the AG's REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT as the primary's
/// tds-sim reports it. Each sim starts with the lab's value and does not pass a change on,
/// so a promoted replica shows what its own agent set.
pub(crate) fn required_synchronized(lab: &Lab, primary: usize) -> Option<u64> {
    if lab.settings.promote != Promote::Agent {
        return None;
    }
    lab.sim_state(primary).ok()?["ag_state"]["required_synchronized_secondaries_to_commit"].as_u64()
}

pub(crate) fn discarded(lab: &Lab, node: usize) -> u64 {
    lab.sim_state(node)
        .ok()
        .and_then(|s| s["ag_state"]["discarded_on_rejoin"].as_u64())
        .unwrap_or(0)
}

/// Asks the primary which of the trial's acknowledged ids it has.
pub(crate) fn commit_result(
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
pub(crate) fn restore(
    lab: &mut Lab,
    scenario: Scenario,
    old: usize,
    primary: usize,
) -> Result<(), String> {
    if lab.settings.promote == Promote::Agent {
        crate::agent_drills::restore(lab, scenario, old)?;
        lab.wait_steady(primary, Duration::from_secs(10))?;
        // The next trial's fault may come within a second: a synchronous secondary still
        // catching up would be refused (41142) and the trial would show that, not the agents.
        for i in
            (0..lab.nodes.len()).filter(|&i| i != primary && Some(i) != lab.settings.async_node)
        {
            wait_synchronized(lab, i)?;
        }
        sleep_ms(500);
        return Ok(());
    }
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
        // The old node is a SECONDARY already; its agent comes back and releases what its
        // dead or frozen predecessor left.
        Scenario::KillAgentThenFailover => {
            lab.restart_agent(old)?;
        }
        Scenario::FreezeAgentThenFailover => lab.thaw_agent(old)?,
        Scenario::HangPrimary => {
            lab.sim_put(old, r#"{"fault":"none"}"#, "restore: fault cleared")?;
            lab.demote(old, false)?;
        }
        Scenario::PartitionPrimary => {
            lab.demote(old, false)?;
            nft_clear(&lab.nodes[old].ns.clone());
        }
        Scenario::CrashNode => reboot(lab, old)?,
        other => return Err(format!("{other} runs with --promote agent only")),
    }
    lab.wait_steady(primary, Duration::from_secs(10))?;
    // Let the restored node's agent settle (rise count, peer polls) before the next trial.
    sleep_ms(500);
    Ok(())
}

/// A crashed node comes back: kernel state is gone (the killed agent's address and pinned
/// guard with it), the link comes up, then its etcd member (with `--promote agent`), SQL
/// Server and the agent start (systemd's network-online ordering). With the lab promoting,
/// the lab makes the returning replica SECONDARY, as the HA manager would.
pub(crate) fn reboot(lab: &mut Lab, old: usize) -> Result<(), String> {
    lab.reap();
    lab.wipe_pins(old)?;
    let addrs = lab.node_cmd(old, &["ip", "-4", "addr", "show", "dev", "eth0"])?;
    if addrs.contains(&format!("{OVERLAY}/")) {
        lab.node_cmd(
            old,
            &["ip", "addr", "del", &format!("{OVERLAY}/32"), "dev", "eth0"],
        )?;
    }
    lab.node_cmd(old, &["ip", "link", "set", "eth0", "up"])?;
    if let Some(etcd) = lab.etcd.as_mut() {
        etcd.restart(old)?;
    }
    lab.start_sim(old, "SECONDARY")?;
    if lab.settings.promote == Promote::Lab {
        lab.demote(old, false)?;
    }
    lab.start_agent(old)
}
