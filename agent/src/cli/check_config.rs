//! `tdsvip check-config`: validates a config file without acting on anything, with exactly
//! the checks `tdsvip run` makes before it starts ([`load_for_start`] is the one function
//! both call), and with `--online` also logs in to SQL Server as the agent will.
//!
//! Prints every problem as `KEY: reason` (all of them, not the first) and exits 2, or
//! prints a one-line summary and exits 0, so it can gate a deployment pipeline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::EXIT_USAGE;
use crate::password::{PASSWORD_ENV, read_password_file};
use tdsvip::config::{AgentConfig, ConfigProblem};
use tdsvip_probes::Password;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The agent's TOML config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Also log in to the local SQL Server with the configured credentials and check TLS,
    /// the AG, its databases and the login's permissions (one `KEY: ok|problem` line each).
    #[arg(long)]
    online: bool,
}

/// A config accepted for start: the file, the password, and what to warn about.
pub struct StartConfig {
    pub config: AgentConfig,
    pub password: Password,
    pub warnings: Vec<String>,
}

/// Everything `run` checks before it starts: the file (syntax, keys, meaning), the password
/// source, what building the login probes needs (password length, `sql.ca_file`, ...), and
/// the deployment checks against this machine (`deployment.rs`).
pub fn load_for_start(path: &Path) -> Result<StartConfig, Vec<ConfigProblem>> {
    let config = AgentConfig::load(path).map_err(|e| e.0)?;
    let password = read_password(&config)?;
    let mut problems = config.login_problems(&password);
    problems.extend(super::deployment::problems(&config));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(StartConfig {
        warnings: config.sql.warnings(),
        config,
        password,
    })
}

fn read_password(config: &AgentConfig) -> Result<Password, Vec<ConfigProblem>> {
    if let Some(path) = &config.sql.password_file {
        return read_password_file(path)
            .map_err(|e| vec![ConfigProblem::new("sql.password_file", e)]);
    }
    let var = config.sql.password_env.as_deref().unwrap_or(PASSWORD_ENV);
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Password::new(v)),
        _ => Err(vec![ConfigProblem::new(
            "sql.password_env",
            format!("the environment variable {var} is not set or empty"),
        )]),
    }
}

/// [`load_for_start`] for a command about to start: every problem goes to stderr as
/// `KEY: reason`, and the exit code is the usage error's.
pub fn load_or_usage(path: &Path) -> Result<StartConfig, ExitCode> {
    load_for_start(path).map_err(|problems| {
        for issue in &problems {
            eprintln!("{issue}");
        }
        ExitCode::from(EXIT_USAGE)
    })
}

pub fn run(args: CheckConfigArgs) -> ExitCode {
    let start = match load_or_usage(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for w in &start.warnings {
        eprintln!("warning: {w}");
    }
    let c = &start.config;
    let addresses: usize = c.ags.iter().map(|a| a.overlay_addresses().len()).sum();
    println!(
        "{}: ok (node {}, {} availability group(s), {} overlay address(es), {} peer(s), sql.encrypt = {})",
        args.config.display(),
        c.node_name(),
        c.ags.len(),
        addresses,
        c.peers.len(),
        c.sql.encrypt
    );
    if !args.online {
        return ExitCode::SUCCESS;
    }
    super::block_on(super::check_online::run(start))
}
