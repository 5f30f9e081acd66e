//! `tdsvip run`: the agent itself. This module only turns the config file and the password
//! source into a running [`tdsvip::driver`] and its result into an exit code, so that the
//! loop stays testable as a library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::EXIT_USAGE;
use crate::password::{PASSWORD_ENV, read_password_file};
use tdsvip::config::AgentConfig;
use tdsvip::driver::{self, DriverError};
use tdsvip_probes::Password;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent's TOML config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

fn read_password(config: &AgentConfig) -> Result<Password, String> {
    if let Some(path) = &config.sql.password_file {
        return read_password_file(path).map_err(|e| format!("sql.password_file: {e}"));
    }
    let var = config.sql.password_env.as_deref().unwrap_or(PASSWORD_ENV);
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Password::new(v)),
        _ => Err(format!(
            "sql.password_env: the environment variable {var} is not set or empty"
        )),
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let password = match read_password(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path = args.config.clone();
    let reload: driver::Reloader = Box::new(move || {
        let config = AgentConfig::load(&path)
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let password = read_password(&config).map_err(|e| vec![e])?;
        Ok((config, password))
    });
    super::block_on(async move {
        match driver::run(config, password, CancellationToken::new(), Some(reload)).await {
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
