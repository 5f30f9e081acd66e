//! The statement parser over [`super::lex`]'s tokens: SELECT, SET, USE, transaction
//! control, IF and EXEC. Statements the AG model adds (INSERT, ALTER AVAILABILITY GROUP,
//! EXEC arguments) are parsed in `super::ag`, function calls and CAST in `super::func`,
//! the security statements in `super::security`, all on the same [`Parser`].

use super::lex::Tok;
use super::*;

/// Words that start a statement: they end the previous one even without a `;`.
pub(crate) const STARTERS: &[&str] = &[
    "SELECT", "SET", "USE", "IF", "BEGIN", "COMMIT", "ROLLBACK", "DECLARE", "EXEC", "EXECUTE",
    "INSERT", "UPDATE", "DELETE", "PRINT", "WHILE", "RETURN", "WITH", "CREATE", "DROP", "ALTER",
    "SAVE", "WAITFOR", "TRUNCATE", "MERGE", "GRANT", "DENY", "REVOKE", "ELSE", "END",
];
/// Words that cannot be a bare alias.
pub(crate) const RESERVED: &[&str] = &[
    "FROM", "WHERE", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "OUTER", "ON", "AND", "OR",
    "ORDER", "GROUP", "HAVING", "UNION", "AS", "IN", "NOT", "IS", "BY", "ASC", "DESC", "NULL",
    "TOP", "DISTINCT", "ALL", "OPTION", "FOR", "BETWEEN", "VALUES", "INTO",
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

pub(crate) fn is_one_of(t: &Tok, words: &[&str]) -> bool {
    matches!(t, Tok::Word(w) if word_in(w, words))
}

pub(crate) fn word_in(w: &str, words: &[&str]) -> bool {
    words.iter().any(|k| w.eq_ignore_ascii_case(k))
}

pub(crate) struct Parser {
    pub(crate) toks: Vec<Tok>,
    pub(crate) pos: usize,
}

impl Parser {
    pub(crate) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    pub(crate) fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n)
    }

    pub(crate) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// The error for the current position: near the next token, or the last one at the end.
    pub(crate) fn error_here(&self) -> SqlError {
        match self.peek().or(self.toks.last()) {
            Some(t) => SqlError::syntax_near(&t.text()),
            None => SqlError::syntax_near(""),
        }
    }

    pub(crate) fn eat_word(&mut self, w: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_word(w)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn eat_punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(x)) if *x == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn expect_punct(&mut self, p: &str) -> Result<(), SqlError> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    /// True at the end of the statement: end of input, `;`, or a statement keyword.
    pub(crate) fn at_end(&self) -> bool {
        match self.peek() {
            None | Some(Tok::Punct(";")) => true,
            Some(t) => is_one_of(t, STARTERS),
        }
    }

    pub(crate) fn statement(&mut self) -> Result<Stmt, SqlError> {
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
            "EXEC" | "EXECUTE" => self.exec(),
            "INSERT" => self.insert(),
            "ALTER" => self.alter_ag(),
            "GRANT" => self.permission(PermissionVerb::Grant),
            "DENY" => self.permission(PermissionVerb::Deny),
            "REVOKE" => self.permission(PermissionVerb::Revoke),
            "CREATE" if self.eat_word("LOGIN") => self.create_login(),
            _ => Err(SqlError::syntax_near(&first.text())),
        }
    }

    pub(crate) fn error_back(&self) -> SqlError {
        match self.toks.get(self.pos.saturating_sub(1)) {
            Some(t) => SqlError::syntax_near(&t.text()),
            None => SqlError::syntax_near(""),
        }
    }

    pub(crate) fn optional_name(&mut self) {
        if let Some(t) = self.peek()
            && (matches!(t, Tok::Var(_) | Tok::Quoted(_))
                || (matches!(t, Tok::Word(_)) && !is_one_of(t, STARTERS)))
        {
            self.pos += 1;
        }
    }

    pub(crate) fn set(&mut self) -> Result<Stmt, SqlError> {
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
        let value = match self.peek() {
            Some(Tok::Word(w)) if !self.at_end() => Some(w.to_ascii_uppercase()),
            _ => None,
        };
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
            value,
        })
    }

    pub(crate) fn dotted_name(&mut self) -> Result<Vec<String>, SqlError> {
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
    pub(crate) fn alias_word(&mut self) -> Option<String> {
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

    pub(crate) fn expr(&mut self) -> Result<Expr, SqlError> {
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
            Tok::Word(name)
                if self.peek() == Some(&Tok::Punct("("))
                    && super::ag::aggregate(&name).is_some() =>
            {
                return self.aggregate(&name);
            }
            Tok::Word(name) | Tok::Quoted(name) => {
                if self.peek() == Some(&Tok::Punct("(")) {
                    return self.call(&name);
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

    pub(crate) fn predicate(&mut self) -> Result<Pred, SqlError> {
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
        if self.eat_word("BETWEEN") && !negated {
            let low = self.expr()?;
            if !self.eat_word("AND") {
                return Err(self.error_here());
            }
            let high = self.expr()?;
            return Ok(Pred::Between {
                expr: left,
                low,
                high,
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

    pub(crate) fn table_ref(&mut self) -> Result<TableRef, SqlError> {
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

    pub(crate) fn select(&mut self) -> Result<Select, SqlError> {
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
