//! `tdsvip routes`: where does the overlay IP's route point, and (with `--claim`) move it here.
//!
//! The operator's tool for "where does the overlay IP go right now?" and for a manual move,
//! using the very executor the agent uses, so what it shows is what the agent would do.
//! Exit 0 when every route table points at this node at the end, 1 otherwise, 2 on
//! configuration problems (bad config, unknown table or ENI, missing permissions).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use tdsvip_cloud::{
    AwsExecutor, ClaimMode, CloudConfig, CloudError, Ec2Api, Identity, RouteTableExecutor,
};

use super::{EXIT_USAGE, block_on, usage_error};
use tdsvip::config::AgentConfig;

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// The agent's TOML config file (its [cloud] section and overlay addresses).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Point every configured route table at this node's ENI (after checking that the ENI's
    /// source/destination check is off), then show before / after per table.
    #[arg(long)]
    claim: bool,
    /// The overlay IPv4 address, when the config has more than one.
    #[arg(long, value_name = "IP")]
    address: Option<Ipv4Addr>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RoutesArgs) -> ExitCode {
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Some(mut cloud) = config.cloud.clone() else {
        return usage_error(
            "--config",
            format!("{} has no [cloud] section", args.config.display()),
        );
    };
    // The ENI is the one behind the agent's interface unless the section names another.
    if cloud.interface.is_none() && cloud.eni_id.is_none() {
        cloud.interface = Some(config.interface.clone());
    }
    let address = match pick_address(&config, args.address) {
        Ok(a) => a,
        Err(reason) => return usage_error("--address", reason),
    };
    block_on(run_async(&cloud, address, args.claim, args.json))
}

async fn run_async(cloud: &CloudConfig, address: Ipv4Addr, claim: bool, json: bool) -> ExitCode {
    let identity = match Identity::resolve(cloud).await {
        Ok(i) => i,
        Err(e) => return cloud_error("cannot tell this node's ENI", &e),
    };
    if claim {
        let executor = match AwsExecutor::connect(cloud, &identity, address).await {
            Ok(e) => e,
            Err(e) => return cloud_error("cannot claim", &e),
        };
        let report = tdsvip_cloud::CloudExecutor::claim(&executor).await;
        print(&report, json);
        exit_code(report.all_point_here(), report.has_config_problem())
    } else {
        // Looking changes nothing, so it does not insist on the source/destination check.
        let report = match cloud.mode {
            ClaimMode::Route => {
                let api = match Ec2Api::connect(cloud).await {
                    Ok(api) => api,
                    Err(e) => return cloud_error("cannot reach EC2", &e),
                };
                RouteTableExecutor::without_checks(api, cloud, &identity, address)
                    .observe()
                    .await
            }
            ClaimMode::SecondaryIp => match AwsExecutor::connect(cloud, &identity, address).await {
                Ok(e) => tdsvip_cloud::CloudExecutor::observe(&e).await,
                Err(e) => return cloud_error("cannot look", &e),
            },
        };
        print(&report, json);
        exit_code(report.all_point_here(), report.has_config_problem())
    }
}

/// The configured IPv4 overlay address, or the one `--address` names among them.
fn pick_address(config: &AgentConfig, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    let v4: Vec<Ipv4Addr> = config
        .ags
        .iter()
        .flat_map(|ag| ag.overlay_addresses())
        .filter_map(|a| match a.ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    let listed = || {
        v4.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, v4.as_slice()) {
        (Some(ip), _) if v4.contains(&ip) => Ok(ip),
        (Some(ip), _) => Err(format!(
            "{ip} is not an overlay address of the config (it has: {})",
            listed()
        )),
        (None, [only]) => Ok(*only),
        (None, []) => Err("the config has no IPv4 overlay address (routes are IPv4 /32)".into()),
        (None, _) => Err(format!(
            "the config has several IPv4 overlay addresses, pick one: {}",
            listed()
        )),
    }
}

fn print<R: Serialize + std::fmt::Display>(report: &R, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode the report: {e}"),
        }
    } else {
        print!("{report}");
    }
}

fn exit_code(all_here: bool, config_problem: bool) -> ExitCode {
    if config_problem {
        ExitCode::from(EXIT_USAGE)
    } else if all_here {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cloud_error(what: &str, e: &CloudError) -> ExitCode {
    eprintln!("error: {what}: {e}");
    if e.is_config_problem() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::FAILURE
    }
}
