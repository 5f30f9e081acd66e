//! Executes the security statements: `CREATE LOGIN` and `GRANT`/`DENY`/`REVOKE` of the
//! permissions tds-sim models (`perms`), with SQL Server's errors.
//!
//! Checked in this order: the current database is master (4621, server-scope permissions
//! only there), the permissions and securable are ones tds-sim models (else 50000, saying
//! so), the AG exists (15151), each grantee exists (15151), no grantee is `sa` or the
//! grantor itself (4624), and the grantor may grant (4613): CONTROL SERVER for server
//! permissions, CONTROL on the AG or ALTER ANY AVAILABILITY GROUP for AG permissions
//! (the Permissions section of "GRANT Availability Group Permissions"). `CREATE LOGIN`
//! needs `sysadmin` here (ALTER ANY LOGIN is not modelled), else 15247.

use tds_codec::token::done::cur_cmd;

use crate::access::ag_not_found;
use crate::exec::{Exec, Outcome, SYSTEM_DATABASES};
use crate::perms::{Class, Perm, State};
use crate::sql::{PermissionStmt, PermissionVerb, SqlError};

fn not_modelled(what: String) -> SqlError {
    SqlError::new(50000, 16, format!("tds-sim does not model {what}."))
}

/// The permissions a statement names, all of one class.
fn resolve(p: &PermissionStmt, major: u8) -> Result<Class, SqlError> {
    if let Some(what) = p.unsupported {
        return Err(not_modelled(what.to_string()));
    }
    let class = match &p.on {
        None => Class::Server,
        Some((c, _)) if c == "AVAILABILITY GROUP" => Class::AvailabilityGroup,
        Some((c, name)) => return Err(not_modelled(format!("permissions on {c} '{name}'"))),
    };
    for name in &p.permissions {
        if Perm::parse(name, class, major).is_none() {
            let on = match class {
                Class::Server => "the server",
                Class::AvailabilityGroup => "an availability group",
            };
            return Err(not_modelled(format!("the permission {name} on {on}")));
        }
    }
    Ok(class)
}

impl Exec<'_> {
    pub(crate) fn permission(&mut self, p: &PermissionStmt) -> Result<Outcome, SqlError> {
        if !self
            .session
            .database
            .eq_ignore_ascii_case(SYSTEM_DATABASES[0])
        {
            return Err(SqlError::new(
                4621,
                16,
                "Permissions at the server scope can only be granted when the current database is master",
            ));
        }
        let major = self.shared.product_version.major;
        let class = resolve(p, major)?;
        let ag = match (&p.on, class) {
            (Some((_, name)), Class::AvailabilityGroup) => {
                if !name.eq_ignore_ascii_case(&self.replica.ag) {
                    return Err(ag_not_found(name));
                }
                Some(self.replica.ag.clone())
            }
            _ => None,
        };
        let logins = &self.shared.logins;
        let grantor = self.session.user.clone();
        let grantees = self.grantees(&p.principals)?;
        let may_grant = match class {
            Class::Server => logins.has(&grantor, Perm::ControlServer, None),
            Class::AvailabilityGroup => {
                logins.has(&grantor, Perm::Control, ag.as_deref())
                    || logins.has(&grantor, Perm::AlterAnyAvailabilityGroup, None)
            }
        };
        if !may_grant {
            return Err(SqlError::new(
                4613,
                16,
                "Grantor does not have GRANT permission.",
            ));
        }
        let state = match p.verb {
            PermissionVerb::Grant => Some(State::Grant),
            PermissionVerb::Deny => Some(State::Deny),
            PermissionVerb::Revoke => None,
        };
        for name in &p.permissions {
            let Some(perm) = Perm::parse(name, class, major) else {
                continue;
            };
            for g in &grantees {
                logins.set(g, perm, ag.as_deref(), state);
            }
        }
        tracing::info!(grantor = %grantor, verb = ?p.verb, permissions = ?p.permissions, on = ?p.on, to = ?grantees, "permissions changed");
        Ok(Outcome::Quiet(cur_cmd::NONE))
    }

    /// The logins `names` stand for: each must exist and be neither `sa` nor the grantor.
    fn grantees(&self, names: &[String]) -> Result<Vec<String>, SqlError> {
        let mut out = Vec::new();
        for name in names {
            let Some(login) = self.shared.logins.canonical(name) else {
                return Err(SqlError::new(
                    15151,
                    16,
                    format!(
                        "Cannot find the login '{name}', because it does not exist or you do not have permission."
                    ),
                ));
            };
            if login.eq_ignore_ascii_case("sa") || login.eq_ignore_ascii_case(&self.session.user) {
                return Err(SqlError::new(
                    4624,
                    16,
                    "Cannot grant, deny, or revoke permissions to sa, dbo, entity owner, information_schema, sys, or yourself.",
                ));
            }
            out.push(login);
        }
        Ok(out)
    }

    pub(crate) fn create_login(
        &mut self,
        name: &str,
        password: &str,
        options: &[(String, String)],
    ) -> Result<Outcome, SqlError> {
        let logins = &self.shared.logins;
        if !logins.is_sysadmin(&self.session.user) {
            return Err(SqlError::new(
                15247,
                16,
                "User does not have permission to perform this action.",
            ));
        }
        if let Some((o, _)) = options
            .iter()
            .find(|(o, _)| o != "CHECK_POLICY" && o != "CHECK_EXPIRATION")
        {
            return Err(not_modelled(format!("the CREATE LOGIN option {o}")));
        }
        if name.is_empty() || name.chars().count() > 128 {
            return Err(not_modelled(format!(
                "a login name of {} characters",
                name.chars().count()
            )));
        }
        logins.insert(name, password, false).map_err(|_| {
            SqlError::new(
                15025,
                16,
                format!("The server principal '{name}' already exists."),
            )
        })?;
        tracing::info!(login = %name, by = %self.session.user, "login created");
        Ok(Outcome::Quiet(cur_cmd::NONE))
    }
}
