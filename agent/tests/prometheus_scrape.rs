//! A real Prometheus server (Debian `prometheus`, `/usr/bin/prometheus`) scrapes a real
//! `tdsvip run` every 100 ms inside a netns lab while tds-sim's role goes SECONDARY →
//! PRIMARY → SECONDARY; PromQL over Prometheus's HTTP API then shows the acquire's phase
//! histograms and the ownership going 0 → 1 → 0.
//!
//! Prometheus 2.42 accepts any positive `scrape_interval` (promtool takes even 1ms); 100 ms
//! keeps every state of the test (each lasts until Prometheus has seen it) in several
//! samples without loading the machine. It runs in the node namespace on its loopback, with
//! its own TSDB directory in the lab's scratch directory, and is killed on Drop.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::netns::{Lab, within};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const SCRAPE_INTERVAL: &str = "100ms";

/// The Prometheus server, killed (and reaped) on Drop, also when an assertion fails.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// Starts Prometheus inside the lab's node namespace, scraping `target` as job "tdsvip".
    fn start(lab: &Lab, addr: SocketAddr, target: SocketAddr) -> Prometheus {
        let config = lab.dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n  \
                 evaluation_interval: 1s\nscrape_configs:\n  - job_name: tdsvip\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let data = lab.dir.join("prometheus-data");
        let log = lab.dir.join("prometheus.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.node, PROMETHEUS])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{PROMETHEUS} (Debian package prometheus): {e}"));
        Prometheus { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct Bed {
    lab: Lab,
    prom: Prometheus,
}

impl Bed {
    /// Logs of both servers, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- agent log:\n{}\n--- prometheus log:\n{}",
            self.lab.agent_log(),
            self.prom.log()
        )
    }

    /// `GET /api/v1/<endpoint>?<params>` on Prometheus; the `data` of a successful answer.
    fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Value {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let path = format!("/api/v1/{endpoint}?{}", query.join("&"));
        let (code, body) = self.lab.http("GET", self.prom.addr, &path, None);
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: {code} {body} ({e})\n{}", self.logs()));
        assert!(
            code == 200 && v["status"] == "success",
            "{path}: {code} {body}\n{}",
            self.logs()
        );
        v["data"].clone()
    }

    /// An instant query's samples as (labels, value).
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self.api("query", &[("query", promql)]);
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let v = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// The single value of an instant query, if it returned exactly one sample.
    fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

#[test]
fn prometheus_scrapes_the_failover_phases_and_the_ownership_change() {
    let mut lab = Lab::new("tvp", 15);
    let sim = lab.start_sim();
    // The replica starts as a SECONDARY: the agent runs without owning.
    lab.set_role(&sim, "SECONDARY");
    let agent_http: SocketAddr = "127.0.0.1:19481".parse().unwrap();
    let overlay = lab.overlay();
    let config = lab.agent_config(
        &sim,
        &format!("listen = \"{agent_http}\""),
        "[ebpf]\nenabled = true",
    );
    lab.start_agent(&config, &[]);
    assert!(
        lab.listening_within(agent_http, Duration::from_secs(5)),
        "agent HTTP never came up:\n{}",
        lab.agent_log()
    );
    let prom = Prometheus::start(&lab, "127.0.0.1:19091".parse().unwrap(), agent_http);
    let bed = Bed { lab, prom };
    let ready = within(Duration::from_secs(20), || {
        bed.lab
            .listening_within(bed.prom.addr, Duration::from_millis(1))
            && bed.lab.http("GET", bed.prom.addr, "/-/ready", None).0 == 200
    });
    assert!(ready, "prometheus not ready within 20 s\n{}", bed.logs());
    let start = unix_now();

    let owner = format!("tdsvip_owner{{ag=\"AG1\",address=\"{overlay}\"}}");
    let seen = |want: f64, limit: Duration| within(limit, || bed.value(&owner) == Some(want));
    assert!(
        seen(0.0, Duration::from_secs(10)),
        "prometheus never saw {owner} == 0: {:?}, up: {:?}\n{}",
        bed.query(&owner),
        bed.query("up"),
        bed.logs()
    );
    assert_eq!(bed.value("up{job=\"tdsvip\"}"), Some(1.0), "{}", bed.logs());
    assert!(
        !bed.lab.has_overlay(),
        "owning as a SECONDARY\n{}",
        bed.logs()
    );

    // SECONDARY → PRIMARY: the agent acquires; Prometheus sees the owner gauge at 1.
    bed.lab.set_role(&sim, "PRIMARY");
    assert!(
        within(Duration::from_secs(3), || bed.lab.has_overlay()),
        "not acquired\n{}",
        bed.logs()
    );
    assert!(
        seen(1.0, Duration::from_secs(5)),
        "prometheus never saw {owner} == 1: {:?}\n{}",
        bed.query(&owner),
        bed.logs()
    );
    // Every phase of a node-only acquire has an observation in its histogram (the agent's
    // own first login through the overlay IP comes a few probe intervals after the acquire;
    // with no peer agent, nobody measures a client's).
    for phase in ["decide", "address", "garp", "ebpf", "first_local_login"] {
        let q = format!("tdsvip_failover_phase_duration_seconds_count{{phase=\"{phase}\"}}");
        assert!(
            within(Duration::from_secs(5), || bed
                .value(&q)
                .is_some_and(|v| v > 0.0)),
            "{q}: {:?}\n{}",
            bed.query(&q),
            bed.logs()
        );
        // The histogram is complete: its +Inf bucket holds the same count.
        let inf = format!(
            "tdsvip_failover_phase_duration_seconds_bucket{{phase=\"{phase}\",le=\"+Inf\"}}"
        );
        assert_eq!(bed.value(&inf), bed.value(&q), "{inf}\n{}", bed.logs());
    }
    let acquires = "sum(tdsvip_failovers_total{ag=\"AG1\",direction=\"acquire\"})";
    assert_eq!(bed.value(acquires), Some(1.0), "{acquires}\n{}", bed.logs());

    // PRIMARY → SECONDARY: the agent releases; the gauge returns to 0.
    bed.lab.set_role(&sim, "SECONDARY");
    assert!(
        within(Duration::from_secs(3), || !bed.lab.has_overlay()),
        "not released\n{}",
        bed.logs()
    );
    assert!(
        seen(0.0, Duration::from_secs(5)),
        "prometheus never saw {owner} back at 0: {:?}\n{}",
        bed.query(&owner),
        bed.logs()
    );

    // Over the whole window: the gauge changed exactly twice, between 0 and 1. (The window
    // ends a few scrapes later, so that its last step is not older than the last 0 sample.)
    std::thread::sleep(Duration::from_millis(500));
    let end = unix_now();
    let window = format!("{}s", (end - start).ceil() as u64 + 2);
    assert_eq!(
        bed.value(&format!("changes({owner}[{window}])")),
        Some(2.0),
        "{}",
        bed.logs()
    );
    assert_eq!(
        bed.value(&format!("max_over_time({owner}[{window}])")),
        Some(1.0)
    );
    assert_eq!(
        bed.value(&format!("min_over_time({owner}[{window}])")),
        Some(0.0)
    );
    // And in that order: a range query at the scrape interval, runs of equal values folded.
    let (from, to) = (format!("{start:.3}"), format!("{end:.3}"));
    let data = bed.api(
        "query_range",
        &[
            ("query", owner.as_str()),
            ("start", from.as_str()),
            ("end", to.as_str()),
            ("step", "0.1"),
        ],
    );
    let series = data["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{data}");
    let mut runs: Vec<String> = Vec::new();
    for point in series[0]["values"].as_array().unwrap() {
        let v = point[1].as_str().unwrap().to_owned();
        if runs.last() != Some(&v) {
            runs.push(v);
        }
    }
    assert_eq!(runs, ["0", "1", "0"], "{data}\n{}", bed.logs());
    // The release is counted too.
    let releases = "sum(tdsvip_failovers_total{ag=\"AG1\",direction=\"release\"})";
    assert_eq!(bed.value(releases), Some(1.0), "{releases}\n{}", bed.logs());
}
