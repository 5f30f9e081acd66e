//! Parsing of the statements the AG model adds: `INSERT .. VALUES`, `ALTER AVAILABILITY
//! GROUP`, `EXEC` with named or positional arguments, and aggregate calls.
//!
//! Kept apart from the SELECT grammar because these are the statements an HA manager and
//! the lab's writer send: their shapes follow SQL Server's documented syntax, and anything
//! outside it is a 102 syntax error, never a guess.

use super::lex::Tok;
use super::parse::Parser;
use super::{AgAction, AggFn, Arg, Expr, SqlError, Stmt};

/// The aggregate a function name stands for, if any.
pub(crate) fn aggregate(name: &str) -> Option<AggFn> {
    match name.to_ascii_uppercase().as_str() {
        "COUNT" => Some(AggFn::Count),
        "MAX" => Some(AggFn::Max),
        "MIN" => Some(AggFn::Min),
        _ => None,
    }
}

impl Parser {
    /// After the function name: `(*)` or `(expr)`.
    pub(crate) fn aggregate(&mut self, name: &str) -> Result<Expr, SqlError> {
        let f = aggregate(name).ok_or_else(|| SqlError::syntax_near(name))?;
        self.expect_punct("(")?;
        let arg = if f == AggFn::Count && self.eat_punct("*") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        self.expect_punct(")")?;
        Ok(Expr::Agg(f, arg))
    }

    /// After `EXEC`: a procedure name, then arguments separated by commas.
    pub(crate) fn exec(&mut self) -> Result<Stmt, SqlError> {
        let name = self.dotted_name()?;
        let mut args = Vec::new();
        while !self.at_end() {
            let named = matches!(self.peek(), Some(Tok::Var(_)))
                && matches!(self.peek_at(1), Some(Tok::Punct("=")));
            let name = if named {
                let n = self.next().map(|t| t.text());
                self.pos += 1;
                n
            } else {
                None
            };
            let value = self.expr()?;
            // OUTPUT markers are accepted and ignored: no procedure here returns one.
            let _ = self.eat_word("OUTPUT") || self.eat_word("OUT");
            args.push(Arg { name, value });
            if !self.eat_punct(",") {
                break;
            }
        }
        if !self.at_end() {
            return Err(self.error_here());
        }
        Ok(Stmt::Exec {
            procedure: name.join("."),
            args,
        })
    }

    /// After `INSERT`: `[INTO] table [(col, ..)] VALUES (expr, ..)[, (..)]`.
    pub(crate) fn insert(&mut self) -> Result<Stmt, SqlError> {
        let _ = self.eat_word("INTO");
        let table = self.table_ref_plain()?;
        let mut columns = Vec::new();
        if self.eat_punct("(") {
            loop {
                match self.next() {
                    Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => columns.push(w),
                    _ => return Err(self.error_back()),
                }
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.expect_punct(")")?;
        }
        if !self.eat_word("VALUES") {
            return Err(self.error_here());
        }
        let mut rows = Vec::new();
        loop {
            self.expect_punct("(")?;
            let mut row = vec![self.expr()?];
            while self.eat_punct(",") {
                row.push(self.expr()?);
            }
            self.expect_punct(")")?;
            rows.push(row);
            if !self.eat_punct(",") {
                break;
            }
        }
        if !self.at_end() {
            return Err(self.error_here());
        }
        Ok(Stmt::Insert {
            table,
            columns,
            rows,
        })
    }

    /// A table name without an alias (INSERT's target).
    fn table_ref_plain(&mut self) -> Result<super::TableRef, SqlError> {
        let parts = self.dotted_name()?;
        let written = parts.join(".");
        let lower: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        let key = match lower.as_slice() {
            [name] => format!("dbo.{name}"),
            [.., schema, name] if schema.is_empty() => format!("dbo.{name}"),
            [.., schema, name] => format!("{schema}.{name}"),
            [] => return Err(self.error_back()),
        };
        Ok(super::TableRef {
            written,
            key,
            alias: None,
        })
    }

    /// After `ALTER`: `AVAILABILITY GROUP name` and one action.
    pub(crate) fn alter_ag(&mut self) -> Result<Stmt, SqlError> {
        if !(self.eat_word("AVAILABILITY") && self.eat_word("GROUP")) {
            return Err(self.error_here());
        }
        let ag = match self.next() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => w,
            _ => return Err(self.error_back()),
        };
        let action = match self.next() {
            Some(t) if t.is_word("FAILOVER") => AgAction::Failover,
            Some(t) if t.is_word("FORCE_FAILOVER_ALLOW_DATA_LOSS") => {
                AgAction::ForceFailoverAllowDataLoss
            }
            Some(t) if t.is_word("OFFLINE") => AgAction::Offline,
            Some(t) if t.is_word("SET") => self.ag_option()?,
            _ => return Err(self.error_back()),
        };
        if !self.at_end() {
            return Err(self.error_here());
        }
        Ok(Stmt::AlterAg { ag, action })
    }

    /// `( OPTION = value )`.
    fn ag_option(&mut self) -> Result<AgAction, SqlError> {
        self.expect_punct("(")?;
        let option = match self.next() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => return Err(self.error_back()),
        };
        self.expect_punct("=")?;
        let value = self.next();
        let action = match (option.as_str(), value) {
            ("ROLE", Some(Tok::Word(w))) => AgAction::SetRole(w.to_ascii_uppercase()),
            ("REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT", Some(Tok::Num(n))) => {
                AgAction::SetRequiredSynchronizedSecondaries(n)
            }
            ("WRITE_LEASE_VALIDITY", Some(Tok::Num(n))) => AgAction::SetWriteLeaseValidity(n),
            _ => return Err(self.error_back()),
        };
        self.expect_punct(")")?;
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Pred, parse_batch};
    use super::*;

    #[test]
    fn parses_the_ha_managers_statements() {
        let s = parse_batch(
            "EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes'; \
             ALTER AVAILABILITY GROUP [ag1] FAILOVER \
             alter availability group ag1 force_failover_allow_data_loss; \
             ALTER AVAILABILITY GROUP ag1 OFFLINE \
             ALTER AVAILABILITY GROUP ag1 SET (ROLE = SECONDARY) \
             ALTER AVAILABILITY GROUP ag1 SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 1) \
             ALTER AVAILABILITY GROUP ag1 SET (WRITE_LEASE_VALIDITY = 20)",
        )
        .unwrap();
        assert_eq!(
            s[0],
            Stmt::Exec {
                procedure: "sp_set_session_context".into(),
                args: vec![
                    Arg {
                        name: Some("@key".into()),
                        value: Expr::Str("external_cluster".into())
                    },
                    Arg {
                        name: Some("@value".into()),
                        value: Expr::Str("yes".into())
                    },
                ]
            }
        );
        let actions: Vec<AgAction> = s[1..]
            .iter()
            .map(|st| match st {
                Stmt::AlterAg { ag, action } => {
                    assert!(ag.eq_ignore_ascii_case("ag1"));
                    action.clone()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            actions,
            vec![
                AgAction::Failover,
                AgAction::ForceFailoverAllowDataLoss,
                AgAction::Offline,
                AgAction::SetRole("SECONDARY".into()),
                AgAction::SetRequiredSynchronizedSecondaries(1),
                AgAction::SetWriteLeaseValidity(20),
            ]
        );
        // Positional EXEC arguments.
        let s = parse_batch("EXEC sp_set_session_context 'external_cluster', 'yes'").unwrap();
        assert!(
            matches!(&s[0], Stmt::Exec { args, .. } if args.len() == 2 && args[0].name.is_none())
        );
        for bad in [
            "ALTER AVAILABILITY GROUP ag1",
            "ALTER AVAILABILITY GROUP ag1 EXPLODE",
            "ALTER AVAILABILITY GROUP ag1 SET (ROLE = )",
            "ALTER AVAILABILITY GROUP ag1 SET (WRITE_LEASE_VALIDITY = 'x')",
            "ALTER TABLE t",
        ] {
            assert_eq!(parse_batch(bad).unwrap_err().number, 102, "{bad}");
        }
    }

    #[test]
    fn parses_the_ledger_statements() {
        let s = parse_batch(
            "INSERT INTO dbo.ledger (id, at) VALUES (1, 100), (2, 200); \
             SELECT COUNT(*), MAX(id) FROM dbo.ledger; \
             SELECT id FROM dbo.ledger WHERE id BETWEEN 5 AND 9",
        )
        .unwrap();
        let Stmt::Insert {
            table,
            columns,
            rows,
        } = &s[0]
        else {
            panic!("{s:?}")
        };
        assert_eq!(table.key, "dbo.ledger");
        assert_eq!(columns, &["id", "at"]);
        assert_eq!(rows[1], vec![Expr::Int(2), Expr::Int(200)]);
        let Stmt::Select(sel) = &s[1] else { panic!() };
        assert_eq!(sel.items.len(), 2);
        let Stmt::Select(sel) = &s[2] else { panic!() };
        assert!(matches!(&sel.filter[0], Pred::Between { .. }));
        for bad in [
            "INSERT INTO dbo.ledger (id) VALUES",
            "INSERT INTO dbo.ledger (id VALUES (1)",
            "SELECT COUNT(*",
            "SELECT id FROM dbo.ledger WHERE id BETWEEN 1",
        ] {
            assert_eq!(parse_batch(bad).unwrap_err().number, 102, "{bad}");
        }
    }
}
