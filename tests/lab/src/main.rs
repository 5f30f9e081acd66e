//! `tdsvip-lab`: the command line of the failover lab (see the library for the parts).
//! Exit status: 0 on a completed run, 1 when the lab failed, 2 on bad arguments.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::path::Path;

use clap::Parser;
use serde_json::json;
use tdsvip_lab::cli::{Cli, Cmd};
use tdsvip_lab::lab::Impl;
use tdsvip_lab::stats::ratio;
use tdsvip_lab::{run_drill, signals};

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

use tdsvip_bench_output::bench_dir;

use tdsvip_lab::plot::CdfPanel;

fn run(cli: Cli) -> Result<(), String> {
    signals::install()?;
    match cli.cmd {
        None => {
            let d = cli.drill;
            let mut settings = d.common.settings(d.implementation);
            settings.cloud_tables = d.cloud.then_some(d.route_tables as usize);
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
            let mut runs = Vec::new();
            let mut timelines = String::new();
            let mut table = std::collections::BTreeMap::new();
            let scenarios = b.scenarios();
            // Per scenario, per implementation: promotion -> client of every promotion.
            let mut cdf: Vec<CdfPanel> = scenarios
                .iter()
                .map(|s| (s.name().to_owned(), Vec::new()))
                .collect();
            for implementation in Impl::ALL {
                for (k, &scenario) in scenarios.iter().enumerate() {
                    eprintln!(
                        "bench: {} / {scenario}, {} trials",
                        implementation.name(),
                        b.trials
                    );
                    let out = run_drill(
                        b.common.settings(implementation),
                        scenario,
                        b.trials as usize,
                        false,
                    )?;
                    print!("{}", tdsvip_lab::summary::summary_text(&out.summary));
                    cdf[k].1.push((
                        implementation.name().to_owned(),
                        out.trials
                            .iter()
                            .flat_map(|t| t.result.promotion_to_client.iter().copied())
                            .collect(),
                    ));
                    timelines.push_str(&out.text);
                    table.insert(
                        (implementation.name(), scenario.name()),
                        out.summary.clone(),
                    );
                    runs.push(out.summary.to_json());
                }
            }
            // Each keepalived over tdsvip: at its best (track_file) and with its 1 s script.
            let ratios_of = |other: &str| -> serde_json::Map<String, serde_json::Value> {
                let mut ratios = serde_json::Map::new();
                for scenario in scenarios.iter().map(|s| s.name()) {
                    let (t, k) = (&table[&("tdsvip", scenario)], &table[&(other, scenario)]);
                    ratios.insert(
                        scenario.into(),
                        json!({
                            "promotion_to_client_p50": ratio(k.promotion_to_client_ms.p50, t.promotion_to_client_ms.p50),
                            "promotion_to_client_p99": ratio(k.promotion_to_client_ms.p99, t.promotion_to_client_ms.p99),
                            "client_outage_p50": ratio(k.client_outage_ms.p50, t.client_outage_ms.p50),
                            "client_outage_p99": ratio(k.client_outage_ms.p99, t.client_outage_ms.p99),
                        }),
                    );
                }
                ratios
            };
            let ratios = ratios_of(Impl::Keepalived.name());
            let ratios_script = ratios_of(Impl::KeepalivedScript.name());
            let mut goals = json!({});
            for scenario in scenarios.iter().map(|s| s.name()) {
                let t = &table[&("tdsvip", scenario)];
                goals["tdsvip_promotion_to_client_p99_le_100ms"][scenario] =
                    json!(t.promotion_to_client_ms.p99.map(|v| v <= 100.0));
                goals["tdsvip_p50_5x_better_than_keepalived"][scenario] = json!(
                    ratios[scenario]["promotion_to_client_p50"]
                        .as_f64()
                        .map(|r| r >= 5.0)
                );
                goals["idle_sessions_reset_le_50ms_after_takeover"][scenario] =
                    json!(t.idle_session_reset_ms.max.map(|v| v <= 50.0));
            }
            let doc = json!({
                "trials": b.trials,
                "runs": runs,
                "ratios_keepalived_over_tdsvip": ratios,
                "ratios_keepalived_script_over_tdsvip": ratios_script,
                "goals": goals,
            });
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
            println!(
                "ratios (keepalived / tdsvip): {}",
                serde_json::Value::Object(ratios)
            );
            println!(
                "ratios (keepalived-script / tdsvip): {}",
                serde_json::Value::Object(ratios_script)
            );
            println!("goals: {goals}");
            let default = bench_dir().join("lab.json");
            write_file(&default, &text)?;
            println!("JSON: {}", default.display());
            let tl = bench_dir().join("lab-timelines.txt");
            write_file(&tl, &timelines)?;
            println!("every trial's timeline: {}", tl.display());
            if let Some(p) = &b.json {
                write_file(p, &text)?;
                println!("JSON: {}", p.display());
            }
            if let Some(p) = &b.plot {
                write_file(p, &tdsvip_lab::plot::cdf_svg(&cdf)?)?;
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
