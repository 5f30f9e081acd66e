//! What shapes a lab run: which implementation guards the address, how SQL connections
//! are encrypted, the agents' and keepalived's timings, the AG's commit rule and write
//! lease, the client's and the writer's pace. Kept apart from `lab.rs` so that the running lab's code stays readable.

use std::path::PathBuf;

use crate::config::{AgentTiming, KeepalivedTiming};

/// Who guards the overlay IP; the name is what the command line takes and the JSON and the
/// timelines print.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display, strum::EnumString,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Impl {
    Tdsvip,
    /// keepalived at its best: VRRP plus a `track_file` fed at tdsvip's probe rate.
    Keepalived,
    /// keepalived as usually deployed: VRRP plus a `vrrp_script` run every second.
    KeepalivedScript,
}

impl Impl {
    /// Every implementation, in the order `bench` runs them.
    pub const ALL: [Impl; 3] = [Impl::Tdsvip, Impl::Keepalived, Impl::KeepalivedScript];

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Whether keepalived guards the address (either tracker).
    pub fn is_keepalived(self) -> bool {
        matches!(self, Impl::Keepalived | Impl::KeepalivedScript)
    }
}

/// Who promotes a secondary (`--promote`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display, strum::EnumString,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Promote {
    /// The lab plays the HA manager: T-SQL `FAILOVER` with `external_cluster`, and the
    /// write-lease renewals.
    Lab,
    /// The agents do, in manage mode, coordinated by the lab's three-member etcd cluster;
    /// the lab only injects the fault and watches.
    Agent,
}

impl Promote {
    pub const ALL: [Promote; 2] = [Promote::Lab, Promote::Agent];

    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// How the lab's SQL connections are encrypted (`--encrypt`), named as `sql.encrypt` names
/// it; the certificates always come from the lab CA.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display, strum::EnumString,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Encrypt {
    /// The sims run SQL Server's default (`--encryption off`, with a certificate); the agents
    /// and the measuring client ask for encryption and verify the certificate; the lab's own
    /// T-SQL (HA manager, writer, idle sessions) logs in without TLS, as the sims allow.
    Mandatory,
    /// TDS 8.0 (`--encryption strict`): every connection, the lab's own included, starts
    /// with TLS (ALPN `tds/8.0`) verified against the lab CA; the sims refuse anything else.
    Strict,
}

impl Encrypt {
    pub const ALL: [Encrypt; 2] = [Encrypt::Mandatory, Encrypt::Strict];

    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Everything that shapes a lab run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub implementation: Impl,
    /// The agents' `sql.encrypt` and what the sims and the lab's own connections do.
    pub encrypt: Encrypt,
    pub nodes: usize,
    pub agent: AgentTiming,
    pub keepalived: KeepalivedTiming,
    pub promote_delay_ms: u64,
    pub lease_ms: u64,
    pub idle_sessions: usize,
    pub flaps: usize,
    pub flap_interval_ms: u64,
    pub client_every_ms: u64,
    pub client_deadline_ms: u64,
    pub sample_ms: u64,
    pub arp_every_ms: u64,
    /// Where work dirs go (default: the system temp dir).
    pub work_root: Option<PathBuf>,
    /// Keep the work dir (logs, configs) after a successful run.
    pub keep: bool,
    /// `--cloud`: moto's EC2 server and this many route tables.
    pub cloud_tables: Option<usize>,
    /// `--fence-aws` (with `--cloud` and `--promote agent`): the agents' `[fence] aws`.
    pub fence_aws: bool,
    /// tds-sim's SESSION_TIMEOUT (ms; a sim-only unit, SQL Server counts seconds).
    pub session_timeout_ms: u64,
    /// REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT of the AG.
    pub required_synchronized: u32,
    /// The writer's commit period and deadline.
    pub writer_every_ms: u64,
    pub writer_deadline_ms: u64,
    /// The node whose replica is ASYNCHRONOUS_COMMIT (async-replica sets node 3); every
    /// other replica is SYNCHRONOUS_COMMIT.
    pub async_node: Option<usize>,
    /// The AG's WRITE_LEASE_VALIDITY (whole seconds, as on SQL Server) and how often the
    /// lab, as the HA manager, renews it on the primary (see the README's lab section).
    pub write_lease_validity_s: u64,
    pub lease_renew_every_ms: u64,
    pub promote: Promote,
}

/// The mirroring endpoint port of every node.
pub const ENDPOINT_PORT: u16 = 5022;

impl Settings {
    /// Node `i`'s AVAILABILITY_MODE.
    pub fn availability_mode(&self, i: usize) -> &'static str {
        if self.async_node == Some(i) {
            "ASYNCHRONOUS_COMMIT"
        } else {
            "SYNCHRONOUS_COMMIT"
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            implementation: Impl::Tdsvip,
            encrypt: Encrypt::Mandatory,
            nodes: 3,
            agent: AgentTiming {
                interval_ms: 20,
                timeout_ms: 200,
                rise: 2,
                fall: 3,
                lease_ms: crate::config::ownership_lease_ms(),
            },
            keepalived: KeepalivedTiming {
                advert_int: 0.01,
                script_interval: 1,
                script_timeout: 1,
                script_fall: 1,
                script_rise: 1,
                check_timeout_ms: 200,
            },
            promote_delay_ms: 0,
            lease_ms: 500,
            idle_sessions: 4,
            flaps: 4,
            flap_interval_ms: 500,
            client_every_ms: 10,
            client_deadline_ms: 50,
            sample_ms: 10,
            arp_every_ms: 250,
            work_root: None,
            keep: false,
            cloud_tables: None,
            fence_aws: false,
            session_timeout_ms: 500,
            required_synchronized: 1,
            writer_every_ms: 10,
            writer_deadline_ms: 1000,
            async_node: None,
            write_lease_validity_s: 2,
            lease_renew_every_ms: 250,
            promote: Promote::Lab,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Encrypt, Impl};
    use crate::scenario::Scenario;

    /// strum's names are exactly the ones the hand-written matches gave (JSON and CLI).
    #[test]
    fn names_are_unchanged() {
        assert_eq!(Impl::Tdsvip.name(), "tdsvip");
        assert_eq!(Impl::Keepalived.to_string(), "keepalived");
        assert_eq!(Impl::KeepalivedScript.name(), "keepalived-script");
        for i in Impl::ALL {
            assert_eq!(i.name().parse::<Impl>(), Ok(i));
        }
        for e in Encrypt::ALL {
            assert_eq!(e.name().parse::<Encrypt>(), Ok(e));
        }
        assert_eq!(Encrypt::Strict.name(), "strict");
        for p in super::Promote::ALL {
            assert_eq!(p.name().parse::<super::Promote>(), Ok(p));
        }
        assert_eq!(super::Promote::Agent.name(), "agent");
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "kill-primary",
                "switchover",
                "hang-primary",
                "crash-node",
                "partition-primary",
                "flap",
                "loss",
                "kill-agent",
                "async-replica",
                "kill-agent-then-failover",
                "freeze-agent-then-failover",
                "freeze-agent",
                "etcd-leader-kill",
                "etcd-quorum-loss",
                "no-sync-candidate"
            ]
        );
        for s in Scenario::ALL {
            assert_eq!(s.to_string(), s.name());
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
    }
}
