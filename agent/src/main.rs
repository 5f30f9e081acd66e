//! `tdsvip`: the per-node agent that keeps an overlay IP on the SQL Server Always On
//! primary replica, and the operator's tools around it.
//!
//! Each subcommand lives in its own module under `cli/`; this file only parses the command
//! line, sets up logging and turns results into exit codes (0 success, 1 the thing checked
//! is not healthy, 2 bad arguments or configuration).

#![forbid(unsafe_code)]

mod cli;
mod password;

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "tdsvip",
    version,
    about = "Keeps an overlay IP on the SQL Server AG primary"
)]
struct Cli {
    #[command(subcommand)]
    command: cli::Command,
}

/// tiberius warns on every plain-text login; the probe's own output already says which
/// encryption the server offered, so only its errors are worth a line.
const DEFAULT_LOG_FILTER: &str = "warn,tiberius=error";
/// The agent logs every decision and executor step at info.
const RUN_LOG_FILTER: &str = "info,tiberius=error";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        cli::Command::Run(_) => RUN_LOG_FILTER,
        _ => DEFAULT_LOG_FILTER,
    };
    // Logs go to stderr so that `--json` output on stdout stays machine-readable.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    // One crypto provider for every TLS session of the process (SQL and AWS): ring.
    if !tdsvip_probes::tls::install_process_crypto_provider() {
        tracing::warn!("rustls's process crypto provider is not ring");
    }
    cli::run(cli.command)
}
