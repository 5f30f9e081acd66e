//! The command line. clap names the offending argument and exits with status 2 on bad
//! input; every range is checked here so that the lab never starts with a setting it
//! cannot honour.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{AgentTiming, KeepalivedTiming};
use crate::lab::{Encrypt, Impl, Settings};
use crate::scenario::Scenario;
use crate::settings::Promote;

#[derive(Debug, Parser)]
#[command(
    name = "tdsvip-lab",
    version,
    about = "Failover drills for tdsvip (or keepalived) in network namespaces, measured by a TDS client",
    args_conflicts_with_subcommands = true,
    // ./run-lab passes its defaults first; the caller's own value of an option wins.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub drill: DrillArgs,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// kill-primary and switchover for tdsvip, keepalived and keepalived-script in one run:
    /// percentiles and ratios, also written to $TDSVIP_BENCH_DIR/lab.json.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// kill-primary, switchover, hang-primary, crash-node, partition-primary, flap, loss,
    /// kill-agent, async-replica, kill-agent-then-failover, freeze-agent-then-failover;
    /// with --promote agent only: freeze-agent, etcd-leader-kill, etcd-quorum-loss,
    /// no-sync-candidate.
    #[arg(long, value_name = "NAME", default_value = "kill-primary", value_parser = parse_scenario)]
    pub scenario: Scenario,
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub trials: u32,
    /// tdsvip; keepalived (VRRP + a track_file kept by `tdsvip probe --watch` at tdsvip's
    /// probe interval, rise and fall); keepalived-script (VRRP + a vrrp_script every second).
    #[arg(long = "impl", value_name = "IMPL", default_value = "tdsvip", value_parser = parse_impl)]
    pub implementation: Impl,
    /// Write the run's summary as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG picture of the client's view here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also run moto's EC2 server: agents claim --route-tables route tables for their ENIs;
    /// reports how long after promotion every table pointed at the new owner.
    #[arg(long)]
    pub cloud: bool,
    /// With --cloud: how many route tables.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub route_tables: u8,
    /// With --cloud and --promote agent: the agents fence (`[fence] aws`): a new leader that
    /// could not confirm the old primary down stops its instance in moto; reported per trial.
    #[arg(long, requires = "cloud")]
    pub fence_aws: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub trials: u32,
    /// Only this scenario (kill-primary or switchover; with --promote agent, any scenario
    /// the agents run); default both (with --promote agent: kill-primary).
    #[arg(long, value_name = "NAME", value_parser = parse_bench_scenario)]
    pub scenario: Option<Scenario>,
    /// Only these implementations (repeat the flag); default every one. A ratio over
    /// tdsvip needs tdsvip and the other one.
    #[arg(long = "impl", value_name = "IMPL", value_parser = parse_impl)]
    pub implementations: Vec<Impl>,
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG of the promotion -> client CDFs, one line per implementation, here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// SQL nodes (namespaces), at least 2.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub nodes: u8,
    /// Delay between the fault (or demotion) and the promotion of the new primary.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub promote_delay_ms: u64,
    /// tdsvip's [probe] interval_ms.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(5..=10_000))]
    pub probe_interval_ms: u64,
    /// tdsvip's [probe] timeout_ms.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub probe_timeout_ms: u64,
    /// tdsvip's [probe] rise.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rise: u32,
    /// tdsvip's [probe] fall.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub fall: u32,
    /// partition-primary: how long the partitioned primary stays PRIMARY before it goes
    /// RESOLVING (SQL Server's lease) and node 2 is promoted.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub lease_ms: u64,
    /// Idle logged-in sessions opened to the overlay IP before each fault.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub idle_sessions: u64,
    /// flap: how many times the primary role bounces.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub flaps: u64,
    /// flap: time between bounces.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub flap_interval_ms: u64,
    /// keepalived's advert_int in seconds (VRRPv3: 0.01 to 40.95).
    #[arg(long, value_name = "S", default_value_t = 0.01, value_parser = parse_advert)]
    pub advert_int: f64,
    /// Parent of the lab's work dir (logs, configs); default the system temp dir.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the work dir after a successful run.
    #[arg(long)]
    pub keep: bool,
    /// Who promotes a secondary: `lab` (the lab plays the HA manager, through T-SQL with
    /// `external_cluster`, and renews the write lease) or `agent` (the agents in manage
    /// mode, through a three-member etcd cluster on the nodes; WRITE_LEASE_VALIDITY 1 s;
    /// kill-primary, switchover, loss, hang-primary, crash-node, partition-primary, kill-agent and the
    /// agent-only scenarios so far).
    #[arg(long, value_name = "WHO", default_value = "lab", value_parser = parse_promote)]
    pub promote: Promote,
    /// tds-sim's SESSION_TIMEOUT in ms (sim-only unit).
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub session_timeout_ms: u64,
    /// The agents' sql.encrypt, certificates from the lab CA: mandatory (the sims run SQL
    /// Server's default, encryption off with a certificate) or strict (TDS 8.0: the sims
    /// refuse anything but TLS first, the lab's own connections included; tdsvip only).
    #[arg(long, value_name = "MODE", default_value = "mandatory", value_parser = parse_encrypt)]
    pub encrypt: Encrypt,
}

fn parse_encrypt(s: &str) -> Result<Encrypt, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = Encrypt::ALL.iter().map(|e| e.name()).collect();
        format!("unknown mode '{s}' (expected {})", names.join(", "))
    })
}

fn parse_promote(s: &str) -> Result<Promote, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = Promote::ALL.iter().map(|p| p.name()).collect();
        format!("unknown promoter '{s}' (expected {})", names.join(", "))
    })
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

fn parse_impl(s: &str) -> Result<Impl, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = Impl::ALL.iter().map(|i| i.name()).collect();
        format!(
            "unknown implementation '{s}' (expected {})",
            names.join(", ")
        )
    })
}

/// The scenarios `bench` compares: the two every implementation runs the same way.
const BENCH_SCENARIOS: [Scenario; 2] = [Scenario::KillPrimary, Scenario::Switchover];

fn parse_bench_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

impl BenchArgs {
    /// The implementations to run, in `Impl::ALL`'s order, each once.
    pub fn implementations(&self) -> Vec<Impl> {
        Impl::ALL
            .into_iter()
            .filter(|i| self.implementations.is_empty() || self.implementations.contains(i))
            .collect()
    }

    /// The scenarios to run, in order: the two every implementation runs the same way,
    /// or, when the agents promote, any one they run (each implementation then compared
    /// only with itself).
    pub fn scenarios(&self) -> Result<Vec<Scenario>, String> {
        match (self.scenario, self.common.promote) {
            (None, Promote::Lab) => Ok(BENCH_SCENARIOS.to_vec()),
            (None, Promote::Agent) => Ok(vec![Scenario::KillPrimary]),
            (Some(s), Promote::Lab) if BENCH_SCENARIOS.contains(&s) => Ok(vec![s]),
            (Some(s), Promote::Lab) => Err(format!(
                "bench runs kill-primary or switchover, not {s} (--promote agent runs the agents' scenarios)"
            )),
            (Some(s), Promote::Agent) if s.agents_run() => Ok(vec![s]),
            (Some(s), Promote::Agent) => Err(format!("--promote agent does not run {s}")),
        }
    }
}

fn parse_advert(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.01..=40.95).contains(&v) {
        return Err(format!("{v} is outside VRRPv3's 0.01 to 40.95 s"));
    }
    Ok(v)
}

impl CommonArgs {
    pub fn settings(&self, implementation: Impl) -> Settings {
        let d = Settings::default();
        Settings {
            implementation,
            nodes: self.nodes as usize,
            agent: AgentTiming {
                interval_ms: self.probe_interval_ms,
                timeout_ms: self.probe_timeout_ms,
                rise: self.rise,
                fall: self.fall,
                ..d.agent
            },
            keepalived: KeepalivedTiming {
                advert_int: self.advert_int,
                ..d.keepalived
            },
            promote_delay_ms: self.promote_delay_ms,
            lease_ms: self.lease_ms,
            idle_sessions: self.idle_sessions as usize,
            flaps: self.flaps as usize,
            flap_interval_ms: self.flap_interval_ms,
            work_root: self.work_dir.clone(),
            keep: self.keep,
            session_timeout_ms: self.session_timeout_ms,
            encrypt: self.encrypt,
            promote: self.promote,
            // The agents renew the lease at the smallest value SQL Server takes.
            write_lease_validity_s: match self.promote {
                Promote::Lab => d.write_lease_validity_s,
                Promote::Agent => 1,
            },
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tdsvip-lab").chain(args.iter().copied()))
    }

    /// `./run-lab` puts its defaults before the caller's arguments.
    #[test]
    fn a_later_value_of_an_option_wins() {
        let c = parse(&["--scenario", "kill-primary", "--scenario", "crash-node"]).unwrap();
        assert_eq!(c.drill.scenario, Scenario::CrashNode);
    }

    #[test]
    fn promote_agent_is_taken_with_the_smallest_write_lease() {
        let c = parse(&["--promote", "agent"]).unwrap();
        let s = c.drill.common.settings(Impl::Tdsvip);
        assert_eq!((s.promote, s.write_lease_validity_s), (Promote::Agent, 1));
        let d = parse(&[]).unwrap().drill.common.settings(Impl::Tdsvip);
        assert_eq!((d.promote, d.write_lease_validity_s), (Promote::Lab, 2));
        let e = parse(&["--promote", "pacemaker"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("expected lab, agent"), "{e}");
    }

    #[test]
    fn defaults_and_bench() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.drill.scenario, Scenario::KillPrimary);
        assert_eq!(c.drill.trials, 1);
        assert_eq!(c.drill.common.probe_interval_ms, 20);
        assert_eq!(c.drill.implementation, Impl::Tdsvip);
        assert_eq!(c.drill.common.encrypt, Encrypt::Mandatory);
        let c = parse(&["--encrypt", "strict"]).unwrap();
        assert_eq!(
            c.drill.common.settings(Impl::Tdsvip).encrypt,
            Encrypt::Strict
        );
        for name in ["keepalived", "keepalived-script"] {
            let c = parse(&["--impl", name]).unwrap();
            assert_eq!(c.drill.implementation.name(), name);
        }
        let c = parse(&["bench", "--trials", "5", "--json", "x.json"]).unwrap();
        match c.cmd {
            Some(Cmd::Bench(b)) => {
                assert_eq!(b.trials, 5);
                assert_eq!(b.scenarios(), Ok(BENCH_SCENARIOS.to_vec()));
            }
            _ => panic!("bench expected"),
        }
        match parse(&["bench", "--impl", "keepalived", "--impl", "tdsvip"]).map(|c| c.cmd) {
            Ok(Some(Cmd::Bench(b))) => {
                assert_eq!(b.implementations(), [Impl::Tdsvip, Impl::Keepalived]);
            }
            other => panic!("bench expected: {other:?}"),
        }
        match parse(&["bench", "--scenario", "kill-primary"]).map(|c| c.cmd) {
            Ok(Some(Cmd::Bench(b))) => assert_eq!(b.scenarios(), Ok(vec![Scenario::KillPrimary])),
            other => panic!("bench expected: {other:?}"),
        }
        let scenarios = |args: &[&str]| match parse(args).map(|c| c.cmd) {
            Ok(Some(Cmd::Bench(b))) => b.scenarios(),
            other => panic!("bench expected: {other:?}"),
        };
        let e = scenarios(&["bench", "--scenario", "flap"]).unwrap_err();
        assert!(e.contains("not flap"), "{e}");
        let agents = ["bench", "--promote", "agent", "--scenario", "crash-node"];
        assert_eq!(scenarios(&agents), Ok(vec![Scenario::CrashNode]));
        let e = scenarios(&["bench", "--promote", "agent", "--scenario", "flap"]).unwrap_err();
        assert!(e.contains("does not run flap"), "{e}");
        let e = scenarios(&["bench", "--scenario", "freeze-agent"]).unwrap_err();
        assert!(e.contains("--promote agent"), "{e}");
    }

    #[test]
    fn bad_input_names_the_argument() {
        for (args, name) in [
            (&["--scenario", "explode"][..], "--scenario"),
            (&["--trials", "0"][..], "--trials"),
            (&["--impl", "pacemaker"][..], "--impl"),
            (&["--nodes", "1"][..], "--nodes"),
            (&["--advert-int", "0.001"][..], "--advert-int"),
            (&["--probe-interval-ms", "x"][..], "--probe-interval-ms"),
            (&["--encrypt", "optional"][..], "--encrypt"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{args:?}");
            assert!(e.to_string().contains(name), "{args:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
        assert_eq!(parse(&["--bogus"]).unwrap_err().exit_code(), 2);
    }
}
