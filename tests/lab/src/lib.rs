//! `tdsvip-lab`: the failover lab. Real `tdsvip` agents (or keepalived, the peer to beat)
//! guard one overlay IP for `tds-sim` replicas in network namespaces; the lab plays SQL
//! Server's failover machinery (kill, demote, hang, partition, promote), a client in its own
//! namespace measures what users feel, and samplers watch who owns the address.
//!
//! The binary (`src/main.rs`) is a thin CLI over [`run_drill`] and [`bench`]; the tests in
//! `tests/` drive the same functions.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod aftermath;
pub mod agent_drills;
pub mod agent_switchover;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod etcd;
pub mod guard;
pub mod http;
pub mod inject;
pub mod keepalived;
pub mod lab;
pub mod lease;
pub mod measure;
pub mod netns;
pub mod pki;
pub mod plot;
pub mod primaries;
pub mod procs;
pub mod report;
pub mod sampler;
pub mod scenario;
pub mod settings;
pub mod signals;
pub mod stats;
pub mod summary;
pub mod tsql;
pub mod writer;

use lab::{Lab, Settings};
use scenario::{Scenario, Trial};
use summary::RunSummary;

/// The outcome of one drill: every trial and the summary.
pub struct DrillOutcome {
    pub trials: Vec<Trial>,
    pub summary: RunSummary,
    /// Human timeline of every trial.
    pub text: String,
    pub plot: Option<String>,
    /// The lab's work dir (logs, configs); removed unless `Settings::keep` was set.
    pub work_dir: std::path::PathBuf,
}

/// Starts a lab, runs `trials` trials of `scenario`, tears the lab down.
pub fn run_drill(
    settings: Settings,
    scenario: Scenario,
    trials: usize,
    want_plot: bool,
) -> Result<DrillOutcome, String> {
    let mut settings = settings;
    if scenario.needs_async_replica() {
        if settings.nodes < 3 {
            return Err(format!(
                "{scenario} needs 3 nodes (node 3 is the asynchronous replica)"
            ));
        }
        settings.async_node = Some(2);
    }
    match settings.promote {
        lab::Promote::Lab if scenario.agents_only() => {
            return Err(format!(
                "{scenario} tests the agents' own promotion: run it with --promote agent"
            ));
        }
        lab::Promote::Agent if !scenario.agents_run() => {
            return Err(format!(
                "--promote agent does not run {scenario} yet (issue \"The agent promotes\"); it runs: {}",
                Scenario::ALL
                    .iter()
                    .filter(|s| s.agents_run())
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        _ => {}
    }
    let mut lab = Lab::start(settings)?;
    let res = scenario::run(&mut lab, scenario, trials);
    let trials = match res {
        Ok(t) => t,
        Err(e) => {
            lab.mark_failed();
            return Err(format!("{e}\n{}", lab.log_hint()));
        }
    };
    let mut text = String::new();
    for t in &trials {
        text.push_str(&report::timeline(&lab, t));
    }
    let summary = summary::summarize(&lab, scenario, &trials);
    text.push_str(&summary::summary_text(&summary));
    let plot = want_plot.then(|| plot::svg(&lab, &trials));
    Ok(DrillOutcome {
        trials,
        summary,
        text,
        plot,
        work_dir: lab.dir.clone(),
    })
}
