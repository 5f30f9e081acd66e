//! `tdsvip-lab bench`: kill-primary and switchover for each implementation, one drill of
//! `--trials` each, then the ratios of each keepalived over tdsvip and the goals of the
//! issues, written as one JSON document (`$TDSVIP_BENCH_DIR/lab.json`) beside every
//! trial's timeline and, with `--plot`, the CDF picture. `--impl` limits the run to some
//! implementations; a ratio is written only when both of its sides ran.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::cli::BenchArgs;
use crate::lab::Impl;
use crate::plot::CdfPanel;
use crate::run_drill;
use crate::scenario::Scenario;
use crate::stats::ratio;
use crate::summary::{RunSummary, summary_text};

/// What a bench run produced.
pub struct BenchOutcome {
    /// The JSON document.
    pub doc: Value,
    /// Every trial's timeline.
    pub timelines: String,
    /// Per scenario, per implementation: promotion -> client of every promotion.
    pub cdf: Vec<CdfPanel>,
}

/// Runs every selected implementation on every selected scenario, printing each summary.
pub fn run(b: &BenchArgs) -> Result<BenchOutcome, String> {
    let scenarios = b.scenarios()?;
    let mut cdf: Vec<CdfPanel> = scenarios
        .iter()
        .map(|s| (s.name().to_owned(), Vec::new()))
        .collect();
    let (mut runs, mut timelines, mut table) = (Vec::new(), String::new(), BTreeMap::new());
    for implementation in b.implementations() {
        for (k, &scenario) in scenarios.iter().enumerate() {
            eprintln!(
                "bench: {} / {scenario}, {} trials",
                implementation.name(),
                b.trials
            );
            let settings = b.common.settings(implementation);
            let out = run_drill(settings, scenario, b.trials as usize, false)?;
            print!("{}", summary_text(&out.summary));
            let promotions = out.trials.iter();
            let promotions = promotions.flat_map(|t| t.result.promotion_to_client.iter().copied());
            cdf[k]
                .1
                .push((implementation.name().to_owned(), promotions.collect()));
            timelines.push_str(&out.text);
            runs.push(out.summary.to_json());
            table.insert((implementation.name(), scenario.name()), out.summary);
        }
    }
    let doc = json!({
        "trials": b.trials,
        "runs": runs,
        "ratios_keepalived_over_tdsvip": ratios(&table, &scenarios, Impl::Keepalived),
        "ratios_keepalived_script_over_tdsvip": ratios(&table, &scenarios, Impl::KeepalivedScript),
        "goals": goals(&table, &scenarios),
    });
    Ok(BenchOutcome {
        doc,
        timelines,
        cdf,
    })
}

/// Per (implementation, scenario) name.
type Table = BTreeMap<(&'static str, &'static str), RunSummary>;

/// `other` over tdsvip per scenario, where both ran.
fn ratios(table: &Table, scenarios: &[Scenario], other: Impl) -> Value {
    let mut out = Map::new();
    for &scenario in scenarios {
        let (Some(t), Some(k)) = (
            table.get(&(Impl::Tdsvip.name(), scenario.name())),
            table.get(&(other.name(), scenario.name())),
        ) else {
            continue;
        };
        let (kp, tp) = (&k.promotion_to_client_ms, &t.promotion_to_client_ms);
        let (ko, to) = (&k.client_outage_ms, &t.client_outage_ms);
        out.insert(
            scenario.name().into(),
            json!({
                "promotion_to_client_p50": ratio(kp.p50, tp.p50),
                "promotion_to_client_p99": ratio(kp.p99, tp.p99),
                "client_outage_p50": ratio(ko.p50, to.p50),
                "client_outage_p99": ratio(ko.p99, to.p99),
            }),
        );
    }
    Value::Object(out)
}

/// The issues' goals for tdsvip, per scenario (`null`: not measured in this run).
fn goals(table: &Table, scenarios: &[Scenario]) -> Value {
    let mut goals = json!({});
    let keepalived = ratios(table, scenarios, Impl::Keepalived);
    for &scenario in scenarios {
        let Some(t) = table.get(&(Impl::Tdsvip.name(), scenario.name())) else {
            continue;
        };
        let name = scenario.name();
        goals["tdsvip_promotion_to_client_p99_le_100ms"][name] =
            json!(t.promotion_to_client_ms.p99.map(|v| v <= 100.0));
        goals["tdsvip_p50_5x_better_than_keepalived"][name] = json!(
            keepalived[name]["promotion_to_client_p50"]
                .as_f64()
                .map(|r| r >= 5.0)
        );
        goals["idle_sessions_reset_le_50ms_after_takeover"][name] =
            json!(t.idle_session_reset_ms.max.map(|v| v <= 50.0));
    }
    goals
}
