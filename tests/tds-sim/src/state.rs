//! The replica's mutable state (role, health, databases, fault) and the session counters.
//!
//! Everything a session or the listener must react to lives in one `watch` channel: a
//! session reads the current value before answering each request, so a role change made
//! through the control API is visible to the very next query on an already-open session,
//! and the listener and idle sessions are woken by the channel when a fault asks them to
//! close or reset. Counters are atomics outside the channel so that counting a query does
//! not wake anybody.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The local replica's role, spelled as `sys.dm_hadr_availability_replica_states.role_desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    Resolving,
}

/// A database's `sys.databases.state_desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbState {
    Online,
    Restoring,
    Recovering,
    RecoveryPending,
    Suspect,
    Emergency,
    Offline,
}

/// `synchronization_health_desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    PartiallyHealthy,
    NotHealthy,
}

/// What the simulator does wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Close the listener (connects are refused) and reset open sessions.
    Refuse,
    /// Accept and never answer anything: new connections, and sessions already logged in
    /// from their next request on (a hung server's kept sessions hang too; manage mode's
    /// agents poll and renew the write lease on kept sessions). The replica's own clocks go
    /// on: its write lease runs out and takes it to RESOLVING. Replication is left running,
    /// a deviation `FAILOVER` cannot tell: no request is executed, so the log does not move,
    /// and a secondary that was SYNCHRONIZED stays so, which is also what it would remember
    /// of a hung primary once SESSION_TIMEOUT found it silent.
    HangAfterAccept,
    /// Answer PRELOGIN, never LOGIN7 (or anything after it).
    HangAfterPrelogin,
    /// Logins succeed, requests are never answered.
    HangAfterLogin,
    /// RST every connection, new and open.
    Reset,
    /// Delay every response.
    Slow {
        delay_ms: u64,
    },
    /// Malformed bytes instead of answers.
    Garbage,
    /// Every login fails with 18456.
    RejectLogin,
}

macro_rules! spelled {
    ($t:ty, $what:literal, $($v:path => $s:literal),+ $(,)?) => {
        impl $t {
            pub fn as_str(&self) -> &'static str {
                match self { $($v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            /// Case-insensitive, in SQL Server's spelling.
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($s) { return Ok($v); })+
                Err(format!(
                    "unknown {} '{}' (expected one of: {})",
                    $what, s, [$($s),+].join(", ")
                ))
            }
        }
    };
}

spelled!(Role, "role", Role::Primary => "PRIMARY", Role::Secondary => "SECONDARY", Role::Resolving => "RESOLVING");
spelled!(
    DbState, "database state",
    DbState::Online => "ONLINE",
    DbState::Restoring => "RESTORING",
    DbState::Recovering => "RECOVERING",
    DbState::RecoveryPending => "RECOVERY_PENDING",
    DbState::Suspect => "SUSPECT",
    DbState::Emergency => "EMERGENCY",
    DbState::Offline => "OFFLINE",
);
spelled!(
    Health, "synchronization health",
    Health::Healthy => "HEALTHY",
    Health::PartiallyHealthy => "PARTIALLY_HEALTHY",
    Health::NotHealthy => "NOT_HEALTHY",
);

impl Role {
    /// `sys.dm_hadr_availability_replica_states.role`.
    pub fn code(self) -> i64 {
        match self {
            Role::Resolving => 0,
            Role::Primary => 1,
            Role::Secondary => 2,
        }
    }
}

impl DbState {
    /// `sys.databases.state`.
    pub fn code(self) -> i64 {
        match self {
            DbState::Online => 0,
            DbState::Restoring => 1,
            DbState::Recovering => 2,
            DbState::RecoveryPending => 3,
            DbState::Suspect => 4,
            DbState::Emergency => 5,
            DbState::Offline => 6,
        }
    }
}

impl Health {
    /// `synchronization_health`.
    pub fn code(self) -> i64 {
        match self {
            Health::NotHealthy => 0,
            Health::PartiallyHealthy => 1,
            Health::Healthy => 2,
        }
    }
}

impl Fault {
    /// The name used by the control API and the logs.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Refuse => "refuse",
            Fault::HangAfterAccept => "hang_after_accept",
            Fault::HangAfterPrelogin => "hang_after_prelogin",
            Fault::HangAfterLogin => "hang_after_login",
            Fault::Reset => "reset",
            Fault::Slow { .. } => "slow",
            Fault::Garbage => "garbage",
            Fault::RejectLogin => "reject_login",
        }
    }

    /// Parses a fault name; `slow` takes `delay_ms`.
    pub fn parse(name: &str, delay_ms: u64) -> Result<Fault, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "none" => Fault::None,
            "refuse" => Fault::Refuse,
            "hang_after_accept" => Fault::HangAfterAccept,
            "hang_after_prelogin" => Fault::HangAfterPrelogin,
            "hang_after_login" => Fault::HangAfterLogin,
            "reset" => Fault::Reset,
            "slow" => Fault::Slow { delay_ms },
            "garbage" => Fault::Garbage,
            "reject_login" => Fault::RejectLogin,
            _ => {
                return Err(format!(
                    "unknown fault '{name}' (expected one of: none, refuse, hang_after_accept, \
                     hang_after_prelogin, hang_after_login, reset, slow, garbage, reject_login)"
                ));
            }
        })
    }

    /// Faults that end open sessions the moment they are set.
    fn kills_sessions(&self) -> bool {
        matches!(self, Fault::Refuse | Fault::Reset)
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Successful logins.
    pub logins: u64,
    /// Refused logins (wrong user or password, `reject_login`, bad database).
    pub failed_logins: u64,
    /// Requests answered or swallowed after login (batches, RPCs, TM requests).
    pub queries: u64,
    /// TLS handshakes completed (TDS 7.x inside PRELOGIN packets, or TDS 8.0).
    pub tls_handshakes: u64,
    /// Connections that went back to clear text after an encrypted LOGIN7 (login-only).
    pub login_only_encryptions: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub open_connections: AtomicU64,
    pub logins: AtomicU64,
    pub failed_logins: AtomicU64,
    pub queries: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub login_only_encryptions: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed),
            logins: self.logins.load(Ordering::Relaxed),
            failed_logins: self.failed_logins.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            tls_handshakes: self.tls_handshakes.load(Ordering::Relaxed),
            login_only_encryptions: self.login_only_encryptions.load(Ordering::Relaxed),
        }
    }
}

/// The replica as every session sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replica {
    pub server_name: String,
    pub ag: String,
    pub role: Role,
    pub health: Health,
    /// In creation order, which is also their `database_id` order.
    pub databases: Vec<(String, DbState)>,
    pub fault: Fault,
    /// Kept apart from the fault so that `PUT {"delay_ms": ..}` can come before or after
    /// `PUT {"fault": "slow"}`.
    pub delay_ms: u64,
    pub changed_at_unix_ms: u64,
    /// Bumped when open sessions must be reset.
    pub kill_epoch: u64,
    pub shutting_down: bool,
}

impl Replica {
    pub fn database(&self, name: &str) -> Option<DbState> {
        self.databases
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
    }

    /// The effective fault, with the current delay for `slow`.
    pub fn fault(&self) -> Fault {
        match self.fault {
            Fault::Slow { .. } => Fault::Slow {
                delay_ms: self.delay_ms,
            },
            f => f,
        }
    }
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A change to the replica; fields left `None` are kept. Built by the control API and the
/// handle, validated by their callers, applied atomically by [`Shared::apply`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Change {
    pub role: Option<Role>,
    pub health: Option<Health>,
    /// `None` as the state removes the database.
    pub databases: Vec<(String, Option<DbState>)>,
    pub fault: Option<Fault>,
    pub delay_ms: Option<u64>,
}

pub(crate) struct Shared {
    pub ag: crate::ag::Ag,
    /// Logins and their permissions.
    pub logins: crate::perms::Logins,
    pub product_version: tds_codec::Version,
    pub state: watch::Sender<Replica>,
    /// Whether the TDS listener is open now (false while `refuse` holds).
    pub listening: watch::Sender<bool>,
    pub counters: Counters,
    next_spid: AtomicU64,
    next_transaction: AtomicU64,
}

impl Shared {
    pub fn new(
        logins: crate::perms::Logins,
        product_version: tds_codec::Version,
        replica: Replica,
        ag: crate::ag::Ag,
    ) -> Self {
        Shared {
            ag,
            logins,
            product_version,
            state: watch::Sender::new(replica),
            listening: watch::Sender::new(false),
            counters: Counters::default(),
            // SQL Server reserves session ids up to 50 for system sessions.
            next_spid: AtomicU64::new(51),
            next_transaction: AtomicU64::new(1),
        }
    }

    pub fn replica(&self) -> Replica {
        self.state.borrow().clone()
    }

    pub fn next_spid(&self) -> u16 {
        let n = self.next_spid.fetch_add(1, Ordering::Relaxed);
        // Wrap inside 51..=32767 so the SPID stays a plausible positive smallint.
        (51 + (n - 51) % (32767 - 51)) as u16
    }

    pub fn next_transaction(&self) -> u64 {
        self.next_transaction.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies `change`, logging each field that actually changed with `reason`.
    pub fn apply(&self, change: Change, reason: &str) {
        let mut role_change = None;
        self.state.send_if_modified(|r| {
            let mut changed = false;
            if let Some(role) = change.role
                && role != r.role
            {
                tracing::info!(from = %r.role, to = %role, reason, "role changed");
                role_change = Some((r.role, role));
                r.role = role;
                changed = true;
            }
            if let Some(h) = change.health
                && h != r.health
            {
                tracing::info!(from = %r.health, to = %h, reason, "synchronization health changed");
                r.health = h;
                changed = true;
            }
            for (name, st) in &change.databases {
                let at = r.databases.iter().position(|(n, _)| n.eq_ignore_ascii_case(name));
                match (at, st) {
                    (Some(i), Some(s)) if r.databases[i].1 != *s => {
                        tracing::info!(database = %name, from = %r.databases[i].1, to = %s, reason, "database state changed");
                        r.databases[i].1 = *s;
                        changed = true;
                    }
                    (None, Some(s)) => {
                        tracing::info!(database = %name, to = %s, reason, "database added");
                        r.databases.push((name.clone(), *s));
                        changed = true;
                    }
                    (Some(i), None) => {
                        tracing::info!(database = %name, reason, "database removed");
                        r.databases.remove(i);
                        changed = true;
                    }
                    _ => {}
                }
            }
            if let Some(d) = change.delay_ms
                && d != r.delay_ms
            {
                tracing::info!(from = r.delay_ms, to = d, reason, "delay changed");
                r.delay_ms = d;
                changed = true;
            }
            if let Some(f) = change.fault {
                if let Fault::Slow { delay_ms } = f
                    && change.delay_ms.is_none()
                    && delay_ms != r.delay_ms
                {
                    r.delay_ms = delay_ms;
                    changed = true;
                }
                if f.kills_sessions() {
                    // Even re-setting the same fault resets what connected since.
                    r.kill_epoch += 1;
                    changed = true;
                }
                if f.name() != r.fault.name() {
                    tracing::info!(from = r.fault.name(), to = f.name(), delay_ms = r.delay_ms, reason, "fault changed");
                    r.fault = f;
                    changed = true;
                }
            }
            if changed {
                r.changed_at_unix_ms = now_unix_ms();
            }
            changed
        });
        // Outside the role lock: the AG state has its own (see `ag`'s lock order).
        if let Some((from, to)) = role_change {
            self.role_changed(from, to);
        }
    }

    pub fn shut_down(&self) {
        self.state.send_modify(|r| r.shutting_down = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for r in [Role::Primary, Role::Secondary, Role::Resolving] {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
        }
        assert_eq!(
            "recovery_pending".parse::<DbState>().unwrap(),
            DbState::RecoveryPending
        );
        assert_eq!(DbState::RecoveryPending.to_string(), "RECOVERY_PENDING");
        let e = "MASTER".parse::<Role>().unwrap_err();
        assert!(e.contains("PRIMARY"), "{e}");
        assert_eq!(
            Fault::parse("slow", 5).unwrap(),
            Fault::Slow { delay_ms: 5 }
        );
        assert!(Fault::parse("explode", 0).is_err());
    }
}
