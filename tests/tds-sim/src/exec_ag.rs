//! Executes the statements the AG model adds: `INSERT` into `dbo.ledger` (autocommit or
//! inside a transaction), `COMMIT` of the rows a transaction inserted, `ALTER
//! AVAILABILITY GROUP`, and the procedures an HA manager calls by `EXEC`
//! (`sp_set_session_context`, `sp_server_diagnostics`).
//!
//! A commit is hardened in the local log here; the session withholds its answer until
//! the commit rule is met (`Session::commit_lsn`), which is how a client of a primary with
//! too few synchronized secondaries sees a commit that never returns.

use std::collections::HashMap;
use std::sync::Arc;

use tds_codec::token::done::cur_cmd;
use tds_codec::types::Value;

use crate::exec::{Exec, Outcome};
use crate::query::ResultSet;
use crate::repl::codec::Row;
use crate::sql::{AgAction, Arg, Expr, SqlError, TableRef};
use crate::state::{Role, Shared};

/// DONE.CurCmd of an INSERT: 0xC3 (195), SQL Server's command code for INSERT (SELECT is
/// 0xC1, DELETE 0xC4, UPDATE 0xC5). tds-codec names 0xC3 `USE`, which looks like a slip there.
const CMD_INSERT: u16 = 0xC3;

fn not_writable(role: Role, db: &str) -> SqlError {
    match role {
        Role::Secondary => SqlError::new(
            3906,
            16,
            format!("Failed to update database \"{db}\" because the database is read-only."),
        ),
        _ => SqlError::new(
            983,
            14,
            format!(
                "Unable to access availability database '{db}' because the database replica is not in the PRIMARY or SECONDARY role. Connections to an availability database is permitted only when the database replica is in the PRIMARY or SECONDARY role. Try the operation again later."
            ),
        ),
    }
}

/// Hardens `rows` as one transaction on the primary; the LSN to wait for.
pub(crate) fn commit_rows(
    shared: &Arc<Shared>,
    role: Role,
    rows: Vec<Row>,
) -> Result<u64, SqlError> {
    if role != Role::Primary {
        return Err(not_writable(role, "ledger"));
    }
    shared.ag.commit(role, rows)
}

fn int_value(e: &Expr, params: &HashMap<String, Value>, column: &str) -> Result<i64, SqlError> {
    let v = match e {
        Expr::Int(n) => return Ok(*n),
        Expr::Var(v) => params
            .get(&v.to_lowercase())
            .cloned()
            .ok_or_else(|| SqlError::undeclared(v))?,
        Expr::Str(s) => Value::Text(s.clone()),
        Expr::Null => Value::Null,
        _ => {
            return Err(SqlError::new(
                50000,
                16,
                format!(
                    "tds-sim: only literals and parameters are supported as values of '{column}'."
                ),
            ));
        }
    };
    match v {
        Value::Int(n) => Ok(n),
        Value::Text(t) => t.trim().parse().map_err(|_| {
            SqlError::new(245, 16, format!("Conversion failed when converting the nvarchar value '{t}' to data type bigint."))
        }),
        Value::Null => Err(SqlError::new(
            515,
            16,
            format!("Cannot insert the value NULL into column '{column}', table 'dbo.ledger'; column does not allow nulls. INSERT fails."),
        )),
        _ => Err(SqlError::new(206, 16, format!("Operand type clash for column '{column}'."))),
    }
}

impl Exec<'_> {
    pub(crate) fn insert(
        &mut self,
        table: &TableRef,
        columns: &[String],
        rows: &[Vec<Expr>],
        params: &HashMap<String, Value>,
    ) -> Result<Outcome, SqlError> {
        if table.key != "dbo.ledger" {
            return Err(SqlError::invalid_object(&table.written));
        }
        let cols: Vec<String> = if columns.is_empty() {
            vec!["id".into(), "at".into()]
        } else {
            columns.iter().map(|c| c.to_lowercase()).collect()
        };
        for c in &cols {
            if c != "id" && c != "at" {
                return Err(SqlError::invalid_column(c));
            }
        }
        if !cols.iter().any(|c| c == "id") || !cols.iter().any(|c| c == "at") || cols.len() != 2 {
            return Err(SqlError::new(
                515,
                16,
                "Cannot insert the value NULL into column 'id' or 'at', table 'dbo.ledger'; column does not allow nulls. INSERT fails.",
            ));
        }
        let role = self.replica.role;
        if role != Role::Primary {
            return Err(not_writable(role, &self.session.database));
        }
        let mut new = Vec::new();
        for row in rows {
            if row.len() != cols.len() {
                return Err(SqlError::new(
                    110,
                    15,
                    "There are fewer columns in the INSERT statement than values specified in the VALUES clause.",
                ));
            }
            let mut id = 0;
            let mut at = 0;
            for (c, e) in cols.iter().zip(row) {
                let v = int_value(e, params, c)?;
                if c == "id" { id = v } else { at = v }
            }
            let dup = self.shared.ag.read().log.contains(id)
                || self
                    .session
                    .pending
                    .iter()
                    .chain(&new)
                    .any(|(i, _)| *i == id);
            if dup {
                return Err(SqlError::new(
                    2627,
                    14,
                    format!(
                        "Violation of PRIMARY KEY constraint 'PK_ledger'. Cannot insert duplicate key in object 'dbo.ledger'. The duplicate key value is ({id})."
                    ),
                ));
            }
            new.push((id, at));
        }
        let n = new.len() as u64;
        if self.session.trancount == 0 && self.session.implicit_transactions {
            self.begin_implicit();
        }
        if self.session.trancount == 0 {
            let lsn = commit_rows(self.shared, role, new)?;
            self.session.commit_lsn = Some(lsn);
        } else {
            self.session.pending.extend(new);
        }
        Ok(Outcome::Affected(CMD_INSERT, n))
    }

    /// IMPLICIT_TRANSACTIONS ON: the INSERT opens a transaction the client must commit.
    fn begin_implicit(&mut self) {
        self.session.descriptor = self.shared.next_transaction();
        self.session.trancount = 1;
    }

    /// Commits the rows of the transaction that just ended.
    pub(crate) fn commit_pending(&mut self) -> Result<(), SqlError> {
        let rows = std::mem::take(&mut self.session.pending);
        if rows.is_empty() {
            return Ok(());
        }
        let lsn = commit_rows(self.shared, self.replica.role, rows)?;
        self.session.commit_lsn = Some(lsn);
        Ok(())
    }

    pub(crate) fn alter_ag(&mut self, ag: &str, action: &AgAction) -> Result<Outcome, SqlError> {
        if !ag.eq_ignore_ascii_case(&self.replica.ag) {
            return Err(SqlError::new(
                15151,
                16,
                format!(
                    "Cannot find the availability group '{ag}', because it does not exist or you do not have permission."
                ),
            ));
        }
        let params = HashMap::new();
        self.env(&params).need_alter_ag(ag)?;
        let ext = self.session.external_cluster;
        match action {
            AgAction::Failover => self.shared.failover(ag, false, ext)?,
            AgAction::ForceFailoverAllowDataLoss => self.shared.failover(ag, true, ext)?,
            AgAction::Offline => self.shared.offline()?,
            AgAction::SetRole(r) => self.shared.set_role(r)?,
            AgAction::SetRequiredSynchronizedSecondaries(n) => self.shared.set_required(*n)?,
            AgAction::SetWriteLeaseValidity(s) => self.shared.renew_lease(*s)?,
        }
        Ok(Outcome::Quiet(cur_cmd::NONE))
    }

    /// `EXEC name args`: the procedures the sim knows.
    pub(crate) fn procedure(
        &mut self,
        name: &str,
        args: &[Arg],
        params: &HashMap<String, Value>,
    ) -> Result<Outcome, SqlError> {
        let bare = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        let values: Vec<(Option<String>, Value)> = args
            .iter()
            .map(|a| {
                let v = match &a.value {
                    Expr::Var(v) => params
                        .get(&v.to_lowercase())
                        .cloned()
                        .unwrap_or(Value::Null),
                    Expr::Str(s) => Value::Text(s.clone()),
                    Expr::Int(n) => Value::Int(*n),
                    _ => Value::Null,
                };
                (a.name.as_ref().map(|n| n.to_lowercase()), v)
            })
            .collect();
        match bare.as_str() {
            "sp_set_session_context" => {
                self.session_context(&values)?;
                Ok(Outcome::Quiet(cur_cmd::EXECUTE))
            }
            "sp_server_diagnostics" => {
                self.env(params).need_server_state()?;
                Ok(Outcome::Rows(server_diagnostics(self.replica.role)))
            }
            _ => Err(SqlError::new(
                2812,
                16,
                format!("Could not find stored procedure '{name}'."),
            )),
        }
    }

    /// `sp_set_session_context @key, @value [, @read_only]`.
    pub(crate) fn session_context(
        &mut self,
        values: &[(Option<String>, Value)],
    ) -> Result<(), SqlError> {
        let get = |name: &str, pos: usize| {
            values
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name))
                .or_else(|| values.get(pos).filter(|(n, _)| n.is_none()))
                .map(|(_, v)| v.clone())
        };
        let Some(Value::Text(key)) = get("@key", 0) else {
            return Err(SqlError::new(
                201,
                16,
                "Procedure or function 'sp_set_session_context' expects parameter '@key', which was not supplied.",
            ));
        };
        if key.eq_ignore_ascii_case("external_cluster") {
            let on =
                matches!(get("@value", 1), Some(Value::Text(v)) if v.eq_ignore_ascii_case("yes"));
            self.session.external_cluster = on;
        }
        Ok(())
    }
}

/// `sp_server_diagnostics` with the default repeat interval of 0: one result set, one row
/// per component. State 1 ("clean") for every component while the sim serves at all.
fn server_diagnostics(role: Role) -> ResultSet {
    use crate::catalog::Ty;
    use tds_codec::token::Column;
    use tds_codec::token::colmetadata::flags;
    let cols = [
        ("create_time", Ty::NVarChar(30)),
        ("component_type", Ty::NVarChar(128)),
        ("component_name", Ty::NVarChar(128)),
        ("state", Ty::Int(4)),
        ("state_desc", Ty::NVarChar(128)),
        ("data", Ty::NVarChar(4000)),
    ];
    let now = crate::state::now_unix_ms();
    let t = |s: &str| Value::Text(s.to_string());
    let rows = [
        "system",
        "resource",
        "query_processing",
        "io_subsystem",
        "events",
    ]
    .iter()
    .map(|c| {
        vec![
            crate::catalog::iso(now),
            t("sp_server_diagnostics"),
            t(c),
            Value::Int(1),
            t("clean"),
            t(&format!("<{c} role=\"{role}\"/>")),
        ]
    })
    .collect();
    ResultSet {
        columns: cols
            .iter()
            .map(|(n, ty)| Column::new(n, ty.info(), flags::NULLABLE))
            .collect(),
        rows,
    }
}
