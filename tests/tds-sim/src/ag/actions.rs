//! What the HA manager's T-SQL does to the replica: `FAILOVER`,
//! `FORCE_FAILOVER_ALLOW_DATA_LOSS`, `OFFLINE`, `SET (ROLE = SECONDARY)`,
//! `SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = n)`, `SET (WRITE_LEASE_VALIDITY = s)`,
//! plus what happens on any change of role (new `sequence_number`, new lease) and the
//! watcher that takes a primary whose write lease expired to RESOLVING.
//!
//! Each action checks with [`super::rules`] and then changes the replica; a `FAILOVER`
//! returns before the new role shows (after `role_change_delay`), as SQL Server's does,
//! so a manager must re-read the DMVs.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::rules::{self, FailoverRequest};
use crate::sql::SqlError;
use crate::state::{Change, Role, Shared, now_unix_ms};

fn role_change(role: Role) -> Change {
    Change {
        role: Some(role),
        ..Default::default()
    }
}

impl Shared {
    /// Called after the role changed from `from` to `to` (never with the role lock held).
    pub(crate) fn role_changed(&self, from: Role, to: Role) {
        let validity = self.ag.cfg.write_lease_validity_s;
        self.ag.update(|s| {
            if to == Role::Primary {
                s.seq += 1;
                if let Err(e) = s.log.save_seq(s.seq) {
                    warn!(error = %e, "cannot persist sequence_number");
                }
                // A fresh lease, or the one renewed just before FAILOVER if that is later.
                let fresh = validity.map(|v| now_unix_ms() + v * 1000);
                s.lease_expiry_ms = fresh.max(s.lease_expiry_ms.filter(|_| fresh.is_some()));
                s.upstream = None;
                info!(sequence_number = s.seq, "now PRIMARY");
            } else if from == Role::Primary {
                s.lease_expiry_ms = None;
                for p in &mut s.partners {
                    p.synchronized = false;
                }
            }
        });
    }

    pub(crate) fn failover(
        self: &Arc<Self>,
        ag: &str,
        forced: bool,
        external_cluster: bool,
    ) -> Result<(), SqlError> {
        let role = self.state.borrow().role;
        let mode = self.ag.cfg.mode;
        let was_synchronized = self.ag.read().synchronized_now_or_at_loss(mode);
        rules::failover(&FailoverRequest {
            ag,
            forced,
            external_cluster,
            role,
            local_mode: mode,
            was_synchronized,
        })?;
        info!(
            forced,
            was_synchronized, "failover accepted; the role changes shortly"
        );
        let me = self.clone();
        let delay = self.ag.cfg.role_change_delay;
        let reason = if forced {
            "ALTER AVAILABILITY GROUP FORCE_FAILOVER_ALLOW_DATA_LOSS"
        } else {
            "ALTER AVAILABILITY GROUP FAILOVER"
        };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.apply(role_change(Role::Primary), reason);
        });
        Ok(())
    }

    pub(crate) fn offline(&self) -> Result<(), SqlError> {
        self.apply(
            role_change(Role::Resolving),
            "ALTER AVAILABILITY GROUP OFFLINE",
        );
        Ok(())
    }

    pub(crate) fn set_role(&self, role: &str) -> Result<(), SqlError> {
        if role != "SECONDARY" {
            return Err(SqlError::syntax_near(role));
        }
        self.apply(
            role_change(Role::Secondary),
            "ALTER AVAILABILITY GROUP SET (ROLE = SECONDARY)",
        );
        Ok(())
    }

    pub(crate) fn set_required(&self, n: i64) -> Result<(), SqlError> {
        let (role, ag) = {
            let r = self.state.borrow();
            (r.role, r.ag.clone())
        };
        // 41140 is SQL Server's refusal of an ALTER AVAILABILITY GROUP that needs the
        // primary; its number for an out-of-range value is unknown to us: 50000.
        if role != Role::Primary {
            return Err(SqlError::new(
                41140,
                16,
                format!(
                    "Availability group '{ag}' cannot process the ALTER AVAILABILITY GROUP command, because the local availability replica is not the primary replica.  Connect to the server instance that is currently hosting the primary replica of this availability group, and rerun the command."
                ),
            ));
        }
        if !(0..=8).contains(&n) {
            return Err(SqlError::new(
                50000,
                16,
                format!(
                    "REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT {n} is out of range (0 to 8)."
                ),
            ));
        }
        self.ag.update(|s| {
            s.required = n as u32;
            s.seq += 1;
            if let Err(e) = s.log.save_seq(s.seq) {
                warn!(error = %e, "cannot persist sequence_number");
            }
        });
        info!(
            required = n,
            "REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT changed"
        );
        Ok(())
    }

    pub(crate) fn renew_lease(&self, secs: i64) -> Result<(), SqlError> {
        let ag = self.state.borrow().ag.clone();
        let configured = self.ag.lease_configured();
        self.ag.update(|s| {
            let e = rules::renew_lease(configured, &ag, s.lease_expiry_ms, now_unix_ms(), secs)?;
            s.lease_expiry_ms = Some(e);
            Ok(())
        })
    }

    /// A primary whose write lease expired goes RESOLVING; a late renewal cannot undo it.
    pub(crate) async fn watch_lease(self: Arc<Self>) {
        if !self.ag.lease_configured() {
            return;
        }
        loop {
            let (role, stop) = {
                let r = self.state.borrow();
                (r.role, r.shutting_down)
            };
            if stop {
                return;
            }
            let expired = self
                .ag
                .read()
                .lease_expiry_ms
                .is_some_and(|e| now_unix_ms() >= e);
            if role == Role::Primary && expired {
                warn!("write lease expired: the primary stops accepting writes");
                self.apply(role_change(Role::Resolving), "write lease expired");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
