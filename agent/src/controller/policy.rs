//! The rules of DESIGN.md's "Who decides who owns the address", as pure functions and one
//! small counter, so that each rule can be read (and tested) apart from the state machine.
//!
//! How each probe outcome counts, and why:
//!
//! | outcome | class | effect |
//! |---|---|---|
//! | `ok` (PRIMARY, every configured database ONLINE) | [`Verdict::Primary`] | counts toward rise |
//! | `not_primary` (SECONDARY, RESOLVING, AG not found) | [`Verdict::SqlSaysNo`] | release at once: SQL Server said so, nothing to filter |
//! | `db_not_online` | [`Verdict::SqlSaysNo`] | release at once: never own while a configured database is not ONLINE, since clients would land on a primary that cannot serve them |
//! | `query_failed` | [`Verdict::Unconfirmed`] | counts toward fall: the server answered but the role could not be read, so it is no proof of PRIMARY (never counts toward rise), yet a single failed query (a deadlock victim, a timeout) must not move the address either |
//! | `timeout`, `refused`, `reset`, `unreachable`, `protocol_error`, `login_failed` | [`Verdict::Unconfirmed`] | counts toward fall: local SQL is not answering |
//! | `io_error` | [`Verdict::Unconfirmed`] | counts toward fall: a local problem, not a verdict on the server, but the agent can no longer confirm PRIMARY either |
//!
//! Peers: only a reachable peer's fresh report that its replica is PRIMARY matters. Seen
//! after the local replica became PRIMARY, it forbids acquiring (a conflict). Seen after the
//! local replica was last confirmed PRIMARY while local SQL has stopped answering, it
//! releases at once instead of after the fall count (`peer_primary`): SQL Server has a new
//! primary, and every probe interval spent counting is an interval the new owner waits for
//! this one to let go. An unreachable or silent peer is forgotten; otherwise a dead old
//! primary's last report would keep the new primary from ever taking the address.

use std::fmt;
use std::time::Duration;

use super::decision::ReleaseCause;

/// Settings of one AG's controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgPolicy {
    /// Consecutive `ok` probes before the agent may acquire.
    pub rise: u32,
    /// Consecutive unanswered probes before an owner releases.
    pub fall: u32,
    /// Backoff of cloud claim retries; `None` when no cloud executor is configured.
    pub cloud_retry: Option<Backoff>,
    /// Backoff before acquiring again after a failed acquire, so a broken interface does not
    /// turn into an acquire/release loop at the probe rate.
    pub acquire_retry: Backoff,
    /// A peer report older than this no longer counts (as if the peer were unreachable).
    pub peer_stale_after: Duration,
    /// Ask the peers to let go of the addresses before each acquire (peers are configured).
    pub handover: bool,
    /// Whether a probe through the overlay IP runs, so an acquire's timeline waits for this
    /// node's own login through it and, while a peer agent can be read, for a peer's.
    pub expect_overlay_login: bool,
    /// How long a successful acquire's timeline waits for what comes after the node call
    /// (route tables, the first login through the overlay IP). A SQL Server that does not
    /// listen on the overlay IP, or a cloud API that never answers, must not keep the
    /// failover out of `/events` and the metrics: the timeline is then closed and names what
    /// never came.
    pub timeline_limit: Duration,
}

impl AgPolicy {
    /// The policy for the `[probe]` rise and fall counts, with the defaults for the rest.
    pub fn new(rise: u32, fall: u32) -> AgPolicy {
        AgPolicy {
            rise,
            fall,
            cloud_retry: None,
            acquire_retry: Backoff {
                base: Duration::from_millis(200),
                cap: Duration::from_secs(5),
            },
            peer_stale_after: Duration::from_secs(5),
            handover: false,
            expect_overlay_login: false,
            timeline_limit: Duration::from_secs(30),
        }
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.rise == 0 {
            return Err(PolicyError("rise must be at least 1"));
        }
        if self.fall == 0 {
            return Err(PolicyError("fall must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyError(pub &'static str);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The controller's backoffs have no jitter: one node retries per AG, so there is no herd to
/// spread, and a deterministic delay lets the decision say exactly when the retry runs.
pub use tdsvip_backoff::Backoff;

/// What one probe outcome says about owning the address: the controller's own input type
/// (the driver classifies the probes crate's outcomes, see the table above), so that the
/// controller depends on nothing that does I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Primary,
    /// SQL Server answered that this replica must not own the address.
    SqlSaysNo {
        cause: ReleaseCause,
        what: String,
    },
    /// No confirmation either way.
    Unconfirmed {
        what: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_counts_are_refused() {
        assert!(AgPolicy::new(0, 3).validate().is_err());
        assert!(AgPolicy::new(2, 0).validate().is_err());
        assert!(AgPolicy::new(1, 1).validate().is_ok());
    }
}
