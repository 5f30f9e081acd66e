//! The login probe's health query: its exact SQL text and the interpretation of its answer.
//!
//! Kept free of I/O so that both halves can be tested exhaustively, and so that the text is
//! available to others: the TDS simulator's tests send the very same [`HealthQuery::sql`] to
//! FreeTDS and python-tds, so the simulator is checked against what the agent really runs.
//!
//! Ownership depends on this interpretation, so it is strict: an answer whose shape is not
//! the one the query produces (wrong number of result sets, missing columns, several rows
//! for the local replica) is a `protocol_error`, never a guess.

use crate::outcome::{DbStatus, Outcome, Phase, ServerInfo};

/// One result set of the answer, columns by name, every cell as text (`None` for NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names; may be empty when the set has no rows (tiberius only hands out the
    /// columns together with rows), which is fine because an empty set is read by its count.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    fn column(&self, name: &str) -> Result<usize, Outcome> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                protocol(format!(
                    "column {name} missing from the answer (columns: {:?})",
                    self.columns
                ))
            })
    }
}

fn protocol(detail: String) -> Outcome {
    Outcome::ProtocolError {
        phase: Phase::Query,
        detail,
    }
}

/// The health query for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthQuery {
    ag: Option<String>,
    databases: Vec<String>,
    sql: String,
}

/// The query run when no AG is configured: it proves the session answers.
pub const SERVERNAME_ONLY_SQL: &str = "SELECT @@SERVERNAME";

impl HealthQuery {
    /// Builds the query. Names are embedded as N'...' literals with `'` doubled, which is
    /// the complete escaping for a T-SQL Unicode string literal. Databases are checked only
    /// with an AG (`LoginConfig::validate` refuses databases without one); without an AG
    /// they are ignored here.
    pub fn new(ag: Option<&str>, databases: &[String]) -> Self {
        let sql = match ag {
            None => SERVERNAME_ONLY_SQL.to_owned(),
            Some(ag) => {
                let mut sql = format!(
                    "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc, ars.synchronization_health_desc AS synchronization_health_desc\n\
                     FROM sys.dm_hadr_availability_replica_states AS ars\n\
                     JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n\
                     WHERE ars.is_local = 1 AND ag.name = {};",
                    n_literal(ag)
                );
                if !databases.is_empty() {
                    // Membership in the AG comes from the DMV (a database of the same name
                    // outside the AG must not count); its state from sys.databases.
                    let list: Vec<String> = databases.iter().map(|d| n_literal(d)).collect();
                    sql.push_str(&format!(
                        "\nSELECT d.name AS name, d.state_desc AS state_desc\n\
                         FROM sys.dm_hadr_database_replica_states AS drs\n\
                         JOIN sys.availability_groups AS ag ON ag.group_id = drs.group_id\n\
                         JOIN sys.databases AS d ON d.database_id = drs.database_id\n\
                         WHERE drs.is_local = 1 AND ag.name = {} AND d.name IN ({});",
                        n_literal(ag),
                        list.join(", ")
                    ));
                }
                sql
            }
        };
        HealthQuery {
            ag: ag.map(str::to_owned),
            databases: if ag.is_some() {
                databases.to_vec()
            } else {
                Vec::new()
            },
            sql,
        }
    }

    /// The exact text sent to the server.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Number of result sets a well-formed answer has.
    pub fn expected_result_sets(&self) -> usize {
        match (&self.ag, self.databases.is_empty()) {
            (None, _) => 1,
            (Some(_), true) => 1,
            (Some(_), false) => 2,
        }
    }

    /// Turns the result sets into an outcome and the facts to report.
    pub fn interpret(&self, sets: &[ResultSet]) -> (Outcome, ServerInfo) {
        let mut info = ServerInfo::default();
        let outcome = match self.interpret_into(sets, &mut info) {
            Ok(o) | Err(o) => o,
        };
        (outcome, info)
    }

    fn interpret_into(
        &self,
        sets: &[ResultSet],
        info: &mut ServerInfo,
    ) -> Result<Outcome, Outcome> {
        if sets.len() != self.expected_result_sets() {
            return Err(protocol(format!(
                "expected {} result set(s), got {}",
                self.expected_result_sets(),
                sets.len()
            )));
        }
        let Some(ag) = &self.ag else {
            info.server_name = server_name(&sets[0])?;
            return Ok(Outcome::Ok);
        };
        let role_outcome = replica_role(ag, &sets[0], info)?;
        // Database states are reported even when the replica is not primary: they help the
        // operator, and the role decides the outcome first anyway.
        let db_outcome = match sets.get(1) {
            Some(dbs) => self.database_states(dbs, info)?,
            None => None,
        };
        Ok(role_outcome.or(db_outcome).unwrap_or(Outcome::Ok))
    }

    /// Every configured database's state into `info`; the first one not ONLINE (or
    /// missing) as the outcome.
    fn database_states(
        &self,
        dbs: &ResultSet,
        info: &mut ServerInfo,
    ) -> Result<Option<Outcome>, Outcome> {
        let (name_i, state_i) = if dbs.rows.is_empty() {
            (0, 1)
        } else {
            (dbs.column("name")?, dbs.column("state_desc")?)
        };
        let cell = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten();
        let mut db_outcome = None;
        for wanted in &self.databases {
            // Exact match first; SQL Server compares names with the server collation,
            // usually case-insensitive, so a row may differ from the config in case.
            let row = dbs
                .rows
                .iter()
                .find(|r| cell(r, name_i).as_deref() == Some(wanted.as_str()))
                .or_else(|| {
                    dbs.rows.iter().find(|r| {
                        cell(r, name_i).is_some_and(|n| n.to_lowercase() == wanted.to_lowercase())
                    })
                });
            let state = row.and_then(|r| cell(r, state_i));
            let online = state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("ONLINE"));
            if !online && db_outcome.is_none() {
                db_outcome = Some(Outcome::DbNotOnline {
                    database: wanted.clone(),
                    state: state.clone(),
                });
            }
            info.databases.push(DbStatus {
                name: wanted.clone(),
                state,
            });
        }
        Ok(db_outcome)
    }
}

/// `SELECT @@SERVERNAME`'s one value (`None`: NULL).
fn server_name(set: &ResultSet) -> Result<Option<String>, Outcome> {
    let [row] = set.rows.as_slice() else {
        return Err(protocol(format!(
            "SELECT @@SERVERNAME returned {} rows",
            set.rows.len()
        )));
    };
    match row.first() {
        Some(first) => Ok(first.clone()),
        None => Err(protocol(
            "SELECT @@SERVERNAME returned no column".to_owned(),
        )),
    }
}

/// The local replica's row of AG `ag` into `info`; `Some(NotPrimary)` unless it is PRIMARY.
fn replica_role(
    ag: &str,
    replica: &ResultSet,
    info: &mut ServerInfo,
) -> Result<Option<Outcome>, Outcome> {
    let row = match replica.rows.as_slice() {
        [] => {
            return Ok(Some(Outcome::NotPrimary {
                role: None,
                detail: format!("AG not found: no local replica of AG {ag:?} on this server"),
            }));
        }
        [row] => row,
        rows => {
            return Err(protocol(format!(
                "{} local replica rows for AG {ag:?}, expected at most 1",
                rows.len()
            )));
        }
    };
    let cell = |name: &str| -> Result<Option<String>, Outcome> {
        let i = replica.column(name)?;
        Ok(row.get(i).cloned().flatten())
    };
    info.server_name = cell("server_name")?;
    info.role = cell("role_desc")?;
    info.synchronization_health = cell("synchronization_health_desc")?;
    Ok(match info.role.as_deref() {
        Some(r) if r.eq_ignore_ascii_case("PRIMARY") => None,
        Some(r) => Some(Outcome::NotPrimary {
            role: Some(r.to_owned()),
            detail: format!("local replica of AG {ag:?} is {r}"),
        }),
        None => Some(Outcome::NotPrimary {
            role: None,
            detail: format!("local replica of AG {ag:?} has no role (NULL)"),
        }),
    })
}

/// A T-SQL Unicode string literal, `'` doubled: names from the config are never spliced
/// raw into a query (the agent's other T-SQL builds its literals with this too).
pub fn n_literal(s: &str) -> String {
    format!("N'{}'", s.replace('\'', "''"))
}

/// A T-SQL bracketed identifier, `]` doubled (an AG name in `ALTER AVAILABILITY GROUP`).
pub fn bracketed(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    fn dbs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn replica_set(role: Option<&str>) -> ResultSet {
        ResultSet {
            columns: dbs(&["server_name", "role_desc", "synchronization_health_desc"]),
            rows: vec![vec![s("SQL1"), role.map(str::to_owned), s("HEALTHY")]],
        }
    }

    fn db_set(rows: &[(&str, &str)]) -> ResultSet {
        ResultSet {
            columns: dbs(&["name", "state_desc"]),
            rows: rows.iter().map(|(n, st)| vec![s(n), s(st)]).collect(),
        }
    }

    #[test]
    fn exact_text_with_databases() {
        let q = HealthQuery::new(Some("AG1"), &dbs(&["db1", "db2"]));
        assert_eq!(
            q.sql(),
            "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc, ars.synchronization_health_desc AS synchronization_health_desc\n\
             FROM sys.dm_hadr_availability_replica_states AS ars\n\
             JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n\
             WHERE ars.is_local = 1 AND ag.name = N'AG1';\n\
             SELECT d.name AS name, d.state_desc AS state_desc\n\
             FROM sys.dm_hadr_database_replica_states AS drs\n\
             JOIN sys.availability_groups AS ag ON ag.group_id = drs.group_id\n\
             JOIN sys.databases AS d ON d.database_id = drs.database_id\n\
             WHERE drs.is_local = 1 AND ag.name = N'AG1' AND d.name IN (N'db1', N'db2');"
        );
        assert_eq!(q.expected_result_sets(), 2);
    }

    #[test]
    fn exact_text_without_databases_and_without_ag() {
        let q = HealthQuery::new(Some("AG1"), &[]);
        assert!(q.sql().ends_with("ag.name = N'AG1';"), "{}", q.sql());
        assert!(!q.sql().contains("sys.databases"));
        assert!(!q.sql().contains("dm_hadr_database_replica_states"));
        assert_eq!(q.expected_result_sets(), 1);
        let q = HealthQuery::new(None, &[]);
        assert_eq!(q.sql(), "SELECT @@SERVERNAME");
    }

    #[test]
    fn identifiers_are_bracketed_with_brackets_doubled() {
        assert_eq!(bracketed("A'G]1"), "[A'G]]1]");
        assert_eq!(n_literal("A'G]1"), "N'A''G]1'");
    }

    #[test]
    fn quotes_are_doubled() {
        let q = HealthQuery::new(Some("it's"), &dbs(&["o'brien", "''"]));
        assert!(q.sql().contains("ag.name = N'it''s';"), "{}", q.sql());
        assert!(
            q.sql().contains("IN (N'o''brien', N'''''');"),
            "{}",
            q.sql()
        );
        // An injection attempt stays inside the literal.
        let q = HealthQuery::new(Some("x'; DROP TABLE t; --"), &[]);
        assert!(q.sql().contains("N'x''; DROP TABLE t; --';"), "{}", q.sql());
    }

    #[test]
    fn primary_with_online_databases_is_ok() {
        let q = HealthQuery::new(Some("AG1"), &dbs(&["db1", "db2"]));
        let (o, info) = q.interpret(&[
            replica_set(Some("PRIMARY")),
            db_set(&[("db2", "ONLINE"), ("db1", "ONLINE")]),
        ]);
        assert_eq!(o, Outcome::Ok);
        assert_eq!(info.server_name.as_deref(), Some("SQL1"));
        assert_eq!(info.role.as_deref(), Some("PRIMARY"));
        assert_eq!(info.synchronization_health.as_deref(), Some("HEALTHY"));
        assert_eq!(
            info.databases,
            vec![
                DbStatus {
                    name: "db1".into(),
                    state: s("ONLINE")
                },
                DbStatus {
                    name: "db2".into(),
                    state: s("ONLINE")
                },
            ]
        );
    }

    #[test]
    fn secondary_resolving_null_and_missing_ag_are_not_primary() {
        let q = HealthQuery::new(Some("AG1"), &[]);
        for role in ["SECONDARY", "RESOLVING"] {
            let (o, info) = q.interpret(&[replica_set(Some(role))]);
            assert_eq!(o.name(), "not_primary");
            assert!(matches!(&o, Outcome::NotPrimary { role: Some(r), .. } if r == role));
            assert_eq!(info.role.as_deref(), Some(role));
        }
        let (o, _) = q.interpret(&[replica_set(None)]);
        assert!(matches!(o, Outcome::NotPrimary { role: None, .. }));
        let empty = ResultSet::default();
        let (o, _) = q.interpret(std::slice::from_ref(&empty));
        match o {
            Outcome::NotPrimary { role: None, detail } => {
                assert!(detail.contains("AG not found"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_primary_wins_over_db_state_but_dbs_are_reported() {
        let q = HealthQuery::new(Some("AG1"), &dbs(&["db1"]));
        let (o, info) = q.interpret(&[
            replica_set(Some("SECONDARY")),
            db_set(&[("db1", "RESTORING")]),
        ]);
        assert_eq!(o.name(), "not_primary");
        assert_eq!(info.databases[0].state.as_deref(), Some("RESTORING"));
    }

    #[test]
    fn missing_or_offline_database_is_named() {
        let q = HealthQuery::new(Some("AG1"), &dbs(&["db1", "db2", "db3"]));
        let (o, info) = q.interpret(&[
            replica_set(Some("PRIMARY")),
            db_set(&[("db1", "ONLINE"), ("db3", "RECOVERY_PENDING")]),
        ]);
        assert_eq!(
            o,
            Outcome::DbNotOnline {
                database: "db2".into(),
                state: None
            }
        );
        assert_eq!(info.databases[2].state.as_deref(), Some("RECOVERY_PENDING"));
        let (o, _) = q.interpret(&[
            replica_set(Some("PRIMARY")),
            db_set(&[("db1", "ONLINE"), ("db2", "ONLINE"), ("db3", "SUSPECT")]),
        ]);
        assert_eq!(
            o,
            Outcome::DbNotOnline {
                database: "db3".into(),
                state: s("SUSPECT")
            }
        );
        // No rows at all: the first configured database is missing.
        let (o, _) = q.interpret(&[replica_set(Some("PRIMARY")), ResultSet::default()]);
        assert!(
            matches!(o, Outcome::DbNotOnline { ref database, state: None } if database == "db1")
        );
    }

    #[test]
    fn database_names_match_case_insensitively_after_exact() {
        let q = HealthQuery::new(Some("AG1"), &dbs(&["Sales"]));
        let (o, _) = q.interpret(&[replica_set(Some("PRIMARY")), db_set(&[("sales", "ONLINE")])]);
        assert_eq!(o, Outcome::Ok);
        // With both spellings present (case-sensitive collation) the exact one counts.
        let (o, _) = q.interpret(&[
            replica_set(Some("PRIMARY")),
            db_set(&[("sales", "ONLINE"), ("Sales", "OFFLINE")]),
        ]);
        assert_eq!(o.name(), "db_not_online");
    }

    #[test]
    fn malformed_answers_are_protocol_errors() {
        let q = HealthQuery::new(Some("AG1"), &dbs(&["db1"]));
        // Missing the database result set.
        let (o, _) = q.interpret(&[replica_set(Some("PRIMARY"))]);
        assert_eq!(o.name(), "protocol_error");
        // Two local replica rows.
        let mut two = replica_set(Some("PRIMARY"));
        two.rows.push(two.rows[0].clone());
        let (o, _) = q.interpret(&[two, db_set(&[("db1", "ONLINE")])]);
        assert_eq!(o.name(), "protocol_error");
        // Renamed column.
        let mut renamed = replica_set(Some("PRIMARY"));
        renamed.columns[1] = "role".into();
        let (o, _) = q.interpret(&[renamed, db_set(&[("db1", "ONLINE")])]);
        assert!(o.to_string().contains("role_desc"), "{o}");
        // Server-name-only query answered with two rows or nothing.
        let q = HealthQuery::new(None, &[]);
        let (o, _) = q.interpret(&[]);
        assert_eq!(o.name(), "protocol_error");
        let two_rows = ResultSet {
            columns: vec![String::new()],
            rows: vec![vec![s("a")], vec![s("b")]],
        };
        let (o, _) = q.interpret(&[two_rows]);
        assert_eq!(o.name(), "protocol_error");
        let one = ResultSet {
            columns: vec![String::new()],
            rows: vec![vec![s("SQL1")]],
        };
        let (o, info) = q.interpret(&[one]);
        assert_eq!(o, Outcome::Ok);
        assert_eq!(info.server_name.as_deref(), Some("SQL1"));
    }
}
