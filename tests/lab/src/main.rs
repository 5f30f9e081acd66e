//! `tdsvip-lab`: the command line of the failover lab (see the library for the parts).
//! Exit status: 0 on a completed run, 1 when the lab failed, 2 on bad arguments.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::path::Path;

use clap::Parser;
use tdsvip_lab::cli::{Cli, Cmd};
use tdsvip_lab::{run_drill, signals};

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

use tdsvip_bench_output::bench_dir;

fn run(cli: Cli) -> Result<(), String> {
    signals::install()?;
    match cli.cmd {
        None => {
            let d = cli.drill;
            let mut settings = d.common.settings(d.implementation);
            settings.cloud_tables = d.cloud.then_some(d.route_tables as usize);
            settings.fence_aws = d.fence_aws;
            let out = run_drill(settings, d.scenario, d.trials as usize, d.plot.is_some())?;
            print!("{}", out.text);
            if let Some(p) = &d.json {
                let text = serde_json::to_string_pretty(&out.summary.to_json())
                    .map_err(|e| e.to_string())?;
                write_file(p, &(text + "\n"))?;
                println!("JSON: {}", p.display());
            }
            if let (Some(p), Some(svg)) = (&d.plot, &out.plot) {
                write_file(p, svg)?;
                println!("plot: {}", p.display());
            }
            Ok(())
        }
        Some(Cmd::Bench(b)) => {
            let out = tdsvip_lab::bench::run(&b)?;
            let doc = &out.doc;
            for key in [
                "ratios_keepalived_over_tdsvip",
                "ratios_keepalived_script_over_tdsvip",
            ] {
                println!("{key}: {}", doc[key]);
            }
            println!("goals: {}", doc["goals"]);
            let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())? + "\n";
            // One default file per promoter, so that neither bench overwrites the other's;
            // the agents' benches run one scenario each, so one file per scenario too.
            let stem = match (b.common.promote, b.scenario) {
                (tdsvip_lab::lab::Promote::Lab, _) => "lab".to_owned(),
                (tdsvip_lab::lab::Promote::Agent, None) => "lab-agent".to_owned(),
                (tdsvip_lab::lab::Promote::Agent, Some(s)) => format!("lab-agent-{s}"),
            };
            let default = bench_dir().join(format!("{stem}.json"));
            write_file(&default, &text)?;
            println!("JSON: {}", default.display());
            let tl = bench_dir().join(format!("{stem}-timelines.txt"));
            write_file(&tl, &out.timelines)?;
            println!("every trial's timeline: {}", tl.display());
            if let Some(p) = &b.json {
                write_file(p, &text)?;
                println!("JSON: {}", p.display());
            }
            if let Some(p) = &b.plot {
                write_file(p, &tdsvip_lab::plot::cdf_svg(&out.cdf)?)?;
                println!("plot: {}", p.display());
            }
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("tdsvip-lab: {e}");
        std::process::exit(1);
    }
}
