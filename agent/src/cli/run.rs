//! `tdsvip run`: the agent itself. This module only turns the config file and the password
//! source into a running [`tdsvip::driver`] and its result into an exit code, so that the
//! loop stays testable as a library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::EXIT_USAGE;
use super::check_config::{load_for_start, load_or_usage};
use tdsvip::DriverError;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent's TOML config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: RunArgs) -> ExitCode {
    // The very checks `check-config` makes (one function, see check_config.rs).
    let start = match load_or_usage(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for w in &start.warnings {
        tracing::warn!("{w}");
    }
    let (config, password) = (start.config, start.password);
    let path = args.config.clone();
    let reload: tdsvip::Reloader = Box::new(move || {
        let start = load_for_start(&path)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        for w in &start.warnings {
            tracing::warn!("{w}");
        }
        Ok((start.config, start.password))
    });
    super::block_on(async move {
        match tdsvip::run(config, password, CancellationToken::new(), Some(reload)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ DriverError::Config { .. }) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
