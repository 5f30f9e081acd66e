//! `[sql]`: how the agent logs in to SQL Server, and the one place that turns it into the
//! probes' [`LoginConfig`], so that the agent's probes, `check-config` and `tdsvip probe`
//! apply the same encryption rules. Encrypted and verified by default (`mandatory`), as
//! Microsoft's drivers are; a password crosses the network in clear only when
//! `allow_cleartext_login` says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tdsvip_probes::{ConfigProblem, Encrypt, LoginConfig, LoginProbe, Password, TlsConfig};

use super::AgentConfig;

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
    /// `strict` (TDS 8), `mandatory` (the default), `optional` or `off`.
    #[serde(default)]
    pub encrypt: Encrypt,
    /// PEM CA certificates to verify the server certificate against, instead of the
    /// system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the server certificate must carry; without it, the probed IP address.
    #[serde(default)]
    pub host_name_in_certificate: Option<String>,
    /// Accept any server certificate (lab only; refused with `strict`; warned at start).
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// Let the password cross the network in clear (`off`, or `optional` against a server
    /// without TLS).
    #[serde(default)]
    pub allow_cleartext_login: bool,
    /// Replaced by `encrypt`; kept only to say so instead of "unknown key".
    #[serde(default)]
    pub tls: Option<toml::Value>,
}

fn default_sql_endpoint() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1433))
}

impl SqlConfig {
    /// The probes' view of the `sql.*` TLS keys.
    pub fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            encrypt: self.encrypt,
            ca_file: self.ca_file.clone(),
            host_name_in_certificate: self.host_name_in_certificate.clone(),
            trust_server_certificate: self.trust_server_certificate,
            allow_cleartext_login: self.allow_cleartext_login,
        }
    }

    /// What an operator should hear at start even when the config is accepted.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.trust_server_certificate {
            w.push("sql.trust_server_certificate = true: the SQL Server certificate is NOT verified (anyone on the path can pose as the server); use sql.ca_file instead".to_owned());
        }
        if self.allow_cleartext_login && self.encrypt != Encrypt::Mandatory {
            w.push(format!(
                "sql.allow_cleartext_login = true with sql.encrypt = \"{}\": the SQL password may cross the network in clear",
                self.encrypt
            ));
        }
        w
    }

    pub(super) fn validate(&self, v: &mut Vec<ConfigProblem>) {
        if self.tls.is_some() {
            v.push(ConfigProblem::new(
                "sql.tls",
                "replaced by sql.encrypt = \"strict\" | \"mandatory\" | \"optional\" | \"off\" (\"required\" is now \"mandatory\", the default)",
            ));
        }
        if let Err(p) = self.tls_config().validate() {
            v.push(ConfigProblem::new(format!("sql.{}", p.key), p.reason));
        }
    }
}

impl AgentConfig {
    /// The login probe's settings for AG `ag` (used for the local replica, the peers'
    /// replicas and the overlay IP alike).
    pub fn login_config(&self, password: &Password, ag: &str, databases: &[String]) -> LoginConfig {
        let mut login = LoginConfig::new(self.sql.user.clone(), password.clone());
        login.ag = Some(ag.to_owned());
        login.databases = databases.to_vec();
        login.timeout = Duration::from_millis(self.probe.timeout_ms);
        login.tls = self.sql.tls_config();
        login
    }

    /// Every SQL endpoint the agent logs in to, with the AG each login serves.
    fn login_targets(&self) -> Vec<(SocketAddr, &super::AgConfig)> {
        let mut out = Vec::new();
        for ag in &self.ags {
            out.push((self.sql.endpoint, ag));
            for a in ag.overlay_addresses() {
                out.push((SocketAddr::new(a.ip, ag.port), ag));
            }
            for peer in &self.peers {
                if let Some(e) = peer.sql_endpoint {
                    out.push((e, ag));
                }
            }
        }
        out
    }

    /// What building the agent's login probes would refuse (the password's length, the CA
    /// file, ...), each named by its `sql.*` key: the part of the start-up checks that
    /// needs the password and the files the config names.
    pub fn login_problems(&self, password: &Password) -> Vec<ConfigProblem> {
        let mut v: Vec<ConfigProblem> = Vec::new();
        for (target, ag) in self.login_targets() {
            let login = self.login_config(password, &ag.name, &ag.databases);
            if let Err(p) = LoginProbe::new(target, login) {
                let key = match p.key.as_str() {
                    "ag" | "databases" => format!("ag.{}", p.key),
                    "timeout" => "probe.timeout_ms".to_owned(),
                    other => format!("sql.{other}"),
                };
                let problem = ConfigProblem::new(key, p.reason);
                if !v.contains(&problem) {
                    v.push(problem);
                }
            }
        }
        v
    }
}
