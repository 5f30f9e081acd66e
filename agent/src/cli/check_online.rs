//! `tdsvip check-config --online`: what the config cannot tell offline. Logs in to the
//! local SQL Server exactly as the agent's probe does (same encryption, certificate check
//! and health query) and prints one `KEY: ok|problem <detail>` line per check, so that a
//! wrong CA, a missing AG, a database outside the AG or a missing GRANT shows before the
//! agent runs. Exit 2 on any problem.
//!
//! The permissions come from a table (`FOLLOW`, `MANAGE`): each row is asked with
//! `HAS_PERMS_BY_NAME` and, when missing, printed with the exact `GRANT` that fixes it.

use std::process::ExitCode;

use tdsvip::config::{AgConfig, AgentConfig};
use tdsvip_probes::{LoginProbe, Outcome, Password, ProbeResult, ResultSet, bracketed, n_literal};

use super::EXIT_USAGE;
use super::check_config::StartConfig;

/// One permission a mode needs: asked with `HAS_PERMS_BY_NAME`, fixed with a `GRANT`.
#[derive(Debug, PartialEq, Eq)]
struct Need {
    /// The mode that needs it, for the message.
    mode: &'static str,
    /// As `GRANT` and `HAS_PERMS_BY_NAME` spell it.
    permission: &'static str,
    /// Permissions that satisfy the need as well (none of them is suggested).
    or: &'static [&'static str],
    /// On the configured AG (`ON AVAILABILITY GROUP::[ag]`), else on the server.
    on_ag: bool,
    /// Why the agent needs it.
    why: &'static str,
}

/// What the `follow` mode (and so every mode) needs: the health query reads the HADR DMVs
/// (VIEW SERVER STATE; from SQL Server 2022 VIEW SERVER PERFORMANCE STATE is enough) and
/// joins `sys.availability_groups`, which lists an AG only to a login with a permission
/// on it (its documented requirement is VIEW ANY DEFINITION, which implies this one).
const FOLLOW: &[Need] = &[
    Need {
        mode: "follow",
        permission: "VIEW SERVER STATE",
        or: &["VIEW SERVER PERFORMANCE STATE"],
        on_ag: false,
        why: "the health query reads sys.dm_hadr_* views",
    },
    Need {
        mode: "follow",
        permission: "VIEW DEFINITION",
        or: &[],
        on_ag: true,
        why: "sys.availability_groups lists an AG only to a login with a permission on it",
    },
];

/// What the managing mode (issue "agent promotes") adds, as Microsoft's Pacemaker agent
/// asks for them; `[cluster] mode = "manage"` chains it after `FOLLOW`.
const MANAGE: &[Need] = &[
    Need {
        mode: "manage",
        permission: "ALTER",
        or: &[],
        on_ag: true,
        why: "ALTER AVAILABILITY GROUP .. FAILOVER / SET (ROLE = SECONDARY)",
    },
    Need {
        mode: "manage",
        permission: "CONTROL",
        or: &[],
        on_ag: true,
        why: "Microsoft's Pacemaker agent requires it to manage the AG",
    },
    Need {
        mode: "manage",
        permission: "VIEW DEFINITION",
        or: &[],
        on_ag: true,
        why: "sys.availability_groups lists an AG only to a login with a permission on it",
    },
];

/// The permissions `config`'s mode needs, each once.
fn needs(config: &AgentConfig) -> Vec<&'static Need> {
    let manages = config.cluster.mode == tdsvip::config::ClusterMode::Manage;
    let all = FOLLOW.iter().chain(if manages { MANAGE } else { &[] });
    let mut out: Vec<&'static Need> = Vec::new();
    for n in all {
        if !out
            .iter()
            .any(|o| o.permission == n.permission && o.on_ag == n.on_ag)
        {
            out.push(n);
        }
    }
    out
}

/// Every permission name a need is satisfied by, the suggested one first.
fn names(n: &Need) -> impl Iterator<Item = &'static str> {
    std::iter::once(n.permission).chain(n.or.iter().copied())
}

/// One query, one row: a column per permission name of each need, 1, 0 or NULL as text.
fn permissions_query(needs: &[&Need], ag: &str) -> String {
    let mut columns = Vec::new();
    for n in needs {
        let (securable, class) = if n.on_ag {
            (n_literal(ag), n_literal("AVAILABILITY GROUP"))
        } else {
            ("NULL".to_owned(), "NULL".to_owned())
        };
        for p in names(n) {
            let i = columns.len();
            columns.push(format!(
                "CAST(HAS_PERMS_BY_NAME({securable}, {class}, {}) AS nvarchar(10)) AS p{i}",
                n_literal(p)
            ));
        }
    }
    format!("SELECT {}", columns.join(", "))
}

/// The statement that grants `n` to `login`.
fn grant(n: &Need, login: &str, ag: &str) -> String {
    let on = if n.on_ag {
        format!(" ON AVAILABILITY GROUP::{}", bracketed(ag))
    } else {
        String::new()
    };
    format!("GRANT {}{on} TO {};", n.permission, bracketed(login))
}

/// One line per need from the answer's cells (in `permissions_query`'s column order).
fn judge(
    needs: &[&Need],
    cells: &[Option<String>],
    login: &str,
    ag: &str,
) -> Vec<Result<String, String>> {
    let mut cells = cells.iter();
    let mut out = Vec::new();
    for n in needs {
        let on = if n.on_ag {
            format!(" on AG {ag:?}")
        } else {
            String::new()
        };
        let answers: Vec<(&str, Option<&str>)> = names(n)
            .map(|p| (p, cells.next().and_then(|c| c.as_deref())))
            .collect();
        let line = if let Some((p, _)) = answers.iter().find(|(_, a)| *a == Some("1")) {
            Ok(format!("has {p}{on} ({}: {})", n.mode, n.why))
        } else if answers.iter().any(|(_, a)| *a == Some("0")) {
            let or: String = n.or.iter().map(|o| format!(" or {o}")).collect();
            Err(format!(
                "lacks {}{or}{on} ({}: {}); run: {}",
                n.permission,
                n.mode,
                n.why,
                grant(n, login, ag)
            ))
        } else {
            Err(format!(
                "cannot tell whether it has {}{on}: HAS_PERMS_BY_NAME answered {:?}",
                n.permission,
                answers.iter().map(|(_, a)| *a).collect::<Vec<_>>()
            ))
        };
        out.push(line);
    }
    out
}

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
    for (i, ag) in start.config.ags.iter().enumerate() {
        check_ag_online(&mut report, &start.config, &start.password, i, ag).await;
    }
    if start.config.fence.aws {
        check_fence(&mut report, &start.config).await;
    }
    if report.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    }
}

/// `[fence] aws`: may this node's credentials stop every peer's instance? One
/// `StopInstances` dry run per peer (EC2 checks the permission and the tag condition and
/// stops nothing), so that a missing grant shows now, not in the failover that needs it.
async fn check_fence(report: &mut Report, config: &AgentConfig) {
    let Some(cloud) = &config.cloud else {
        return report.line("fence.aws", Err("needs a [cloud] section".into()));
    };
    let fence = match tdsvip_cloud::Ec2Api::connect(cloud).await {
        Ok(api) => tdsvip_cloud::InstanceFence::new(api, cloud.instance_id.clone()),
        Err(e) => return report.line("fence.aws", Err(format!("cannot reach EC2: {e}"))),
    };
    for (i, peer) in config.peers.iter().enumerate() {
        let Some(id) = &peer.instance_id else {
            continue;
        };
        let result = fence.may_stop(id).await.map(|state| {
            format!(
                "this node may stop {}'s instance {id}, now {state} (StopInstances dry run)",
                peer.name
            )
        });
        // An endpoint that ignored DryRun has just stopped that instance: ask no other.
        let ignored = result.as_ref().is_err_and(|e| e.contains("ignored DryRun"));
        report.line(&format!("peer[{i}].instance_id"), result);
        if ignored {
            return report.line(
                "fence.aws",
                Err("stopped asking: the EC2 endpoint does not honour DryRun".into()),
            );
        }
    }
}

/// Every line for one `[[ag]]`: session, AG, databases, permissions.
async fn check_ag_online(
    report: &mut Report,
    config: &AgentConfig,
    password: &Password,
    i: usize,
    ag: &AgConfig,
) {
    let login = config.login_config(password, &ag.name, &ag.databases);
    let mut probe = match LoginProbe::new(config.sql.endpoint, login.clone()) {
        Ok(p) => p,
        Err(p) => return report.line(&format!("sql.{}", p.key), Err(p.reason)),
    };
    let result = probe.probe().await;
    // A refused health query (Msg 300 without VIEW SERVER STATE) still means the login
    // worked, but the probe dropped its session: the session and permission checks then
    // use one of their own, whose query (`SELECT @@SERVERNAME`) needs no permission.
    let mut plain_probe;
    let session = if matches!(result.outcome, Outcome::QueryFailed { .. }) {
        let mut plain = login;
        plain.ag = None;
        plain.databases.clear();
        plain_probe = match LoginProbe::new(config.sql.endpoint, plain) {
            Ok(p) => p,
            Err(p) => return report.line(&format!("sql.{}", p.key), Err(p.reason)),
        };
        let plain_result = plain_probe.probe().await;
        check_session(report, &plain_probe, &plain_result.outcome);
        &mut plain_probe
    } else {
        check_session(report, &probe, &result.outcome);
        &mut probe
    };
    if !session.has_session() {
        return;
    }
    check_ag(report, i, ag, &result);
    check_permissions(report, session, &needs(config), &config.sql.user, &ag.name).await;
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
fn check_ag(report: &mut Report, i: usize, ag: &AgConfig, result: &ProbeResult) {
    let role = result.server.role.clone();
    let name = match (&result.outcome, &role) {
        (Outcome::NotPrimary { role: None, detail }, _) => Err(format!(
            "{detail} (or the login may not see it: see sql.user.permissions)"
        )),
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

/// `sql.user.permissions`: one line per permission the mode needs, as `HAS_PERMS_BY_NAME`
/// answers for the configured login on the server and on `ag`.
async fn check_permissions(
    report: &mut Report,
    probe: &mut LoginProbe,
    needs: &[&Need],
    login: &str,
    ag: &str,
) {
    let answer = probe.query_text(&permissions_query(needs, ag)).await;
    let columns: usize = needs.iter().map(|n| names(n).count()).sum();
    let lines = match answer.as_deref() {
        Ok([ResultSet { rows, .. }]) => match rows.as_slice() {
            [row] if row.len() == columns => judge(needs, row, login, ag),
            _ => vec![Err(format!(
                "cannot tell the permissions: unexpected answer {rows:?}"
            ))],
        },
        Ok(sets) => vec![Err(format!(
            "cannot tell the permissions: {} result sets",
            sets.len()
        ))],
        Err(o) => vec![Err(format!("cannot tell the permissions: {o}"))],
    };
    for line in lines {
        report.line("sql.user.permissions", line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|c| c.map(str::to_owned)).collect()
    }

    #[test]
    fn the_follow_query_asks_each_name_once() {
        let needs: Vec<&Need> = FOLLOW.iter().collect();
        assert_eq!(
            permissions_query(&needs, "A'G]1"),
            "SELECT CAST(HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') AS nvarchar(10)) AS p0, \
             CAST(HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER PERFORMANCE STATE') AS nvarchar(10)) AS p1, \
             CAST(HAS_PERMS_BY_NAME(N'A''G]1', N'AVAILABILITY GROUP', N'VIEW DEFINITION') AS nvarchar(10)) AS p2"
        );
    }

    #[test]
    fn judges_each_need_and_names_the_grant() {
        let needs: Vec<&Need> = FOLLOW.iter().collect();
        let lines = judge(
            &needs,
            &cells(&[Some("0"), Some("1"), Some("0")]),
            "mon]itor",
            "AG1",
        );
        assert!(
            lines[0]
                .as_ref()
                .is_ok_and(|l| l.starts_with("has VIEW SERVER PERFORMANCE STATE (follow: ")),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            Err("lacks VIEW DEFINITION on AG \"AG1\" (follow: sys.availability_groups lists an AG only to a login with a permission on it); run: GRANT VIEW DEFINITION ON AVAILABILITY GROUP::[AG1] TO [mon]]itor];".to_owned())
        );
        // SQL Server 2019 does not know the 2022 permission: NULL next to a 0 is a lack.
        let lines = judge(&needs, &cells(&[Some("0"), None, None]), "m", "AG1");
        assert!(
            lines[0].as_ref().is_err_and(|l| l
                .starts_with("lacks VIEW SERVER STATE or VIEW SERVER PERFORMANCE STATE (follow: ")
                && l.ends_with("run: GRANT VIEW SERVER STATE TO [m];")),
            "{lines:?}"
        );
        assert!(
            lines[1]
                .as_ref()
                .is_err_and(|l| l.starts_with("cannot tell whether it has VIEW DEFINITION")),
            "{lines:?}"
        );
    }

    #[test]
    fn the_managing_mode_adds_its_ag_permissions() {
        let needs: Vec<&Need> = MANAGE.iter().collect();
        let q = permissions_query(&needs, "AG1");
        for p in ["ALTER", "CONTROL", "VIEW DEFINITION"] {
            assert!(
                q.contains(&format!(
                    "HAS_PERMS_BY_NAME(N'AG1', N'AVAILABILITY GROUP', N'{p}')"
                )),
                "{q}"
            );
        }
        let grants: Vec<String> = MANAGE.iter().map(|n| grant(n, "pcs", "AG1")).collect();
        assert_eq!(
            grants,
            [
                "GRANT ALTER ON AVAILABILITY GROUP::[AG1] TO [pcs];",
                "GRANT CONTROL ON AVAILABILITY GROUP::[AG1] TO [pcs];",
                "GRANT VIEW DEFINITION ON AVAILABILITY GROUP::[AG1] TO [pcs];",
            ]
        );
    }

    #[test]
    fn the_configured_mode_decides_what_is_asked() {
        let base = "interface = \"eth0\"\n[sql]\nuser = \"u\"\npassword_env = \"P\"\n\
                    [[ag]]\nname = \"AG1\"\naddresses = [\"10.0.0.100\"]\n";
        let asked = |text: &str| -> Vec<(&str, bool)> {
            let config = AgentConfig::parse(text).expect("a valid config");
            needs(&config)
                .iter()
                .map(|n| (n.permission, n.on_ag))
                .collect()
        };
        assert_eq!(
            asked(base),
            [("VIEW SERVER STATE", false), ("VIEW DEFINITION", true)]
        );
        let manage =
            format!("{base}[cluster]\nmode = \"manage\"\netcd = [\"http://10.0.0.1:2379\"]\n");
        assert_eq!(
            asked(&manage),
            [
                ("VIEW SERVER STATE", false),
                ("VIEW DEFINITION", true),
                ("ALTER", true),
                ("CONTROL", true)
            ]
        );
    }
}
