//! The query recogniser: a loose T-SQL lexer and parser for the statements clients and the
//! tdsvip probe send.
//!
//! Queries are recognised by *parsing*, never by comparing strings: case, whitespace,
//! comments, `[quoted]` names, `N'..'` literals with `''` escapes and `;` or keyword
//! statement boundaries all vary between clients and must not matter. The grammar is small:
//! `SELECT` (expressions, `@@globals`, parameters, `FROM` one table with inner `JOIN`s,
//! `WHERE` comparisons and `IN` lists joined by `AND`, `ORDER BY`, `TOP`), `SET` options,
//! `USE`, `BEGIN`/`COMMIT`/`ROLLBACK` transaction, `IF <comparison> <statement>`, `EXEC`
//! with arguments, `INSERT .. VALUES`, `ALTER AVAILABILITY GROUP`, the aggregates
//! `COUNT`/`MAX`/`MIN` and `BETWEEN` the lab's ledger queries use, function calls with
//! arguments and `CAST`, and the security statements `CREATE LOGIN` and
//! `GRANT`/`DENY`/`REVOKE` (in `security`).
//! Anything else is a [`SqlError`] shaped like SQL Server's own (102 "Incorrect syntax near
//! ..." and friends), because an honest error is what a test double owes its clients.

mod ag;
mod func;
mod lex;
mod parse;
mod security;

use std::fmt;

pub use lex::{Tok, lex};
use parse::Parser;

/// An error the simulator reports as an ERROR token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub number: i32,
    pub class: u8,
    pub state: u8,
    pub message: String,
    /// A second message SQL Server sends right after this one (Msg 297 after Msg 300).
    pub then: Option<Box<SqlError>>,
}

impl SqlError {
    pub fn new(number: i32, class: u8, message: impl Into<String>) -> Self {
        SqlError {
            number,
            class,
            state: 1,
            message: message.into(),
            then: None,
        }
    }

    /// This error followed by `next` in the same answer.
    pub fn followed_by(mut self, next: SqlError) -> Self {
        self.then = Some(Box::new(next));
        self
    }

    pub fn syntax_near(near: &str) -> Self {
        SqlError::new(102, 15, format!("Incorrect syntax near '{near}'."))
    }

    pub fn invalid_object(name: &str) -> Self {
        SqlError::new(208, 16, format!("Invalid object name '{name}'."))
    }

    pub fn invalid_column(name: &str) -> Self {
        SqlError::new(207, 16, format!("Invalid column name '{name}'."))
    }

    pub fn undeclared(var: &str) -> Self {
        SqlError::new(
            137,
            15,
            format!("Must declare the scalar variable \"{var}\"."),
        )
    }

    /// Syntax errors stop a batch before any statement runs, as in SQL Server.
    pub fn is_compile_time(&self) -> bool {
        matches!(self.number, 102 | 105 | 113 | 137 | 156 | 195)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Msg {}, Level {}: {}",
            self.number, self.class, self.message
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Int(i64),
    Str(String),
    Null,
    Global(String),
    Var(String),
    /// `[alias.]column`, parts as written.
    Column(Vec<String>),
    /// A built-in function call such as `DB_NAME()`, the name uppercased.
    Func(String, Vec<Expr>),
    /// `CAST(expr AS type)`.
    Cast(Box<Expr>, CastType),
    /// `COUNT(*)` (no argument), `COUNT(x)`, `MAX(x)`, `MIN(x)`.
    Agg(AggFn, Option<Box<Expr>>),
}

/// The target of a `CAST`: the type name uppercased and its length, `Some(None)` for `(MAX)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastType {
    pub name: String,
    pub length: Option<Option<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pred {
    Cmp(Expr, CmpOp, Expr),
    In {
        expr: Expr,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Expr,
        low: Expr,
        high: Expr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Star,
    Expr { expr: Expr, alias: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// As written, for error messages.
    pub written: String,
    /// Lowercased `schema.name` (the database part dropped, `dbo` assumed).
    pub key: String,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub table: TableRef,
    pub on: (Expr, Expr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub top: Option<i64>,
    pub items: Vec<Item>,
    pub from: Option<(TableRef, Vec<Join>)>,
    pub filter: Vec<Pred>,
    pub order_by: Vec<(Expr, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Select(Select),
    /// `SET option [value ...]`; the first word of the value, upper-cased (ON, OFF, ...).
    Set {
        option: String,
        value: Option<String>,
    },
    Use {
        database: String,
    },
    BeginTran,
    Commit,
    Rollback,
    If {
        cond: Pred,
        then: Box<Stmt>,
    },
    Exec {
        procedure: String,
        args: Vec<Arg>,
    },
    /// `INSERT [INTO] table [(columns)] VALUES (..)[, (..)]`.
    Insert {
        table: TableRef,
        columns: Vec<String>,
        rows: Vec<Vec<Expr>>,
    },
    /// `ALTER AVAILABILITY GROUP [ag] <action>`.
    AlterAg {
        ag: String,
        action: AgAction,
    },
    /// `GRANT`, `DENY` or `REVOKE`.
    Permission(PermissionStmt),
    /// `CREATE LOGIN name WITH PASSWORD = '..' [, option = value ..]`.
    CreateLogin {
        name: String,
        password: String,
        /// Options after the password, names uppercased, values as written.
        options: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionVerb {
    Grant,
    Deny,
    Revoke,
}

/// `GRANT perm [, ..] [ON class::name] TO principal [, ..] [WITH GRANT OPTION] [AS p]`, and
/// DENY and REVOKE (`TO` or `FROM`, `GRANT OPTION FOR`, `CASCADE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionStmt {
    pub verb: PermissionVerb,
    /// Uppercased, words separated by one space.
    pub permissions: Vec<String>,
    /// `ON class::name`: the class uppercased (`OBJECT` for `ON name`); `None` = the server.
    pub on: Option<(String, String)>,
    pub principals: Vec<String>,
    /// `WITH GRANT OPTION`, `GRANT OPTION FOR` or `AS grantor`: what tds-sim does not model.
    pub unsupported: Option<&'static str>,
}

/// One `EXEC` argument: `@name = value` or positional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: Option<String>,
    pub value: Expr,
}

/// What `ALTER AVAILABILITY GROUP` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgAction {
    Failover,
    ForceFailoverAllowDataLoss,
    Offline,
    /// `SET (ROLE = SECONDARY)`; the role as written, upper-cased.
    SetRole(String),
    SetRequiredSynchronizedSecondaries(i64),
    SetWriteLeaseValidity(i64),
}

impl Stmt {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Stmt::Select(s) if s.from.is_some() => "select_from",
            Stmt::Select(_) => "select",
            Stmt::Set { .. } => "set",
            Stmt::Use { .. } => "use",
            Stmt::BeginTran => "begin_tran",
            Stmt::Commit => "commit",
            Stmt::Rollback => "rollback",
            Stmt::If { .. } => "if",
            Stmt::Exec { .. } => "exec",
            Stmt::Insert { .. } => "insert",
            Stmt::AlterAg { .. } => "alter_availability_group",
            Stmt::Permission(p) => match p.verb {
                PermissionVerb::Grant => "grant",
                PermissionVerb::Deny => "deny",
                PermissionVerb::Revoke => "revoke",
            },
            Stmt::CreateLogin { .. } => "create_login",
        }
    }
}

/// Parses a batch into statements. A syntax error anywhere fails the whole batch, as it
/// does in SQL Server, where a batch is compiled before it runs.
pub fn parse_batch(sql: &str) -> Result<Vec<Stmt>, SqlError> {
    let mut p = Parser {
        toks: lex(sql)?,
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        while p.eat_punct(";") {}
        if p.peek().is_none() {
            return Ok(out);
        }
        out.push(p.statement()?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTH: &str = "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc, ars.synchronization_health_desc AS synchronization_health_desc\n\
        FROM sys.dm_hadr_availability_replica_states AS ars\n\
        JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n\
        WHERE ars.is_local = 1 AND ag.name = N'AG1';\n\
        SELECT name, state_desc FROM sys.databases WHERE name IN (N'db1', N'db2');";

    #[test]
    fn parses_the_health_query_whatever_its_layout() {
        let a = parse_batch(HEALTH).unwrap();
        assert_eq!(a.len(), 2);
        let squashed = HEALTH
            .to_lowercase()
            .replace('\n', "   ")
            .replace(';', " ; ");
        assert_eq!(parse_batch(&squashed).unwrap().len(), 2);
        // Without the separating semicolon the keyword still splits the statements.
        let no_semi = HEALTH.replacen(';', "", 1);
        assert_eq!(parse_batch(&no_semi).unwrap().len(), 2);
        let Stmt::Select(s) = &a[0] else {
            panic!("{a:?}")
        };
        let (t, joins) = s.from.as_ref().unwrap();
        assert_eq!(t.key, "sys.dm_hadr_availability_replica_states");
        assert_eq!(t.alias.as_deref(), Some("ars"));
        assert_eq!(joins[0].table.key, "sys.availability_groups");
        assert_eq!(s.filter.len(), 2);
        assert_eq!(
            s.filter[1],
            Pred::Cmp(
                Expr::Column(vec!["ag".into(), "name".into()]),
                CmpOp::Eq,
                Expr::Str("AG1".into())
            )
        );
        let Stmt::Select(s) = &a[1] else { panic!() };
        assert!(matches!(&s.filter[0], Pred::In { list, .. } if list.len() == 2));
    }

    #[test]
    fn parses_housekeeping() {
        let s = parse_batch("SET NOCOUNT ON SET TEXTSIZE 2147483647; set transaction isolation level read committed").unwrap();
        assert_eq!(s.len(), 3);
        let s = parse_batch("IF @@TRANCOUNT > 0 COMMIT BEGIN TRANSACTION").unwrap();
        assert!(matches!(&s[0], Stmt::If { then, .. } if **then == Stmt::Commit));
        assert_eq!(s[1], Stmt::BeginTran);
        assert_eq!(
            parse_batch("use [db 1]").unwrap(),
            vec![Stmt::Use {
                database: "db 1".into()
            }]
        );
        assert_eq!(parse_batch("  ;; ").unwrap(), vec![]);
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        assert_eq!(
            parse_batch("SELEC 1").unwrap_err(),
            SqlError::syntax_near("SELEC")
        );
        assert_eq!(parse_batch("SELECT 1 FROM").unwrap_err().number, 102);
        assert_eq!(parse_batch("SELECT 1 2 3").unwrap_err().number, 102);
        assert_eq!(parse_batch("SET BOGUS ON").unwrap_err().number, 195);
        assert_eq!(parse_batch("SELECT ,").unwrap_err().number, 102);
        assert_eq!(parse_batch("SELECT 1 +").unwrap_err().number, 102);
        assert_eq!(parse_batch("€").unwrap_err().number, 102);
    }

    #[test]
    fn aliases_in_all_their_forms() {
        let s = parse_batch("SELECT 1 AS [a], 2 b, c = 3, 4 AS 'd', @@VERSION").unwrap();
        let Stmt::Select(s) = &s[0] else { panic!() };
        let aliases: Vec<Option<String>> = s
            .items
            .iter()
            .map(|i| match i {
                Item::Expr { alias, .. } => alias.clone(),
                Item::Star => None,
            })
            .collect();
        assert_eq!(
            aliases,
            vec![
                Some("a".into()),
                Some("b".into()),
                Some("c".into()),
                Some("d".into()),
                None
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = parse_batch(&s);
        }

        #[test]
        fn never_panics_on_sql_like_text(words in proptest::collection::vec(
            proptest::sample::select(vec!["SELECT", "FROM", "WHERE", "IN", "(", ")", ",", ";", "=", "N'x'", "'y'", "1", "@@SPID",
                "@P1", "sys.databases", "AS", "a", ".", "*", "JOIN", "ON", "AND", "SET", "IF", "BEGIN", "TRAN", "[q]", "-", "TOP", "ORDER", "BY",
                "GRANT", "DENY", "REVOKE", "TO", "FROM", "::", "AVAILABILITY", "GROUP", "VIEW", "CONTROL", "WITH", "OPTION",
                "CREATE", "LOGIN", "PASSWORD", "CAST", "HAS_PERMS_BY_NAME", "nvarchar", "MAX", "NULL", "CASCADE"]),
            0..20,
        )) {
            let _ = parse_batch(&words.join(" "));
        }
    }
}
