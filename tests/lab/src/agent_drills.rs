//! `--promote agent`: what the lab does in each scenario when the agents run the failover.
//! The lab injects the fault and then only watches: which replica the agents made PRIMARY,
//! and when, it learns from the sims. Afterwards it restarts what a fault killed, as systemd
//! would (or lifts a hang), and checks that the old node's agent itself made its replica
//! SECONDARY again.

use std::time::{Duration, Instant};

use crate::inject::{Injected, RESTART_SEC_MS, crash_node, nft_clear, nft_partition};
use crate::lab::Lab;
use crate::measure::Promotion;
use crate::scenario::{Scenario, sleep_ms};

/// How long the lab waits for the agents to promote after a fault that calls for it: a dead
/// node's keys outlive it by up to 1.5 s (etcd's lease granularity), then a challenger waits
/// out the write lease and a statement deadline.
const PROMOTION_LIMIT: Duration = Duration::from_secs(10);

/// How long a fault that must not cause a failover is held and watched.
const HOLD: Duration = Duration::from_secs(3);

/// Injects `scenario`'s fault into primary `old` (`new` is the synchronous secondary).
pub(crate) fn inject(
    lab: &mut Lab,
    scenario: Scenario,
    old: usize,
    new: usize,
) -> Result<Injected, String> {
    check_still_primary(lab, old)?;
    let fault = match scenario {
        Scenario::KillPrimary | Scenario::Loss => lab.kill_sim(old),
        Scenario::CrashNode => {
            let t = crash_node(lab, old)?;
            lab.etcd_mut()?.kill(old);
            t
        }
        Scenario::PartitionPrimary => {
            nft_partition(lab, old)?;
            let t = lab.clock.now();
            lab.record(t, old, "nft drops everything on eth0 (partition in effect)");
            t
        }
        Scenario::HangPrimary => hang(lab, old)?,
        Scenario::FreezeAgent => lab.freeze_agent(old)?,
        Scenario::KillAgent => {
            let t = lab.kill_agent(old);
            sleep_ms(RESTART_SEC_MS);
            lab.restart_agent(old)?;
            return stays(lab, old, t);
        }
        Scenario::EtcdLeaderKill => {
            let t = kill_etcd_leader(lab)?;
            return stays(lab, old, t);
        }
        Scenario::EtcdQuorumLoss => return quorum_loss(lab, old),
        Scenario::Switchover => return crate::agent_switchover::switchover(lab, old, new),
        Scenario::NoSyncCandidate => return no_sync_candidate(lab, old, new),
        other => return Err(format!("--promote agent does not run {other}")),
    };
    let (at, node) = await_promotion(lab, old, PROMOTION_LIMIT)?;
    Ok(promoted(lab, fault, at, node))
}

/// The trial's primary must still be `old` when the fault comes. On a loaded machine the
/// agents were seen failing over between the lab's steady check and the fault (load 6: node
/// 1's first write-lease renewal timed out at its login, its key's deadline passed, node 3
/// was promoted); the fault then hits a replica that is no longer PRIMARY and the trial
/// measures something else.
fn check_still_primary(lab: &mut Lab, old: usize) -> Result<(), String> {
    let role = lab.sim_state(old)?["role"].clone();
    if role != "PRIMARY" {
        return Err(format!(
            "node {} is {role} when its fault is due, no longer PRIMARY: the agents failed over before the fault ({})",
            old + 1,
            lab.log_hint()
        ));
    }
    Ok(())
}

/// The primary's SQL Server hangs: `hang_after_accept` leaves new connections and the
/// sessions the agent keeps (its poll, its write-lease renewals) unanswered alike, while the
/// sim's lease still runs out by its own clock. Unlike follow mode the lab neither stops
/// renewing (the agents renew) nor promotes: the primary's agent must see `fall` unanswered
/// polls and resign, and the others wait the old write lease out before promoting.
fn hang(lab: &mut Lab, old: usize) -> Result<f64, String> {
    lab.sim_put(
        old,
        r#"{"fault":"hang_after_accept"}"#,
        "tds-sim hangs after accept",
    )
}

pub(crate) fn promoted(lab: &Lab, fault: f64, at: f64, node: usize) -> Injected {
    Injected {
        faults: vec![fault],
        promotions: vec![Promotion {
            at,
            node,
            server: lab.nodes[node].server.clone(),
        }],
        primary: node,
        refusals: Vec::new(),
    }
}

/// A fault that must not move the primary: the watch checks that `old` kept serving, and
/// [`check_no_promotion`] that no other replica became PRIMARY.
fn stays(lab: &mut Lab, old: usize, fault: f64) -> Result<Injected, String> {
    let end = Instant::now() + HOLD;
    while Instant::now() < end {
        check_no_promotion(lab, old)?;
        sleep_ms(20);
    }
    Ok(Injected::without_promotion(fault, old))
}

/// Every sim but `old` is still a SECONDARY (or RESOLVING): nobody was promoted.
fn check_no_promotion(lab: &mut Lab, old: usize) -> Result<(), String> {
    for i in (0..lab.nodes.len()).filter(|&i| i != old) {
        if lab.sim_state(i)?["role"] == "PRIMARY" {
            return Err(format!(
                "node {} was promoted although its primary (node {}) was healthy ({})",
                i + 1,
                old + 1,
                lab.log_hint()
            ));
        }
    }
    Ok(())
}

/// Polls every sim but `old` until one says PRIMARY; when (on the lab's clock) and which.
pub(crate) fn await_promotion(
    lab: &mut Lab,
    old: usize,
    limit: Duration,
) -> Result<(f64, usize), String> {
    let end = Instant::now() + limit;
    loop {
        for i in (0..lab.nodes.len()).filter(|&i| i != old) {
            if lab.sim_state(i)?["role"] == "PRIMARY" {
                let t = lab.clock.now();
                lab.record(t, i, "tds-sim role PRIMARY (seen; promoted by the agents)");
                return Ok((t, i));
            }
        }
        if Instant::now() > end {
            return Err(format!(
                "no agent promoted a secondary within {limit:?} after the fault (agent logs: {})",
                lab.log_hint()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills the member etcd's raft says is leader; returns the time.
fn kill_etcd_leader(lab: &mut Lab) -> Result<f64, String> {
    let etcd = lab.etcd_mut()?;
    let id = etcd.leader().ok_or("etcd has no leader to kill")?;
    let i = etcd
        .index_of(id)
        .ok_or_else(|| format!("etcd leader {id:x} is not in the member list"))?;
    etcd.kill(i);
    let t = lab.clock.now();
    lab.record(t, i, "SIGKILL etcd member (the raft leader)");
    Ok(t)
}

/// Two of the three etcd members (those off the primary's node) are killed and kept down
/// for [`HOLD`], longer than any key lives; then they come back. The primary must keep
/// serving throughout (rule 5); if the agents promoted someone after all, the trial says
/// who and when (the safety columns then tell whether it was done safely).
fn quorum_loss(lab: &mut Lab, old: usize) -> Result<Injected, String> {
    let others: Vec<usize> = (0..lab.nodes.len()).filter(|&i| i != old).collect();
    for &i in &others {
        lab.etcd_mut()?.kill(i);
    }
    let fault = lab.clock.now();
    lab.record(
        fault,
        usize::MAX,
        "SIGKILL 2 of 3 etcd members (quorum lost)",
    );
    sleep_ms(HOLD.as_millis() as u64);
    for &i in &others {
        lab.etcd_mut()?.restart(i)?;
    }
    let t = lab.clock.now();
    lab.record(t, usize::MAX, "etcd members restarted");
    match watch_roles(lab, old, HOLD)? {
        Some((at, node)) => Ok(promoted(lab, fault, at, node)),
        None => Ok(Injected::without_promotion(fault, old)),
    }
}

/// Waits until no agent holds back a promotion (`/status` `cluster.acknowledged_hold_ms`): a
/// freshly started agent does for `ack_hold` (rule 8: its predecessor's promises died with
/// it), and so does one that acknowledged a leader without etcd in the last trial. A trial
/// measures a failover in steady state, not that wait.
pub(crate) fn await_agents_may_promote(lab: &Lab, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    loop {
        let mut holding = Vec::new();
        for i in 0..lab.nodes.len() {
            let held = match lab.agent_get(i, "/status") {
                Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .map(|v| {
                        !v["ags"][crate::config::AG]["cluster"]["acknowledged_hold_ms"].is_null()
                    })
                    .unwrap_or(true),
                _ => true,
            };
            if held {
                holding.push(i + 1);
            }
        }
        if holding.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "node(s) {holding:?} still hold back promotions {limit:?} later ({})",
                lab.log_hint()
            ));
        }
        sleep_ms(50);
    }
}

/// Watches for `limit`: the first replica other than `old` seen PRIMARY, if any.
fn watch_roles(lab: &mut Lab, old: usize, limit: Duration) -> Result<Option<(f64, usize)>, String> {
    match await_promotion(lab, old, limit) {
        Ok(p) => Ok(Some(p)),
        Err(_) if lab.sim_state(old)?["role"] == "PRIMARY" => Ok(None),
        Err(e) => Err(format!(
            "after the fault nobody is PRIMARY (node {} is {}): {e}",
            old + 1,
            lab.sim_state(old)?["role"]
        )),
    }
}

/// The synchronous secondary `new` dies, then the primary: only the asynchronous replica
/// (node 3) is left, and its agent must refuse to promote it and say why. Nothing is then
/// promoted automatically: the restarted replicas come back RESOLVING and `FAILOVER` refuses
/// them (41142, not synchronized when the primary was lost). The lab then does what the
/// README tells the operator: it forces the replica with every commit (the old primary,
/// highest `sequence_number`) back with `FORCE_FAILOVER_ALLOW_DATA_LOSS`; its agent takes
/// the leader key, its node the address, and the other agent makes its replica SECONDARY.
fn no_sync_candidate(lab: &mut Lab, old: usize, new: usize) -> Result<Injected, String> {
    let async_node = lab.settings.async_node.ok_or("no asynchronous replica")?;
    // Counted before: the agent's counters are cumulative, and a start-up vacancy or an
    // earlier trial may have counted refusals of their own.
    let before = refusal_counts(lab, async_node)?;
    lab.kill_sim(new);
    sleep_ms(200);
    let fault = lab.kill_sim(old);
    sleep_ms(HOLD.as_millis() as u64);
    if lab.sim_state(async_node)?["role"] == "PRIMARY" {
        return Err(format!(
            "node {}'s agent promoted the asynchronous replica ({})",
            async_node + 1,
            lab.log_hint()
        ));
    }
    let refusals = refusals_since(lab, async_node, &before)?;
    let t = lab.clock.now();
    lab.record(t, async_node, format!("refusals reported: {refusals:?}"));
    for i in [new, old] {
        lab.start_sim(i, "SECONDARY")?;
    }
    sleep_ms(HOLD.as_millis() as u64);
    for i in [new, old] {
        if lab.sim_state(i)?["role"] == "PRIMARY" {
            return Err(format!(
                "node {}'s replica became PRIMARY without the operator ({})",
                i + 1,
                lab.log_hint()
            ));
        }
    }
    let at = lab.promote(old, true)?;
    lab.record(at, old, "(the operator's decision, not the agents')");
    let mut done = promoted(lab, fault, at, old);
    done.refusals = refusals.into_iter().map(|r| (async_node, r)).collect();
    Ok(done)
}

type Counts = std::collections::BTreeMap<String, f64>;

/// Node `i`'s agent's `tdsvip_promotion_refused_total`, per reason.
fn refusal_counts(lab: &Lab, i: usize) -> Result<Counts, String> {
    let (_, body) = lab.agent_get(i, "/metrics")?;
    Ok(counted_reasons(&body))
}

/// The reasons node `i`'s agent counted since `before`.
fn refusals_since(lab: &Lab, i: usize, before: &Counts) -> Result<Vec<String>, String> {
    let now = refusal_counts(lab, i)?;
    Ok(now
        .into_iter()
        .filter(|(reason, n)| *n > before.get(reason).copied().unwrap_or(0.0))
        .map(|(reason, _)| reason)
        .collect())
}

/// Every `tdsvip_promotion_refused_total` series in a `/metrics` text, by its `reason` (the
/// text lists labels by name: `ag` before `reason`).
fn counted_reasons(metrics: &str) -> Counts {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("tdsvip_promotion_refused_total{"))
        .filter_map(|l| l.rsplit_once("} "))
        .filter_map(|(labels, value)| Some((labels, value.parse::<f64>().ok()?)))
        .filter_map(|(labels, n)| {
            let (reason, _) = labels.split_once("reason=\"")?.1.split_once('"')?;
            Some((reason.to_owned(), n))
        })
        .collect()
}

/// Waits until node `i`'s agent has made its replica SECONDARY (it sees it RESOLVING under
/// another node's leader); the trial fails if that does not happen.
pub(crate) fn await_secondary(lab: &mut Lab, i: usize) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let role = lab.sim_state(i)?["role"].clone();
        if role == "SECONDARY" {
            let t = lab.clock.now();
            lab.record(t, i, "tds-sim role SECONDARY (seen; set by its agent)");
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "node {}'s agent did not make its replica SECONDARY within 5 s (it is {role}; {})",
                i + 1,
                lab.log_hint()
            ));
        }
        sleep_ms(10);
    }
}

/// Puts back what the fault took, as systemd and a rebooted node would, and waits for the
/// old node's agent to make its replica SECONDARY where it was PRIMARY before.
pub(crate) fn restore(lab: &mut Lab, scenario: Scenario, old: usize) -> Result<(), String> {
    match scenario {
        Scenario::KillPrimary | Scenario::Loss => {
            if scenario == Scenario::Loss {
                nft_clear(lab.client_ns());
            }
            lab.start_sim(old, "SECONDARY")?;
            await_secondary(lab, old)
        }
        Scenario::CrashNode => {
            crate::aftermath::reboot(lab, old)?;
            await_secondary(lab, old)
        }
        Scenario::PartitionPrimary => {
            nft_clear(&lab.nodes[old].ns.clone());
            await_secondary(lab, old)
        }
        Scenario::FreezeAgent => {
            lab.thaw_agent(old)?;
            await_secondary(lab, old)
        }
        // The hung replica went RESOLVING when its lease ran out; once it answers again its
        // agent sees that under another leader and makes it SECONDARY.
        Scenario::HangPrimary => {
            let role = lab.sim_state(old)?["role"].clone();
            if role != "RESOLVING" {
                return Err(format!(
                    "node {}: {role} at the end of the hang, not RESOLVING by its expired write lease",
                    old + 1
                ));
            }
            lab.sim_put(old, r#"{"fault":"none"}"#, "restore: hang lifted")?;
            await_secondary(lab, old)
        }
        // The old primary's agent demoted it itself, before the promotion.
        Scenario::Switchover => await_secondary(lab, old),
        Scenario::EtcdLeaderKill => {
            check_no_promotion(lab, old)?;
            for i in 0..lab.nodes.len() {
                lab.etcd_mut()?.restart(i)?;
            }
            Ok(())
        }
        // Nothing to restore; and still nobody else may have been promoted (a late one
        // would come after the hold).
        Scenario::KillAgent => check_no_promotion(lab, old),
        Scenario::EtcdQuorumLoss => Ok(()),
        Scenario::NoSyncCandidate => {
            let new = (0..lab.nodes.len())
                .find(|&i| i != old && Some(i) != lab.settings.async_node)
                .ok_or("no synchronous secondary")?;
            await_secondary(lab, new)
        }
        other => Err(format!("--promote agent does not run {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::counted_reasons;

    #[test]
    fn every_reason_with_its_count() {
        let text = r#"# TYPE tdsvip_promotion_refused_total counter
tdsvip_promotion_refused_total{ag="AG1",reason="behind_sequence"} 0
tdsvip_promotion_refused_total{ag="AG1",reason="not_synchronous_commit"} 2
tdsvip_promotion_refused_total{ag="AG1",reason="too_few_reporters"} 1
tdsvip_promotions_total{ag="AG1",cause="leader_lost"} 1
"#;
        let counts: Vec<(String, f64)> = counted_reasons(text).into_iter().collect();
        assert_eq!(
            counts,
            [
                ("behind_sequence".to_owned(), 0.0),
                ("not_synchronous_commit".to_owned(), 2.0),
                ("too_few_reporters".to_owned(), 1.0)
            ]
        );
        assert!(counted_reasons("").is_empty());
    }
}
