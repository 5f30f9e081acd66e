//! `tdsvip switchover --config FILE --ag AG --to NODE`: a planned switchover in manage mode.
//! The agents run it (the leader hands over to a synchronized target); this command only
//! checks that the request makes sense, leaves it for the leader in etcd and reports the
//! outcome. It asks through etcd rather than through an agent's HTTP so that the request is
//! addressed to a term (`Etcd::request_switchover`: written only while the leader key is the
//! one that was checked) and lives on this command's own lease: a request outlives neither
//! the leader it was meant for nor the command (timeout, Ctrl-C, a killed process), so a
//! failed switchover never fires later by surprise.
//!
//! Exit status: 0 when NODE leads the AG (also when it already did), 1 when the switchover
//! was refused, did not happen in time, or etcd could not be asked (the message says which),
//! 2 on bad arguments or configuration (the message names the argument or key).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use tdsvip::config::{AgentConfig, ClusterMode, ConfigProblem};
use tdsvip::switchover_request::SwitchoverRequest;
use tdsvip_etcd::{AgEvent, AgWatch, Etcd, EtcdError, EtcdSettings, LeaderKey, Lease};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::switchover_progress::{Progress, Step, describe_leader, describe_state, judge_target};
use super::{EXIT_USAGE, block_on, usage_error};

#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// The agent's TOML config file: its [cluster] (manage mode, etcd) and [[ag]] are used.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The availability group to switch over (one of the config's [[ag]] names).
    #[arg(long, value_name = "AG")]
    ag: String,
    /// The node whose replica is to become PRIMARY (its agent's node name).
    #[arg(long, value_name = "NODE")]
    to: String,
    /// How long to wait for NODE to lead, in seconds; also the TTL of the request in etcd.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_s: u64,
}

/// What the command works with once its arguments and the config are accepted.
#[derive(Debug)]
struct Plan {
    ag: String,
    to: String,
    timeout: Duration,
    etcd: EtcdSettings,
}

/// Why the command does not start: problems of the file itself (`KEY: reason`), or one of
/// an argument or of a key that rules this command out.
#[derive(Debug)]
enum Refused {
    File(Vec<ConfigProblem>),
    Argument(ConfigProblem),
}

/// How long to wait before watching again after the watch failed (etcd changing members).
const WATCH_RETRY: Duration = Duration::from_millis(200);

pub fn run(args: SwitchoverArgs) -> ExitCode {
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(Refused::File(problems)) => {
            for problem in &problems {
                eprintln!("{}: {problem}", args.config.display());
            }
            return ExitCode::from(EXIT_USAGE);
        }
        Err(Refused::Argument(problem)) => return usage_error(&problem.key, problem.reason),
    };
    block_on(async move {
        match switch_over(&plan).await {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("error: {why}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Loads and validates the config (as `check-config` does, without the SQL password, which
/// this command does not use) and checks the arguments against it.
fn plan(args: &SwitchoverArgs) -> Result<Plan, Refused> {
    let config = AgentConfig::load(&args.config).map_err(|e| Refused::File(e.0))?;
    let refuse = |key: &str, reason: String| Refused::Argument(ConfigProblem::new(key, reason));
    if config.cluster.mode != ClusterMode::Manage {
        return Err(refuse(
            "cluster.mode",
            format!(
                "is \"follow\" in {}: only the agents of manage mode run a switchover; in follow mode whoever promotes replicas (Pacemaker, a DBA) does",
                args.config.display()
            ),
        ));
    }
    if !config.ags.iter().any(|ag| ag.name == args.ag) {
        let names: Vec<&str> = config.ags.iter().map(|ag| ag.name.as_str()).collect();
        return Err(refuse(
            "--ag",
            format!(
                "{:?} is not an [[ag]] of {} (its AGs: {})",
                args.ag,
                args.config.display(),
                names.join(", ")
            ),
        ));
    }
    // The agents publish `members/{node}`: the etcd crate's own rule for a key segment.
    if let Err(e) = tdsvip_etcd::check_name("node name", &args.to) {
        return Err(refuse("--to", e.to_string()));
    }
    let etcd = config.cluster.etcd_settings().map_err(Refused::Argument)?;
    Ok(Plan {
        ag: args.ag.clone(),
        to: args.to.clone(),
        timeout: Duration::from_secs(args.timeout_s),
        etcd,
    })
}

/// The whole command once it may talk to etcd: the success line, or why it failed.
async fn switch_over(plan: &Plan) -> Result<String, String> {
    let etcd = Etcd::connect(&plan.etcd).await.map_err(etcd_error)?;
    let (ag, to) = (plan.ag.as_str(), plan.to.as_str());
    let Some(leader) = etcd.leader(ag).await.map_err(etcd_error)? else {
        return Err(format!(
            "AG {ag} has no leader now: a switchover needs one (see `tdsvip status`)"
        ));
    };
    if leader.value == to {
        return Ok(format!(
            "{to} already leads {ag} (term {}): nothing to do",
            leader.create_revision
        ));
    }
    let members = etcd.members(ag).await.map_err(etcd_error)?;
    let target = judge_target(ag, to, &members)?;
    if !target.synchronized {
        println!(
            "{to} is not SYNCHRONIZED yet: the leader {} waits for it before handing over (up to {} s)",
            leader.value,
            plan.timeout.as_secs()
        );
    }
    let published = members.into_iter().find(|m| m.node == to).map(|m| m.value);
    let lease = etcd.grant(plan.timeout).await.map_err(etcd_error)?;
    let outcome = match Interrupts::register() {
        Ok(mut interrupts) => {
            let progress = Progress::new(&leader.value, leader.create_revision, to, published);
            ask_and_wait(&etcd, plan, &leader, &lease, progress, &mut interrupts).await
        }
        Err(e) => Err(format!("cannot handle Ctrl-C: {e}")),
    };
    // Revoking deletes the request: done or failed, it must not linger for a later leader.
    match etcd.revoke(&lease).await {
        Ok(()) | Err(EtcdError::LeaseExpired { .. }) => {}
        Err(e) => eprintln!(
            "warning: {e}: the request stays in etcd until its lease runs out (at most {} s)",
            plan.timeout.as_secs()
        ),
    }
    outcome
}

/// Writes the request to the leader's term and waits until `plan.to` holds the leader key,
/// someone else does, the timeout passes or the operator interrupts.
async fn ask_and_wait(
    etcd: &Etcd,
    plan: &Plan,
    leader: &LeaderKey,
    lease: &Lease,
    mut progress: Progress,
    interrupts: &mut Interrupts,
) -> Result<String, String> {
    let (ag, to, term) = (plan.ag.as_str(), plan.to.as_str(), leader.create_revision);
    // Watching from before the write: no change after it can be missed.
    let mut watch = Some(etcd.watch_ag(ag, None).await.map_err(etcd_error)?);
    let request = SwitchoverRequest {
        to: to.to_owned(),
        term,
    };
    let json = request.to_json();
    let asked = Instant::now();
    let written = etcd.request_switchover(ag, term, &json, lease).await;
    if !written.map_err(etcd_error)? {
        return Err(format!(
            "the leader of {ag} changed meanwhile (term {term} is over): see `tdsvip status` and ask again"
        ));
    }
    println!(
        "asked {} (term {term}) to hand {ag} over to {to}; waiting up to {} s",
        leader.value,
        plan.timeout.as_secs()
    );
    let deadline = tokio::time::Instant::from_std(asked + plan.timeout);
    loop {
        let steps: Vec<Step> = tokio::select! {
            biased;
            name = interrupts.next() => {
                return Err(format!("{name}: the switchover request was withdrawn"));
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(timeout_report(etcd, plan, &progress).await);
            }
            changes = next_changes(etcd, ag, &mut watch) => match changes {
                Ok(changes) => changes.into_iter().map(|c| c.apply(&mut progress)).collect(),
                Err(e) => {
                    eprintln!("warning: {e}; watching again");
                    Vec::new()
                }
            },
        };
        for step in steps {
            match step {
                Step::Wait(Some(line)) => println!("{line}"),
                Step::Wait(None) => {}
                Step::Done { term: new } => {
                    let ms = asked.elapsed().as_millis();
                    return Ok(format!(
                        "switched over: {to} leads {ag} (term {new}) {ms} ms after the request"
                    ));
                }
                Step::Void(why) => return Err(why),
            }
        }
    }
}

/// A change of the AG's keys: one the watch reported, or the leader key as read after the
/// watch had to be opened again.
enum Change {
    Event(AgEvent),
    LeaderNow(Option<LeaderKey>),
}

impl Change {
    fn apply(self, progress: &mut Progress) -> Step {
        match self {
            Change::Event(event) => progress.on_event(&event),
            Change::LeaderNow(key) => {
                progress.on_leader(key.map(|key| (key.value, key.create_revision)))
            }
        }
    }
}

/// The next changes. After the watch failed (etcd left a member, compacted, cancelled), a
/// new one is opened and the leader key read after it, so nothing in between is missed.
async fn next_changes(
    etcd: &Etcd,
    ag: &str,
    watch: &mut Option<AgWatch>,
) -> Result<Vec<Change>, EtcdError> {
    if let Some(open) = watch {
        return match open.next().await {
            Ok(event) => Ok(vec![Change::Event(event)]),
            Err(e) => {
                *watch = None;
                Err(e)
            }
        };
    }
    tokio::time::sleep(WATCH_RETRY).await;
    let reopened = etcd.watch_ag(ag, None).await?;
    let leader = etcd.leader(ag).await?;
    *watch = Some(reopened);
    Ok(vec![Change::LeaderNow(leader)])
}

/// What is known when the timeout passed: read again (the watch may have been down), else
/// as last seen.
async fn timeout_report(etcd: &Etcd, plan: &Plan, progress: &Progress) -> String {
    let (ag, to) = (plan.ag.as_str(), plan.to.as_str());
    let leader = match etcd.leader(ag).await {
        Ok(key) => key.map(|key| (key.value, key.create_revision)),
        Err(_) => progress.leader.clone(),
    };
    let target = match etcd.members(ag).await {
        Ok(members) => members.into_iter().find(|m| m.node == to).map(|m| m.value),
        Err(_) => progress.target.clone(),
    };
    format!(
        "no switchover of {ag} to {to} within {} s (the request was withdrawn): {}; {to}: {}",
        plan.timeout.as_secs(),
        describe_leader(leader.as_ref()),
        describe_state(target.as_deref())
    )
}

/// An etcd failure as the operator reads it: `EtcdError` names the endpoints and the call.
fn etcd_error(e: EtcdError) -> String {
    e.to_string()
}

/// SIGINT (Ctrl-C) and SIGTERM, registered once the request's lease exists, so that either
/// withdraws the request instead of killing the command with the request in place.
struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    fn register() -> std::io::Result<Interrupts> {
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted (SIGINT)",
            _ = self.terminate.recv() => "terminated (SIGTERM)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "interface = \"eth0\"\nnode = \"sql-a\"\n[sql]\nendpoint = \"127.0.0.1:1433\"\nuser = \"tdsvip\"\npassword_file = \"/etc/tdsvip/sql-password\"\n[[ag]]\nname = \"ag1\"\naddresses = [\"10.0.0.100\"]\n";
    const MANAGE: &str = "[cluster]\nmode = \"manage\"\netcd = [\"http://127.0.0.1:2379\"]\n";

    fn args(tag: &str, text: &str, ag: &str, to: &str) -> SwitchoverArgs {
        let dir =
            std::env::temp_dir().join(format!("tdsvip-switchover-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("tdsvip.toml");
        std::fs::write(&config, text).unwrap();
        SwitchoverArgs {
            config,
            ag: ag.to_owned(),
            to: to.to_owned(),
            timeout_s: 30,
        }
    }

    fn refused_argument(args: &SwitchoverArgs) -> ConfigProblem {
        match plan(args) {
            Err(Refused::Argument(problem)) => problem,
            other => panic!("expected an argument refused, got {other:?}"),
        }
    }

    #[test]
    fn a_manage_config_with_the_ag_gives_a_plan_with_its_etcd() {
        let plan = plan(&args("ok", &format!("{BASE}{MANAGE}"), "ag1", "sql-b")).unwrap();
        assert_eq!((plan.ag.as_str(), plan.to.as_str()), ("ag1", "sql-b"));
        assert_eq!(plan.timeout, Duration::from_secs(30));
        assert_eq!(plan.etcd.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(plan.etcd.prefix, "/tdsvip");
    }

    #[test]
    fn follow_mode_is_refused_naming_cluster_mode() {
        let problem = refused_argument(&args("follow", BASE, "ag1", "sql-b"));
        assert_eq!(problem.key, "cluster.mode");
        assert!(problem.reason.contains("manage mode"), "{problem}");
    }

    #[test]
    fn an_ag_not_in_the_config_is_refused_naming_the_argument() {
        let problem = refused_argument(&args("ag", &format!("{BASE}{MANAGE}"), "ag2", "sql-b"));
        assert_eq!(problem.key, "--ag");
        assert!(
            problem.reason.contains("\"ag2\" is not an [[ag]]"),
            "{problem}"
        );
        assert!(problem.reason.contains("its AGs: ag1"), "{problem}");
    }

    #[test]
    fn a_target_that_cannot_be_a_key_segment_is_refused_naming_the_argument() {
        for bad in ["", "a/b", "a\nb"] {
            let problem = refused_argument(&args("to", &format!("{BASE}{MANAGE}"), "ag1", bad));
            assert_eq!(problem.key, "--to", "{bad:?}");
        }
    }

    #[test]
    fn an_unreadable_etcd_password_is_refused_naming_its_key() {
        let text = format!(
            "{BASE}{MANAGE}etcd_user = \"tdsvip\"\netcd_password_file = \"/nonexistent/tdsvip-etcd-pw\"\n"
        );
        let problem = refused_argument(&args("etcd-pw", &text, "ag1", "sql-b"));
        assert_eq!(problem.key, "cluster.etcd_password_file");
    }

    #[test]
    fn a_bad_file_is_refused_with_every_problem() {
        let text = format!("{BASE}{MANAGE}bogus = 1\n");
        match plan(&args("bad", &text, "ag1", "sql-b")) {
            Err(Refused::File(problems)) => {
                assert!(
                    problems.iter().any(|p| p.key == "cluster.bogus"),
                    "{problems:?}"
                );
            }
            other => panic!("expected the file refused, got {other:?}"),
        }
        let missing = SwitchoverArgs {
            config: "/nonexistent/tdsvip.toml".into(),
            ag: "ag1".into(),
            to: "sql-b".into(),
            timeout_s: 30,
        };
        assert!(matches!(plan(&missing), Err(Refused::File(_))));
    }
}
