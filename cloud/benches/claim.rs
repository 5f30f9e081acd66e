//! Benchmark: how long `claim` takes against moto with 1, 2, 4 and 8 route tables, compared
//! with claiming them one after the other with a bare ReplaceRoute each, as `aws-vpc-move-ip`
//! does (without its `sleep 1` per table, which would only make it look worse).
//!
//! Each measured claim really moves the route: two executors (node a, node b) take the tables
//! from each other in turn. Writes JSON to `$TDSVIP_BENCH_DIR/claim.json` (default
//! ~/.cache/tdsvip/bench). Goal: 4 tables in parallel take under 1.5x the time of one table.
//!
//! Two scenarios: moto directly, and moto behind the tests' proxy adding a fixed delay to every
//! call (`TDSVIP_BENCH_LATENCY_MS`, default 50). moto spends its few milliseconds per call in
//! Python under the GIL on a 2-core machine, so it answers parallel calls one after the other;
//! EC2's latency is mostly waiting, which parallel calls overlap. The delayed scenario shows
//! what the client's parallelism buys when the server is not the bottleneck.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy, Rule};
use common::{Moto, OVERLAY, World, api, config, setup_api};
use serde_json::json;
use tdsvip_cloud::RouteTableExecutor;

const SIZES: [usize; 4] = [1, 2, 4, 8];
const WARMUP: usize = 5;
const RUNS: usize = 31;
const GOAL: f64 = 1.5;

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Stats {
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
}

fn stats(samples: &mut [f64]) -> Stats {
    samples.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let index = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index]
    };
    Stats {
        median: rank(0.5),
        p90: rank(0.9),
        min: samples[0],
        max: samples[samples.len() - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Size {
    tables: usize,
    claim: Stats,
    write_phase: Stats,
    sequential: Stats,
}

async fn measure(world: &World, endpoint: &str, n: usize) -> Result<Size, String> {
    let cfg = config(endpoint, &world.tables[..n]);
    let a = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.a.identity(), OVERLAY)
        .await
        .map_err(|e| e.to_string())?;
    let b = RouteTableExecutor::new(api(&cfg).await, &cfg, &world.b.identity(), OVERLAY)
        .await
        .map_err(|e| e.to_string())?;
    let pair = [&a, &b];

    let mut claims = Vec::with_capacity(RUNS);
    let mut writes = Vec::with_capacity(RUNS);
    for run in 0..WARMUP + RUNS {
        let executor = pair[run % 2];
        let started = Instant::now();
        let report = executor.claim().await;
        let elapsed = ms(started.elapsed());
        if !report.all_point_here() {
            return Err(format!("claim with {n} tables did not land:\n{report}"));
        }
        if run >= WARMUP {
            claims.push(elapsed);
            writes.push(ms(report
                .tables
                .iter()
                .map(|t| t.outcome.elapsed)
                .max()
                .unwrap_or_default()));
        }
    }

    let mut sequential = Vec::with_capacity(RUNS);
    for run in 0..WARMUP + RUNS {
        let executor = pair[run % 2];
        let started = Instant::now();
        let records = executor.claim_sequentially_like_aws_vpc_move_ip().await;
        let elapsed = ms(started.elapsed());
        if let Some(failed) = records
            .iter()
            .find(|r| r.result != tdsvip_cloud::CallResult::Ok)
        {
            return Err(format!("sequential ReplaceRoute failed: {failed:?}"));
        }
        if run >= WARMUP {
            sequential.push(elapsed);
        }
    }
    Ok(Size {
        tables: n,
        claim: stats(&mut claims),
        write_phase: stats(&mut writes),
        sequential: stats(&mut sequential),
    })
}

async fn run() -> Result<serde_json::Value, String> {
    let moto = Moto::start();
    let endpoint = moto.endpoint();
    let setup = setup_api(&endpoint).await;
    let largest = SIZES.iter().copied().max().unwrap_or(1);
    let world = World::build(setup.client(), largest).await;
    world
        .route_to(setup.client(), &world.tables, &world.b.eni)
        .await;

    let latency_ms: u64 = std::env::var("TDSVIP_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    eprintln!("scenario: moto directly");
    let direct = scenario(&world, &endpoint, 0).await?;
    eprintln!("scenario: moto + {latency_ms} ms per call");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], moto.port));
    let delay = Duration::from_millis(latency_ms);
    let rules = [
        "DescribeRouteTables",
        "ReplaceRoute",
        "CreateRoute",
        "DescribeNetworkInterfaceAttribute",
    ]
    .into_iter()
    .map(|action| Rule {
        action,
        table: None,
        fault: Fault::Stall(delay),
        times: usize::MAX,
    })
    .collect();
    let proxy = FaultProxy::start(upstream, rules).await;
    let delayed = scenario(&world, &proxy.endpoint(), latency_ms).await?;
    Ok(json!({
        "warmup_runs": WARMUP,
        "runs": RUNS,
        "claim": "per table in parallel: DescribeRouteTables, ReplaceRoute, DescribeRouteTables",
        "sequential": "one ReplaceRoute per table, one after the other (aws-vpc-move-ip without sleep 1)",
        "goal_ratio_below": GOAL,
        "ratio_parallel4_over_single": direct["ratio_parallel4_over_single"],
        "ratio_parallel4_over_single_with_latency": delayed["ratio_parallel4_over_single"],
        "scenarios": [direct, delayed],
    }))
}

async fn scenario(
    world: &World,
    endpoint: &str,
    added_latency_ms: u64,
) -> Result<serde_json::Value, String> {
    let mut sizes = Vec::new();
    for n in SIZES {
        let size = measure(world, endpoint, n).await?;
        eprintln!(
            "{:>2} tables: parallel claim median {:7.2} ms p90 {:7.2} ms (write phase median {:6.2} ms) | sequential ReplaceRoute median {:7.2} ms p90 {:7.2} ms",
            size.tables,
            size.claim.median,
            size.claim.p90,
            size.write_phase.median,
            size.sequential.median,
            size.sequential.p90
        );
        sizes.push(size);
    }
    let median_of = |n: usize, pick: fn(&Size) -> Stats| {
        sizes
            .iter()
            .find(|s| s.tables == n)
            .map(|s| pick(s).median)
            .unwrap_or(f64::NAN)
    };
    let ratio = median_of(4, |s| s.claim) / median_of(1, |s| s.claim);
    let write_ratio = median_of(4, |s| s.write_phase) / median_of(1, |s| s.write_phase);
    let sequential_ratio = median_of(4, |s| s.sequential) / median_of(1, |s| s.sequential);
    eprintln!(
        "parallel(4)/single = {ratio:.2} (goal < {GOAL}); write phase {write_ratio:.2}; sequential(4)/single = {sequential_ratio:.2}"
    );
    Ok(json!({
        "endpoint": if added_latency_ms == 0 { "moto_server on loopback" } else { "moto_server on loopback behind a delaying proxy" },
        "added_latency_ms_per_call": added_latency_ms,
        "sizes": sizes.iter().map(|s| json!({
            "tables": s.tables,
            "parallel_claim_ms": s.claim,
            "parallel_write_phase_ms": s.write_phase,
            "sequential_replace_ms": s.sequential,
        })).collect::<Vec<_>>(),
        "ratio_parallel4_over_single": ratio,
        "ratio_parallel4_over_single_write_phase": write_ratio,
        "ratio_sequential4_over_single": sequential_ratio,
        "goal_met": ratio < GOAL,
    }))
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run());
    let value = match result {
        Ok(value) => value,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    };
    match tdsvip_bench_output::write_json("claim.json", &value) {
        Ok(path) => eprintln!("wrote {}", path.display()),
        Err(e) => {
            eprintln!("cannot write the report: {e}");
            std::process::exit(1);
        }
    }
}
