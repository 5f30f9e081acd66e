//! Runs requests after login: SQL batches and transaction-manager requests (RPCs in
//! `rpc`, the AG and ledger statements in `exec_ag`, the security statements in
//! `exec_perms`), against one session's state and the replica's current state.
//!
//! Statements that return no rows (SET, USE, transaction control) produce no DONE of their
//! own, as in SQL Server, unless they end the batch; a SELECT produces its result set and a
//! DONE with the row count; the first error stops the batch with ERROR and a DONE carrying
//! the error bit. Inside an RPC the statement DONEs become DONEINPROC, followed by
//! RETURNSTATUS and DONEPROC.

use std::collections::HashMap;
use std::sync::Arc;

use tds_codec::token::DoneKind;
use tds_codec::token::done::{cur_cmd, status};
use tds_codec::token::envchange::EnvChange;
use tds_codec::txn_manager::{TmRequest, TransactionManager};
use tds_codec::types::Value;

use crate::query::{self, Env};
use crate::respond::Response;
use crate::sql::{self, SqlError, Stmt};
use crate::state::{DbState, Replica, Shared};

/// Databases every SQL Server has; `USE` accepts them although `sys.databases` here lists
/// only the simulated ones.
pub const SYSTEM_DATABASES: &[&str] = &["master", "tempdb", "model", "msdb"];

/// One session's state after login.
#[derive(Debug, Clone)]
pub struct Session {
    pub spid: u16,
    pub tds_version: u32,
    pub user: String,
    pub login_database: String,
    pub database: String,
    pub trancount: u32,
    pub descriptor: u64,
    /// `sp_set_session_context 'external_cluster', 'yes'` ran.
    pub external_cluster: bool,
    /// Ledger rows inserted in the open transaction.
    pub pending: Vec<crate::repl::codec::Row>,
    /// The highest LSN this request committed: the answer waits until it is durable.
    pub commit_lsn: Option<u64>,
    /// `sp_prepare` handles: the statement text and its parameter names in order.
    pub prepared: HashMap<i32, (String, Vec<String>)>,
    pub next_handle: i32,
    /// `SET IMPLICIT_TRANSACTIONS ON`: an INSERT outside a transaction opens one.
    pub implicit_transactions: bool,
}

impl Session {
    pub fn new(spid: u16, tds_version: u32, user: String, database: String) -> Session {
        Session {
            spid,
            tds_version,
            user,
            login_database: database.clone(),
            database,
            trancount: 0,
            descriptor: 0,
            external_cluster: false,
            pending: Vec::new(),
            commit_lsn: None,
            prepared: HashMap::new(),
            next_handle: 1,
            implicit_transactions: false,
        }
    }

    /// RESET_CONNECTION: back to the login's database, no transaction, no session context.
    pub fn reset(&mut self) {
        self.database = self.login_database.clone();
        self.trancount = 0;
        self.descriptor = 0;
        self.external_cluster = false;
        self.pending.clear();
        self.prepared.clear();
        self.implicit_transactions = false;
    }
}

/// Why a database cannot be used, in SQL Server's words; `None` if it can.
pub fn database_error(replica: &Replica, name: &str) -> Option<SqlError> {
    if SYSTEM_DATABASES
        .iter()
        .any(|d| d.eq_ignore_ascii_case(name))
    {
        return None;
    }
    let Some(state) = replica.database(name) else {
        return Some(SqlError::new(
            911,
            16,
            format!(
                "Database '{name}' does not exist. Make sure that the name is entered correctly."
            ),
        ));
    };
    let (number, text) = match state {
        DbState::Online | DbState::Emergency => return None,
        DbState::Offline => (
            942,
            format!("Database '{name}' cannot be opened because it is offline."),
        ),
        DbState::Restoring => (
            927,
            format!("Database '{name}' cannot be opened. It is in the middle of a restore."),
        ),
        DbState::Recovering => (
            922,
            format!("Database '{name}' is being recovered. Waiting until recovery is finished."),
        ),
        DbState::RecoveryPending | DbState::Suspect => (
            926,
            format!("Database '{name}' cannot be opened. It has been marked SUSPECT by recovery."),
        ),
    };
    Some(SqlError::new(number, 14, text))
}

/// What one statement produced, besides the tokens it already wrote.
pub(crate) enum Outcome {
    Rows(query::ResultSet),
    Quiet(u16),
    /// Rows affected (INSERT): a DONE with the count.
    Affected(u16, u64),
}

pub struct Exec<'a> {
    pub shared: &'a Arc<Shared>,
    pub replica: &'a Replica,
    pub session: &'a mut Session,
}

impl Exec<'_> {
    pub(crate) fn env<'p>(&'p self, params: &'p HashMap<String, Value>) -> Env<'p> {
        let v = self.shared.product_version;
        Env {
            replica: self.replica,
            ag: &self.shared.ag,
            spid: self.session.spid,
            database: &self.session.database,
            trancount: self.session.trancount,
            user: &self.session.user,
            logins: &self.shared.logins,
            version: version_string(v),
            product_version: v,
            params,
        }
    }

    fn statement(
        &mut self,
        st: &Stmt,
        params: &HashMap<String, Value>,
        r: &mut Response,
    ) -> Result<Outcome, SqlError> {
        let v72 = r.v72();
        match st {
            Stmt::Select(s) => Ok(Outcome::Rows(query::select(s, &self.env(params))?)),
            Stmt::Set { option, value } => {
                if option == "IMPLICIT_TRANSACTIONS" {
                    self.session.implicit_transactions = value.as_deref() == Some("ON");
                }
                Ok(Outcome::Quiet(cur_cmd::SET))
            }
            Stmt::Use { database } => {
                if let Some(e) = database_error(self.replica, database) {
                    return Err(e);
                }
                let canonical = SYSTEM_DATABASES
                    .iter()
                    .map(|d| d.to_string())
                    .chain(self.replica.databases.iter().map(|(n, _)| n.clone()))
                    .find(|n| n.eq_ignore_ascii_case(database))
                    .unwrap_or_else(|| database.clone());
                r.env(EnvChange::Database {
                    new: canonical.clone(),
                    old: self.session.database.clone(),
                });
                r.info(5701, &format!("Changed database context to '{canonical}'."));
                self.session.database = canonical;
                Ok(Outcome::Quiet(cur_cmd::USE))
            }
            Stmt::BeginTran => {
                if self.session.trancount == 0 {
                    self.session.descriptor = self.shared.next_transaction();
                    if v72 {
                        r.env(EnvChange::BeginTransaction {
                            descriptor: self.session.descriptor,
                        });
                    }
                }
                self.session.trancount += 1;
                Ok(Outcome::Quiet(cur_cmd::BEGIN_TRAN))
            }
            Stmt::Commit => {
                if self.session.trancount == 0 {
                    return Err(SqlError::new(
                        3902,
                        16,
                        "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                    ));
                }
                self.session.trancount -= 1;
                if self.session.trancount == 0 {
                    if v72 {
                        r.env(EnvChange::CommitTransaction {
                            descriptor: self.session.descriptor,
                        });
                    }
                    self.commit_pending()?;
                }
                Ok(Outcome::Quiet(cur_cmd::COMMIT))
            }
            Stmt::Rollback => {
                if self.session.trancount == 0 {
                    return Err(SqlError::new(
                        3903,
                        16,
                        "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                    ));
                }
                self.session.trancount = 0;
                self.session.pending.clear();
                if v72 {
                    r.env(EnvChange::RollbackTransaction {
                        descriptor: self.session.descriptor,
                    });
                }
                Ok(Outcome::Quiet(cur_cmd::ROLLBACK))
            }
            Stmt::If { cond, then } => {
                if query::condition(cond, &self.env(params))? {
                    self.statement(then, params, r)
                } else {
                    Ok(Outcome::Quiet(cur_cmd::NONE))
                }
            }
            Stmt::Exec { procedure, args } => self.procedure(procedure, args, params),
            Stmt::Insert {
                table,
                columns,
                rows,
            } => self.insert(table, columns, rows, params),
            Stmt::AlterAg { ag, action } => self.alter_ag(ag, action),
            Stmt::Permission(p) => self.permission(p),
            Stmt::CreateLogin {
                name,
                password,
                options,
            } => self.create_login(name, password, options),
        }
    }

    /// Runs a batch's text. Returns the statement kinds (for the log) and whether it failed.
    pub(crate) fn run_text(
        &mut self,
        text: &str,
        params: &HashMap<String, Value>,
        kind: DoneKind,
        r: &mut Response,
    ) -> (Vec<&'static str>, Option<SqlError>) {
        let stmts = match sql::parse_batch(text) {
            Ok(s) => s,
            Err(e) => {
                r.error(&e);
                r.done(kind, status::ERROR, cur_cmd::NONE, 0);
                return (vec!["syntax_error"], Some(e));
            }
        };
        let kinds: Vec<&'static str> = stmts.iter().map(Stmt::kind).collect();
        let mut pending_done = Some(cur_cmd::NONE);
        for st in &stmts {
            match self.statement(st, params, r) {
                Ok(Outcome::Rows(rs)) => {
                    if let Err(e) = r.result(&rs) {
                        // A value that does not fit its column is a simulator bug; say so.
                        let e = SqlError::new(
                            50000,
                            16,
                            format!("tds-sim could not encode a row: {e}"),
                        );
                        r.error(&e);
                        r.done(kind, status::ERROR, cur_cmd::SELECT, 0);
                        return (kinds, Some(e));
                    }
                    r.done(kind, status::COUNT, cur_cmd::SELECT, rs.rows.len() as u64);
                    pending_done = None;
                }
                Ok(Outcome::Quiet(cmd)) => pending_done = Some(cmd),
                Ok(Outcome::Affected(cmd, n)) => {
                    r.done(kind, status::COUNT, cmd, n);
                    pending_done = None;
                }
                Err(e) => {
                    r.error(&e);
                    r.done(kind, status::ERROR, cur_cmd::NONE, 0);
                    return (kinds, Some(e));
                }
            }
        }
        if let Some(cmd) = pending_done
            && kind == DoneKind::Done
        {
            r.done(kind, status::FINAL, cmd, 0);
        }
        (kinds, None)
    }

    pub fn batch(&mut self, text: &str, r: &mut Response) -> (Vec<&'static str>, Option<SqlError>) {
        self.run_text(text, &HashMap::new(), DoneKind::Done, r)
    }

    /// Answers a transaction-manager request with the ENVCHANGEs python-tds expects.
    pub fn transaction(
        &mut self,
        tm: &TransactionManager,
        r: &mut Response,
    ) -> (&'static str, Option<SqlError>) {
        let s = &mut *self.session;
        let begin = |s: &mut Session, r: &mut Response| {
            s.descriptor = self.shared.next_transaction();
            s.trancount = 1;
            r.env(EnvChange::BeginTransaction {
                descriptor: s.descriptor,
            });
        };
        let (kind, err) = match &tm.request {
            TmRequest::Begin { .. } => {
                if s.trancount == 0 {
                    begin(s, r);
                } else {
                    s.trancount += 1;
                }
                ("tm_begin", None)
            }
            TmRequest::Commit { then_begin, .. } | TmRequest::Rollback { then_begin, .. } => {
                let commit = matches!(tm.request, TmRequest::Commit { .. });
                if s.trancount == 0 {
                    let e = if commit {
                        SqlError::new(
                            3902,
                            16,
                            "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                        )
                    } else {
                        SqlError::new(
                            3903,
                            16,
                            "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                        )
                    };
                    (if commit { "tm_commit" } else { "tm_rollback" }, Some(e))
                } else {
                    s.trancount = 0;
                    let rows = std::mem::take(&mut s.pending);
                    if commit && !rows.is_empty() {
                        match crate::exec_ag::commit_rows(self.shared, self.replica.role, rows) {
                            Ok(lsn) => s.commit_lsn = Some(lsn),
                            Err(e) => {
                                r.error(&e);
                                r.done(DoneKind::Done, status::ERROR, cur_cmd::NONE, 0);
                                return ("tm_commit", Some(e));
                            }
                        }
                    }
                    let d = s.descriptor;
                    r.env(if commit {
                        EnvChange::CommitTransaction { descriptor: d }
                    } else {
                        EnvChange::RollbackTransaction { descriptor: d }
                    });
                    if then_begin.is_some() {
                        begin(s, r);
                    }
                    (if commit { "tm_commit" } else { "tm_rollback" }, None)
                }
            }
            TmRequest::Save { .. } => ("tm_save", None),
            TmRequest::Other { request_type } => (
                "tm_other",
                Some(SqlError::new(
                    50000,
                    16,
                    format!(
                        "tds-sim does not support transaction manager request type {request_type}."
                    ),
                )),
            ),
        };
        match &err {
            Some(e) => {
                r.error(e);
                r.done(DoneKind::Done, status::ERROR, cur_cmd::NONE, 0);
            }
            None => r.done(DoneKind::Done, status::FINAL, cur_cmd::NONE, 0),
        }
        (kind, err)
    }
}

/// `@@VERSION` in SQL Server's shape, saying what it really is.
pub fn version_string(v: tds_codec::Version) -> String {
    let year = match v.major {
        17 => "2025",
        16 => "2022",
        15 => "2019",
        14 => "2017",
        13 => "2016",
        12 => "2014",
        11 => "2012",
        _ => "",
    };
    format!(
        "Microsoft SQL Server {year} (tds-sim) - {}.{}.{}.{} (X64)\n\ttds-sim: a TDS test double playing an Always On replica\n\tDeveloper Edition (64-bit) on Linux",
        v.major, v.minor, v.build, v.sub_build
    )
}
