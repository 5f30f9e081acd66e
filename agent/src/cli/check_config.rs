//! `tdsvip check-config`: validates a config file without acting on anything.
//!
//! Prints every problem as `KEY: reason` (all of them, not the first) and exits 2, or
//! prints a one-line summary and exits 0, so it can gate a deployment pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::EXIT_USAGE;
use tdsvip::config::AgentConfig;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The agent's TOML config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> ExitCode {
    match AgentConfig::load(&args.config) {
        Ok(c) => {
            let addresses: usize = c.ags.iter().map(|a| a.overlay_addresses().len()).sum();
            println!(
                "{}: ok (node {}, {} availability group(s), {} overlay address(es), {} peer(s))",
                args.config.display(),
                c.node_name(),
                c.ags.len(),
                addresses,
                c.peers.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}
