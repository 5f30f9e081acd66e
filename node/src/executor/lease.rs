//! The kernel ownership lease from the executor's side: which guard entry an owner gets
//! (`owner_entry`), and extending it from a PRIMARY verdict (`renew_owned_lease`). Kept apart
//! from the takeover steps because it runs on every probe, not on an ownership change.

use std::time::{Duration, Instant};

use tdsvip_ebpf_common::VipEntry;

use super::{NodeError, NodeExecutor};
use crate::guard::monotonic_ns_at;

impl NodeExecutor {
    /// Extends the kernel lease of owned addresses to `primary_seen_at` plus the configured
    /// lease: the caller passes the moment its replica was last seen PRIMARY. Does nothing
    /// when not owning, without a lease or without eBPF; never moves a lease backwards, so a
    /// late report of an older verdict cannot shorten it.
    pub(super) fn renew_owned_lease(&mut self, primary_seen_at: Instant) -> Result<(), NodeError> {
        let (Some(shared), Some(current)) = (&self.guard, self.owned_until) else {
            return Ok(());
        };
        let entry = owner_entry(self.config.lease, primary_seen_at);
        if entry.lease_expires_ns <= current {
            return Ok(());
        }
        let mut programs = shared.lock();
        for ip in &self.ips {
            programs.guard.set(*ip, entry)?;
        }
        drop(programs);
        self.owned_until = Some(entry.lease_expires_ns);
        Ok(())
    }
}

/// The guard entry of an owner whose replica was seen PRIMARY at `seen`.
pub(super) fn owner_entry(lease: Option<Duration>, seen: Instant) -> VipEntry {
    match lease {
        None => VipEntry::owner_until(VipEntry::NO_LEASE),
        Some(lease) => VipEntry::owner_until(monotonic_ns_at(seen + lease)),
    }
}
