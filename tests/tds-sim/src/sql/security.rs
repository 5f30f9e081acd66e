//! Parsing of the security statements: `GRANT`, `DENY`, `REVOKE` and `CREATE LOGIN`.
//!
//! The shapes follow SQL Server's documented syntax (GRANT/DENY/REVOKE Availability Group
//! and Server Permissions, CREATE LOGIN), including the forms HA tooling writes, such as
//! `GRANT ALTER, CONTROL, VIEW DEFINITION ON AVAILABILITY GROUP::ag1 TO login` and
//! `ON AVAILABILITY GROUP :: [ag1]`. Parsing only recognises words; whether tds-sim models
//! a permission, class or option is decided when the statement runs (`crate::exec_perms`),
//! so that an unmodelled but valid statement gets an honest "not modelled" error instead of
//! a syntax error SQL Server would not give.

use super::lex::Tok;
use super::parse::{Parser, is_one_of};
use super::{PermissionStmt, PermissionVerb, SqlError, Stmt};

/// Words that end a permission name.
const AFTER_PERMISSION: &[&str] = &["ON", "TO", "FROM"];

impl Parser {
    /// After `GRANT`, `DENY` or `REVOKE`.
    pub(crate) fn permission(&mut self, verb: PermissionVerb) -> Result<Stmt, SqlError> {
        let mut unsupported = None;
        if verb == PermissionVerb::Revoke && self.eat_word("GRANT") {
            if !(self.eat_word("OPTION") && self.eat_word("FOR")) {
                return Err(self.error_here());
            }
            unsupported = Some("GRANT OPTION FOR");
        }
        let mut permissions = vec![self.permission_name()?];
        while self.eat_punct(",") {
            permissions.push(self.permission_name()?);
        }
        let on = if self.eat_word("ON") {
            Some(self.securable()?)
        } else {
            None
        };
        let to = self.eat_word("TO") || (verb == PermissionVerb::Revoke && self.eat_word("FROM"));
        if !to {
            return Err(self.error_here());
        }
        let mut principals = vec![self.name()?];
        while self.eat_punct(",") {
            principals.push(self.name()?);
        }
        if self.eat_word("WITH") {
            if !(self.eat_word("GRANT") && self.eat_word("OPTION")) {
                return Err(self.error_here());
            }
            unsupported = Some("WITH GRANT OPTION");
        }
        let _ = verb != PermissionVerb::Grant && self.eat_word("CASCADE");
        if self.eat_word("AS") {
            self.name()?;
            unsupported = Some("AS grantor");
        }
        if !self.at_end() {
            return Err(self.error_here());
        }
        Ok(Stmt::Permission(PermissionStmt {
            verb,
            permissions,
            on,
            principals,
            unsupported,
        }))
    }

    /// One permission: its words up to `,`, `ON`, `TO` or `FROM`, uppercased.
    fn permission_name(&mut self) -> Result<String, SqlError> {
        let mut words = Vec::new();
        while let Some(t @ Tok::Word(w)) = self.peek() {
            if is_one_of(t, AFTER_PERMISSION) {
                break;
            }
            words.push(w.to_ascii_uppercase());
            self.pos += 1;
        }
        if words.is_empty() {
            return Err(self.error_here());
        }
        Ok(words.join(" "))
    }

    /// After `ON`: `class :: name` (class words uppercased) or a bare object name.
    fn securable(&mut self) -> Result<(String, String), SqlError> {
        let start = self.pos;
        let mut class = Vec::new();
        while let Some(Tok::Word(w)) = self.peek() {
            class.push(w.to_ascii_uppercase());
            self.pos += 1;
        }
        if !class.is_empty() && self.eat_punct("::") {
            return Ok((class.join(" "), self.name()?));
        }
        self.pos = start;
        let parts = self.dotted_name()?;
        Ok(("OBJECT".to_string(), parts.join(".")))
    }

    /// A principal, login or securable name: a word or a `[quoted]` name.
    fn name(&mut self) -> Result<String, SqlError> {
        match self.next() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Ok(w),
            _ => Err(self.error_back()),
        }
    }

    /// After `CREATE LOGIN`: `name WITH PASSWORD = 'text' [, OPTION = value ..]`.
    pub(crate) fn create_login(&mut self) -> Result<Stmt, SqlError> {
        let name = self.name()?;
        if !(self.eat_word("WITH") && self.eat_word("PASSWORD")) {
            return Err(self.error_here());
        }
        self.expect_punct("=")?;
        let password = match self.next() {
            Some(Tok::Str { text, .. }) => text,
            _ => return Err(self.error_back()),
        };
        let mut options = Vec::new();
        while self.eat_punct(",") {
            let option = match self.next() {
                Some(Tok::Word(w)) => w.to_ascii_uppercase(),
                _ => return Err(self.error_back()),
            };
            self.expect_punct("=")?;
            let value = match self.next() {
                Some(Tok::Word(v)) | Some(Tok::Quoted(v)) => v,
                Some(Tok::Str { text, .. }) => text,
                _ => return Err(self.error_back()),
            };
            options.push((option, value));
        }
        if !self.at_end() {
            return Err(self.error_here());
        }
        Ok(Stmt::CreateLogin {
            name,
            password,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_batch;
    use super::*;

    fn perm(sql: &str) -> PermissionStmt {
        match parse_batch(sql).unwrap().remove(0) {
            Stmt::Permission(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_grant_deny_revoke_in_their_forms() {
        let p = perm("GRANT VIEW SERVER STATE TO [watcher]");
        assert_eq!(p.verb, PermissionVerb::Grant);
        assert_eq!(p.permissions, ["VIEW SERVER STATE"]);
        assert_eq!((p.on, p.principals), (None, vec!["watcher".to_string()]));
        // Microsoft's Pacemaker documentation writes it this way.
        let p = perm(
            "grant alter, control, view definition ON AVAILABILITY GROUP::ag1 TO pacemakerLogin",
        );
        assert_eq!(p.permissions, ["ALTER", "CONTROL", "VIEW DEFINITION"]);
        assert_eq!(
            p.on,
            Some(("AVAILABILITY GROUP".to_string(), "ag1".to_string()))
        );
        // ... and its agent this way.
        let p = perm("GRANT CONTROL ON AVAILABILITY GROUP :: [ag 1] TO [a], b");
        assert_eq!(p.on.unwrap().1, "ag 1");
        assert_eq!(p.principals, ["a", "b"]);
        let p = perm("DENY VIEW SERVER STATE TO w CASCADE");
        assert_eq!((p.verb, p.unsupported), (PermissionVerb::Deny, None));
        let p = perm("REVOKE ALTER ON AVAILABILITY GROUP::ag1 FROM w CASCADE");
        assert_eq!(p.verb, PermissionVerb::Revoke);
        assert_eq!(perm("REVOKE VIEW SERVER STATE TO w").principals, ["w"]);
        assert_eq!(
            perm("REVOKE GRANT OPTION FOR ALTER ON AVAILABILITY GROUP::a FROM w").unsupported,
            Some("GRANT OPTION FOR")
        );
        assert_eq!(
            perm("GRANT VIEW SERVER STATE TO w WITH GRANT OPTION").unsupported,
            Some("WITH GRANT OPTION")
        );
        assert_eq!(
            perm("GRANT VIEW SERVER STATE TO w AS [sa]").unsupported,
            Some("AS grantor")
        );
        // An object securable without a class.
        assert_eq!(
            perm("GRANT SELECT ON dbo.ledger TO w").on,
            Some(("OBJECT".to_string(), "dbo.ledger".to_string()))
        );
        // Two statements without a separator.
        let s = parse_batch("GRANT CONNECT SQL TO w DENY VIEW ANY DEFINITION TO w").unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn parses_create_login() {
        let s = parse_batch(
            "CREATE LOGIN [watcher] WITH PASSWORD = N'it''s', CHECK_POLICY = OFF, DEFAULT_DATABASE = [master]",
        )
        .unwrap();
        assert_eq!(
            s[0],
            Stmt::CreateLogin {
                name: "watcher".into(),
                password: "it's".into(),
                options: vec![
                    ("CHECK_POLICY".into(), "OFF".into()),
                    ("DEFAULT_DATABASE".into(), "master".into())
                ],
            }
        );
    }

    #[test]
    fn rejects_broken_security_statements() {
        for bad in [
            "GRANT TO w",
            "GRANT VIEW SERVER STATE",
            "GRANT VIEW SERVER STATE w",
            "GRANT VIEW SERVER STATE TO",
            "GRANT ALTER ON AVAILABILITY GROUP:: TO w",
            "GRANT ALTER ON TO w",
            "GRANT VIEW SERVER STATE FROM w",
            "GRANT VIEW SERVER STATE TO w WITH",
            "GRANT VIEW SERVER STATE TO w, ",
            "GRANT ALTER, ON AVAILABILITY GROUP::a TO w",
            "REVOKE GRANT ALTER ON AVAILABILITY GROUP::a FROM w",
            "GRANT ALTER ON AVAILABILITY GROUP:a TO w",
            "CREATE LOGIN w",
            "CREATE LOGIN w WITH PASSWORD = 1",
            "CREATE LOGIN w WITH PASSWORD 'x'",
            "CREATE LOGIN w WITH PASSWORD = 'x', CHECK_POLICY",
            "CREATE LOGIN WITH PASSWORD = 'x'",
            "CREATE TABLE t (id int)",
        ] {
            assert_eq!(parse_batch(bad).unwrap_err().number, 102, "{bad}");
        }
    }
}
