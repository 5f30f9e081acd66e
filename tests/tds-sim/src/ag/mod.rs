//! The availability-group model: the AG's configuration, the replica's AG state (log,
//! `sequence_number`, partners as the primary sees them, the upstream primary as a
//! secondary sees it, write lease) and the operations sessions and replication tasks run
//! on it.
//!
//! The state sits behind one mutex, changed only through [`Ag::update`], which bumps a
//! `watch` tick after releasing the lock: commit waiters and replication senders wait on
//! the tick. Lock order: the replica's `watch` (role) is never touched while this lock is
//! held. The decisions themselves are in [`rules`].

mod actions;
pub mod rules;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::repl::codec::{Record, Row};
use crate::repl::log::Log;
use crate::sql::SqlError;
use crate::state::{Role, now_unix_ms};
pub use rules::{AvailabilityMode, PartnerView, SyncState};

/// A partner replica of the AG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub name: String,
    /// Its database mirroring endpoint.
    pub endpoint: SocketAddr,
    pub mode: AvailabilityMode,
}

/// The AG as `CREATE AVAILABILITY GROUP .. WITH (CLUSTER_TYPE = EXTERNAL)` would define it,
/// from the replica's point of view. The default is a replica alone in its AG, with no
/// endpoint and no data dir: what every test before replication existed expects.
#[derive(Debug, Clone)]
pub struct AgConfig {
    /// Where this replica's mirroring endpoint listens; none: it never receives log.
    pub endpoint: Option<SocketAddr>,
    pub mode: AvailabilityMode,
    pub partners: Vec<Partner>,
    /// `SESSION_TIMEOUT`; SQL Server counts whole seconds, the sim takes milliseconds.
    pub session_timeout: Duration,
    pub required_synchronized_secondaries_to_commit: u32,
    /// `WRITE_LEASE_VALIDITY` in seconds if the AG was created with it.
    pub write_lease_validity_s: Option<u64>,
    /// Where the log and `sequence_number` are kept; none: in memory only.
    pub data_dir: Option<PathBuf>,
    /// How long after `FAILOVER` returns the new role shows.
    pub role_change_delay: Duration,
}

impl Default for AgConfig {
    fn default() -> Self {
        AgConfig {
            endpoint: None,
            mode: AvailabilityMode::SynchronousCommit,
            partners: Vec::new(),
            session_timeout: Duration::from_secs(10),
            required_synchronized_secondaries_to_commit: 0,
            write_lease_validity_s: None,
            data_dir: None,
            role_change_delay: Duration::from_millis(20),
        }
    }
}

/// What the control API can do to replication on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplMode {
    Running,
    /// As a secondary: stop reading the primary's stream (TCP backs up), harden nothing.
    Stalled,
    /// Close every replication connection and refuse new ones, both directions.
    Dropped,
}

impl ReplMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplMode::Running => "running",
            ReplMode::Stalled => "stalled",
            ReplMode::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(ReplMode::Running),
            "stalled" => Ok(ReplMode::Stalled),
            "dropped" => Ok(ReplMode::Dropped),
            _ => Err(format!(
                "unknown replication mode '{s}' (expected running, stalled or dropped)"
            )),
        }
    }
}

/// A partner as the primary sees it.
#[derive(Debug, Clone)]
pub struct PartnerState {
    pub conf: Partner,
    pub connected: bool,
    pub synchronized: bool,
    pub hardened_lsn: u64,
    pub last_error: String,
}

/// The primary feeding this secondary.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub conn: u64,
    pub primary: String,
    pub seq: u64,
    /// The primary's last word on whether it counts this replica SYNCHRONIZED.
    pub synchronized: bool,
    pub primary_last_lsn: u64,
}

pub struct AgState {
    pub log: Log,
    pub seq: u64,
    pub required: u32,
    pub lease_expiry_ms: Option<u64>,
    pub partners: Vec<PartnerState>,
    pub upstream: Option<Upstream>,
    /// Remembered when the upstream was lost: was this replica SYNCHRONIZED then.
    pub was_synchronized: bool,
    pub discarded_on_rejoin: u64,
    pub replication: ReplMode,
    next_conn: u64,
}

impl AgState {
    pub fn partner_views(&self) -> Vec<PartnerView> {
        self.partners
            .iter()
            .map(|p| PartnerView {
                mode: p.conf.mode,
                synchronized: p.synchronized,
                hardened_lsn: p.hardened_lsn,
            })
            .collect()
    }

    /// Synchronous partners SYNCHRONIZED now.
    pub fn synchronized_count(&self) -> usize {
        rules::synced_at(0, &self.partner_views())
    }

    pub fn lease_ok(&self, lease_configured: bool, now_ms: u64) -> bool {
        !lease_configured || self.lease_expiry_ms.is_some_and(|e| now_ms < e)
    }

    /// As a secondary: SYNCHRONIZED with a live primary now, or when the last one was lost.
    pub fn synchronized_now_or_at_loss(&self, mode: AvailabilityMode) -> bool {
        match &self.upstream {
            Some(u) => {
                mode == AvailabilityMode::SynchronousCommit
                    && u.synchronized
                    && self.log.last_lsn() >= u.primary_last_lsn
            }
            None => self.was_synchronized,
        }
    }

    pub fn new_conn(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    /// The local database replica's `synchronization_state`.
    pub fn local_sync_state(&self, role: Role, mode: AvailabilityMode) -> SyncState {
        match (role, &self.upstream) {
            (Role::Primary, _) => SyncState::Synchronized,
            (_, Some(u)) if u.synchronized && mode == AvailabilityMode::SynchronousCommit => {
                SyncState::Synchronized
            }
            (_, Some(_)) => SyncState::Synchronizing,
            (_, None) => SyncState::NotSynchronizing,
        }
    }
}

pub struct Ag {
    pub cfg: AgConfig,
    state: Mutex<AgState>,
    pub tick: watch::Sender<u64>,
}

impl Ag {
    /// Builds the state; `log` and `seq` come from the data dir (or are empty).
    pub fn new(cfg: AgConfig, log: Log, seq: u64) -> Ag {
        let partners = cfg
            .partners
            .iter()
            .map(|p| PartnerState {
                conf: p.clone(),
                connected: false,
                synchronized: false,
                hardened_lsn: 0,
                last_error: String::new(),
            })
            .collect();
        let state = AgState {
            log,
            seq,
            required: cfg.required_synchronized_secondaries_to_commit,
            lease_expiry_ms: None,
            partners,
            upstream: None,
            was_synchronized: false,
            discarded_on_rejoin: 0,
            replication: ReplMode::Running,
            next_conn: 0,
        };
        Ag {
            cfg,
            state: Mutex::new(state),
            tick: watch::Sender::new(0),
        }
    }

    /// Reads the state (no tick).
    pub fn read(&self) -> MutexGuard<'_, AgState> {
        // A panic while holding the lock would be a bug; keep serving with the data as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state, then wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut AgState) -> R) -> R {
        let r = {
            let mut s = self.read();
            f(&mut s)
        };
        self.tick.send_modify(|t| *t += 1);
        r
    }

    pub fn lease_configured(&self) -> bool {
        self.cfg.write_lease_validity_s.is_some()
    }

    /// Hardens a transaction locally on a primary and returns its LSN; the caller then
    /// waits for [`Ag::wait_durable`] before acknowledging it.
    pub fn commit(&self, role: Role, rows: Vec<Row>) -> Result<u64, SqlError> {
        let now = now_unix_ms();
        let lease = self.lease_configured();
        self.update(|s| {
            if role != Role::Primary {
                return Err(SqlError::new(
                    3906,
                    16,
                    "Failed to update database because the database is read-only.",
                ));
            }
            if !s.lease_ok(lease, now) {
                // The lease watcher takes the replica to RESOLVING within a tick.
                return Err(SqlError::new(
                    983,
                    14,
                    "Unable to access availability database because the database replica is not in the PRIMARY or SECONDARY role (write lease expired).",
                ));
            }
            let lsn = s.log.last_lsn() + 1;
            let r = Record {
                lsn,
                epoch: s.seq,
                commit_unix_ms: now,
                rows,
            };
            s.log.append(r).map_err(|e| {
                SqlError::new(
                    9001,
                    21,
                    format!("The log for the database is not available: {e}"),
                )
            })?;
            Ok(lsn)
        })
    }

    /// Resolves once the commit at `lsn` may be acknowledged (never, while too few
    /// synchronous secondaries are synchronized: the client's timeout ends the wait).
    pub async fn wait_durable(&self, lsn: u64) {
        let mut rx = self.tick.subscribe();
        loop {
            {
                let s = self.read();
                if rules::commit_durable(lsn, s.required, &s.partner_views()) {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
