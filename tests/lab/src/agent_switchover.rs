//! `--promote agent --scenario switchover`: a planned switchover as an operator runs it,
//! `tdsvip switchover --config … --ag AG1 --to NODE` on the old primary's node (in its
//! namespace, with its agent's config: the command talks to etcd like the agents). The
//! agents do the rest (README "Manage mode", rule 6): the old owner lets go of the address,
//! demotes its replica, hands the key to the target, whose agent promotes it and takes the
//! address. The lab only starts the command, watches which replica becomes PRIMARY, and
//! checks that the command said it worked.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent_drills::{await_promotion, promoted};
use crate::config::{AG, agent_name};
use crate::inject::{Injected, wait_synchronized};
use crate::lab::Lab;

/// How long the command may take: the leader waits for nothing (the target was SYNCHRONIZED
/// first), so seconds mean it is stuck.
const LIMIT: Duration = Duration::from_secs(10);

pub(crate) fn switchover(lab: &mut Lab, old: usize, new: usize) -> Result<Injected, String> {
    // The command would wait for it too; waiting first keeps that out of the measurement.
    wait_synchronized(lab, new)?;
    let cfg = lab.dir.join(format!("node{}.toml", old + 1));
    let to = agent_name(new);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.nodes[old].ns])
        .arg(lab.tdsvip_bin())
        .arg("switchover")
        .arg("--config")
        .arg(&cfg)
        .args(["--ag", AG, "--to", &to])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tdsvip switchover: {e}"))?;
    let fault = lab.clock.now();
    lab.record(fault, old, format!("tdsvip switchover --ag {AG} --to {to}"));
    let promotion = await_promotion(lab, old, LIMIT);
    let (ok, said) = finish(&mut child)?;
    let t = lab.clock.now();
    lab.record(t, old, format!("tdsvip switchover exited: {said}"));
    let (at, node) = promotion?;
    if !ok {
        return Err(format!("tdsvip switchover failed: {said}"));
    }
    if node != new {
        return Err(format!(
            "node {} was promoted, not the target node {}",
            node + 1,
            new + 1
        ));
    }
    Ok(promoted(lab, fault, at, node))
}

/// Waits for the command (killed after [`LIMIT`]): whether it succeeded, and what it said.
fn finish(child: &mut std::process::Child) -> Result<(bool, String), String> {
    let end = Instant::now() + LIMIT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break Some(s),
            None if Instant::now() > end => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut said = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut text = String::new();
        let _ = { pipe }.read_to_string(&mut text);
        said.push_str(text.trim());
        said.push(' ');
    }
    let said = said.trim().to_owned();
    match status {
        Some(s) => Ok((s.success(), format!("{s}: {said}"))),
        None => Ok((false, format!("still running after {LIMIT:?}: {said}"))),
    }
}
