//! `tdsvip check-config --online`: what the config cannot tell offline. Logs in to the
//! local SQL Server exactly as the agent's probe does (same encryption, certificate check
//! and health query) and prints one `KEY: ok|problem <detail>` line per check, so that a
//! wrong CA, a missing AG, a database outside the AG or a missing GRANT shows before the
//! agent runs. Exit 2 on any problem.

use std::process::ExitCode;

use tdsvip::config::AgConfig;
use tdsvip_probes::{LoginProbe, Outcome, ResultSet};

use super::EXIT_USAGE;
use super::check_config::StartConfig;

/// The server permissions each mode needs. Only `follow` exists today (it reads the
/// DMVs); `manage` will add ALTER, CONTROL and VIEW DEFINITION on the AG (README).
const FOLLOW_PERMISSIONS: &[&str] = &["VIEW SERVER STATE"];

struct Report {
    problems: usize,
}

impl Report {
    fn line(&mut self, key: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("{key}: ok {detail}"),
            Err(detail) => {
                self.problems += 1;
                println!("{key}: problem {detail}");
            }
        }
    }
}

pub async fn run(start: StartConfig) -> ExitCode {
    let mut report = Report { problems: 0 };
    let config = &start.config;
    for (i, ag) in config.ags.iter().enumerate() {
        let login = config.login_config(&start.password, &ag.name, &ag.databases);
        let mut probe = match LoginProbe::new(config.sql.endpoint, login) {
            Ok(p) => p,
            Err(p) => {
                report.line(&format!("sql.{}", p.key), Err(p.reason));
                continue;
            }
        };
        let result = probe.probe().await;
        check_session(&mut report, &probe, &result.outcome);
        if !probe.has_session() {
            continue;
        }
        check_ag(&mut report, i, ag, &result);
        check_permissions(&mut report, &mut probe).await;
    }
    if report.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    }
}

/// `sql.encrypt` (TLS and certificate) and `sql.user` (the login itself).
fn check_session(report: &mut Report, probe: &LoginProbe, outcome: &Outcome) {
    let tls_problem = match outcome {
        Outcome::LoginFailed {
            code: None,
            message,
        } => Some(message.clone()),
        _ => None,
    };
    let tls = match (tls_problem, probe.tls_session()) {
        (Some(m), _) => Err(m),
        (None, Some(s)) => Ok(format!(
            "{} {} ({}), certificate {}: {}",
            s.version,
            s.cipher,
            s.scope,
            s.peer_certificate_subject
                .as_deref()
                .unwrap_or("(no subject)"),
            s.certificate
        )),
        (None, None) if probe.has_session() => {
            Ok("not encrypted (allowed by sql.allow_cleartext_login)".to_owned())
        }
        (None, None) => Err(format!("not reached: {outcome}")),
    };
    report.line("sql.encrypt", tls);
    let login = match outcome {
        _ if probe.has_session() => Ok("logged in".to_owned()),
        Outcome::LoginFailed {
            code: Some(c),
            message,
        } => Err(format!("error {c}: {message}")),
        other => Err(other.to_string()),
    };
    report.line("sql.user", login);
}

/// `ag[i].name` (the AG exists and has a local replica) and `ag[i].databases` (each is in
/// the AG on this replica, read from `sys.dm_hadr_database_replica_states`).
fn check_ag(report: &mut Report, i: usize, ag: &AgConfig, result: &tdsvip_probes::ProbeResult) {
    let role = result.server.role.clone();
    let name = match (&result.outcome, &role) {
        (Outcome::NotPrimary { role: None, detail }, _) => Err(detail.clone()),
        (_, Some(r)) => Ok(format!("local replica of {:?} is {r}", ag.name)),
        (other, None) => Err(other.to_string()),
    };
    report.line(&format!("ag[{i}].name"), name);
    if ag.databases.is_empty() || role.is_none() {
        return;
    }
    let missing: Vec<String> = result
        .server
        .databases
        .iter()
        .filter(|d| d.state.is_none())
        .map(|d| d.name.clone())
        .collect();
    let states: Vec<String> = result
        .server
        .databases
        .iter()
        .filter_map(|d| d.state.as_ref().map(|s| format!("{}={s}", d.name)))
        .collect();
    let databases = if missing.is_empty() {
        Ok(format!("in the AG on this replica: {}", states.join(", ")))
    } else {
        Err(format!(
            "not databases of AG {:?} on this replica (sys.dm_hadr_database_replica_states): {}",
            ag.name,
            missing.join(", ")
        ))
    };
    report.line(&format!("ag[{i}].databases"), databases);
}

/// `sql.user` permissions: what the configured mode needs, as `HAS_PERMS_BY_NAME` says.
async fn check_permissions(report: &mut Report, probe: &mut LoginProbe) {
    for perm in FOLLOW_PERMISSIONS {
        let sql = format!(
            "SELECT CAST(HAS_PERMS_BY_NAME(NULL, NULL, N'{perm}') AS nvarchar(10)) AS granted"
        );
        let answer = probe.query_text(&sql).await;
        let result = match answer.as_deref() {
            Ok([ResultSet { rows, .. }]) => match rows.as_slice() {
                [row] if row.first().cloned().flatten().as_deref() == Some("1") => {
                    Ok(format!("has {perm}"))
                }
                [row] if row.first().cloned().flatten().as_deref() == Some("0") => Err(format!(
                    "lacks {perm}: GRANT {perm} TO [login] (README, \"SQL Server permissions\")"
                )),
                _ => Err(format!(
                    "cannot tell whether it has {perm}: unexpected answer {rows:?}"
                )),
            },
            Ok(sets) => Err(format!(
                "cannot tell whether it has {perm}: {} result sets",
                sets.len()
            )),
            Err(o) => Err(format!("cannot tell whether it has {perm}: {o}")),
        };
        report.line("sql.user.permissions", result);
    }
}
