//! The checks of meaning (types are already right): every problem at once, each naming its
//! key; a value that cannot work (a probe deadline far beyond its interval, a token file
//! missing on a listener open to the network) is a problem, not a warning.

use std::collections::BTreeSet;

use super::{AgConfig, AgentConfig, ConfigProblem, OverlayAddress};

impl AgentConfig {
    /// Every problem of meaning (types are already right), each naming its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut v = Vec::new();
        if let Some(node) = &self.node
            && node.trim().is_empty()
        {
            v.push(ConfigProblem::new("node", "must not be empty"));
        }
        if !valid_interface_name(&self.interface) {
            v.push(ConfigProblem::new(
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
            v.push(ConfigProblem::new(
                "http.token_file",
                format!(
                    "required when http.listen ({}) is not a loopback address: /status and /events would be open to the network",
                    self.http.listen
                ),
            ));
        }
        v.extend(self.cluster.validate());
        self.validate_fence(&mut v);
        if let Some(cloud) = &self.cloud {
            v.extend(cloud.validate());
            if cloud.mode == tdsvip_cloud::ClaimMode::Route
                && !self
                    .ags
                    .iter()
                    .flat_map(AgConfig::overlay_addresses)
                    .any(|a| a.ip.is_ipv4())
            {
                v.push(ConfigProblem::new(
                    "cloud.mode",
                    "\"route\" moves IPv4 /32 routes, but no [[ag]] has an IPv4 address",
                ));
            }
        }
        if self.reconcile.interval_ms < 100 {
            v.push(ConfigProblem::new(
                "reconcile.interval_ms",
                format!("{} is below 100", self.reconcile.interval_ms),
            ));
        }
        v
    }

    fn validate_sql(&self, v: &mut Vec<ConfigProblem>) {
        let sql = &self.sql;
        if sql.user.is_empty() {
            v.push(ConfigProblem::new("sql.user", "must not be empty"));
        }
        match (&sql.password_file, &sql.password_env) {
            (None, None) => v.push(ConfigProblem::new(
                "sql.password_file",
                "one of sql.password_file or sql.password_env is required",
            )),
            (Some(_), Some(_)) => v.push(ConfigProblem::new(
                "sql.password_env",
                "give sql.password_file or sql.password_env, not both",
            )),
            (Some(p), None) if !p.is_absolute() => v.push(ConfigProblem::new(
                "sql.password_file",
                format!("{} is not an absolute path", p.display()),
            )),
            (None, Some(e)) if e.is_empty() || e.contains('=') => v.push(ConfigProblem::new(
                "sql.password_env",
                format!("{e:?} is not an environment variable name"),
            )),
            _ => {}
        }
        sql.validate(v);
    }

    fn validate_probe(&self, v: &mut Vec<ConfigProblem>) {
        let p = &self.probe;
        if p.interval_ms == 0 {
            v.push(ConfigProblem::new(
                "probe.interval_ms",
                "must be at least 1",
            ));
        }
        if p.timeout_ms < 10 {
            v.push(ConfigProblem::new(
                "probe.timeout_ms",
                format!("{} is below the minimum of 10", p.timeout_ms),
            ));
        }
        if p.jitter_ms >= p.interval_ms.max(1) {
            v.push(ConfigProblem::new(
                "probe.jitter_ms",
                format!(
                    "{} must be below probe.interval_ms ({})",
                    p.jitter_ms, p.interval_ms
                ),
            ));
        }
        for (key, n) in [("probe.rise", p.rise), ("probe.fall", p.fall)] {
            if n == 0 {
                v.push(ConfigProblem::new(key, "must be at least 1"));
            }
        }
        self.validate_ebpf(v);
    }

    /// A lease shorter than two probe rounds (interval + deadline each) lapses on one slow
    /// probe of a healthy primary; one longer than a minute leaves a frozen agent's node
    /// answering for the address long after a failover.
    fn validate_ebpf(&self, v: &mut Vec<ConfigProblem>) {
        let lease = self.ebpf.lease_ms;
        let rounds = 2 * (self.probe.interval_ms + self.probe.timeout_ms);
        if lease < rounds.max(100) {
            v.push(ConfigProblem::new(
                "ebpf.lease_ms",
                format!(
                    "{lease} is below {}: at least two probe rounds (2 x (probe.interval_ms + probe.timeout_ms)) and 100, or one slow probe of a healthy primary fences its address",
                    rounds.max(100)
                ),
            ));
        } else if lease > 60_000 {
            v.push(ConfigProblem::new(
                "ebpf.lease_ms",
                format!("{lease} is above 60000: a frozen agent's node would keep answering for the address that long after a failover"),
            ));
        }
        if !self.ebpf.pin_dir.is_absolute() {
            v.push(ConfigProblem::new(
                "ebpf.pin_dir",
                format!(
                    "{} is not an absolute path (a directory on a bpf filesystem, e.g. {})",
                    self.ebpf.pin_dir.display(),
                    super::DEFAULT_PIN_DIR
                ),
            ));
        }
    }

    fn validate_ags(&self, v: &mut Vec<ConfigProblem>) {
        if self.ags.is_empty() {
            v.push(ConfigProblem::new(
                "ag",
                "at least one [[ag]] table is required",
            ));
        }
        let mut names = BTreeSet::new();
        let mut seen_ips = BTreeSet::new();
        for (i, ag) in self.ags.iter().enumerate() {
            let key = |k: &str| format!("ag[{i}].{k}");
            if let Err(reason) = check_sysname(&ag.name) {
                v.push(ConfigProblem::new(key("name"), reason));
            } else if !names.insert(ag.name.to_lowercase()) {
                // SQL Server's default collation compares names case-insensitively.
                v.push(ConfigProblem::new(
                    key("name"),
                    format!("{:?} appears twice", ag.name),
                ));
            }
            if ag.addresses.is_empty() {
                v.push(ConfigProblem::new(
                    key("addresses"),
                    "at least one overlay address is required",
                ));
            }
            for (j, a) in ag.addresses.iter().enumerate() {
                match a.parse::<OverlayAddress>() {
                    Ok(addr) => {
                        if !seen_ips.insert(addr.ip) {
                            v.push(ConfigProblem::new(
                                format!("ag[{i}].addresses[{j}]"),
                                format!("{} is listed twice (an address follows one AG)", addr.ip),
                            ));
                        }
                    }
                    Err(reason) => v.push(ConfigProblem::new(
                        format!("ag[{i}].addresses[{j}]"),
                        reason,
                    )),
                }
            }
            if ag.port == 0 {
                v.push(ConfigProblem::new(key("port"), "must be 1..=65535"));
            }
            for (j, db) in ag.databases.iter().enumerate() {
                if let Err(reason) = check_sysname(db) {
                    v.push(ConfigProblem::new(
                        format!("ag[{i}].databases[{j}]"),
                        reason,
                    ));
                }
            }
        }
    }

    fn validate_peers(&self, v: &mut Vec<ConfigProblem>) {
        let mut names = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.name.trim().is_empty() {
                v.push(ConfigProblem::new(
                    format!("peer[{i}].name"),
                    "must not be empty",
                ));
            } else if !names.insert(peer.name.as_str()) || Some(&peer.name) == self.node.as_ref() {
                v.push(ConfigProblem::new(
                    format!("peer[{i}].name"),
                    format!("{:?} is not unique (or is this node's own name)", peer.name),
                ));
            }
            if let Err(reason) = crate::http::client::parse_url(&peer.status_url) {
                v.push(ConfigProblem::new(format!("peer[{i}].status_url"), reason));
            }
        }
        let poll = &self.peer_poll;
        if !(10..=60_000).contains(&poll.interval_ms) {
            v.push(ConfigProblem::new(
                "peer_poll.interval_ms",
                format!("{} is outside 10..=60000", poll.interval_ms),
            ));
        }
        if poll.timeout_ms == 0 || poll.timeout_ms > 10_000 {
            v.push(ConfigProblem::new(
                "peer_poll.timeout_ms",
                format!("{} is outside 1..=10000", poll.timeout_ms),
            ));
        }
        if poll.handover_timeout_ms == 0 || poll.handover_timeout_ms > 10_000 {
            v.push(ConfigProblem::new(
                "peer_poll.handover_timeout_ms",
                format!("{} is outside 1..=10000", poll.handover_timeout_ms),
            ));
        }
        if poll.release_wait_ms > 60_000 {
            v.push(ConfigProblem::new(
                "peer_poll.release_wait_ms",
                format!("{} is above 60000", poll.release_wait_ms),
            ));
        }
        if !(1..=10_000).contains(&self.http.events) {
            v.push(ConfigProblem::new(
                "http.events",
                format!("{} is outside 1..=10000", self.http.events),
            ));
        }
        self.validate_http_limits(v);
    }

    /// The listener's limits: a value that cannot work (a header timeout no client can
    /// meet or that lets slow clients hold the listener; more connections than a process
    /// usually has descriptors) is a problem.
    fn validate_http_limits(&self, v: &mut Vec<ConfigProblem>) {
        let http = &self.http;
        if !(100..=10_000).contains(&http.head_timeout_ms) {
            v.push(ConfigProblem::new(
                "http.head_timeout_ms",
                format!(
                    "{} is outside 100..=10000 (a request head is a few hundred bytes, sent at once)",
                    http.head_timeout_ms
                ),
            ));
        }
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&http.max_connections) {
            v.push(ConfigProblem::new(
                "http.max_connections",
                format!(
                    "{} is outside 1..={MAX_HTTP_CONNECTIONS} (each connection is a file descriptor)",
                    http.max_connections
                ),
            ));
        }
        if http.max_connections_per_source == 0
            || http.max_connections_per_source > http.max_connections
        {
            v.push(ConfigProblem::new(
                "http.max_connections_per_source",
                format!(
                    "{} is outside 1..=http.max_connections ({})",
                    http.max_connections_per_source, http.max_connections
                ),
            ));
        }
    }
}

/// The most `[http] max_connections` may be: below the unit's `LimitNOFILE=` soft limit
/// (1024 unless raised) with room for the agent's other descriptors.
const MAX_HTTP_CONNECTIONS: usize = 768;

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
