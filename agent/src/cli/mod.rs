//! The subcommands of the `tdsvip` binary, one module each.

mod check_config;
mod check_online;
mod deployment;
mod docs;
mod probe;
mod routes;
mod run;
mod status;
mod status_cluster;
mod status_text;
mod switchover;
mod switchover_progress;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe a SQL Server endpoint the way the agent does, and report outcomes and latency.
    Probe(probe::ProbeArgs),
    /// Validate a config file: print every problem as `KEY: reason` and exit 2, or exit 0.
    CheckConfig(check_config::CheckConfigArgs),
    /// Show where the overlay IP's route points in every configured VPC route table; with
    /// --claim, point them all at this node.
    Routes(routes::RoutesArgs),
    /// Run the agent: probe the local replica and keep the overlay IP on the primary.
    Run(run::RunArgs),
    /// Show the running agent's state (its GET /status): roles, owned addresses, probes,
    /// route tables, the last failover's timeline.
    Status(status::StatusArgs),
    /// Manage mode: ask the AG's leader, through etcd, to hand over to NODE's synchronized
    /// secondary, and wait until NODE leads (the agents do the switchover).
    Switchover(switchover::SwitchoverArgs),
    /// Write the man pages and shell completions generated from these definitions (used by
    /// deploy/package.sh; not a command for operators, hence hidden).
    #[command(hide = true)]
    GenerateDocs(docs::DocsArgs),
}

/// Exit code for bad arguments or configuration, as clap uses for usage errors.
pub const EXIT_USAGE: u8 = 2;

/// Runs one subcommand; `top` builds the whole command line's definition (it lives in
/// main.rs), which only `generate-docs` needs.
pub fn run(command: Command, top: impl FnOnce() -> clap::Command) -> ExitCode {
    match command {
        Command::Probe(args) => probe::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Routes(args) => routes::run(args),
        Command::Run(args) => run::run(args),
        Command::Status(args) => status::run(args),
        Command::Switchover(args) => switchover::run(args),
        Command::GenerateDocs(args) => docs::run(args, top()),
    }
}

/// Reports an argument error the way clap does (naming the argument) and exits with 2.
pub fn usage_error(arg: &str, reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {arg}: {reason}");
    ExitCode::from(EXIT_USAGE)
}

/// Runs a subcommand's async body on a single-threaded runtime: every subcommand is I/O-bound
/// (the cloud claim's parallel calls interleave on one thread just as well).
pub fn block_on(body: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(body),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
