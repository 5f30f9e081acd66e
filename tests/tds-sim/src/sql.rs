//! The query recogniser: a loose T-SQL lexer and parser for the statements clients and the
//! tdsvip probe send.
//!
//! Queries are recognised by *parsing*, never by comparing strings: case, whitespace,
//! comments, `[quoted]` names, `N'..'` literals with `''` escapes and `;` or keyword
//! statement boundaries all vary between clients and must not matter. The grammar is small:
//! `SELECT` (expressions, `@@globals`, parameters, `FROM` one table with inner `JOIN`s,
//! `WHERE` comparisons and `IN` lists joined by `AND`, `ORDER BY`, `TOP`), `SET` options,
//! `USE`, `BEGIN`/`COMMIT`/`ROLLBACK` transaction, `IF <comparison> <statement>` and `EXEC`.
//! Anything else is a [`SqlError`] shaped like SQL Server's own (102 "Incorrect syntax near
//! ..." and friends), because an honest error is what a test double owes its clients.

use std::fmt;

/// An error the simulator reports as an ERROR token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub number: i32,
    pub class: u8,
    pub state: u8,
    pub message: String,
}

impl SqlError {
    pub fn new(number: i32, class: u8, message: impl Into<String>) -> Self {
        SqlError {
            number,
            class,
            state: 1,
            message: message.into(),
        }
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
pub enum Tok {
    Word(String),
    /// `[name]` or `"name"`.
    Quoted(String),
    /// `@name`, with the `@`.
    Var(String),
    /// `@@name`, lowercased, without the `@@`.
    Global(String),
    Num(i64),
    Str {
        text: String,
        unicode: bool,
    },
    Punct(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => q.clone(),
            Tok::Var(v) => v.clone(),
            Tok::Global(g) => format!("@@{g}"),
            Tok::Num(n) => n.to_string(),
            Tok::Str { text, .. } => text.clone(),
            Tok::Punct(p) => (*p).to_string(),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }
}

const PUNCT: &[&str] = &[
    "<>", "!=", ">=", "<=", "=", "<", ">", "(", ")", ",", ".", ";", "*", "+", "-", "/", "%",
];

/// Splits text into tokens, dropping whitespace and comments.
pub fn lex(sql: &str) -> Result<Vec<Tok>, SqlError> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && at(i + 1) == Some('-') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            // T-SQL block comments nest.
            let mut depth = 0;
            loop {
                match (at(i), at(i + 1)) {
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    (Some(_), _) => i += 1,
                    (None, _) => {
                        return Err(SqlError::new(113, 15, "Missing end comment mark '*/'."));
                    }
                }
            }
        } else if c == '\'' || ((c == 'N' || c == 'n') && at(i + 1) == Some('\'')) {
            let unicode = c != '\'';
            i += if unicode { 2 } else { 1 };
            let mut text = String::new();
            loop {
                match at(i) {
                    Some('\'') if at(i + 1) == Some('\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(ch);
                        i += 1;
                    }
                    None => {
                        return Err(SqlError::new(
                            105,
                            15,
                            format!("Unclosed quotation mark after the character string '{text}'."),
                        ));
                    }
                }
            }
            out.push(Tok::Str { text, unicode });
        } else if c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { '"' };
            i += 1;
            let mut text = String::new();
            loop {
                match at(i) {
                    Some(ch) if ch == close && at(i + 1) == Some(close) => {
                        text.push(close);
                        i += 2;
                    }
                    Some(ch) if ch == close => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(ch);
                        i += 1;
                    }
                    None => {
                        return Err(SqlError::new(
                            105,
                            15,
                            format!("Unclosed quotation mark after the character string '{text}'."),
                        ));
                    }
                }
            }
            out.push(Tok::Quoted(text));
        } else if c == '@' {
            let global = at(i + 1) == Some('@');
            let start = if global { i + 2 } else { i + 1 };
            let mut j = start;
            while at(j).is_some_and(|c| {
                c.is_alphanumeric() || c == '_' || c == '$' || c == '#' || c == '@'
            }) {
                j += 1;
            }
            if j == start {
                return Err(SqlError::syntax_near("@"));
            }
            let name: String = chars[start..j].iter().collect();
            out.push(if global {
                Tok::Global(name.to_ascii_lowercase())
            } else {
                Tok::Var(format!("@{name}"))
            });
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            let digits: String = chars[i..j].iter().collect();
            let n = digits
                .parse::<i64>()
                .map_err(|_| SqlError::syntax_near(&digits))?;
            out.push(Tok::Num(n));
            i = j;
        } else if c.is_alphabetic() || c == '_' || c == '#' {
            let mut j = i;
            while at(j).is_some_and(|c| {
                c.is_alphanumeric() || c == '_' || c == '$' || c == '#' || c == '@'
            }) {
                j += 1;
            }
            out.push(Tok::Word(chars[i..j].iter().collect()));
            i = j;
        } else {
            let rest: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let Some(p) = PUNCT.iter().find(|p| rest.starts_with(**p)) else {
                return Err(SqlError::syntax_near(&c.to_string()));
            };
            out.push(Tok::Punct(p));
            i += p.chars().count();
        }
    }
    Ok(out)
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
    /// A niladic built-in such as `DB_NAME()`, uppercased.
    Func(String),
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
    Set { option: String },
    Use { database: String },
    BeginTran,
    Commit,
    Rollback,
    If { cond: Pred, then: Box<Stmt> },
    Exec { procedure: String },
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
        }
    }
}

/// Words that start a statement: they end the previous one even without a `;`.
const STARTERS: &[&str] = &[
    "SELECT", "SET", "USE", "IF", "BEGIN", "COMMIT", "ROLLBACK", "DECLARE", "EXEC", "EXECUTE",
    "INSERT", "UPDATE", "DELETE", "PRINT", "WHILE", "RETURN", "WITH", "CREATE", "DROP", "ALTER",
    "SAVE", "WAITFOR", "TRUNCATE", "MERGE", "GRANT", "ELSE", "END",
];
/// Words that cannot be a bare alias.
const RESERVED: &[&str] = &[
    "FROM", "WHERE", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "OUTER", "ON", "AND", "OR",
    "ORDER", "GROUP", "HAVING", "UNION", "AS", "IN", "NOT", "IS", "BY", "ASC", "DESC", "NULL",
    "TOP", "DISTINCT", "ALL", "OPTION", "FOR",
];

const SET_OPTIONS: &[&str] = &[
    "ANSI_DEFAULTS",
    "ANSI_NULL_DFLT_OFF",
    "ANSI_NULL_DFLT_ON",
    "ANSI_NULLS",
    "ANSI_PADDING",
    "ANSI_WARNINGS",
    "ARITHABORT",
    "ARITHIGNORE",
    "CONCAT_NULL_YIELDS_NULL",
    "CONTEXT_INFO",
    "CURSOR_CLOSE_ON_COMMIT",
    "DATEFIRST",
    "DATEFORMAT",
    "DEADLOCK_PRIORITY",
    "FMTONLY",
    "FORCEPLAN",
    "IMPLICIT_TRANSACTIONS",
    "LANGUAGE",
    "LOCK_TIMEOUT",
    "NOCOUNT",
    "NOEXEC",
    "NUMERIC_ROUNDABORT",
    "PARSEONLY",
    "QUERY_GOVERNOR_COST_LIMIT",
    "QUOTED_IDENTIFIER",
    "REMOTE_PROC_TRANSACTIONS",
    "ROWCOUNT",
    "STATISTICS",
    "TEXTSIZE",
    "TRANSACTION",
    "XACT_ABORT",
    "XACT_ABORT",
];

fn is_one_of(t: &Tok, words: &[&str]) -> bool {
    matches!(t, Tok::Word(w) if word_in(w, words))
}

fn word_in(w: &str, words: &[&str]) -> bool {
    words.iter().any(|k| w.eq_ignore_ascii_case(k))
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// The error for the current position: near the next token, or the last one at the end.
    fn error_here(&self) -> SqlError {
        match self.peek().or(self.toks.last()) {
            Some(t) => SqlError::syntax_near(&t.text()),
            None => SqlError::syntax_near(""),
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_word(w)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(x)) if *x == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), SqlError> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    /// True at the end of the statement: end of input, `;`, or a statement keyword.
    fn at_end(&self) -> bool {
        match self.peek() {
            None | Some(Tok::Punct(";")) => true,
            Some(t) => is_one_of(t, STARTERS),
        }
    }

    fn statement(&mut self) -> Result<Stmt, SqlError> {
        let Some(first) = self.next() else {
            return Err(self.error_here());
        };
        let word = match &first {
            Tok::Word(w) => w.to_ascii_uppercase(),
            t => return Err(SqlError::syntax_near(&t.text())),
        };
        match word.as_str() {
            "SELECT" => Ok(Stmt::Select(self.select()?)),
            "SET" => self.set(),
            "USE" => match self.next() {
                Some(Tok::Word(db)) | Some(Tok::Quoted(db)) => Ok(Stmt::Use { database: db }),
                _ => Err(self.error_back()),
            },
            "BEGIN" => {
                if self.eat_word("TRAN") || self.eat_word("TRANSACTION") {
                    self.optional_name();
                    Ok(Stmt::BeginTran)
                } else {
                    Err(self.error_here())
                }
            }
            "COMMIT" | "ROLLBACK" => {
                let _ =
                    self.eat_word("TRAN") || self.eat_word("TRANSACTION") || self.eat_word("WORK");
                self.optional_name();
                Ok(if word == "COMMIT" {
                    Stmt::Commit
                } else {
                    Stmt::Rollback
                })
            }
            "IF" => {
                let cond = self.predicate()?;
                let then = Box::new(self.statement()?);
                Ok(Stmt::If { cond, then })
            }
            "EXEC" | "EXECUTE" => {
                let name = self.dotted_name()?;
                // Arguments are not interpreted: the procedure will not be found anyway.
                while !self.at_end() {
                    self.pos += 1;
                }
                Ok(Stmt::Exec {
                    procedure: name.join("."),
                })
            }
            _ => Err(SqlError::syntax_near(&first.text())),
        }
    }

    fn error_back(&self) -> SqlError {
        match self.toks.get(self.pos.saturating_sub(1)) {
            Some(t) => SqlError::syntax_near(&t.text()),
            None => SqlError::syntax_near(""),
        }
    }

    fn optional_name(&mut self) {
        if let Some(t) = self.peek()
            && (matches!(t, Tok::Var(_) | Tok::Quoted(_))
                || (matches!(t, Tok::Word(_)) && !is_one_of(t, STARTERS)))
        {
            self.pos += 1;
        }
    }

    fn set(&mut self) -> Result<Stmt, SqlError> {
        let option = match self.next() {
            Some(Tok::Word(w)) => w,
            Some(Tok::Var(v)) => return Err(SqlError::undeclared(&v)),
            _ => return Err(self.error_back()),
        };
        if !SET_OPTIONS.iter().any(|o| o.eq_ignore_ascii_case(&option)) {
            return Err(SqlError::new(
                195,
                15,
                format!("'{option}' is not a recognized SET option."),
            ));
        }
        let mut depth = 0i32;
        while let Some(t) = self.peek() {
            match t {
                Tok::Punct("(") => depth += 1,
                Tok::Punct(")") => depth -= 1,
                _ if depth <= 0 && self.at_end() => break,
                _ => {}
            }
            self.pos += 1;
        }
        Ok(Stmt::Set {
            option: option.to_ascii_uppercase(),
        })
    }

    fn dotted_name(&mut self) -> Result<Vec<String>, SqlError> {
        let mut parts = Vec::new();
        loop {
            match self.next() {
                Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => parts.push(w),
                _ => return Err(self.error_back()),
            }
            if !self.eat_punct(".") {
                return Ok(parts);
            }
        }
    }

    /// An alias: a bare word that is not a keyword, a quoted name, or (T-SQL allows it for
    /// columns) a string literal.
    fn alias_word(&mut self) -> Option<String> {
        match self.peek()? {
            Tok::Quoted(q) => {
                let q = q.clone();
                self.pos += 1;
                Some(q)
            }
            Tok::Str { text, .. } => {
                let t = text.clone();
                self.pos += 1;
                Some(t)
            }
            t @ Tok::Word(w) if !is_one_of(t, STARTERS) && !is_one_of(t, RESERVED) => {
                let w = w.clone();
                self.pos += 1;
                Some(w)
            }
            _ => None,
        }
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        let Some(t) = self.next() else {
            return Err(self.error_back());
        };
        Ok(match t {
            Tok::Num(n) => Expr::Int(n),
            Tok::Punct("-") => match self.next() {
                Some(Tok::Num(n)) => Expr::Int(-n),
                _ => return Err(self.error_back()),
            },
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect_punct(")")?;
                e
            }
            Tok::Str { text, .. } => Expr::Str(text),
            Tok::Global(g) => Expr::Global(g),
            Tok::Var(v) => Expr::Var(v),
            Tok::Word(name) if name.eq_ignore_ascii_case("NULL") => Expr::Null,
            Tok::Word(name) if word_in(&name, STARTERS) || word_in(&name, RESERVED) => {
                return Err(SqlError::syntax_near(&name));
            }
            Tok::Word(name) | Tok::Quoted(name) => {
                if self.eat_punct("(") {
                    self.expect_punct(")")?;
                    return Ok(Expr::Func(name.to_ascii_uppercase()));
                }
                let mut parts = vec![name];
                while self.eat_punct(".") {
                    match self.next() {
                        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => parts.push(w),
                        _ => return Err(self.error_back()),
                    }
                }
                Expr::Column(parts)
            }
            other => return Err(SqlError::syntax_near(&other.text())),
        })
    }

    fn predicate(&mut self) -> Result<Pred, SqlError> {
        let left = self.expr()?;
        let negated = self.eat_word("NOT");
        if self.eat_word("IN") {
            self.expect_punct("(")?;
            let mut list = vec![self.expr()?];
            while self.eat_punct(",") {
                list.push(self.expr()?);
            }
            self.expect_punct(")")?;
            return Ok(Pred::In {
                expr: left,
                list,
                negated,
            });
        }
        if negated {
            return Err(self.error_here());
        }
        let op = match self.next() {
            Some(Tok::Punct("=")) => CmpOp::Eq,
            Some(Tok::Punct("<>")) | Some(Tok::Punct("!=")) => CmpOp::Ne,
            Some(Tok::Punct("<")) => CmpOp::Lt,
            Some(Tok::Punct("<=")) => CmpOp::Le,
            Some(Tok::Punct(">")) => CmpOp::Gt,
            Some(Tok::Punct(">=")) => CmpOp::Ge,
            _ => return Err(self.error_back()),
        };
        Ok(Pred::Cmp(left, op, self.expr()?))
    }

    fn table_ref(&mut self) -> Result<TableRef, SqlError> {
        let parts = self.dotted_name()?;
        let written = parts.join(".");
        let lower: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        let key = match lower.as_slice() {
            [name] => format!("dbo.{name}"),
            [.., schema, name] if schema.is_empty() => format!("dbo.{name}"),
            [.., schema, name] => format!("{schema}.{name}"),
            [] => return Err(self.error_back()),
        };
        let after_as = self.eat_word("AS");
        let alias = match self.peek() {
            Some(Tok::Str { .. }) => None,
            _ => self.alias_word(),
        };
        if after_as && alias.is_none() {
            return Err(self.error_here());
        }
        Ok(TableRef {
            written,
            key,
            alias,
        })
    }

    fn select(&mut self) -> Result<Select, SqlError> {
        let _ = self.eat_word("ALL") || self.eat_word("DISTINCT");
        let mut top = None;
        if self.eat_word("TOP") {
            let paren = self.eat_punct("(");
            match self.next() {
                Some(Tok::Num(n)) => top = Some(n),
                _ => return Err(self.error_back()),
            }
            if paren {
                self.expect_punct(")")?;
            }
        }
        let mut items = Vec::new();
        loop {
            if self.eat_punct("*") {
                items.push(Item::Star);
            } else if matches!(self.peek(), Some(Tok::Word(_)) | Some(Tok::Quoted(_)))
                && matches!(self.peek_at(1), Some(Tok::Punct("=")))
                && !self.peek().is_some_and(|t| is_one_of(t, RESERVED))
            {
                // `alias = expression`
                let alias = self.next().map(|t| t.text());
                self.pos += 1;
                items.push(Item::Expr {
                    expr: self.expr()?,
                    alias,
                });
            } else if matches!(self.peek_at(1), Some(Tok::Punct(".")))
                && matches!(self.peek_at(2), Some(Tok::Punct("*")))
            {
                self.pos += 3;
                items.push(Item::Star);
            } else {
                let expr = self.expr()?;
                let after_as = self.eat_word("AS");
                let alias = self.alias_word();
                if after_as && alias.is_none() {
                    return Err(self.error_here());
                }
                items.push(Item::Expr { expr, alias });
            }
            if !self.eat_punct(",") {
                break;
            }
        }
        let mut from = None;
        if self.eat_word("FROM") {
            let first = self.table_ref()?;
            let mut joins = Vec::new();
            loop {
                let inner = self.eat_word("INNER");
                if !self.eat_word("JOIN") {
                    if inner {
                        return Err(self.error_here());
                    }
                    break;
                }
                let table = self.table_ref()?;
                if !self.eat_word("ON") {
                    return Err(self.error_here());
                }
                let a = self.expr()?;
                self.expect_punct("=")?;
                let b = self.expr()?;
                joins.push(Join { table, on: (a, b) });
            }
            from = Some((first, joins));
        }
        let mut filter = Vec::new();
        if self.eat_word("WHERE") {
            filter.push(self.predicate()?);
            while self.eat_word("AND") {
                filter.push(self.predicate()?);
            }
        }
        let mut order_by = Vec::new();
        if self.eat_word("ORDER") {
            if !self.eat_word("BY") {
                return Err(self.error_here());
            }
            loop {
                let e = self.expr()?;
                let desc = self.eat_word("DESC");
                if !desc {
                    self.eat_word("ASC");
                }
                order_by.push((e, desc));
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        if !self.at_end() {
            return Err(self.error_here());
        }
        Ok(Select {
            top,
            items,
            from,
            filter,
            order_by,
        })
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
    fn lexes_literals_comments_and_names() {
        let t =
            lex("select N'it''s' , 'x' /* a /* nested */ comment */ [my col] -- tail\n @@SpId @p1")
                .unwrap();
        assert_eq!(
            t,
            vec![
                Tok::Word("select".into()),
                Tok::Str {
                    text: "it's".into(),
                    unicode: true
                },
                Tok::Punct(","),
                Tok::Str {
                    text: "x".into(),
                    unicode: false
                },
                Tok::Quoted("my col".into()),
                Tok::Global("spid".into()),
                Tok::Var("@p1".into()),
            ]
        );
        assert_eq!(lex("SELECT 'open").unwrap_err().number, 105);
        assert_eq!(lex("/* open").unwrap_err().number, 113);
    }

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
                "@P1", "sys.databases", "AS", "a", ".", "*", "JOIN", "ON", "AND", "SET", "IF", "BEGIN", "TRAN", "[q]", "-", "TOP", "ORDER", "BY"]),
            0..20,
        )) {
            let _ = parse_batch(&words.join(" "));
        }
    }
}
