//! Logins and their permissions: the small part of SQL Server's security model an HA agent
//! meets, so that a test can run it under a login that lacks something and watch it fail
//! the way it would against SQL Server.
//!
//! The model: logins with a password; the login named by `--user` is a member of
//! `sysadmin` (every check passes, DENY included, as in SQL Server); others start with no
//! permission. Permissions are GRANTed, DENYed or REVOKEd on the server or on the
//! availability group, and checked as SQL Server's hierarchy says
//! (learn.microsoft.com, "GRANT Availability Group Permissions"): a permission is held
//! when it, or one that implies it, is granted, and none of them is denied. DENY beats
//! GRANT, a DENY on an implying permission (CONTROL, CONTROL SERVER) denies what it
//! implies. `VIEW SERVER PERFORMANCE STATE` exists from SQL Server 2022 (major version 16),
//! where the HADR DMVs require it and `VIEW SERVER STATE` implies it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// A permission tds-sim models, on the server or on an availability group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    ControlServer,
    ViewServerState,
    ViewServerPerformanceState,
    ViewAnyDefinition,
    AlterAnyAvailabilityGroup,
    /// On an availability group.
    Control,
    Alter,
    ViewDefinition,
    TakeOwnership,
    Connect,
}

/// What a permission is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Server,
    AvailabilityGroup,
}

/// How a permission row stands, as `sys.server_permissions.state_desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Grant,
    Deny,
}

const ALL: [Perm; 10] = [
    Perm::ControlServer,
    Perm::ViewServerState,
    Perm::ViewServerPerformanceState,
    Perm::ViewAnyDefinition,
    Perm::AlterAnyAvailabilityGroup,
    Perm::Control,
    Perm::Alter,
    Perm::ViewDefinition,
    Perm::TakeOwnership,
    Perm::Connect,
];

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::ControlServer => "CONTROL SERVER",
            Perm::ViewServerState => "VIEW SERVER STATE",
            Perm::ViewServerPerformanceState => "VIEW SERVER PERFORMANCE STATE",
            Perm::ViewAnyDefinition => "VIEW ANY DEFINITION",
            Perm::AlterAnyAvailabilityGroup => "ALTER ANY AVAILABILITY GROUP",
            Perm::Control => "CONTROL",
            Perm::Alter => "ALTER",
            Perm::ViewDefinition => "VIEW DEFINITION",
            Perm::TakeOwnership => "TAKE OWNERSHIP",
            Perm::Connect => "CONNECT",
        }
    }

    pub fn class(self) -> Class {
        match self {
            Perm::Control
            | Perm::Alter
            | Perm::ViewDefinition
            | Perm::TakeOwnership
            | Perm::Connect => Class::AvailabilityGroup,
            _ => Class::Server,
        }
    }

    /// The permission `name` (any case, words separated by single spaces) names on `class`
    /// on a server of product major version `major`; `None` if tds-sim does not know it.
    pub fn parse(name: &str, class: Class, major: u8) -> Option<Perm> {
        let p = ALL
            .into_iter()
            .find(|p| p.class() == class && p.name().eq_ignore_ascii_case(name))?;
        (p != Perm::ViewServerPerformanceState || major >= 16).then_some(p)
    }

    /// The permissions that imply this one directly (the hierarchy in the module comment).
    fn implied_by(self) -> &'static [Perm] {
        match self {
            Perm::ControlServer => &[],
            Perm::ViewServerState | Perm::ViewAnyDefinition | Perm::AlterAnyAvailabilityGroup => {
                &[Perm::ControlServer]
            }
            Perm::ViewServerPerformanceState => &[Perm::ViewServerState],
            Perm::Control | Perm::TakeOwnership | Perm::Connect => {
                &[Perm::Control, Perm::ControlServer]
            }
            Perm::Alter => &[Perm::Control, Perm::AlterAnyAvailabilityGroup],
            Perm::ViewDefinition => &[Perm::Control, Perm::ViewAnyDefinition],
        }
    }

    /// This permission and every one that implies it, directly or not.
    fn with_implying(self) -> Vec<Perm> {
        let mut out = vec![self];
        let mut i = 0;
        while let Some(p) = out.get(i).copied() {
            for q in p.implied_by() {
                if !out.contains(q) {
                    out.push(*q);
                }
            }
            i += 1;
        }
        out
    }
}

/// The permission the HADR DMVs (and `sp_server_diagnostics`) require on a server of
/// product major version `major` (their Permissions sections: 2022 and later
/// VIEW SERVER PERFORMANCE STATE, earlier VIEW SERVER STATE).
pub fn server_state_permission(major: u8) -> Perm {
    if major >= 16 {
        Perm::ViewServerPerformanceState
    } else {
        Perm::ViewServerState
    }
}

/// A permission row: the permission and, for an AG permission, the AG's lowercased name.
type Key = (Perm, Option<String>);

fn key(p: Perm, ag: Option<&str>) -> Key {
    match p.class() {
        Class::Server => (p, None),
        Class::AvailabilityGroup => (p, ag.map(str::to_lowercase)),
    }
}

#[derive(Debug, Clone)]
struct Login {
    name: String,
    password: String,
    sysadmin: bool,
    rows: BTreeMap<Key, State>,
}

/// Why a login was refused (logged, never sent: the client sees 18456 either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    UnknownUser,
    WrongPassword,
}

/// Every login of the server. Locked per call; checks read the current rows, so a GRANT
/// is seen by every session's next statement.
#[derive(Debug)]
pub struct Logins {
    by_name: Mutex<BTreeMap<String, Login>>,
}

impl Logins {
    /// The `sysadmin` login and the others (no permissions). Names compare
    /// case-insensitively; a repeated name is refused.
    pub fn new(admin: (&str, &str), others: &[(String, String)]) -> Result<Logins, String> {
        let logins = Logins {
            by_name: Mutex::new(BTreeMap::new()),
        };
        logins.insert(admin.0, admin.1, true)?;
        for (name, password) in others {
            logins.insert(name, password, false)?;
        }
        Ok(logins)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Login>> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.by_name.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a login without permissions; `Err` names the problem if it exists already.
    pub fn insert(&self, name: &str, password: &str, sysadmin: bool) -> Result<(), String> {
        let mut map = self.lock();
        let k = name.to_lowercase();
        if map.contains_key(&k) {
            return Err(format!("The server principal '{name}' already exists."));
        }
        map.insert(
            k,
            Login {
                name: name.to_string(),
                password: password.to_string(),
                sysadmin,
                rows: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// The login's own spelling if `name`/`password` log in.
    pub fn authenticate(&self, name: &str, password: &str) -> Result<String, Refused> {
        let map = self.lock();
        let l = map.get(&name.to_lowercase()).ok_or(Refused::UnknownUser)?;
        if l.password != password {
            return Err(Refused::WrongPassword);
        }
        Ok(l.name.clone())
    }

    /// The login's own spelling, if it exists.
    pub fn canonical(&self, name: &str) -> Option<String> {
        self.lock()
            .get(&name.to_lowercase())
            .map(|l| l.name.clone())
    }

    pub fn is_sysadmin(&self, login: &str) -> bool {
        self.lock()
            .get(&login.to_lowercase())
            .is_some_and(|l| l.sysadmin)
    }

    /// Whether `login` holds `perm` (on `ag` for an AG permission), as SQL Server decides.
    pub fn has(&self, login: &str, perm: Perm, ag: Option<&str>) -> bool {
        let map = self.lock();
        let Some(l) = map.get(&login.to_lowercase()) else {
            return false;
        };
        if l.sysadmin {
            return true;
        }
        let keys: Vec<Key> = perm
            .with_implying()
            .into_iter()
            .map(|p| key(p, ag))
            .collect();
        let state = |s: State| keys.iter().any(|k| l.rows.get(k) == Some(&s));
        state(State::Grant) && !state(State::Deny)
    }

    /// Whether `login` holds any permission of `class` (`HAS_PERMS_BY_NAME`'s `ANY`, and
    /// what makes an AG visible in the catalog views).
    pub fn has_any(&self, login: &str, class: Class, ag: Option<&str>, major: u8) -> bool {
        ALL.into_iter()
            .filter(|p| p.class() == class && Perm::parse(p.name(), class, major).is_some())
            .any(|p| self.has(login, p, ag))
    }

    /// Records a GRANT or DENY (`Some`) or a REVOKE (`None`) of `perm` for `grantee`, which
    /// must exist.
    pub fn set(&self, grantee: &str, perm: Perm, ag: Option<&str>, state: Option<State>) {
        let mut map = self.lock();
        if let Some(l) = map.get_mut(&grantee.to_lowercase()) {
            match state {
                Some(s) => l.rows.insert(key(perm, ag), s),
                None => l.rows.remove(&key(perm, ag)),
            };
        }
    }

    /// For `GET /state`: each login, whether it is sysadmin, and its permission rows.
    pub fn json(&self) -> Value {
        let map = self.lock();
        let logins: Vec<Value> = map
            .values()
            .map(|l| {
                let rows: Vec<Value> = l
                    .rows
                    .iter()
                    .map(|((p, ag), s)| {
                        json!({
                            "state": if *s == State::Grant { "GRANT" } else { "DENY" },
                            "permission": p.name(),
                            "on": ag.as_ref().map_or("SERVER".to_string(), |a| format!("AVAILABILITY GROUP::{a}")),
                        })
                    })
                    .collect();
                json!({ "name": l.name, "sysadmin": l.sysadmin, "permissions": rows })
            })
            .collect();
        Value::Array(logins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> Logins {
        Logins::new(("admin", "pw"), &[("w".into(), "x".into())]).unwrap()
    }

    #[test]
    fn names_parse_per_class_and_version() {
        let ag = Class::AvailabilityGroup;
        assert_eq!(Perm::parse("alter", ag, 16), Some(Perm::Alter));
        assert_eq!(
            Perm::parse("View Definition", ag, 15),
            Some(Perm::ViewDefinition)
        );
        assert_eq!(Perm::parse("VIEW SERVER STATE", ag, 16), None);
        assert_eq!(Perm::parse("ALTER", Class::Server, 16), None);
        assert_eq!(
            Perm::parse("VIEW SERVER PERFORMANCE STATE", Class::Server, 16),
            Some(Perm::ViewServerPerformanceState)
        );
        assert_eq!(
            Perm::parse("VIEW SERVER PERFORMANCE STATE", Class::Server, 15),
            None
        );
        assert_eq!(Perm::parse("VIEW  SERVER STATE", Class::Server, 16), None);
        assert_eq!(
            server_state_permission(16),
            Perm::ViewServerPerformanceState
        );
        assert_eq!(server_state_permission(15), Perm::ViewServerState);
    }

    #[test]
    fn authentication_is_case_insensitive_for_names_only() {
        let l = logins();
        assert_eq!(l.authenticate("ADMIN", "pw"), Ok("admin".into()));
        assert_eq!(l.authenticate("admin", "PW"), Err(Refused::WrongPassword));
        assert_eq!(l.authenticate("nobody", "pw"), Err(Refused::UnknownUser));
        assert!(l.insert("W", "y", false).is_err());
        assert!(Logins::new(("a", "1"), &[("A".into(), "2".into())]).is_err());
    }

    #[test]
    fn grants_denies_and_the_hierarchy() {
        let l = logins();
        let ag = Some("AG1");
        assert!(!l.has("w", Perm::ViewServerState, None));
        assert!(!l.has_any("w", Class::AvailabilityGroup, ag, 16));
        l.set("w", Perm::ViewServerState, None, Some(State::Grant));
        assert!(l.has("w", Perm::ViewServerState, None));
        // VIEW SERVER STATE implies the 2022 performance permission, not the reverse.
        assert!(l.has("w", Perm::ViewServerPerformanceState, None));
        l.set("w", Perm::ViewServerState, None, None);
        l.set(
            "w",
            Perm::ViewServerPerformanceState,
            None,
            Some(State::Grant),
        );
        assert!(!l.has("w", Perm::ViewServerState, None));
        // CONTROL implies ALTER and VIEW DEFINITION on that AG only.
        l.set("w", Perm::Control, Some("ag1"), Some(State::Grant));
        assert!(l.has("w", Perm::Alter, ag) && l.has("w", Perm::ViewDefinition, ag));
        assert!(!l.has("w", Perm::Alter, Some("AG2")));
        assert!(l.has_any("w", Class::AvailabilityGroup, ag, 16));
        // DENY beats GRANT, also a DENY on the implying permission.
        l.set("w", Perm::Alter, ag, Some(State::Deny));
        assert!(!l.has("w", Perm::Alter, ag) && l.has("w", Perm::ViewDefinition, ag));
        l.set("w", Perm::Alter, ag, Some(State::Grant));
        l.set("w", Perm::Control, ag, Some(State::Deny));
        assert!(!l.has("w", Perm::Alter, ag) && !l.has("w", Perm::ViewDefinition, ag));
        // Server permissions that imply AG ones.
        let l = logins();
        l.set("w", Perm::ViewAnyDefinition, None, Some(State::Grant));
        assert!(l.has("w", Perm::ViewDefinition, ag) && !l.has("w", Perm::Alter, ag));
        l.set("w", Perm::ControlServer, None, Some(State::Grant));
        assert!(l.has("w", Perm::Alter, ag) && l.has("w", Perm::ViewServerState, None));
        l.set("w", Perm::ViewServerState, None, Some(State::Deny));
        assert!(!l.has("w", Perm::ViewServerPerformanceState, None));
        // sysadmin passes every check, DENY included; an unknown login none.
        l.set("admin", Perm::ViewServerState, None, Some(State::Deny));
        assert!(l.has("admin", Perm::ViewServerState, None));
        assert!(!l.has("nobody", Perm::ViewServerState, None));
        let j = l.json();
        assert_eq!(j[1]["permissions"].as_array().unwrap().len(), 3, "{j}");
    }
}
