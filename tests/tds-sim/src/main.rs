//! The `tds-sim` binary: parse arguments, start the simulator, print the bound addresses on
//! one line for harnesses, and run until SIGTERM or SIGINT.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tds_sim::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tds-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let sim = match tds_sim::start(args.into_config()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tds-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = sim
        .control_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "none".into());
    let mut out = std::io::stdout().lock();
    if writeln!(
        out,
        "tds-sim listening tds={} control={}",
        sim.tds_addr(),
        control
    )
    .and_then(|_| out.flush())
    .is_err()
    {
        eprintln!("tds-sim: cannot write the address line to stdout");
    }
    drop(out);
    let why = wait_for_signal().await;
    tracing::info!(signal = why, "stopping");
    sim.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops tds-sim");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
