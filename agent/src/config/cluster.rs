//! `[cluster]`: who promotes a secondary. In `follow` mode (the default) someone else does
//! (Pacemaker, a DBA) and the agent only follows; in `manage` mode the agents of an AG's
//! nodes run its failover through etcd (README, "Manage mode"). The timing keys below are
//! the terms of that section's safety argument, so values that break it are errors here,
//! not surprises at failover time.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tdsvip_etcd::{EtcdSettings, EtcdTls};

use super::ConfigProblem;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// Someone else promotes; the agent moves the address after SQL Server says PRIMARY.
    #[default]
    Follow,
    /// The agents promote, fence and renew SQL Server's write lease, coordinated by etcd.
    Manage,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    pub mode: ClusterMode,
    /// etcd v3 client URLs (`http://10.0.1.11:2379`); manage mode only.
    pub etcd: Vec<String>,
    /// Every key the agents write starts with this.
    pub prefix: String,
    /// TTL of each agent's etcd lease, whole seconds (etcd's own granularity).
    pub key_ttl_s: u64,
    /// How often the lease is renewed and, on the primary's node, SQL Server's write lease.
    pub renew_interval_ms: u64,
    /// Taken off every proof that the key is held (clock-rate difference, scheduling).
    pub key_margin_ms: u64,
    /// The leader rewrites its key every `renew_interval_ms` (a heartbeat) and acts only
    /// within this of the send of the last one etcd applied; the others depose it this long
    /// after they saw its last heartbeat, without waiting for its etcd lease to expire.
    pub leader_timeout_ms: u64,
    /// `WRITE_LEASE_VALIDITY` set at every renewal; the AG's own setting should match.
    pub write_lease_validity_s: u64,
    /// Deadline of each T-SQL statement the agent sends (FAILOVER, renewals, OFFLINE).
    pub statement_timeout_ms: u64,
    /// Deadline of each etcd request.
    pub etcd_timeout_ms: u64,
    /// Refused connections in a row that prove the local SQL Server is not running.
    pub confirm_down: u32,
    /// The AG's `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT`, kept by the leader; absent:
    /// computed from the synchronous replicas as Microsoft's `mssql` agent does.
    pub required_synchronized_secondaries_to_commit: Option<u32>,
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
    /// With `https://` endpoints: the CA that signed etcd's certificates.
    pub etcd_ca_file: Option<PathBuf>,
    /// A client certificate and its key, when etcd asks for one (`--client-cert-auth`).
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            mode: ClusterMode::Follow,
            etcd: Vec::new(),
            prefix: "/tdsvip".to_owned(),
            key_ttl_s: 1,
            renew_interval_ms: 100,
            key_margin_ms: 100,
            leader_timeout_ms: 600,
            write_lease_validity_s: 1,
            statement_timeout_ms: 300,
            etcd_timeout_ms: 300,
            confirm_down: 2,
            required_synchronized_secondaries_to_commit: None,
            etcd_user: None,
            etcd_password_file: None,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
        }
    }
}

impl ClusterConfig {
    pub fn key_ttl(&self) -> Duration {
        Duration::from_secs(self.key_ttl_s)
    }
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.renew_interval_ms)
    }
    pub fn key_margin(&self) -> Duration {
        Duration::from_millis(self.key_margin_ms)
    }
    pub fn leader_timeout(&self) -> Duration {
        Duration::from_millis(self.leader_timeout_ms)
    }
    pub fn write_lease_validity(&self) -> Duration {
        Duration::from_secs(self.write_lease_validity_s)
    }
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
    pub fn etcd_timeout(&self) -> Duration {
        Duration::from_millis(self.etcd_timeout_ms)
    }

    /// How to reach etcd, as the agent and `tdsvip switchover` both do: the password file is
    /// read here (so the problem names `cluster.etcd_password_file`), the connection gets one
    /// key TTL, every later call `etcd_timeout_ms`.
    pub fn etcd_settings(&self) -> Result<EtcdSettings, ConfigProblem> {
        let user = match (&self.etcd_user, &self.etcd_password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).map_err(|e| {
                    ConfigProblem::new(
                        "cluster.etcd_password_file",
                        format!("{}: {e}", file.display()),
                    )
                })?;
                Some((
                    user.clone(),
                    password.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
            _ => None,
        };
        Ok(EtcdSettings {
            endpoints: self.etcd.clone(),
            prefix: self.prefix.clone(),
            connect_timeout: self.key_ttl(),
            request_timeout: self.etcd_timeout(),
            user,
            tls: self.etcd_ca_file.as_ref().map(|ca| EtcdTls {
                ca: ca.clone(),
                cert: self.etcd_cert_file.clone(),
                key: self.etcd_key_file.clone(),
            }),
        })
    }

    /// Every problem, each naming its key under `cluster.`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut v = Vec::new();
        if self.mode == ClusterMode::Manage && self.etcd.is_empty() {
            v.push(problem("etcd", "manage mode needs at least one etcd URL"));
        }
        for (i, url) in self.etcd.iter().enumerate() {
            if let Err(why) = check_url(url) {
                v.push(problem(&format!("etcd[{i}]"), why));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.len() < 2 {
            v.push(problem(
                "prefix",
                format!("{:?} must start with '/' and not end with one", self.prefix),
            ));
        }
        self.validate_timing(&mut v);
        self.validate_commit_rule(&mut v);
        match (&self.etcd_user, &self.etcd_password_file) {
            (Some(_), None) => v.push(problem("etcd_password_file", "required with etcd_user")),
            (None, Some(_)) => v.push(problem("etcd_user", "required with etcd_password_file")),
            (_, Some(p)) if !p.is_absolute() => v.push(problem(
                "etcd_password_file",
                format!("{} is not an absolute path", p.display()),
            )),
            _ => {}
        }
        self.validate_tls(&mut v);
        v
    }

    fn validate_tls(&self, v: &mut Vec<ConfigProblem>) {
        let https = self
            .etcd
            .iter()
            .filter(|u| u.starts_with("https://"))
            .count();
        if https > 0 && https < self.etcd.len() {
            v.push(problem("etcd", "mixes http:// and https:// endpoints"));
        }
        match (https > 0, &self.etcd_ca_file) {
            (true, None) => v.push(problem("etcd_ca_file", "required with https:// endpoints")),
            (false, Some(_)) if !self.etcd.is_empty() => v.push(problem(
                "etcd_ca_file",
                "set, but the etcd endpoints are http:// (no TLS)",
            )),
            _ => {}
        }
        if self.etcd_cert_file.is_some() != self.etcd_key_file.is_some() {
            v.push(problem(
                "etcd_key_file",
                "etcd_cert_file and etcd_key_file come together",
            ));
        }
        for (key, path) in [
            ("etcd_ca_file", &self.etcd_ca_file),
            ("etcd_cert_file", &self.etcd_cert_file),
            ("etcd_key_file", &self.etcd_key_file),
        ] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_absolute()) {
                v.push(problem(
                    key,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
    }

    /// SQL Server takes 0 to 8 (an AG has at most eight secondaries); the value only means
    /// something to a leader, which follow mode never is.
    fn validate_commit_rule(&self, v: &mut Vec<ConfigProblem>) {
        let Some(n) = self.required_synchronized_secondaries_to_commit else {
            return;
        };
        let key = "required_synchronized_secondaries_to_commit";
        if n > MAX_REQUIRED_SYNCHRONIZED {
            v.push(problem(
                key,
                format!("{n} is outside SQL Server's 0 to {MAX_REQUIRED_SYNCHRONIZED}"),
            ));
        }
        if self.mode == ClusterMode::Follow {
            v.push(problem(
                key,
                "set, but mode is \"follow\": only manage mode's leader sets it",
            ));
        }
    }

    fn validate_timing(&self, v: &mut Vec<ConfigProblem>) {
        if !(1..=60).contains(&self.key_ttl_s) {
            v.push(problem(
                "key_ttl_s",
                format!("{} is outside 1 to 60", self.key_ttl_s),
            ));
            return;
        }
        let ttl = self.key_ttl_s * 1000;
        if self.key_margin_ms >= ttl / 2 {
            v.push(problem(
                "key_margin_ms",
                format!(
                    "{} ms is not below half of key_ttl_s ({ttl} ms)",
                    self.key_margin_ms
                ),
            ));
        }
        // A leader must be able to renew the write lease, provably, between two key renewals.
        let usable = ttl.saturating_sub(self.key_margin_ms);
        if self.renew_interval_ms == 0
            || self.renew_interval_ms + self.statement_timeout_ms >= usable
        {
            v.push(problem(
                "renew_interval_ms",
                format!(
                    "{} ms plus statement_timeout_ms ({} ms) must stay below key_ttl_s minus key_margin_ms ({usable} ms): otherwise no write-lease renewal can be sent while the key is provably held",
                    self.renew_interval_ms, self.statement_timeout_ms
                ),
            ));
        }
        // The same for the heartbeats, which prove the key held for `leader_timeout_ms`; past
        // the key's TTL they would prove nothing the lease does not.
        let beats = self.leader_timeout_ms.saturating_sub(self.key_margin_ms);
        let needed = self.renew_interval_ms + self.statement_timeout_ms;
        if beats <= needed || self.leader_timeout_ms > ttl {
            v.push(problem(
                "leader_timeout_ms",
                format!(
                    "{} ms minus key_margin_ms ({} ms) must be above renew_interval_ms plus statement_timeout_ms ({needed} ms), so that a write-lease renewal can be sent between heartbeats, and at most key_ttl_s ({ttl} ms)",
                    self.leader_timeout_ms, self.key_margin_ms
                ),
            ));
        }
        if !(1..=86_400).contains(&self.write_lease_validity_s) {
            v.push(problem(
                "write_lease_validity_s",
                format!(
                    "{} is outside SQL Server's 1 to 86400",
                    self.write_lease_validity_s
                ),
            ));
        }
        for (key, ms) in [
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("etcd_timeout_ms", self.etcd_timeout_ms),
        ] {
            if ms == 0 || ms >= ttl {
                v.push(problem(
                    key,
                    format!("{ms} ms must be above 0 and below key_ttl_s ({ttl} ms)"),
                ));
            }
        }
        if self.confirm_down == 0 {
            v.push(problem("confirm_down", "must be at least 1"));
        }
    }
}

/// An AG has at most eight secondary replicas.
const MAX_REQUIRED_SYNCHRONIZED: u32 = 8;

fn problem(key: &str, reason: impl Into<String>) -> ConfigProblem {
    ConfigProblem::new(format!("cluster.{key}"), reason)
}

/// `http://host:port` or `https://host:port`, nothing after the port.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{url:?} must be scheme://host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manage() -> ClusterConfig {
        ClusterConfig {
            mode: ClusterMode::Manage,
            etcd: vec!["http://10.0.0.1:2379".into()],
            ..ClusterConfig::default()
        }
    }

    fn keys(c: &ClusterConfig) -> Vec<String> {
        c.validate().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn the_defaults_hold_in_both_modes() {
        assert!(ClusterConfig::default().validate().is_empty());
        assert!(manage().validate().is_empty());
    }

    #[test]
    fn manage_mode_needs_etcd_and_well_formed_urls() {
        let mut c = manage();
        c.etcd.clear();
        assert_eq!(keys(&c), ["cluster.etcd"]);
        c.etcd = vec![
            "10.0.0.1:2379".into(),
            "http://x:0".into(),
            "http://x:2379".into(),
        ];
        assert_eq!(keys(&c), ["cluster.etcd[0]", "cluster.etcd[1]"]);
    }

    #[test]
    fn timing_that_breaks_the_argument_is_refused() {
        let mut c = manage();
        c.renew_interval_ms = 700;
        assert_eq!(
            keys(&c),
            ["cluster.renew_interval_ms", "cluster.leader_timeout_ms"]
        );
        let mut c = manage();
        c.key_ttl_s = 0;
        assert_eq!(keys(&c), ["cluster.key_ttl_s"]);
        let mut c = manage();
        c.statement_timeout_ms = 1000;
        assert!(keys(&c).contains(&"cluster.statement_timeout_ms".to_owned()));
        let mut c = manage();
        c.write_lease_validity_s = 0;
        assert_eq!(keys(&c), ["cluster.write_lease_validity_s"]);
    }

    #[test]
    fn a_leader_timeout_that_leaves_no_room_for_a_renewal_or_outlives_the_key_is_refused() {
        let mut c = manage();
        // 100 ms between heartbeats, 300 ms for a statement, 100 ms of margin: 500 is the
        // least that leaves a renewal any moment to be sent in.
        c.leader_timeout_ms = 500;
        assert_eq!(keys(&c), ["cluster.leader_timeout_ms"]);
        c.leader_timeout_ms = 501;
        assert!(keys(&c).is_empty());
        c.leader_timeout_ms = 1001;
        assert_eq!(keys(&c), ["cluster.leader_timeout_ms"]);
        c.leader_timeout_ms = 1000;
        assert!(keys(&c).is_empty());
    }

    #[test]
    fn the_commit_rule_is_sql_servers_range_and_manage_modes_only() {
        let mut c = manage();
        c.required_synchronized_secondaries_to_commit = Some(0);
        assert!(keys(&c).is_empty());
        c.required_synchronized_secondaries_to_commit = Some(8);
        assert!(keys(&c).is_empty());
        c.required_synchronized_secondaries_to_commit = Some(9);
        assert_eq!(
            keys(&c),
            ["cluster.required_synchronized_secondaries_to_commit"]
        );
        let follow = ClusterConfig {
            required_synchronized_secondaries_to_commit: Some(1),
            ..ClusterConfig::default()
        };
        assert_eq!(
            keys(&follow),
            ["cluster.required_synchronized_secondaries_to_commit"]
        );
    }

    #[test]
    fn tls_needs_a_ca_and_whole_pairs() {
        let mut c = manage();
        c.etcd = vec!["https://10.0.0.1:2379".into()];
        assert_eq!(keys(&c), ["cluster.etcd_ca_file"]);
        c.etcd_ca_file = Some("/etc/tdsvip/etcd-ca.pem".into());
        assert!(keys(&c).is_empty());
        c.etcd_cert_file = Some("/etc/tdsvip/etcd.pem".into());
        assert_eq!(keys(&c), ["cluster.etcd_key_file"]);
        c.etcd.push("http://10.0.0.2:2379".into());
        assert!(keys(&c).contains(&"cluster.etcd".to_owned()));
    }

    #[test]
    fn etcd_credentials_come_in_pairs() {
        let mut c = manage();
        c.etcd_user = Some("tdsvip".into());
        assert_eq!(keys(&c), ["cluster.etcd_password_file"]);
        c.etcd_password_file = Some("relative".into());
        assert_eq!(keys(&c), ["cluster.etcd_password_file"]);
    }

    #[test]
    fn etcd_settings_read_the_password_file_and_name_it_when_unreadable() {
        let mut c = manage();
        c.prefix = "/t".into();
        c.etcd_timeout_ms = 250;
        let settings = c.etcd_settings().unwrap();
        assert_eq!(settings.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(settings.prefix, "/t");
        assert_eq!(settings.connect_timeout, Duration::from_secs(1));
        assert_eq!(settings.request_timeout, Duration::from_millis(250));
        assert_eq!((settings.user, settings.tls), (None, None));

        let file = std::env::temp_dir().join(format!("tdsvip-etcd-pw-{}", std::process::id()));
        std::fs::write(&file, "s3cret\r\n").unwrap();
        c.etcd_user = Some("tdsvip".into());
        c.etcd_password_file = Some(file.clone());
        let user = c.etcd_settings().unwrap().user;
        std::fs::remove_file(&file).unwrap();
        assert_eq!(user, Some(("tdsvip".to_owned(), "s3cret".to_owned())));
        let problem = c.etcd_settings().unwrap_err();
        assert_eq!(problem.key, "cluster.etcd_password_file");
        assert!(
            problem.reason.contains(&file.display().to_string()),
            "{problem}"
        );
    }
}
