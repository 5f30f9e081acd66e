//! Where a statement meets the permission model (`perms`): what the session's login may
//! read and run, and SQL Server's errors when it may not.
//!
//! The checks sit where SQL Server makes them, so an agent under a login without a GRANT
//! fails the way it would in production:
//! - the HADR DMVs (`sys.dm_hadr_*`) and `sp_server_diagnostics` need VIEW SERVER STATE
//!   (VIEW SERVER PERFORMANCE STATE from SQL Server 2022): without it Msg 300 then Msg 297;
//! - `sys.availability_groups` and `sys.availability_replicas` list an AG only to a login
//!   with some permission on it (metadata visibility; their documented requirement is
//!   VIEW ANY DEFINITION, which implies VIEW DEFINITION on every AG): no error, no rows;
//! - `ALTER AVAILABILITY GROUP` needs ALTER on the AG: without it 15151, the same answer as
//!   for an AG that does not exist.

use crate::perms::{Class, Perm, server_state_permission};
use crate::query::Env;
use crate::sql::SqlError;

impl Env<'_> {
    pub(crate) fn major(&self) -> u8 {
        self.product_version.major
    }

    /// Whether the session's login holds `perm` (on this replica's AG for an AG permission).
    pub(crate) fn has(&self, perm: Perm) -> bool {
        self.logins.has(self.user, perm, Some(&self.replica.ag))
    }

    /// Whether the catalog views show this replica's AG to the session's login.
    pub(crate) fn ag_visible(&self) -> bool {
        self.logins.has_any(
            self.user,
            Class::AvailabilityGroup,
            Some(&self.replica.ag),
            self.major(),
        )
    }

    /// Msg 300 + Msg 297 unless the login holds the server-state permission.
    pub(crate) fn need_server_state(&self) -> Result<(), SqlError> {
        let perm = server_state_permission(self.major());
        if self.has(perm) {
            return Ok(());
        }
        Err(denied_on_server(perm))
    }

    /// 15151 unless the login holds ALTER on the AG `ag` (known to exist).
    pub(crate) fn need_alter_ag(&self, ag: &str) -> Result<(), SqlError> {
        if self.has(Perm::Alter) {
            return Ok(());
        }
        Err(ag_not_found(ag))
    }
}

/// What SQL Server answers to a server-scope read without the permission: Msg 300, Level
/// 14, then Msg 297, Level 16 (as in MicrosoftDocs/sql-docs issue 1452 and Microsoft
/// Press's "SQL Server 2017 Administration Inside Out" sample output; texts from the
/// message list).
pub(crate) fn denied_on_server(perm: Perm) -> SqlError {
    SqlError::new(
        300,
        14,
        format!(
            "{} permission was denied on object 'server', database 'master'.",
            perm.name()
        ),
    )
    .followed_by(SqlError::new(
        297,
        16,
        "The user does not have permission to perform this action.",
    ))
}

/// 15151 for an availability group: it does not exist, or the login may not touch it.
pub(crate) fn ag_not_found(ag: &str) -> SqlError {
    SqlError::new(
        15151,
        16,
        format!(
            "Cannot find the availability group '{ag}', because it does not exist or you do not have permission."
        ),
    )
}

/// Refuses a read of `key` (a lowercased `schema.name`) the login may not make.
pub(crate) fn check_table(key: &str, env: &Env<'_>) -> Result<(), SqlError> {
    if key.starts_with("sys.dm_hadr_") {
        env.need_server_state()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tds_codec::tds_version;
    use tds_codec::token::DoneKind;
    use tds_codec::token::done::{cur_cmd, status};
    use tds_codec::types::Value;

    use super::*;
    use crate::catalog::{Ty, text};
    use crate::perms::{Logins, State};
    use crate::query::{ResultSet, select};
    use crate::respond::Response;
    use crate::sql::{Stmt, parse_batch};
    use crate::state::{DbState, Fault, Health, Replica, Role};

    fn replica() -> Replica {
        Replica {
            server_name: "SQL1".into(),
            ag: "AG1".into(),
            role: Role::Primary,
            health: Health::Healthy,
            databases: vec![("db1".into(), DbState::Online)],
            fault: Fault::None,
            delay_ms: 0,
            changed_at_unix_ms: 0,
            kill_epoch: 0,
            shutting_down: false,
        }
    }

    fn logins() -> Logins {
        Logins::new(("admin", "pw"), &[("watcher".into(), "pw".into())]).unwrap()
    }

    /// Runs the SELECTs of `sql` as `user` on a server of major version `major`.
    fn run(sql: &str, l: &Logins, user: &str, major: u8) -> Result<Vec<ResultSet>, SqlError> {
        let r = replica();
        let ag = crate::ag::Ag::new(Default::default(), crate::repl::log::Log::memory(), 0);
        let params = HashMap::new();
        let env = Env {
            replica: &r,
            ag: &ag,
            spid: 51,
            database: "master",
            trancount: 0,
            user,
            logins: l,
            version: "v".into(),
            product_version: tds_codec::Version {
                major,
                minor: 0,
                build: 1000,
                sub_build: 0,
            },
            params: &params,
        };
        parse_batch(sql)?
            .iter()
            .map(|s| match s {
                Stmt::Select(s) => select(s, &env),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// The one value of a one-row, one-column answer.
    fn value(sql: &str, l: &Logins, user: &str) -> Value {
        let sets = run(sql, l, user, 16).unwrap();
        assert_eq!(sets[0].rows.len(), 1, "{sql}");
        sets[0].rows[0][0].clone()
    }

    fn hpbn(securable: &str, class: &str, perm: &str) -> String {
        format!("SELECT HAS_PERMS_BY_NAME({securable}, {class}, {perm})")
    }

    #[test]
    fn has_perms_by_name_answers_one_zero_or_null() {
        let l = logins();
        let vss = hpbn("NULL", "NULL", "N'VIEW SERVER STATE'");
        assert_eq!(value(&vss, &l, "admin"), Value::Int(1));
        assert_eq!(value(&vss, &l, "watcher"), Value::Int(0));
        l.set("watcher", Perm::ViewServerState, None, Some(State::Grant));
        assert_eq!(value(&vss, &l, "watcher"), Value::Int(1));
        assert_eq!(
            value(
                &hpbn("NULL", "N'server'", "N'view server state'"),
                &l,
                "watcher"
            ),
            Value::Int(1)
        );
        let alter = hpbn("N'ag1'", "N'AVAILABILITY GROUP'", "N'ALTER'");
        assert_eq!(value(&alter, &l, "watcher"), Value::Int(0));
        l.set("watcher", Perm::Control, Some("AG1"), Some(State::Grant));
        assert_eq!(value(&alter, &l, "watcher"), Value::Int(1));
        l.set("watcher", Perm::Alter, Some("AG1"), Some(State::Deny));
        assert_eq!(value(&alter, &l, "watcher"), Value::Int(0));
        let any = hpbn("N'AG1'", "N'AVAILABILITY GROUP'", "N'ANY'");
        assert_eq!(value(&any, &l, "watcher"), Value::Int(1));
        for null in [
            hpbn("N'nope'", "N'AVAILABILITY GROUP'", "N'ALTER'"),
            hpbn("N'AG1'", "N'AVAILABILITY GROUP'", "N'VIEW SERVER STATE'"),
            hpbn("NULL", "NULL", "N'ALTER'"),
            hpbn("NULL", "NULL", "N'FLY'"),
            hpbn("NULL", "NULL", "NULL"),
            hpbn("N'AG1'", "NULL", "N'ALTER'"),
            hpbn("N'db1'", "N'DATABASE'", "N'CONNECT'"),
            "SELECT HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE', N'c', N'COLUMN')".into(),
        ] {
            assert_eq!(value(&null, &l, "watcher"), Value::Null, "{null}");
        }
        // VIEW SERVER PERFORMANCE STATE exists from SQL Server 2022 on.
        let perf = hpbn("NULL", "NULL", "N'VIEW SERVER PERFORMANCE STATE'");
        assert_eq!(
            run(&perf, &l, "watcher", 16).unwrap()[0].rows[0][0],
            Value::Int(1)
        );
        assert_eq!(
            run(&perf, &l, "watcher", 15).unwrap()[0].rows[0][0],
            Value::Null
        );
        let e = run("SELECT HAS_PERMS_BY_NAME(NULL, NULL)", &l, "admin", 16).unwrap_err();
        assert_eq!(e.number, 189);
        assert_eq!(
            run("SELECT NO_SUCH_FN(1)", &l, "admin", 16)
                .unwrap_err()
                .number,
            195
        );
        assert_eq!(
            value("SELECT SUSER_SNAME()", &l, "watcher"),
            text("watcher")
        );
    }

    #[test]
    fn cast_converts_or_fails_like_sql_server() {
        let l = logins();
        let v = |sql: &str| value(sql, &l, "admin");
        let err = |sql: &str| run(sql, &l, "admin", 16).unwrap_err();
        assert_eq!(v("SELECT CAST(1 AS nvarchar(10))"), text("1"));
        assert_eq!(v("SELECT CAST(NULL AS nvarchar(10))"), Value::Null);
        assert_eq!(v("SELECT CAST(N'abcdef' AS nvarchar(3))"), text("abc"));
        assert_eq!(v("SELECT CAST(N'€€' AS nvarchar)"), text("€€"));
        assert_eq!(v("SELECT CAST(N' 42 ' AS int)"), Value::Int(42));
        assert_eq!(
            v("SELECT CAST(3000000000 AS bigint)"),
            Value::Int(3_000_000_000)
        );
        let sets = run("SELECT CAST(7 AS nvarchar(10)) AS granted", &l, "admin", 16).unwrap();
        assert_eq!(sets[0].columns[0].name, "granted");
        assert_eq!(sets[0].columns[0].ty, Ty::NVarChar(10).info());
        assert_eq!(err("SELECT CAST(12345 AS nvarchar(2))").number, 8115);
        assert_eq!(err("SELECT CAST(3000000000 AS int)").number, 8115);
        assert_eq!(err("SELECT CAST(N'x1' AS int)").number, 245);
        assert_eq!(err("SELECT CAST(N'3000000000' AS int)").number, 248);
        assert_eq!(
            err("SELECT CAST(N'99999999999999999999' AS bigint)").number,
            8115
        );
        assert_eq!(err("SELECT CAST(1 AS nvarchar(5000))").number, 131);
        assert_eq!(err("SELECT CAST(1 AS banana)").number, 243);
        for unsupported in [
            "SELECT CAST(1 AS datetime)",
            "SELECT CAST(1 AS nvarchar(max))",
            "SELECT CAST(1 AS nvarchar(0))",
            "SELECT CAST(1 AS int(4))",
            "SELECT DB_NAME(1)",
        ] {
            let e = err(unsupported);
            assert_eq!(e.number, 50000, "{unsupported}");
            assert!(e.message.starts_with("tds-sim does not model"), "{e}");
        }
    }

    const HEALTH: &str = "SELECT @@SERVERNAME, ars.role_desc FROM sys.dm_hadr_availability_replica_states AS ars JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id WHERE ars.is_local = 1 AND ag.name = N'AG1'";

    #[test]
    fn dmvs_need_server_state_and_catalog_views_hide_the_ag() {
        let l = logins();
        let e = run(HEALTH, &l, "watcher", 16).unwrap_err();
        assert_eq!((e.number, e.class), (300, 14));
        assert_eq!(
            e.message,
            "VIEW SERVER PERFORMANCE STATE permission was denied on object 'server', database 'master'."
        );
        let then = e.then.as_deref().unwrap();
        assert_eq!((then.number, then.class), (297, 16));
        let e = run(HEALTH, &l, "watcher", 15).unwrap_err();
        assert!(e.message.starts_with("VIEW SERVER STATE permission"), "{e}");
        // With the permission the DMV answers, but the AG stays invisible without a
        // permission on it: the join finds nothing, as on SQL Server.
        l.set("watcher", Perm::ViewServerState, None, Some(State::Grant));
        assert!(run(HEALTH, &l, "watcher", 16).unwrap()[0].rows.is_empty());
        let ags = "SELECT name FROM sys.availability_groups; SELECT replica_server_name FROM sys.availability_replicas";
        assert!(
            run(ags, &l, "watcher", 16)
                .unwrap()
                .iter()
                .all(|s| s.rows.is_empty())
        );
        l.set(
            "watcher",
            Perm::ViewDefinition,
            Some("ag1"),
            Some(State::Grant),
        );
        assert_eq!(run(HEALTH, &l, "watcher", 16).unwrap()[0].rows.len(), 1);
        assert_eq!(run(ags, &l, "watcher", 16).unwrap()[1].rows.len(), 1);
        // DENY on the covering VIEW SERVER STATE takes the 2022 permission away too.
        l.set(
            "watcher",
            Perm::ViewServerPerformanceState,
            None,
            Some(State::Grant),
        );
        l.set("watcher", Perm::ViewServerState, None, Some(State::Deny));
        assert_eq!(run(HEALTH, &l, "watcher", 16).unwrap_err().number, 300);
        // sys.databases needs nothing (VIEW ANY DATABASE belongs to public).
        assert_eq!(
            run("SELECT name FROM sys.databases", &l, "watcher", 16).unwrap()[0]
                .rows
                .len(),
            1
        );
    }

    /// UTF-16LE bytes.
    fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    /// An ERROR token as [MS-TDS] 2.2.7.10 lays it out for TDS 7.2+, written by hand.
    fn error_token(number: i32, state: u8, class: u8, text: &str, server: &str) -> Vec<u8> {
        let mut body = number.to_le_bytes().to_vec();
        body.extend_from_slice(&[state, class]);
        body.extend_from_slice(&(text.encode_utf16().count() as u16).to_le_bytes());
        body.extend(ucs2(text));
        body.push(server.encode_utf16().count() as u8);
        body.extend(ucs2(server));
        body.push(0); // procedure name
        body.extend_from_slice(&1i32.to_le_bytes()); // line number
        let mut t = vec![0xAA];
        t.extend_from_slice(&(body.len() as u16).to_le_bytes());
        t.extend(body);
        t
    }

    #[test]
    fn denied_dmv_answer_golden_bytes() {
        let mut r = Response::new(tds_version::V7_4, "SQL1");
        r.error(&denied_on_server(Perm::ViewServerPerformanceState));
        r.done(DoneKind::Done, status::ERROR, cur_cmd::NONE, 0);
        let mut want = error_token(
            300,
            1,
            14,
            "VIEW SERVER PERFORMANCE STATE permission was denied on object 'server', database 'master'.",
            "SQL1",
        );
        want.extend(error_token(
            297,
            1,
            16,
            "The user does not have permission to perform this action.",
            "SQL1",
        ));
        // DONE: status ERROR (0x0002), CurCmd 0, an 8-byte row count of 0.
        want.extend_from_slice(&[0xFD, 0x02, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.finish(), want);
    }

    #[test]
    fn permission_query_answer_golden_bytes() {
        let l = logins();
        let sql = "SELECT CAST(HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') AS nvarchar(10)) AS granted";
        let sets = run(sql, &l, "admin", 16).unwrap();
        let mut r = Response::new(tds_version::V7_4, "SQL1");
        r.result(&sets[0]).unwrap();
        r.done(DoneKind::Done, status::COUNT, cur_cmd::SELECT, 1);
        // COLMETADATA: 1 column, UserType 0, flags NULLABLE, NVARCHAR (0xE7) of 20 bytes,
        // collation SQL_Latin1_General_CP1_CI_AS, name "granted".
        let mut want = vec![0x81, 0x01, 0x00, 0, 0, 0, 0, 0x01, 0x00, 0xE7, 20, 0];
        want.extend_from_slice(&[0x09, 0x04, 0xD0, 0x00, 0x34, 7]);
        want.extend(ucs2("granted"));
        // ROW: "1" as 2 bytes.
        want.extend_from_slice(&[0xD1, 0x02, 0x00]);
        want.extend(ucs2("1"));
        // DONE: status COUNT (0x0010), CurCmd SELECT (0xC1), 1 row.
        want.extend_from_slice(&[0xFD, 0x10, 0x00, 0xC1, 0x00, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.finish(), want);
    }
}
