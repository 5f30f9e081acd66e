//! `tdsvip probe`: runs one of the agent's probes against an endpoint, like `ping` for TDS.
//!
//! It is the operator's way to see exactly what the agent would see (the same probe code,
//! the same deadlines and classification), and the quickest check that credentials, the AG
//! name and the database list in a config are right before the agent acts on them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tdsvip_probes::{
    AnyProbe, Encrypt, LatencySummary, LoginConfig, Mode, ProbeConfig, ProbeResult, Schedule,
    ScheduleConfig, TlsConfig, TlsSession,
};

use super::{block_on, usage_error};

#[path = "probe_watch.rs"]
mod watch;
use crate::password::{PASSWORD_ENV, password_from_env, read_password_file};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The SQL Server listener, ADDR:PORT or HOST:PORT.
    #[arg(value_name = "ADDR:PORT")]
    target: String,
    /// tcp: TCP handshake; prelogin: TDS PRELOGIN exchange, no credentials; login: log in and
    /// run the health query on a kept session.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// SQL login for --mode login.
    #[arg(long)]
    user: Option<String>,
    /// File holding the password for --mode login (else the TDSVIP_PASSWORD variable).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Availability group whose local replica must be PRIMARY (--mode login).
    #[arg(long)]
    ag: Option<String>,
    /// Database that must be ONLINE (--mode login, with --ag); repeat for several.
    #[arg(long = "database", value_name = "NAME")]
    databases: Vec<String>,
    /// Number of probes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Time between probe starts, in milliseconds (a fixed rate, not a pause after each);
    /// default 1000, or 20 (tdsvip's [probe] interval_ms) with --watch.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    interval_ms: Option<u64>,
    /// Probe until SIGTERM/SIGINT on one kept login session and keep --track-file, a
    /// keepalived track_file, at 1 while the AG's local replica is PRIMARY with every
    /// --database ONLINE and at 0 otherwise (also on exit). Needs --mode login and --ag.
    #[arg(long, requires = "track_file", conflicts_with_all = ["count", "json"])]
    watch: bool,
    /// --watch: the file to keep (replaced by rename from its own directory, which must exist).
    #[arg(long, value_name = "FILE", requires = "watch")]
    track_file: Option<PathBuf>,
    /// --watch: PRIMARY answers in a row before the file says 1 (as tdsvip's [probe] rise).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..), requires = "watch")]
    rise: u32,
    /// --watch: failed probes in a row before the file says 0 (as tdsvip's [probe] fall);
    /// "not primary" or "database not online" from SQL Server says 0 at once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), requires = "watch")]
    fall: u32,
    /// Deadline of each probe, in milliseconds (at least 10).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..))]
    timeout_ms: u64,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// --mode login: strict (TDS 8), mandatory, optional or off, as sql.encrypt.
    #[arg(long, default_value = "mandatory", value_parser = parse_encrypt)]
    encrypt: Encrypt,
    /// --mode login: PEM CA certificates to verify the server against (else the system store).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// --mode login: the name the server certificate must carry (else the target's IP).
    #[arg(long, value_name = "NAME")]
    host_name_in_certificate: Option<String>,
    /// --mode login: accept any server certificate (lab only; not with --encrypt strict).
    #[arg(long)]
    trust_server_certificate: bool,
    /// --mode login: allow the password in clear (--encrypt off, or optional against a
    /// server without TLS).
    #[arg(long)]
    allow_cleartext_login: bool,
}

fn parse_encrypt(s: &str) -> Result<Encrypt, String> {
    s.parse::<Encrypt>().map_err(|e| e.reason)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Tcp,
    Prelogin,
    Login,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Tcp => Mode::Tcp,
            ModeArg::Prelogin => Mode::Prelogin,
            ModeArg::Login => Mode::Login,
        }
    }
}

/// The `--json` report; its shape is an interface (scripts and the lab read it).
#[derive(Debug, Serialize)]
struct ProbeReport {
    mode: Mode,
    target: SocketAddr,
    sent: u64,
    ok: u64,
    failed: u64,
    /// Over successful probes only: a failure's "latency" is its time to fail, which would
    /// mix two populations. `null` when no probe succeeded.
    latency_ms: Option<LatencySummary>,
    outcomes: BTreeMap<&'static str, u64>,
    server: ServerSummary,
    /// The TLS session of the last login (`null` when not encrypted, or not logged in).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Option<TlsSession>>,
    /// True when Ctrl-C stopped the run before `--count` probes.
    interrupted: bool,
}

/// What the server told about itself, from the latest probe that reported each field.
#[derive(Debug, Default, Serialize)]
struct ServerSummary {
    version: Option<String>,
    encryption: Option<String>,
    name: Option<String>,
    role: Option<String>,
    synchronization_health: Option<String>,
    databases: BTreeMap<String, Option<String>>,
}

impl ServerSummary {
    fn absorb(&mut self, r: &ProbeResult) {
        let s = &r.server;
        let keep = |dst: &mut Option<String>, src: &Option<String>| {
            if src.is_some() {
                dst.clone_from(src);
            }
        };
        keep(&mut self.version, &s.version);
        keep(&mut self.encryption, &s.encryption);
        keep(&mut self.name, &s.server_name);
        keep(&mut self.role, &s.role);
        keep(&mut self.synchronization_health, &s.synchronization_health);
        for db in &s.databases {
            self.databases.insert(db.name.clone(), db.state.clone());
        }
    }
}

pub fn run(args: ProbeArgs) -> ExitCode {
    block_on(run_async(args))
}

async fn run_async(args: ProbeArgs) -> ExitCode {
    let watching = match args.watch.then(|| watch::settings(&args)).transpose() {
        Ok(w) => w,
        Err((arg, reason)) => return usage_error(arg, reason),
    };
    let (target, mut probe, mut schedule) = match prepare(&args).await {
        Ok(parts) => parts,
        Err(code) => return code,
    };
    if let Some(w) = watching {
        return watch::run(w, probe, schedule).await;
    }
    let report = probe_until_done(&args, target, &mut probe, &mut schedule).await;
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print_summary(&report);
    }
    if report.failed == 0 && report.sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The target, the probe and its schedule from the arguments; a bad argument is a usage
/// error naming it (exit 2).
async fn prepare(args: &ProbeArgs) -> Result<(SocketAddr, AnyProbe, Schedule), ExitCode> {
    let target = resolve(&args.target)
        .await
        .map_err(|e| usage_error("ADDR:PORT", e))?;
    let mode = Mode::from(args.mode);
    let timeout = Duration::from_millis(args.timeout_ms);
    let login =
        login_config(args, mode, timeout).map_err(|(arg, reason)| usage_error(arg, reason))?;
    let probe_cfg = ProbeConfig {
        timeout,
        ..ProbeConfig::default()
    };
    let probe = AnyProbe::new(mode, target, probe_cfg, login)
        .map_err(|e| usage_error(&format!("--{}", e.key.replace('_', "-")), e.reason))?;
    let interval = match (args.interval_ms, args.watch) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, true) => watch::DEFAULT_INTERVAL,
        (None, false) => Duration::from_secs(1),
    };
    let schedule_cfg = ScheduleConfig {
        interval,
        jitter: Duration::ZERO,
    };
    let schedule =
        Schedule::new(schedule_cfg).map_err(|e| usage_error("--interval-ms", e.reason))?;
    Ok((target, probe, schedule))
}

/// Probes `--count` times on the schedule (or until Ctrl-C), printing each result unless
/// `--json`, and sums them up.
async fn probe_until_done(
    args: &ProbeArgs,
    target: SocketAddr,
    probe: &mut AnyProbe,
    schedule: &mut Schedule,
) -> ProbeReport {
    let mode = Mode::from(args.mode);
    let mut report = ProbeReport {
        mode,
        target,
        sent: 0,
        ok: 0,
        failed: 0,
        latency_ms: None,
        outcomes: BTreeMap::new(),
        server: ServerSummary::default(),
        tls: None,
        interrupted: false,
    };
    let mut ok_latencies = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    for seq in 1..=args.count {
        let result = tokio::select! {
            _ = &mut ctrl_c => { report.interrupted = true; break; }
            r = async { schedule.tick().await; probe.probe().await } => r,
        };
        report.sent += 1;
        *report.outcomes.entry(result.outcome.name()).or_default() += 1;
        if result.outcome.is_ok() {
            report.ok += 1;
            ok_latencies.push(result.latency);
        } else {
            report.failed += 1;
        }
        report.server.absorb(&result);
        if !args.json {
            println!("{}", describe(seq, &result));
        }
    }
    report.latency_ms = LatencySummary::from_samples(&ok_latencies);
    if mode == Mode::Login {
        report.tls = Some(probe.tls_session().cloned());
    }
    report
}

/// Accepts `ADDR:PORT` and `HOST:PORT`; the first resolved address is probed, as the agent
/// does with a configured endpoint.
async fn resolve(target: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !target.contains(':') {
        return Err(format!("{target:?} has no port (expected ADDR:PORT)"));
    }
    let mut addrs = tokio::net::lookup_host(target)
        .await
        .map_err(|e| format!("cannot resolve {target:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{target:?} resolves to no address"))
}

/// The login settings, or the argument that is wrong and why. Login-only arguments given
/// with another mode are errors, not silently ignored: the user expected them to count.
fn login_config(
    args: &ProbeArgs,
    mode: Mode,
    timeout: Duration,
) -> Result<Option<LoginConfig>, (&'static str, String)> {
    if mode != Mode::Login {
        let stray = [
            ("--user", args.user.is_some()),
            ("--password-file", args.password_file.is_some()),
            ("--ag", args.ag.is_some()),
            ("--database", !args.databases.is_empty()),
            ("--ca-file", args.ca_file.is_some()),
            (
                "--host-name-in-certificate",
                args.host_name_in_certificate.is_some(),
            ),
            ("--trust-server-certificate", args.trust_server_certificate),
            ("--allow-cleartext-login", args.allow_cleartext_login),
        ];
        if let Some((arg, _)) = stray.iter().find(|(_, given)| *given) {
            return Err((arg, format!("only applies to --mode login, not {mode}")));
        }
        return Ok(None);
    }
    let user = args
        .user
        .clone()
        .ok_or(("--user", "required with --mode login".to_owned()))?;
    let password = match &args.password_file {
        Some(path) => read_password_file(path).map_err(|e| ("--password-file", e))?,
        None => password_from_env().ok_or((
            "--password-file",
            format!("required with --mode login (or set {PASSWORD_ENV})"),
        ))?,
    };
    if !args.databases.is_empty() && args.ag.is_none() {
        return Err((
            "--database",
            "needs --ag: databases are checked on the AG's replica".to_owned(),
        ));
    }
    let mut cfg = LoginConfig::new(user, password);
    cfg.ag.clone_from(&args.ag);
    cfg.databases.clone_from(&args.databases);
    cfg.timeout = timeout;
    cfg.tls = TlsConfig {
        encrypt: args.encrypt,
        ca_file: args.ca_file.clone(),
        host_name_in_certificate: args.host_name_in_certificate.clone(),
        trust_server_certificate: args.trust_server_certificate,
        allow_cleartext_login: args.allow_cleartext_login,
    };
    if args.trust_server_certificate {
        eprintln!("warning: --trust-server-certificate: the server certificate is not verified");
    }
    Ok(Some(cfg))
}

fn describe(seq: u64, r: &ProbeResult) -> String {
    let mut line = format!(
        "{}#{seq} {}: {} in {:.3} ms",
        r.mode,
        r.target,
        r.outcome,
        r.latency.as_secs_f64() * 1e3
    );
    let s = &r.server;
    let fields = [
        ("version", &s.version),
        ("encryption", &s.encryption),
        ("server", &s.server_name),
        ("role", &s.role),
        ("health", &s.synchronization_health),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            line.push_str(&format!(" {name}={v}"));
        }
    }
    for db in &s.databases {
        line.push_str(&format!(
            " db:{}={}",
            db.name,
            db.state.as_deref().unwrap_or("missing")
        ));
    }
    if r.session_reused == Some(true) {
        line.push_str(" (session reused)");
    }
    line
}

fn print_summary(r: &ProbeReport) {
    println!("--- {} {} probe statistics ---", r.target, r.mode);
    println!(
        "{} sent, {} ok, {} failed{}",
        r.sent,
        r.ok,
        r.failed,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    match &r.latency_ms {
        Some(l) => println!("latency of successful probes: {l}"),
        None => println!("latency: no successful probe"),
    }
    match &r.tls {
        Some(Some(t)) => println!(
            "tls: {} {} ({}), peer {}, certificate {}",
            t.version,
            t.cipher,
            t.scope,
            t.peer_certificate_subject
                .as_deref()
                .unwrap_or("(no subject)"),
            t.certificate
        ),
        Some(None) => println!("tls: none (the session is not encrypted)"),
        None => {}
    }
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("outcomes: {}", outcomes.join(", "));
}
