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
use std::sync::LazyLock;

use clap::{CommandFactory, Parser};

#[derive(Debug, Parser)]
#[command(
    name = "tdsvip",
    version,
    long_version = long_version(),
    about = "Keeps an overlay IP on the SQL Server AG primary",
    long_about = "Keeps an availability group's overlay IP on the node whose SQL Server \
        replica is PRIMARY, and moves it within milliseconds when SQL Server makes another \
        replica primary. `tdsvip run` is the agent (the systemd unit tdsvip.service runs it \
        with /etc/tdsvip/tdsvip.toml); the other subcommands are the operator's tools. \
        Exit status: 0 success, 1 the thing checked is not healthy, 2 bad arguments or \
        configuration."
)]
struct Cli {
    #[command(subcommand)]
    command: cli::Command,
}

/// `tdsvip --version` (`-V` prints the version alone), one line: the version, the commit
/// the binary was built from (agent/build.rs; "unknown" outside a git checkout) and whether
/// the eBPF programs are in it. The last is tdsvip-node's own answer: its build.rs embeds
/// the compiled object and sets the cfg that `object_bytes` is built under, or records why
/// the programs did not build.
fn long_version() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let ebpf = match tdsvip_node::ebpf::object_bytes() {
            Ok(object) => format!(
                "eBPF programs embedded: vip_guard and conn_track, {} bytes",
                object.len()
            ),
            Err(e) => format!("eBPF programs not embedded: {e}"),
        };
        format!(
            "{} (commit {}; {ebpf})",
            env!("CARGO_PKG_VERSION"),
            env!("TDSVIP_GIT_COMMIT")
        )
    });
    TEXT.as_str()
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
    cli::run(cli.command, Cli::command)
}
