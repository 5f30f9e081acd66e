//! Probe benchmark: latency, throughput and CPU cost of each probe mode against tds-sim on
//! loopback, and the footprint of a process that probes three targets at 20 Hz in all modes.
//! The agent's real load (a kept login session to the local replica and to two peer replicas,
//! each at 20 Hz) is measured twice, in clear text and with TLS (`encrypt = mandatory`; the
//! simulators present SQL Server's default self-signed certificate, trusted explicitly here:
//! verification happens once per session and does not change the steady-state cost).
//!
//! The simulators run in a child process (this binary re-executed with
//! `TDSVIP_BENCH_CHILD=sim`) so that the CPU time measured here is the prober's alone; the
//! 20 Hz load runs in a second child (`TDSVIP_BENCH_CHILD=load`) whose CPU time and resident
//! memory are read from /proc, as an operator would see the agent's. Results are printed and
//! written as JSON to `$TDSVIP_BENCH_DIR/probes.json` (default `~/.cache/tdsvip/bench`).
//!
//! Run: `cargo bench -p tdsvip-probes --bench probes`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tdsvip_probes::{
    AnyProbe, Encrypt, LatencySummary, LoginConfig, Mode, ProbeConfig, ProbeRunner, Schedule,
    ScheduleConfig, TlsConfig,
};
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "TDSVIP_BENCH_CHILD";
/// `1` in a load child: its login probes use TLS.
const TLS_ENV: &str = "TDSVIP_BENCH_TLS";
const TARGETS: usize = 3;
const MODES: [Mode; 3] = [Mode::Tcp, Mode::Prelogin, Mode::Login];

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, is ignored: this bench
    // always measures everything because the goals compare the modes.
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("sim") => sim_child(),
        Ok("load") => load_child(),
        _ => parent(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn login_config(tls: bool) -> LoginConfig {
    let mut cfg = LoginConfig::new("tdsvip", "secret");
    cfg.ag = Some("AG1".into());
    cfg.databases = vec!["sales".into(), "hr".into()];
    cfg.tls = if tls {
        // The simulators' self-signed certificate, as a default SQL Server has.
        TlsConfig {
            encrypt: Encrypt::Mandatory,
            trust_server_certificate: true,
            ..TlsConfig::default()
        }
    } else {
        TlsConfig {
            encrypt: Encrypt::Off,
            allow_cleartext_login: true,
            ..TlsConfig::default()
        }
    };
    cfg
}

fn probe_for(mode: Mode, target: SocketAddr, tls: bool) -> AnyProbe {
    let login = (mode == Mode::Login).then(|| login_config(tls));
    AnyProbe::new(mode, target, ProbeConfig::default(), login).expect("probe config")
}

/// Starts three PRIMARY replicas, prints their addresses, and serves until stdin closes
/// (the parent exits or is done).
fn sim_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 1..=TARGETS {
            let mut cfg =
                tds_sim::SimConfig::new(&format!("SQLNODE{i}"), "AG1", tds_sim::Role::Primary);
            cfg.databases = vec![
                ("sales".into(), tds_sim::DbState::Online),
                ("hr".into(), tds_sim::DbState::Online),
            ];
            handles.push(tds_sim::start(cfg).await.expect("tds-sim starts"));
        }
        let addrs: Vec<String> = handles.iter().map(|h| h.tds_addr().to_string()).collect();
        println!("{}", addrs.join(","));
        std::io::stdout().flush().expect("flush");
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .expect("stdin watcher");
        for h in handles {
            h.shutdown().await;
        }
    });
}

/// Probes every target in every mode at 20 Hz for `TDSVIP_BENCH_SECONDS`, on one thread,
/// prints `probes ok`, then waits for stdin to close so the parent can read /proc first.
fn load_child() {
    let targets: Vec<SocketAddr> = std::env::var("TDSVIP_BENCH_TARGETS")
        .expect("targets")
        .split(',')
        .map(|t| t.parse().expect("target address"))
        .collect();
    let seconds: u64 = std::env::var("TDSVIP_BENCH_SECONDS")
        .expect("seconds")
        .parse()
        .expect("seconds");
    let tls = std::env::var(TLS_ENV).as_deref() == Ok("1");
    let rt = runtime();
    let (probes, ok, steady_cpu, steady_wall) = rt.block_on(async {
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut counters = Vec::new();
        // TDSVIP_BENCH_LOAD_MODES=tcp,login narrows the load to see what each mode costs;
        // `idle` runs the same 9 schedules without probing: the platform's cost of waking
        // up 180 times a second, which every mode pays on top of its own work.
        let choice = std::env::var("TDSVIP_BENCH_LOAD_MODES").ok();
        let idle = choice.as_deref() == Some("idle");
        let modes: Vec<Mode> = match &choice {
            Some(m) if !idle => m.split(',').map(|m| m.parse().expect("mode")).collect(),
            _ => MODES.to_vec(),
        };
        let schedule = ScheduleConfig {
            interval: Duration::from_millis(50),
            jitter: Duration::ZERO,
        };
        for &t in &targets {
            for &mode in &modes {
                if idle {
                    let cancel = cancel.clone();
                    counters.push(tokio::spawn(async move {
                        let mut s = Schedule::new(schedule).expect("schedule");
                        let mut n = 0u64;
                        while tokio::select! {
                            _ = s.tick() => true,
                            _ = cancel.cancelled() => false,
                        } {
                            n += 1;
                        }
                        (n, n)
                    }));
                    continue;
                }
                let runner = ProbeRunner::new(probe_for(mode, t, tls), schedule).expect("runner");
                let (task, mut rx) = runner.spawn(16, cancel.clone());
                tasks.push(task);
                counters.push(tokio::spawn(async move {
                    let (mut n, mut ok) = (0u64, 0u64);
                    while let Some(obs) = rx.recv().await {
                        n += 1;
                        ok += u64::from(obs.result.outcome.is_ok());
                    }
                    (n, ok)
                }));
            }
        }
        // The first second holds process start, runtime start and the three logins; the
        // steady state is what an agent costs over a day.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, t0) = (cpu_time_self(), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds.saturating_sub(1).max(1))).await;
        let (steady_cpu, steady_wall) = (cpu_time_self() - cpu0, t0.elapsed());
        cancel.cancel();
        for t in tasks {
            t.await.expect("runner task");
        }
        let (mut n, mut ok) = (0, 0);
        for c in counters {
            let (a, b) = c.await.expect("counter");
            n += a;
            ok += b;
        }
        (n, ok, steady_cpu, steady_wall)
    });
    println!(
        "{probes} {ok} {} {}",
        steady_cpu.as_secs_f64(),
        steady_wall.as_secs_f64()
    );
    std::io::stdout().flush().expect("flush");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(
    role: &str,
    env: &[(&str, String)],
) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.env(CHILD_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    (ChildGuard(child), stdout)
}

fn cpu_time_self() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// utime + stime of another process, from /proc/PID/stat (fields 14 and 15, in clock ticks).
fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name (field 2) may contain spaces; fields after it start past ") ".
    let rest = &stat[stat.rfind(") ").expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// A `VmRSS:`-style line of /proc/PID/status, in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .expect("status key");
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number");
    kb / 1024.0
}

struct ModeResult {
    mode: Mode,
    probes: usize,
    failures: usize,
    latency: LatencySummary,
    probes_per_second: f64,
    cpu_us_per_probe: f64,
}

/// Back-to-back probes on one thread: the latency each sees, how many one core completes
/// per second, and this process's CPU time per probe.
fn measure_mode(
    rt: &tokio::runtime::Runtime,
    mode: Mode,
    target: SocketAddr,
    n: usize,
    tls: bool,
) -> ModeResult {
    rt.block_on(async {
        let mut probe = probe_for(mode, target, tls);
        for _ in 0..200 {
            probe.probe().await;
        }
        let mut latencies = Vec::with_capacity(n);
        let mut failures = 0;
        let cpu0 = cpu_time_self();
        let t0 = Instant::now();
        for _ in 0..n {
            let r = probe.probe().await;
            if r.outcome.is_ok() {
                latencies.push(r.latency);
            } else {
                failures += 1;
            }
        }
        let wall = t0.elapsed();
        let cpu = cpu_time_self() - cpu0;
        ModeResult {
            mode,
            probes: n,
            failures,
            latency: LatencySummary::from_samples(&latencies).expect("some probe succeeded"),
            probes_per_second: n as f64 / wall.as_secs_f64(),
            cpu_us_per_probe: cpu.as_secs_f64() * 1e6 / n as f64,
        }
    })
}

/// What one load child cost, read from /proc and from its own steady-state account.
#[derive(serde::Serialize)]
struct LoadResult {
    modes: String,
    seconds: f64,
    probes: u64,
    ok: u64,
    cpu_seconds: f64,
    whole_life_core_percent: f64,
    steady_core_percent: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

fn measure_load(targets: &str, seconds: u64, modes: &str, tls: bool) -> LoadResult {
    let (mut child, mut out) = spawn_child(
        "load",
        &[
            ("TDSVIP_BENCH_TARGETS", targets.trim().to_owned()),
            ("TDSVIP_BENCH_SECONDS", seconds.to_string()),
            ("TDSVIP_BENCH_LOAD_MODES", modes.to_owned()),
            (TLS_ENV, if tls { "1" } else { "0" }.to_owned()),
        ],
    );
    let pid = child.0.id();
    let started = Instant::now();
    let mut line = String::new();
    out.read_line(&mut line).expect("load result");
    let wall = started.elapsed();
    let cpu = cpu_time_of(pid);
    let rss_mib = status_mib(pid, "VmRSS:");
    let peak_rss_mib = status_mib(pid, "VmHWM:");
    drop(child.0.stdin.take());
    let _ = child.0.wait();
    let f: Vec<&str> = line.split_whitespace().collect();
    let steady_cpu: f64 = f[2].parse().expect("cpu");
    let steady_wall: f64 = f[3].parse().expect("wall");
    let r = LoadResult {
        modes: if tls {
            format!("{modes} (TLS)")
        } else {
            modes.to_owned()
        },
        seconds: wall.as_secs_f64(),
        probes: f[0].parse().expect("probes"),
        ok: f[1].parse().expect("ok"),
        cpu_seconds: cpu.as_secs_f64(),
        whole_life_core_percent: cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        steady_core_percent: steady_cpu / steady_wall * 100.0,
        rss_mib,
        peak_rss_mib,
    };
    println!(
        "  {:<20} {} ticks ({} ok): {:.2} % of one core in steady state ({:.2} % over its whole life); RSS {:.1} MiB, peak {:.1} MiB",
        r.modes,
        r.probes,
        r.ok,
        r.steady_core_percent,
        r.whole_life_core_percent,
        r.rss_mib,
        r.peak_rss_mib
    );
    r
}

fn goal(name: &str, measured: f64, limit: f64, unit: &str) -> Value {
    let met = measured < limit;
    println!(
        "  goal {name}: {measured:.3} {unit} (< {limit} {unit}) {}",
        if met { "MET" } else { "MISSED" }
    );
    json!({"goal": name, "measured": measured, "limit": limit, "unit": unit, "met": met})
}

fn parent() {
    let samples: usize = std::env::var("TDSVIP_BENCH_PROBES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let load_seconds: u64 = std::env::var("TDSVIP_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);

    let (sim, mut sim_out) = spawn_child("sim", &[]);
    let mut line = String::new();
    sim_out.read_line(&mut line).expect("sim addresses");
    let targets: Vec<SocketAddr> = line
        .trim()
        .split(',')
        .map(|a| a.parse().expect("sim address"))
        .collect();
    println!("tds-sim (pid {}) on {}", sim.0.id(), line.trim());

    let rt = runtime();
    let mut modes = Vec::new();
    println!("\nback-to-back probes against one target, {samples} each, one thread:");
    for mode in MODES {
        let r = measure_mode(&rt, mode, targets[0], samples, false);
        println!(
            "  {:<8} latency {}  | {:>7.0} probes/s | {:>6.1} us CPU/probe | {} failed",
            r.mode.name(),
            r.latency,
            r.probes_per_second,
            r.cpu_us_per_probe,
            r.failures
        );
        modes.push(r);
    }

    println!(
        "\none process, {TARGETS} targets x {} schedules at 20 Hz, {load_seconds} s each:",
        MODES.len()
    );
    let idle = measure_load(&line, load_seconds, "idle", false);
    let load = measure_load(&line, load_seconds, "tcp,prelogin,login", false);
    println!(
        "\nthe agent's load: a kept login session to {TARGETS} replicas at 20 Hz, {load_seconds} s each:"
    );
    let login_plain = measure_load(&line, load_seconds, "login", false);
    let login_tls = measure_load(&line, load_seconds, "login", true);
    let tls_mode = measure_mode(&rt, Mode::Login, targets[0], samples, true);
    println!(
        "  login over TLS back to back: latency {}  | {:>6.1} us CPU/probe | {} failed",
        tls_mode.latency, tls_mode.cpu_us_per_probe, tls_mode.failures
    );
    drop(sim);

    println!("\ngoals:");
    let by_mode = |m: Mode| modes.iter().find(|r| r.mode == m).expect("mode measured");
    let goals = vec![
        goal(
            "prelogin_p99_ms",
            by_mode(Mode::Prelogin).latency.p99,
            1.0,
            "ms",
        ),
        goal(
            "login_session_query_p99_ms",
            by_mode(Mode::Login).latency.p99,
            2.0,
            "ms",
        ),
        goal(
            "load_3x20hz_all_modes_core_percent",
            load.steady_core_percent,
            1.0,
            "%",
        ),
        goal(
            "load_3x20hz_all_modes_rss_mib",
            load.peak_rss_mib,
            30.0,
            "MiB",
        ),
        goal(
            "load_3x20hz_login_tls_core_percent",
            login_tls.steady_core_percent,
            1.0,
            "%",
        ),
        goal(
            "load_3x20hz_login_tls_rss_mib",
            login_tls.peak_rss_mib,
            30.0,
            "MiB",
        ),
    ];

    let report = json!({
        "bench": "probes",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "back_to_back": modes.iter().map(|r| json!({
            "mode": r.mode.name(),
            "probes": r.probes,
            "failures": r.failures,
            "latency_ms": r.latency,
            "probes_per_second_one_core": r.probes_per_second,
            "cpu_us_per_probe": r.cpu_us_per_probe,
        })).collect::<Vec<_>>(),
        "load": load,
        "load_idle_baseline": idle,
        "load_login_plain": login_plain,
        "load_login_tls": login_tls,
        "back_to_back_login_tls": {
            "probes": tls_mode.probes,
            "failures": tls_mode.failures,
            "latency_ms": tls_mode.latency,
            "probes_per_second_one_core": tls_mode.probes_per_second,
            "cpu_us_per_probe": tls_mode.cpu_us_per_probe,
        },
        "goals": goals,
    });
    let path = tdsvip_bench_output::write_json("probes.json", &report).expect("write report");
    println!("\nwrote {}", path.display());
}
