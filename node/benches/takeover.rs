//! Per-step timings of acquire and release on a real (namespaced) node: netlink address,
//! announcement, `vip_guard` map flip, tickles and SOCK_DESTROY, first without client
//! connections, then with 1,000 established connections tracked by `conn_track`.
//!
//! `cargo bench -p tdsvip-node` (root). Writes JSON with p50/p90/p99/max per step to
//! `$TDSVIP_BENCH_DIR/takeover.json` (default ~/.cache/tdsvip/bench).
//! `TDSVIP_BENCH_ITERATIONS` (default 300) sets the number of acquire/release cycles. Not a test: nothing here passes or fails on timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{Lab, in_netns};
use tdsvip_node::{CallSteps, NodeConfig, NodeExecutor, NodeTakeover, OverlayAddress, StepKind};

const PORT: u16 = 1433;
const CONNECTIONS: usize = 1000;

#[derive(Default)]
struct Samples(BTreeMap<String, Vec<Duration>>);

impl Samples {
    fn add(&mut self, name: &str, value: Duration) {
        self.0.entry(name.to_owned()).or_default().push(value);
    }

    fn add_timeline(&mut self, timeline: &CallSteps) {
        for step in &timeline.steps {
            self.add(step.kind.into(), step.duration);
        }
        self.add("total", timeline.total);
    }

    fn summary(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, values) in &self.0 {
            let mut sorted = values.clone();
            sorted.sort();
            let pick = |p: f64| {
                let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                sorted[rank - 1].as_secs_f64() * 1e6
            };
            out.insert(
                name.clone(),
                json!({
                    "n": sorted.len(),
                    "p50_us": pick(0.50),
                    "p90_us": pick(0.90),
                    "p99_us": pick(0.99),
                    "max_us": pick(1.0),
                }),
            );
        }
        Value::Object(out)
    }
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(16_384);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn main() {
    raise_fd_limit();
    let iterations: usize = std::env::var("TDSVIP_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(iterations));
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    let path = tdsvip_bench_output::write_json("takeover.json", &report)
        .unwrap_or_else(|e| panic!("writing the report: {e}"));
    println!("written to {}", path.display());
}

async fn run(iterations: usize) -> Value {
    let lab = Lab::new(40);
    let vip = lab.vip(false);
    let config = NodeConfig::new("eth0", vec![OverlayAddress::host(vip)]);
    let mut node = in_netns(&lab.a.ns, || NodeExecutor::new(config)).expect("executor");

    // 1. Acquire / release cycles with no client connections.
    let mut acquire = Samples::default();
    let mut release = Samples::default();
    for _ in 0..iterations {
        let timeline = node.acquire(&[]).await.expect("acquire");
        acquire.add_timeline(&timeline);
        let timeline = node.release().await.expect("release");
        release.add_timeline(&timeline);
    }

    // 2. 1,000 established connections, tracked by conn_track and tickled on each acquire.
    let listener = in_netns(&lab.a.ns, || TcpListener::bind(("::", PORT))).expect("listen");
    let server = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(CONNECTIONS);
        for stream in listener.incoming().take(CONNECTIONS) {
            held.push(stream.expect("accept"));
        }
        held
    });
    node.acquire(&[]).await.expect("acquire");
    let target = SocketAddr::new(vip, PORT);
    let clients: Vec<TcpStream> = in_netns(&lab.client.ns, || {
        (0..CONNECTIONS)
            .map(|_| TcpStream::connect(target).expect("client connect"))
            .collect()
    });
    let _server_side = server.join().expect("server thread");
    let start = Instant::now();
    loop {
        let tracked = node.tracked_connections().expect("tracker").len();
        if tracked >= CONNECTIONS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "only {tracked} tracked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut loaded = Samples::default();
    let rounds = (iterations / 3).max(10);
    let mut tickle_detail = String::new();
    for _ in 0..rounds {
        let read = Instant::now();
        let tracked = node.tracked_connections().expect("tracker");
        loaded.add("tracker_read", read.elapsed());
        assert!(tracked.len() >= CONNECTIONS);
        // Re-acquiring is idempotent and tickles every tracked connection again.
        let timeline = node.acquire(&[]).await.expect("acquire");
        loaded.add_timeline(&timeline);
        if let Some(step) = timeline.steps.iter().find(|s| s.kind == StepKind::Tickle) {
            tickle_detail.clone_from(&step.detail);
        }
    }
    let mut release_loaded = Samples::default();
    let timeline = node
        .release()
        .await
        .expect("release with 1,000 connections");
    let destroyed = timeline
        .steps
        .iter()
        .find(|s| s.kind == StepKind::SockDestroy)
        .map(|s| s.detail.clone());
    release_loaded.add_timeline(&timeline);
    drop(clients);

    let acquire_summary = acquire.summary();
    let p99_total = acquire_summary["total"]["p99_us"]
        .as_f64()
        .unwrap_or(f64::NAN);
    json!({
        "iterations": iterations,
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "acquire": acquire_summary,
        "release": release.summary(),
        "with_1000_connections": {
            "iterations": rounds,
            "acquire": loaded.summary(),
            "release_once": release_loaded.summary(),
            "release_sock_destroy": destroyed,
            "last_tickle_round": tickle_detail,
        },
        "goal": {
            "acquire_without_cloud_p99_under_us": 5000,
            "acquire_total_p99_us": p99_total,
            "met": p99_total < 5000.0,
        }
    })
}
