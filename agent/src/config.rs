//! The agent's configuration file (TOML) and its validation.
//!
//! Operators edit this file by hand on every node, often under pressure, so a mistake must
//! come back as `KEY: reason` lines that name the exact key (`ag[1].addresses[0]`), all at
//! once, never as a silently ignored key or a panic. Loading happens in three passes:
//! TOML syntax (with line and column), then shape (types; every unknown key is collected,
//! not just the first), then meaning ([`AgentConfig::validate`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One problem in a config file: the full key path and why the value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub reason: String,
}

impl ConfigIssue {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigIssue {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// The whole file.
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
    /// `[cloud]`: route tables or secondary IP on AWS; absent on premises.
    #[serde(default)]
    pub cloud: Option<tdsvip_cloud::CloudConfig>,
}

/// `[sql]`: how the agent logs in to its local SQL Server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SqlConfig {
    #[serde(default = "default_sql_endpoint")]
    pub endpoint: SocketAddr,
    pub user: String,
    /// A file holding the password (mode 0600, owned by the service user).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Or an environment variable holding it (e.g. from systemd `LoadCredential=`).
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub tls: TlsSetting,
    /// Accept any server certificate: self-signed lab certificates only.
    #[serde(default)]
    pub trust_server_certificate: bool,
}

fn default_sql_endpoint() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1433))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsSetting {
    #[default]
    Off,
    Required,
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
            token_file: None,
            events: crate::status::DEFAULT_EVENTS,
        }
    }
}

/// `[ebpf]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EbpfConfig {
    /// Load the `vip_guard` and `conn_track` programs on `interface`.
    pub enabled: bool,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig { enabled: true }
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

/// Why a file could not be loaded: every issue found, in file order where possible.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl AgentConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigIssue::new(
                "(file)",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Self::parse(&text)
    }

    /// Parses and validates the text of a config file.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let key = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("(syntax, line {line} column {col})")
                }
                None => "(syntax)".to_owned(),
            };
            ConfigErrors(vec![ConfigIssue::new(key, e.message().trim())])
        })?;

        let mut unknown = Vec::new();
        let value = toml::Value::Table(table);
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            unknown.push(ConfigIssue::new(key_path(&path.to_string()), "unknown key"));
        };
        let ignoring = serde_ignored::Deserializer::new(value, &mut on_unknown);
        let parsed: Result<AgentConfig, _> = serde_path_to_error::deserialize(ignoring);
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                let key = key_path(&e.path().to_string());
                unknown.push(ConfigIssue::new(
                    if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    e.into_inner().message().trim().to_owned(),
                ));
                return Err(ConfigErrors(unknown));
            }
        };
        let mut issues = unknown;
        issues.extend(config.validate());
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(issues))
        }
    }

    /// Every problem of meaning (types are already right), each naming its key.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut v = Vec::new();
        if let Some(node) = &self.node
            && node.trim().is_empty()
        {
            v.push(ConfigIssue::new("node", "must not be empty"));
        }
        if !valid_interface_name(&self.interface) {
            v.push(ConfigIssue::new(
                "interface",
                format!(
                    "{:?} is not a Linux interface name (1 to 15 characters, no '/', ':' or spaces)",
                    self.interface
                ),
            ));
        }
        self.validate_sql(&mut v);
        self.validate_probe(&mut v);
        self.validate_ags(&mut v);
        self.validate_peers(&mut v);
        if !self.http.listen.ip().is_loopback() && self.http.token_file.is_none() {
            v.push(ConfigIssue::new(
                "http.token_file",
                format!(
                    "required when http.listen ({}) is not a loopback address: /status and /events would be open to the network",
                    self.http.listen
                ),
            ));
        }
        if let Some(cloud) = &self.cloud {
            v.extend(
                cloud
                    .validate()
                    .into_iter()
                    .map(|p| ConfigIssue::new(p.key, p.reason)),
            );
            if cloud.mode == tdsvip_cloud::Mode::Route
                && !self
                    .ags
                    .iter()
                    .flat_map(AgConfig::overlay_addresses)
                    .any(|a| a.ip.is_ipv4())
            {
                v.push(ConfigIssue::new(
                    "cloud.mode",
                    "\"route\" moves IPv4 /32 routes, but no [[ag]] has an IPv4 address",
                ));
            }
        }
        if self.reconcile.interval_ms < 100 {
            v.push(ConfigIssue::new(
                "reconcile.interval_ms",
                format!("{} is below 100", self.reconcile.interval_ms),
            ));
        }
        v
    }

    fn validate_sql(&self, v: &mut Vec<ConfigIssue>) {
        let sql = &self.sql;
        if sql.user.is_empty() {
            v.push(ConfigIssue::new("sql.user", "must not be empty"));
        }
        match (&sql.password_file, &sql.password_env) {
            (None, None) => v.push(ConfigIssue::new(
                "sql.password_file",
                "one of sql.password_file or sql.password_env is required",
            )),
            (Some(_), Some(_)) => v.push(ConfigIssue::new(
                "sql.password_env",
                "give sql.password_file or sql.password_env, not both",
            )),
            (Some(p), None) if !p.is_absolute() => v.push(ConfigIssue::new(
                "sql.password_file",
                format!("{} is not an absolute path", p.display()),
            )),
            (None, Some(e)) if e.is_empty() || e.contains('=') => v.push(ConfigIssue::new(
                "sql.password_env",
                format!("{e:?} is not an environment variable name"),
            )),
            _ => {}
        }
        if sql.trust_server_certificate && sql.tls == TlsSetting::Off {
            v.push(ConfigIssue::new(
                "sql.trust_server_certificate",
                "has no effect with sql.tls = \"off\"",
            ));
        }
    }

    fn validate_probe(&self, v: &mut Vec<ConfigIssue>) {
        let p = &self.probe;
        if p.interval_ms == 0 {
            v.push(ConfigIssue::new("probe.interval_ms", "must be at least 1"));
        }
        if p.timeout_ms < 10 {
            v.push(ConfigIssue::new(
                "probe.timeout_ms",
                format!("{} is below the minimum of 10", p.timeout_ms),
            ));
        }
        if p.jitter_ms >= p.interval_ms.max(1) {
            v.push(ConfigIssue::new(
                "probe.jitter_ms",
                format!(
                    "{} must be below probe.interval_ms ({})",
                    p.jitter_ms, p.interval_ms
                ),
            ));
        }
        for (key, n) in [("probe.rise", p.rise), ("probe.fall", p.fall)] {
            if n == 0 {
                v.push(ConfigIssue::new(key, "must be at least 1"));
            }
        }
    }

    fn validate_ags(&self, v: &mut Vec<ConfigIssue>) {
        if self.ags.is_empty() {
            v.push(ConfigIssue::new(
                "ag",
                "at least one [[ag]] table is required",
            ));
        }
        if self.ebpf.enabled && self.ags.len() > 1 {
            // Each AG has its own node executor, and each would attach its own XDP guard to
            // the one interface: the second attach fails (or, with other attach modes, would
            // replace the first AG's guard). Refuse it here rather than at start.
            v.push(ConfigIssue::new(
                "ag[1]",
                "more than one [[ag]] with ebpf.enabled = true is not supported yet (one eBPF guard per interface); run one AG per agent, or set ebpf.enabled = false",
            ));
        }
        let mut names = BTreeSet::new();
        let mut seen_ips = BTreeSet::new();
        for (i, ag) in self.ags.iter().enumerate() {
            let key = |k: &str| format!("ag[{i}].{k}");
            if let Err(reason) = check_sysname(&ag.name) {
                v.push(ConfigIssue::new(key("name"), reason));
            } else if !names.insert(ag.name.to_lowercase()) {
                // SQL Server's default collation compares names case-insensitively.
                v.push(ConfigIssue::new(
                    key("name"),
                    format!("{:?} appears twice", ag.name),
                ));
            }
            if ag.addresses.is_empty() {
                v.push(ConfigIssue::new(
                    key("addresses"),
                    "at least one overlay address is required",
                ));
            }
            for (j, a) in ag.addresses.iter().enumerate() {
                match a.parse::<OverlayAddress>() {
                    Ok(addr) => {
                        if !seen_ips.insert(addr.ip) {
                            v.push(ConfigIssue::new(
                                format!("ag[{i}].addresses[{j}]"),
                                format!("{} is listed twice (an address follows one AG)", addr.ip),
                            ));
                        }
                    }
                    Err(reason) => {
                        v.push(ConfigIssue::new(format!("ag[{i}].addresses[{j}]"), reason))
                    }
                }
            }
            if ag.port == 0 {
                v.push(ConfigIssue::new(key("port"), "must be 1..=65535"));
            }
            for (j, db) in ag.databases.iter().enumerate() {
                if let Err(reason) = check_sysname(db) {
                    v.push(ConfigIssue::new(format!("ag[{i}].databases[{j}]"), reason));
                }
            }
        }
    }

    fn validate_peers(&self, v: &mut Vec<ConfigIssue>) {
        let mut names = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.name.trim().is_empty() {
                v.push(ConfigIssue::new(
                    format!("peer[{i}].name"),
                    "must not be empty",
                ));
            } else if !names.insert(peer.name.as_str()) || Some(&peer.name) == self.node.as_ref() {
                v.push(ConfigIssue::new(
                    format!("peer[{i}].name"),
                    format!("{:?} is not unique (or is this node's own name)", peer.name),
                ));
            }
            if let Err(reason) = crate::http::client::parse_url(&peer.status_url) {
                v.push(ConfigIssue::new(format!("peer[{i}].status_url"), reason));
            }
        }
        let poll = &self.peer_poll;
        if !(10..=60_000).contains(&poll.interval_ms) {
            v.push(ConfigIssue::new(
                "peer_poll.interval_ms",
                format!("{} is outside 10..=60000", poll.interval_ms),
            ));
        }
        if poll.timeout_ms == 0 || poll.timeout_ms > 10_000 {
            v.push(ConfigIssue::new(
                "peer_poll.timeout_ms",
                format!("{} is outside 1..=10000", poll.timeout_ms),
            ));
        }
        if poll.handover_timeout_ms == 0 || poll.handover_timeout_ms > 10_000 {
            v.push(ConfigIssue::new(
                "peer_poll.handover_timeout_ms",
                format!("{} is outside 1..=10000", poll.handover_timeout_ms),
            ));
        }
        if poll.release_wait_ms > 60_000 {
            v.push(ConfigIssue::new(
                "peer_poll.release_wait_ms",
                format!("{} is above 60000", poll.release_wait_ms),
            ));
        }
        if !(1..=10_000).contains(&self.http.events) {
            v.push(ConfigIssue::new(
                "http.events",
                format!("{} is outside 1..=10000", self.http.events),
            ));
        }
    }

    /// The node name: the configured one, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned())
        })
    }
}

/// serde's paths read `ag.0.name`; operators read TOML, where that is `ag[0].name`.
fn key_path(serde_path: &str) -> String {
    let mut out = String::new();
    for part in serde_path.split('.') {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// AG and database names are `sysname` (nvarchar(128)).
fn check_sysname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.encode_utf16().count() > 128 {
        return Err(format!("{name:?} is longer than 128 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
interface = "eth0"
[sql]
user = "tdsvip"
password_file = "/etc/tdsvip/sql-password"
[[ag]]
name = "AG1"
addresses = ["10.0.0.100"]
"#;

    fn issues(text: &str) -> Vec<String> {
        match AgentConfig::parse(text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = AgentConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.sql.endpoint, "127.0.0.1:1433".parse().unwrap());
        assert_eq!(c.probe, ProbeSettings::default());
        assert_eq!(c.http.listen, "127.0.0.1:9477".parse().unwrap());
        assert!(c.ebpf.enabled);
        assert_eq!(c.ags[0].port, 1433);
        assert_eq!(
            c.ags[0].overlay_addresses(),
            vec![OverlayAddress {
                ip: "10.0.0.100".parse().unwrap(),
                prefix: 32
            }]
        );
    }

    #[test]
    fn the_example_config_in_deploy_is_valid() {
        let text = include_str!("../../deploy/tdsvip.toml");
        if let Err(e) = AgentConfig::parse(text) {
            panic!("deploy/tdsvip.toml does not validate:\n{e}");
        }
    }

    #[test]
    fn the_aws_example_config_is_valid() {
        let text = include_str!("../../deploy/tdsvip-aws.toml");
        let c = AgentConfig::parse(text).unwrap_or_else(|e| panic!("deploy/tdsvip-aws.toml:\n{e}"));
        assert_eq!(c.cloud.map(|c| c.route_tables.len()), Some(2));
    }

    #[test]
    fn cloud_section_problems_are_reported_with_the_rest() {
        let text = format!(
            "{MINIMAL}\n[cloud]\nprovider = \"aws\"\nroute_tables = [\"rtb-nothex\"]\ncall_timeout_ms = 1\n"
        );
        let got = issues(&text);
        assert!(
            got.iter().any(|g| g.starts_with("cloud.route_tables[0]: ")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|g| g.starts_with("cloud.call_timeout_ms: ")),
            "{got:?}"
        );
        let got = issues(&format!("{MINIMAL}\n[cloud]\nprovider = \"gcp\"\n"));
        assert!(got[0].starts_with("cloud.provider: "), "{got:?}");
        let v6_only = MINIMAL.replace("10.0.0.100", "fd00::100");
        let got = issues(&format!(
            "{v6_only}\n[cloud]\nprovider = \"aws\"\nregion = \"us-east-1\"\nroute_tables = [\"rtb-0123456789abcdef0\"]\n"
        ));
        assert!(got.iter().any(|g| g.starts_with("cloud.mode: ")), "{got:?}");
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_path() {
        let text = format!("extra = 1\n{MINIMAL}\n[probe]\nintervall_ms = 5\n");
        let text = text.replace(
            "addresses = [\"10.0.0.100\"]",
            "addresses = [\"10.0.0.100\"]\ndatabse = [\"x\"]",
        );
        let got = issues(&text);
        assert!(got.contains(&"extra: unknown key".to_owned()), "{got:?}");
        assert!(
            got.contains(&"probe.intervall_ms: unknown key".to_owned()),
            "{got:?}"
        );
        assert!(
            got.contains(&"ag[0].databse: unknown key".to_owned()),
            "{got:?}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let got = issues(&MINIMAL.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\n[probe]\nrise = \"two\"",
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("probe.rise: "), "{got:?}");
        let got = issues(&MINIMAL.replace(
            "addresses = [\"10.0.0.100\"]",
            "addresses = [\"10.0.0.100\", 7]",
        ));
        assert!(got[0].starts_with("ag[0].addresses[1]: "), "{got:?}");
        let got = issues("interface = \"eth0\"\n");
        assert!(got[0].contains("sql"), "{got:?}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let got = issues("interface = \"eth0\"\nsql = {\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("(syntax, line 2 column"), "{got:?}");
    }

    #[test]
    fn every_meaning_problem_is_reported_at_once() {
        let text = r#"
interface = "this-name-is-far-too-long"
[sql]
user = ""
password_file = "relative/path"
trust_server_certificate = true
[probe]
interval_ms = 20
jitter_ms = 20
timeout_ms = 5
rise = 0
[http]
listen = "0.0.0.0:9477"
[[ag]]
name = "AG1"
addresses = ["10.0.0.100", "10.0.0.100/33", "127.0.0.1", "nonsense"]
port = 0
databases = [""]
[[ag]]
name = "ag1"
addresses = ["10.0.0.100"]
[[peer]]
name = "n2"
status_url = "ftp://x"
"#;
        let got = issues(text);
        for key in [
            "interface",
            "sql.user",
            "sql.password_file",
            "sql.trust_server_certificate",
            "probe.jitter_ms",
            "probe.timeout_ms",
            "probe.rise",
            "http.token_file",
            "ag[0].addresses[1]",
            "ag[0].addresses[2]",
            "ag[0].addresses[3]",
            "ag[0].port",
            "ag[0].databases[0]",
            "ag[1].name",
            "ag[1].addresses[0]",
            "peer[0].status_url",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(&format!("{key}: "))),
                "no issue for {key} in {got:#?}"
            );
        }
    }

    #[test]
    fn password_sources_are_exclusive_and_required() {
        let none = MINIMAL.replace("password_file = \"/etc/tdsvip/sql-password\"\n", "");
        assert!(issues(&none)[0].starts_with("sql.password_file: one of"));
        let both = MINIMAL.replace(
            "password_file = \"/etc/tdsvip/sql-password\"",
            "password_file = \"/p\"\npassword_env = \"PW\"",
        );
        assert!(issues(&both)[0].starts_with("sql.password_env: "));
    }

    #[test]
    fn overlay_addresses_parse_with_and_without_prefix() {
        let v6: OverlayAddress = "fd00::100".parse().unwrap();
        assert_eq!(v6.prefix, 128);
        let v4: OverlayAddress = "10.1.2.3/24".parse().unwrap();
        assert_eq!((v4.prefix, v4.to_string().as_str()), (24, "10.1.2.3/24"));
        assert!("10.1.2.3/0".parse::<OverlayAddress>().is_err());
        assert!("::1".parse::<OverlayAddress>().is_err());
        assert!("224.0.0.1".parse::<OverlayAddress>().is_err());
    }

    #[test]
    fn two_ags_need_ebpf_off_for_now() {
        let two = format!("{MINIMAL}[[ag]]\nname = \"AG2\"\naddresses = [\"10.0.0.101\"]\n");
        let got = issues(&two);
        assert!(
            got.iter().any(|g| g.starts_with("ag[1]: more than one")),
            "{got:?}"
        );
        assert!(issues(&format!("{two}[ebpf]\nenabled = false\n")).is_empty());
    }

    #[test]
    fn key_paths_read_like_toml() {
        assert_eq!(key_path("ag.0.addresses.2"), "ag[0].addresses[2]");
        assert_eq!(key_path("probe.rise"), "probe.rise");
        assert_eq!(key_path(""), ".");
    }
}
