//! Parsing of function calls with arguments (`HAS_PERMS_BY_NAME(NULL, NULL, N'..')`) and
//! `CAST(expr AS type[(n)])`.
//!
//! Apart from the SELECT grammar because the argument lists and CAST's type are their own
//! small grammar; which functions and target types exist is decided when the statement
//! runs (`crate::func`), as SQL Server reports an unknown one by name rather than as a
//! syntax error.

use super::lex::Tok;
use super::parse::Parser;
use super::{CastType, Expr, SqlError};

impl Parser {
    /// At a function name followed by `(`: `CAST(..)`, or `NAME(arg, ..)` / `NAME()`.
    pub(crate) fn call(&mut self, name: &str) -> Result<Expr, SqlError> {
        self.expect_punct("(")?;
        if name.eq_ignore_ascii_case("CAST") {
            return self.cast();
        }
        let mut args = Vec::new();
        if !self.eat_punct(")") {
            loop {
                args.push(self.expr()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.expect_punct(")")?;
        }
        Ok(Expr::Func(name.to_ascii_uppercase(), args))
    }

    /// After `CAST(`: `expr AS type [ ( n | MAX ) ] )`.
    fn cast(&mut self) -> Result<Expr, SqlError> {
        let e = self.expr()?;
        if !self.eat_word("AS") {
            return Err(self.error_here());
        }
        let name = match self.next() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => w.to_ascii_uppercase(),
            _ => return Err(self.error_back()),
        };
        let mut length = None;
        if self.eat_punct("(") {
            length = Some(match self.next() {
                Some(Tok::Num(n)) => Some(n),
                Some(t) if t.is_word("MAX") => None,
                _ => return Err(self.error_back()),
            });
            self.expect_punct(")")?;
        }
        self.expect_punct(")")?;
        Ok(Expr::Cast(Box::new(e), CastType { name, length }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Item, Stmt, parse_batch};
    use super::*;

    fn first_item(sql: &str) -> Expr {
        let s = parse_batch(sql).unwrap();
        let Stmt::Select(sel) = &s[0] else {
            panic!("{s:?}")
        };
        match &sel.items[0] {
            Item::Expr { expr, .. } => expr.clone(),
            Item::Star => panic!("star"),
        }
    }

    #[test]
    fn parses_the_permission_query_check_config_sends() {
        let e = first_item(
            "SELECT CAST(HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') AS nvarchar(10)) AS granted",
        );
        assert_eq!(
            e,
            Expr::Cast(
                Box::new(Expr::Func(
                    "HAS_PERMS_BY_NAME".into(),
                    vec![
                        Expr::Null,
                        Expr::Null,
                        Expr::Str("VIEW SERVER STATE".into())
                    ]
                )),
                CastType {
                    name: "NVARCHAR".into(),
                    length: Some(Some(10))
                }
            )
        );
        let e = first_item("select has_perms_by_name(N'ag1', N'AVAILABILITY GROUP', @p)");
        assert!(matches!(&e, Expr::Func(n, a) if n == "HAS_PERMS_BY_NAME" && a.len() == 3));
        assert_eq!(
            first_item("SELECT DB_NAME()"),
            Expr::Func("DB_NAME".into(), vec![])
        );
        assert!(matches!(
            first_item("SELECT CAST(1 AS int)"),
            Expr::Cast(_, CastType { length: None, .. })
        ));
        assert!(matches!(
            first_item("SELECT CAST('x' AS [nvarchar](max))"),
            Expr::Cast(
                _,
                CastType {
                    length: Some(None),
                    ..
                }
            )
        ));
    }

    #[test]
    fn rejects_broken_calls() {
        for bad in [
            "SELECT CAST(1 nvarchar)",
            "SELECT CAST(1 AS)",
            "SELECT CAST(1 AS nvarchar(x))",
            "SELECT CAST(1 AS nvarchar(10)",
            "SELECT HAS_PERMS_BY_NAME(NULL, NULL",
            "SELECT HAS_PERMS_BY_NAME(NULL,, 1)",
            "SELECT HAS_PERMS_BY_NAME(,)",
        ] {
            assert_eq!(parse_batch(bad).unwrap_err().number, 102, "{bad}");
        }
    }
}
