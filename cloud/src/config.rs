//! The `[cloud]` section of the agent's config file and its validation.
//!
//! The agent owns the whole file; this module owns the shape and the rules of the cloud
//! section so that `tdsvip check-config` can print every problem at once as `KEY: reason`
//! lines, each naming the full key path (`cloud.route_tables[2]`), instead of stopping at the
//! first one. Serde catches unknown keys and wrong types; `validate` catches the rest.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default per-call deadline: EC2 answers ReplaceRoute in well under a second when healthy, so a
/// call still pending after 2 s is more likely lost than slow and is better retried.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 2000;
/// Default attempts per call (first try plus three retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// Default first backoff before jitter; EC2's throttling buckets refill per second, so retrying
/// sooner than ~100 ms mostly burns tokens.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 100;
/// Default ceiling of one backoff, so that a failover never sleeps longer than this between tries.
pub const DEFAULT_BACKOFF_CAP_MS: u64 = 1000;
/// Where IMDS answers on every EC2 instance (the IPv4 endpoint).
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Only AWS is implemented; the key exists so that other providers can be added without
/// changing the meaning of existing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
}

/// How the overlay IP is made to reach this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimMode {
    /// A /32 route to this node's ENI in every configured route table (address outside the VPC).
    #[default]
    Route,
    /// A secondary private IP moved onto this node's ENI (address inside the ENI's subnet).
    SecondaryIp,
}

impl fmt::Display for ClaimMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaimMode::Route => "route",
            ClaimMode::SecondaryIp => "secondary_ip",
        })
    }
}

/// The `[cloud]` section, as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    pub provider: Provider,
    /// When absent, the SDK's standard chain decides (environment, profile, IMDS).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub route_tables: Vec<String>,
    #[serde(default)]
    pub mode: ClaimMode,
    /// When absent, read from IMDS.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// When absent, the ENI behind `interface` (or the primary one) is read from IMDS.
    #[serde(default)]
    pub eni_id: Option<String>,
    /// Linux interface whose MAC selects the ENI in IMDS; the primary interface when absent.
    #[serde(default)]
    pub interface: Option<String>,
    /// EC2 endpoint override, for VPC interface endpoints and for tests.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// IMDS endpoint override (e.g. `http://[fd00:ec2::254]` on IPv6-only instances).
    #[serde(default)]
    pub imds_endpoint: Option<String>,
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_cap_ms")]
    pub backoff_cap_ms: u64,
}

fn default_call_timeout_ms() -> u64 {
    DEFAULT_CALL_TIMEOUT_MS
}
fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_backoff_base_ms() -> u64 {
    DEFAULT_BACKOFF_BASE_MS
}
fn default_backoff_cap_ms() -> u64 {
    DEFAULT_BACKOFF_CAP_MS
}

/// One validation failure: the full key path and why the value is refused.
pub use tdsvip_config_problem::ConfigProblem;

const CALL_TIMEOUT_RANGE_MS: (u64, u64) = (50, 60_000);
const MAX_ATTEMPTS_RANGE: (u32, u32) = (1, 10);
const BACKOFF_CAP_LIMIT_MS: u64 = 60_000;
/// Linux refuses interface names of IFNAMSIZ (16) bytes or more, counting the NUL.
const MAX_INTERFACE_NAME_LEN: usize = 15;

impl CloudConfig {
    /// Refuses to build `executor` for a config in another mode (the caller picked the wrong
    /// executor: `AwsExecutor` picks by mode).
    pub(crate) fn require_mode(
        &self,
        mode: ClaimMode,
        executor: &str,
    ) -> Result<(), crate::error::CloudError> {
        if self.mode == mode {
            return Ok(());
        }
        Err(crate::error::CloudError::Config(vec![ConfigProblem {
            key: "cloud.mode".into(),
            reason: format!(
                "is {:?}; {executor} needs {:?}",
                self.mode.to_string(),
                mode.to_string()
            ),
        }]))
    }

    /// A minimal route-mode config, for programs and tests that build one in code.
    pub fn route(region: &str, route_tables: &[&str]) -> Self {
        CloudConfig {
            provider: Provider::Aws,
            region: Some(region.to_owned()),
            route_tables: route_tables.iter().map(|t| (*t).to_owned()).collect(),
            mode: ClaimMode::Route,
            instance_id: None,
            eni_id: None,
            interface: None,
            endpoint_url: None,
            imds_endpoint: None,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_cap_ms: DEFAULT_BACKOFF_CAP_MS,
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// Every problem in the section, in key order; empty when the section is usable.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Some(region) = &self.region
            && !is_region(region)
        {
            problems.push(ConfigProblem::new(
                "cloud.region",
                format!("{region:?} is not an AWS region name (expected e.g. \"us-east-1\")"),
            ));
        }
        self.validate_route_tables(&mut problems);
        self.validate_identity(&mut problems);
        for (key, value) in [
            ("cloud.endpoint_url", &self.endpoint_url),
            ("cloud.imds_endpoint", &self.imds_endpoint),
        ] {
            if let Some(url) = value
                && let Err(reason) = check_url(url, key == "cloud.endpoint_url")
            {
                problems.push(ConfigProblem::new(key, format!("{url:?}: {reason}")));
            }
        }
        self.validate_retries(&mut problems);
        problems
    }

    /// Instance, ENI and interface: how this node's ENI is named or found.
    fn validate_identity(&self, problems: &mut Vec<ConfigProblem>) {
        if let Some(id) = &self.instance_id
            && !is_resource_id(id, "i-")
        {
            problems.push(ConfigProblem::new(
                "cloud.instance_id",
                format!(
                    "{id:?} is not an instance id (expected i- followed by 8 or 17 hex digits)"
                ),
            ));
        }
        if let Some(id) = &self.eni_id
            && !is_resource_id(id, "eni-")
        {
            problems.push(ConfigProblem::new(
                "cloud.eni_id",
                format!(
                    "{id:?} is not a network interface id (expected eni- followed by 8 or 17 hex digits)"
                ),
            ));
        }
        if let Some(name) = &self.interface {
            if !is_interface_name(name) {
                problems.push(ConfigProblem::new(
                    "cloud.interface",
                    format!(
                        "{name:?} is not a Linux interface name (1 to {MAX_INTERFACE_NAME_LEN} characters, no '/', ':' or whitespace)"
                    ),
                ));
            } else if self.eni_id.is_some() {
                problems.push(ConfigProblem::new(
                    "cloud.interface",
                    "is only used to find the ENI in IMDS; cloud.eni_id is set too, so remove one of them",
                ));
            }
        }
    }

    /// Per-call timeout, attempts and backoff: the retry budget of every EC2 call.
    fn validate_retries(&self, problems: &mut Vec<ConfigProblem>) {
        let (lo, hi) = CALL_TIMEOUT_RANGE_MS;
        if !(lo..=hi).contains(&self.call_timeout_ms) {
            problems.push(ConfigProblem::new(
                "cloud.call_timeout_ms",
                format!("{} is out of range ({lo} to {hi})", self.call_timeout_ms),
            ));
        }
        let (lo, hi) = MAX_ATTEMPTS_RANGE;
        if !(lo..=hi).contains(&self.max_attempts) {
            problems.push(ConfigProblem::new(
                "cloud.max_attempts",
                format!("{} is out of range ({lo} to {hi})", self.max_attempts),
            ));
        }
        if self.backoff_base_ms == 0 {
            problems.push(ConfigProblem::new(
                "cloud.backoff_base_ms",
                "must be at least 1 (retrying without a pause only feeds throttling)",
            ));
        }
        if self.backoff_cap_ms < self.backoff_base_ms {
            problems.push(ConfigProblem::new(
                "cloud.backoff_cap_ms",
                format!(
                    "{} is below cloud.backoff_base_ms ({})",
                    self.backoff_cap_ms, self.backoff_base_ms
                ),
            ));
        } else if self.backoff_cap_ms > BACKOFF_CAP_LIMIT_MS {
            problems.push(ConfigProblem::new(
                "cloud.backoff_cap_ms",
                format!(
                    "{} is above {BACKOFF_CAP_LIMIT_MS} (a failover must not sleep that long)",
                    self.backoff_cap_ms
                ),
            ));
        }
    }

    fn validate_route_tables(&self, problems: &mut Vec<ConfigProblem>) {
        match self.mode {
            ClaimMode::Route if self.route_tables.is_empty() => problems.push(ConfigProblem::new(
                "cloud.route_tables",
                "is empty: mode \"route\" needs at least one route table id",
            )),
            ClaimMode::SecondaryIp if !self.route_tables.is_empty() => {
                problems.push(ConfigProblem::new(
                    "cloud.route_tables",
                    "is not used in mode \"secondary_ip\"; remove it or set mode = \"route\"",
                ))
            }
            _ => {}
        }
        for (index, id) in self.route_tables.iter().enumerate() {
            let key = format!("cloud.route_tables[{index}]");
            if !is_resource_id(id, "rtb-") {
                problems.push(ConfigProblem::new(
                    key,
                    format!(
                        "{id:?} is not a route table id (expected rtb- followed by 8 or 17 hex digits)"
                    ),
                ));
            } else if let Some(first) = self.route_tables[..index].iter().position(|t| t == id) {
                problems.push(ConfigProblem::new(
                    key,
                    format!("{id:?} is already listed at cloud.route_tables[{first}]"),
                ));
            }
        }
    }
}

/// EC2 ids are a prefix and 8 (older resources) or 17 lowercase hex digits.
pub(crate) fn is_resource_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`: lowercase
/// dash-separated words ending in a number.
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Accepts `scheme://host[:port][/path]`; IMDS is plain HTTP only, so HTTPS is refused there.
fn check_url(url: &str, https_allowed: bool) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if let Some(rest) = url.strip_prefix("https://") {
        if !https_allowed {
            return Err("IMDS speaks plain HTTP only (expected http://HOST[:PORT])".into());
        }
        rest
    } else {
        return Err("expected a URL starting with http:// or https://".into());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("has no host".into());
    }
    if authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err("the host part may not contain '@' or spaces".into());
    }
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((host, tail)) if !host.is_empty() => tail.strip_prefix(':'),
            _ => return Err("has an unterminated IPv6 address".into()),
        }
    } else {
        authority.split_once(':').map(|(_, port)| port)
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("port {port:?} is not a number from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
