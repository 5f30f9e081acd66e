//! The agent's configuration file (TOML): its sections and their defaults. Loading is in
//! `parse.rs`, the checks of meaning in `validate.rs`.
//!
//! Operators edit this file by hand on every node, often under pressure, so a mistake must
//! come back as `KEY: reason` lines that name the exact key (`ag[1].addresses[0]`), all at
//! once, never as a silently ignored key or a panic. Loading happens in three passes:
//! TOML syntax (with line and column), then shape (types; every unknown key is collected,
//! not just the first), then meaning ([`AgentConfig::validate`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

mod cluster;
mod fence;
mod parse;
mod sql;
#[cfg(test)]
mod tests;
mod validate;

pub use cluster::{ClusterConfig, ClusterMode};
pub use fence::FenceConfig;
pub use sql::SqlConfig;

/// One problem in a config file: the full key path and why the value is refused.
pub use tdsvip_config_problem::ConfigProblem;

/// Why a file could not be loaded: every problem found, in file order where possible.
pub type ConfigErrors = tdsvip_config_problem::ConfigProblems;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentConfig {
    /// This node's name in logs, metrics and `/status`; the host name when absent.
    #[serde(default)]
    pub node: Option<String>,
    /// The interface that carries the overlay IPs (e.g. `eth0`).
    pub interface: String,
    pub sql: SqlConfig,
    #[serde(default)]
    pub probe: ProbeSettings,
    /// `[[ag]]` tables: the availability groups this node serves.
    #[serde(rename = "ag", default)]
    pub ags: Vec<AgConfig>,
    /// `[[peer]]` tables: the other nodes' agents and replicas.
    #[serde(rename = "peer", default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub ebpf: EbpfConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub peer_poll: PeerPollConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[cluster]`: who promotes a secondary (follow, the default, or manage through etcd).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[cloud]`: route tables or secondary IP on AWS; absent on premises.
    #[serde(default)]
    pub cloud: Option<tdsvip_cloud::CloudConfig>,
    /// `[fence]`: stopping an old primary a new leader could not confirm down (manage mode).
    #[serde(default)]
    pub fence: FenceConfig,
}

/// `[probe]`: rate, deadline and hysteresis of the local health probe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProbeSettings {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub jitter_ms: u64,
    /// Consecutive successes before the replica counts as up.
    pub rise: u32,
    /// Consecutive failures before it counts as down. `not_primary` releases at once
    /// regardless: SQL Server said so, there is nothing to filter.
    pub fall: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            interval_ms: 20,
            timeout_ms: 200,
            jitter_ms: 0,
            rise: 2,
            fall: 3,
        }
    }
}

/// `[[ag]]`: one availability group and the overlay addresses that follow its primary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgConfig {
    pub name: String,
    /// `IP` or `IP/PREFIX`; without a prefix, /32 for IPv4 and /128 for IPv6.
    pub addresses: Vec<String>,
    #[serde(default = "default_sql_port")]
    pub port: u16,
    /// Databases that must be ONLINE on the primary before it gets the addresses.
    #[serde(default)]
    pub databases: Vec<String>,
}

fn default_sql_port() -> u16 {
    1433
}

/// An overlay address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OverlayAddress {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for OverlayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl std::str::FromStr for OverlayAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip_part, prefix_part) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = ip_part
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address (expected IP or IP/PREFIX)"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_part {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=max).contains(p))
                .ok_or_else(|| format!("{s:?}: prefix must be 1..={max}"))?,
        };
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(format!(
                "{s:?} cannot be an overlay address (unspecified, loopback or multicast)"
            ));
        }
        Ok(OverlayAddress { ip, prefix })
    }
}

impl AgConfig {
    /// The parsed addresses; [`AgentConfig::validate`] has reported any that do not parse.
    pub fn overlay_addresses(&self) -> Vec<OverlayAddress> {
        self.addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }
}

/// `[[peer]]`: another node of the AG.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PeerConfig {
    pub name: String,
    /// The peer agent's HTTP base URL, e.g. `http://10.0.1.12:9477`.
    pub status_url: String,
    /// The peer replica's TDS endpoint, probed to learn its role.
    #[serde(default)]
    pub sql_endpoint: Option<SocketAddr>,
    /// The peer's EC2 instance, stopped by `[fence] aws` when it is lost as primary.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// `[http]`: the agent's HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Loopback by default: `/status` tells an attacker a lot about the cluster.
    pub listen: SocketAddr,
    /// Bearer token for everything but `/metrics`, `/healthz` and `/primary`. Peers send
    /// this node's own token when they read each other's `/status`: use one token per cluster.
    pub token_file: Option<PathBuf>,
    /// How many completed failover timelines `/events` keeps.
    pub events: usize,
    /// A client must send its whole request head within this time (idle keep-alive
    /// connections are closed after it too).
    pub head_timeout_ms: u64,
    /// Connections open at once; a newcomer beyond it closes the oldest.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64); further ones from it
    /// are closed at once.
    pub max_connections_per_source: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
            token_file: None,
            events: crate::status::DEFAULT_EVENTS,
            head_timeout_ms: crate::http::HEAD_TIMEOUT.as_millis() as u64,
            max_connections: crate::http::MAX_CONNECTIONS,
            max_connections_per_source: crate::http::MAX_CONNECTIONS_PER_SOURCE,
        }
    }
}

/// `[ebpf]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EbpfConfig {
    /// Load the `vip_guard` and `conn_track` programs on `interface`.
    pub enabled: bool,
    /// The kernel ownership lease: the guard passes an owned address for this long after the
    /// last probe that found the local replica PRIMARY, then fences it by itself (a frozen
    /// agent's node stops answering for the address).
    pub lease_ms: u64,
    /// Where the programs' links and maps are pinned (a bpf filesystem), so that the guard
    /// and its lease outlive the agent and the next agent takes them over. The agent pins
    /// under `{pin_dir}/v{layout}/{interface}`.
    pub pin_dir: PathBuf,
}

/// Where `[ebpf] pin_dir` points unless configured: the systemd unit creates it.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tdsvip";

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            enabled: true,
            lease_ms: 2000,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

/// `[reconcile]`: how often an owner re-checks what it owns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReconcileConfig {
    pub interval_ms: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig { interval_ms: 5000 }
    }
}

/// `[peer_poll]`: how often the other agents' `/status` and replicas are read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PeerPollConfig {
    /// Between two reads of one peer's `/status`. The peer's client connections handed over
    /// at a takeover are at most this old.
    pub interval_ms: u64,
    /// Deadline of one read (connect, request and answer).
    pub timeout_ms: u64,
    /// Before acquiring, every peer is asked whether it still holds the AG's addresses;
    /// a peer that does not answer within this is taken to be gone (crashed, partitioned).
    pub handover_timeout_ms: u64,
    /// How long to wait for a peer that answers that it still holds the addresses (its
    /// agent releases within its fall count); after that the node acquires anyway and
    /// alerts. 0 never waits.
    pub release_wait_ms: u64,
}

impl Default for PeerPollConfig {
    fn default() -> Self {
        PeerPollConfig {
            interval_ms: 200,
            timeout_ms: 150,
            handover_timeout_ms: 50,
            release_wait_ms: 1000,
        }
    }
}

/// `[shutdown]`: what SIGTERM does with owned addresses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    pub addresses: StopAddresses,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopAddresses {
    /// Give the addresses up (fence, reset local sockets, remove): the next primary's agent
    /// can take them at once. The safe default.
    #[default]
    Release,
    /// Leave them on the interface and serving, for a restart of the agent alone (an
    /// upgrade): the restarted agent adopts them if its replica is still PRIMARY and
    /// releases them at its first verdict otherwise. While no agent runs, nothing fences
    /// them.
    Keep,
}

impl AgentConfig {
    /// The node name: the configured one, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned())
        })
    }
}
