//! The AG's decisions as pure functions: when a commit may be acknowledged, whether a
//! replica may fail over, whether a write-lease renewal is valid, whether log from a
//! primary is accepted, and where a rejoining replica's history meets the primary's.
//!
//! Pure so that every rule is unit-tested on its own, apart from sockets and timers; the
//! runtime (`ag::state`, `repl::*`) only gathers the inputs and applies the verdicts. The
//! error numbers are SQL Server's where known; where a number is a guess it says so.

use crate::sql::SqlError;
use crate::state::Role;

/// `availability_mode` of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvailabilityMode {
    SynchronousCommit,
    AsynchronousCommit,
    ConfigurationOnly,
}

impl AvailabilityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AvailabilityMode::SynchronousCommit => "SYNCHRONOUS_COMMIT",
            AvailabilityMode::AsynchronousCommit => "ASYNCHRONOUS_COMMIT",
            AvailabilityMode::ConfigurationOnly => "CONFIGURATION_ONLY",
        }
    }

    /// `sys.availability_replicas.availability_mode`.
    pub fn code(self) -> i64 {
        match self {
            AvailabilityMode::AsynchronousCommit => 0,
            AvailabilityMode::SynchronousCommit => 1,
            AvailabilityMode::ConfigurationOnly => 4,
        }
    }

    /// Case-insensitive, SQL Server's spelling or the short `sync`/`async`/`config`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "SYNCHRONOUS_COMMIT" | "SYNC" => Ok(AvailabilityMode::SynchronousCommit),
            "ASYNCHRONOUS_COMMIT" | "ASYNC" => Ok(AvailabilityMode::AsynchronousCommit),
            "CONFIGURATION_ONLY" | "CONFIG" => Ok(AvailabilityMode::ConfigurationOnly),
            _ => Err(format!(
                "unknown availability mode '{s}' (expected SYNCHRONOUS_COMMIT, ASYNCHRONOUS_COMMIT or CONFIGURATION_ONLY)"
            )),
        }
    }
}

/// What the primary knows of one partner, for the commit rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartnerView {
    pub mode: AvailabilityMode,
    /// Connected and caught up since it connected (SYNCHRONIZED on a sync partner).
    pub synchronized: bool,
    pub hardened_lsn: u64,
}

/// `synchronization_state_desc` of a database replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    NotSynchronizing,
    Synchronizing,
    Synchronized,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::NotSynchronizing => "NOT SYNCHRONIZING",
            SyncState::Synchronizing => "SYNCHRONIZING",
            SyncState::Synchronized => "SYNCHRONIZED",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            SyncState::NotSynchronizing => 0,
            SyncState::Synchronizing => 1,
            SyncState::Synchronized => 2,
        }
    }
}

/// How many synchronous partners are SYNCHRONIZED and have hardened `lsn`.
pub fn synced_at(lsn: u64, partners: &[PartnerView]) -> usize {
    partners
        .iter()
        .filter(|p| {
            p.mode == AvailabilityMode::SynchronousCommit && p.synchronized && p.hardened_lsn >= lsn
        })
        .count()
}

/// The commit rule: a transaction hardened locally at `lsn` is acknowledged once every
/// SYNCHRONIZED synchronous partner has hardened it and at least `required` of them have.
/// A partner that drops out (session timeout) stops being waited for, unless that leaves
/// fewer than `required`: then the commit waits, as SQL Server's does.
pub fn commit_durable(lsn: u64, required: u32, partners: &[PartnerView]) -> bool {
    let lagging = partners.iter().any(|p| {
        p.mode == AvailabilityMode::SynchronousCommit && p.synchronized && p.hardened_lsn < lsn
    });
    !lagging && synced_at(lsn, partners) >= required as usize
}

/// Whether a replica would acknowledge a commit now: PRIMARY, write lease valid (or none
/// configured) and at least `required` synchronized synchronous partners. Two replicas for
/// which this holds at once are two writable primaries.
pub fn would_acknowledge(role: Role, lease_ok: bool, synchronized: usize, required: u32) -> bool {
    role == Role::Primary && lease_ok && synchronized >= required as usize
}

/// The inputs of `ALTER AVAILABILITY GROUP .. FAILOVER | FORCE_FAILOVER_ALLOW_DATA_LOSS`.
#[derive(Debug, Clone, Copy)]
pub struct FailoverRequest<'a> {
    pub ag: &'a str,
    pub forced: bool,
    /// `sp_set_session_context 'external_cluster', 'yes'` ran in this session.
    pub external_cluster: bool,
    pub role: Role,
    pub local_mode: AvailabilityMode,
    /// Whether the replica was SYNCHRONIZED when it lost its primary (or is now).
    pub was_synchronized: bool,
}

// Numbers and texts from SQL Server's message list (learn.microsoft.com, "Database Engine
// events and errors", 31000-41399 and 41400-49999, as of SQL Server 2019).
/// "This operation cannot be performed on the availability group ... because it has
/// EXTERNAL cluster type." That it is the refusal without `external_cluster` is inferred
/// from its text; the number and text are SQL Server's.
pub const ERR_NEEDS_EXTERNAL_CLUSTER: i32 = 47104;
/// The replica cannot become primary: not synchronized (also Pacemaker's agent's 41142).
pub const ERR_NOT_SYNCHRONIZED: i32 = 41142;
/// "Cannot failover availability group ... The local availability replica is already the
/// primary replica".
pub const ERR_ALREADY_PRIMARY: i32 = 41122;
/// "Configuration-only replica cannot become primary."
pub const ERR_CONFIGURATION_ONLY: i32 = 47109;

pub fn failover(r: &FailoverRequest<'_>) -> Result<(), SqlError> {
    if !r.external_cluster {
        return Err(SqlError::new(
            ERR_NEEDS_EXTERNAL_CLUSTER,
            16,
            format!(
                "This operation cannot be performed on the availability group '{}' because it has EXTERNAL cluster type. Use the cluster management tools to perform the operation.",
                r.ag
            ),
        ));
    }
    if r.role == Role::Primary {
        return Err(SqlError::new(
            ERR_ALREADY_PRIMARY,
            16,
            format!(
                "Cannot failover availability group '{}' to this instance of SQL Server.  The local availability replica is already the primary replica of the availability group.  To failover this availability group to another instance of SQL Server, run the failover command on that instance of SQL Server.  If local instance of SQL Server is intended to host the primary replica of the availability group, then no action is required.",
                r.ag
            ),
        ));
    }
    if r.local_mode == AvailabilityMode::ConfigurationOnly {
        return Err(SqlError::new(
            ERR_CONFIGURATION_ONLY,
            16,
            format!(
                "Availability group '{}' cannot failover to this replica. Configuration-only replica cannot become primary. An attempt to fail over an availability group failed. The replica is a configuration-only and cannot become a primary.",
                r.ag
            ),
        ));
    }
    if !r.forced && (r.role != Role::Secondary || !r.was_synchronized) {
        return Err(SqlError::new(
            ERR_NOT_SYNCHRONIZED,
            16,
            format!(
                "The availability replica for availability group '{}' on this instance of SQL Server cannot become the primary replica. One or more databases are not synchronized or have not joined the availability group. If the availability replica uses the asynchronous-commit mode, consider performing a forced manual failover (with possible data loss). Otherwise, once all local secondary databases are joined and synchronized, you can perform a planned manual failover to this secondary replica (without data loss).",
                r.ag
            ),
        ));
    }
    Ok(())
}

/// The AG was created without `WRITE_LEASE_VALIDITY` (Microsoft's Pacemaker agent,
/// mssql-server-ha `SQLError_AGDoesNotAllowExternalLeaseUpdates`, with this text).
pub const ERR_NO_EXTERNAL_LEASE: i32 = 47116;
/// The renewal would move the expiry earlier (same source,
/// `SQLError_AGExternalLeaseUpdate_NewExpiryIsOlderThanCurrentExpiry`).
pub const ERR_LEASE_EARLIER: i32 = 47119;
/// The lease value is not a valid time (SQL Server's message list; see `renew_lease`).
pub const ERR_LEASE_VALUE: i32 = 47117;

/// `SET (WRITE_LEASE_VALIDITY = secs)` at `now_ms`: the new expiry, or why not. A renewal
/// must not move the expiry earlier; an AG created without the option has no lease to
/// renew. Any role may renew: Microsoft's Pacemaker agent renews on the promotion target
/// (still SECONDARY) just before `FAILOVER` and treats only 47116 and 47119 as benign, so
/// SQL Server accepts it there; the lease matters once the replica is PRIMARY. The range
/// check answers 47117 ("must be specified with a valid time value"), SQL Server's message
/// whose text fits; the 1..=86400 bound itself is ours.
pub fn renew_lease(
    configured: bool,
    ag: &str,
    current_expiry_ms: Option<u64>,
    now_ms: u64,
    secs: i64,
) -> Result<u64, SqlError> {
    if !configured {
        return Err(SqlError::new(
            ERR_NO_EXTERNAL_LEASE,
            16,
            format!(
                "The external lease cannot be set on availability group '{ag}'. External Lease updates are not enabled for this availability group."
            ),
        ));
    }
    if !(1..=86_400).contains(&secs) {
        return Err(SqlError::new(
            ERR_LEASE_VALUE,
            16,
            format!(
                "The 'WRITE_LEASE_VALIDITY' option must be specified with a valid time value when updating the Availability Group's external write lease status on availability group '{ag}'."
            ),
        ));
    }
    let expiry = now_ms + secs as u64 * 1000;
    if current_expiry_ms.is_some_and(|c| expiry < c) {
        return Err(SqlError::new(
            ERR_LEASE_EARLIER,
            16,
            format!(
                "The current write lease of the availability group '{ag}' is still valid. The lease expiration time cannot be set to an earlier time than its current value."
            ),
        ));
    }
    Ok(expiry)
}

/// Whether a secondary takes log from a primary announcing `their_seq`. A replica that has
/// seen a higher `sequence_number` refuses it (modelling choice: an old primary cut off
/// from the new configuration cannot harden a commit anywhere), and a replica already fed
/// by a primary refuses another one that is not strictly newer.
pub fn accept_log(
    role: Role,
    my_seq: u64,
    upstream_seq: Option<u64>,
    their_seq: u64,
) -> Result<(), String> {
    if role != Role::Secondary {
        return Err(format!("replica is {role}, not SECONDARY"));
    }
    if their_seq < my_seq {
        return Err(format!(
            "sequence_number {their_seq} is older than {my_seq} already seen"
        ));
    }
    if upstream_seq.is_some_and(|u| their_seq <= u) {
        return Err("another primary with the same sequence_number feeds this replica".into());
    }
    Ok(())
}

/// The log records of one epoch (the `sequence_number` of the primary that wrote them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub epoch: u64,
    pub first: u64,
    pub last: u64,
}

/// The last LSN where two histories agree. Two logs holding a record with the same LSN
/// and epoch hold the same records up to it (each epoch has one writer, which appends
/// densely), so the answer is the largest overlap of equal-epoch spans.
pub fn match_point(ours: &[Span], theirs: &[Span]) -> u64 {
    let mut best = 0;
    for a in ours {
        for b in theirs.iter().filter(|b| b.epoch == a.epoch) {
            let hi = a.last.min(b.last);
            if hi >= a.first.max(b.first) {
                best = best.max(hi);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use AvailabilityMode::*;

    fn p(mode: AvailabilityMode, synchronized: bool, hardened_lsn: u64) -> PartnerView {
        PartnerView {
            mode,
            synchronized,
            hardened_lsn,
        }
    }

    #[test]
    fn commit_waits_for_synchronized_sync_partners_and_the_required_count() {
        // Required 0, nobody: local hardening is enough.
        assert!(commit_durable(5, 0, &[]));
        // Required 1, the only sync partner gone: wait.
        assert!(!commit_durable(5, 1, &[p(SynchronousCommit, false, 9)]));
        // A synchronized partner behind: wait even with required 0.
        assert!(!commit_durable(5, 0, &[p(SynchronousCommit, true, 4)]));
        assert!(commit_durable(5, 1, &[p(SynchronousCommit, true, 5)]));
        // Async partners never count and are never waited for.
        assert!(!commit_durable(5, 1, &[p(AsynchronousCommit, true, 9)]));
        assert!(commit_durable(5, 0, &[p(AsynchronousCommit, true, 1)]));
        // Two sync partners, one dropped out: required 1 still met by the other.
        assert!(commit_durable(
            5,
            1,
            &[
                p(SynchronousCommit, false, 0),
                p(SynchronousCommit, true, 7)
            ]
        ));
        assert!(!would_acknowledge(Role::Primary, true, 0, 1));
        assert!(would_acknowledge(Role::Primary, true, 1, 1));
        assert!(!would_acknowledge(Role::Primary, false, 1, 1));
        assert!(!would_acknowledge(Role::Resolving, true, 1, 0));
    }

    fn req(forced: bool, external: bool, role: Role, synced: bool) -> FailoverRequest<'static> {
        FailoverRequest {
            ag: "ag1",
            forced,
            external_cluster: external,
            role,
            local_mode: SynchronousCommit,
            was_synchronized: synced,
        }
    }

    #[test]
    fn failover_refusals() {
        let n = |r: FailoverRequest<'_>| failover(&r).err().map(|e| e.number);
        assert_eq!(n(req(false, true, Role::Secondary, true)), None);
        assert_eq!(
            n(req(false, false, Role::Secondary, true)),
            Some(ERR_NEEDS_EXTERNAL_CLUSTER)
        );
        assert_eq!(
            n(req(true, false, Role::Secondary, false)),
            Some(ERR_NEEDS_EXTERNAL_CLUSTER)
        );
        assert_eq!(n(req(false, true, Role::Secondary, false)), Some(41142));
        assert_eq!(n(req(false, true, Role::Resolving, true)), Some(41142));
        assert_eq!(n(req(true, true, Role::Secondary, false)), None);
        assert_eq!(n(req(true, true, Role::Resolving, false)), None);
        assert_eq!(
            n(req(true, true, Role::Primary, true)),
            Some(ERR_ALREADY_PRIMARY)
        );
        let mut c = req(true, true, Role::Secondary, true);
        c.local_mode = ConfigurationOnly;
        assert_eq!(n(c), Some(ERR_CONFIGURATION_ONLY));
    }

    #[test]
    fn lease_renewals() {
        let n = |r: Result<u64, SqlError>| r.err().map(|e| e.number);
        assert_eq!(n(renew_lease(false, "ag1", None, 0, 5)), Some(47116));
        assert_eq!(n(renew_lease(true, "ag1", None, 0, 0)), Some(47117));
        assert_eq!(renew_lease(true, "ag1", None, 1000, 5).unwrap(), 6000);
        // Later is fine, earlier is refused.
        assert_eq!(renew_lease(true, "ag1", Some(6000), 2000, 5).unwrap(), 7000);
        assert_eq!(
            n(renew_lease(true, "ag1", Some(9000), 2000, 5)),
            Some(47119)
        );
    }

    #[test]
    fn log_acceptance_follows_sequence_numbers() {
        assert!(accept_log(Role::Secondary, 3, None, 3).is_ok());
        assert!(accept_log(Role::Secondary, 4, None, 3).is_err());
        assert!(accept_log(Role::Resolving, 3, None, 3).is_err());
        assert!(accept_log(Role::Primary, 3, None, 9).is_err());
        assert!(accept_log(Role::Secondary, 3, Some(3), 3).is_err());
        assert!(accept_log(Role::Secondary, 3, Some(3), 4).is_ok());
    }

    #[test]
    fn match_point_finds_the_common_history() {
        let s = |epoch, first, last| Span { epoch, first, last };
        // Same history, one behind the other.
        assert_eq!(match_point(&[s(1, 1, 10)], &[s(1, 1, 7)]), 7);
        // Old primary wrote 8..12 in epoch 2 that the new primary (epoch 3 from 8) never got.
        assert_eq!(
            match_point(&[s(1, 1, 7), s(3, 8, 20)], &[s(1, 1, 7), s(2, 8, 12)]),
            7
        );
        // Nothing in common.
        assert_eq!(match_point(&[s(2, 1, 3)], &[s(1, 1, 3)]), 0);
        assert_eq!(match_point(&[], &[s(1, 1, 3)]), 0);
    }
}
