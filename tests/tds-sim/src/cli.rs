//! The command line, shared by the binary and its tests.
//!
//! clap reports a bad argument by name and exits with status 2; value parsers here make
//! sure a bad role, database state, version or replica spec is reported the same way. The
//! AG flags (`--endpoint`, `--replica`, ...) describe what `CREATE AVAILABILITY GROUP ..
//! WITH (CLUSTER_TYPE = EXTERNAL)` would: the lab generates them for every node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::tls::{Mode, TlsSettings};
use crate::{AgConfig, AvailabilityMode, DbState, Health, Partner, Role, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tds-sim",
    version,
    about = "A TDS server that plays a SQL Server Always On replica"
)]
pub struct Args {
    /// TDS listen address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// HTTP control API address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub control: SocketAddr,
    /// What @@SERVERNAME returns.
    #[arg(long, value_name = "NAME")]
    pub server_name: String,
    /// The availability group this replica belongs to.
    #[arg(long, value_name = "NAME")]
    pub ag: String,
    /// PRIMARY, SECONDARY or RESOLVING.
    #[arg(long, value_name = "ROLE")]
    pub role: Role,
    /// SQL login accepted by the simulator, a member of sysadmin (every permission).
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Its password.
    #[arg(long, value_name = "PASSWORD")]
    pub password: String,
    /// Another SQL login, NAME:PASSWORD (the name ends at the first ':'), with no permission
    /// until the sysadmin login GRANTs one; repeat for more. `CREATE LOGIN` adds them too.
    #[arg(long = "login", value_name = "NAME:PASSWORD", value_parser = parse_login)]
    pub logins: Vec<(String, String)>,
    /// A database, NAME or NAME=STATE (ONLINE, RESTORING, RECOVERING, RECOVERY_PENDING,
    /// SUSPECT, EMERGENCY, OFFLINE); repeat for more. Starts ONLINE by default.
    #[arg(long = "database", value_name = "NAME[=STATE]", value_parser = parse_database)]
    pub databases: Vec<(String, DbState)>,
    /// HEALTHY, PARTIALLY_HEALTHY or NOT_HEALTHY.
    #[arg(long, value_name = "HEALTH", default_value = "HEALTHY")]
    pub synchronization_health: Health,
    /// Product version reported in PRELOGIN and LOGINACK, MAJOR.MINOR.BUILD.
    #[arg(long, value_name = "VERSION", default_value = "16.0.1000", value_parser = parse_version)]
    pub product_version: tds_codec::Version,
    /// This replica's database mirroring endpoint (where partners' primaries connect).
    #[arg(long, value_name = "ADDR:PORT")]
    pub endpoint: Option<SocketAddr>,
    /// A partner replica, NAME=ADDR:PORT[,MODE] with MODE SYNCHRONOUS_COMMIT (default),
    /// ASYNCHRONOUS_COMMIT or CONFIGURATION_ONLY; repeat for each partner.
    #[arg(long = "replica", value_name = "NAME=ADDR:PORT[,MODE]", value_parser = parse_partner)]
    pub partners: Vec<Partner>,
    /// This replica's AVAILABILITY_MODE.
    #[arg(long, value_name = "MODE", default_value = "SYNCHRONOUS_COMMIT", value_parser = AvailabilityMode::parse)]
    pub availability_mode: AvailabilityMode,
    /// SESSION_TIMEOUT in milliseconds (SQL Server: whole seconds, 10 by default).
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub session_timeout_ms: u64,
    /// REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT at creation.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub required_synchronized_secondaries_to_commit: u32,
    /// WRITE_LEASE_VALIDITY in seconds, as if the AG was created with it (renewed by
    /// `ALTER AVAILABILITY GROUP .. SET (WRITE_LEASE_VALIDITY = s)`).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub write_lease_validity: Option<u64>,
    /// Where the log and sequence_number are kept across restarts; a replica restarted on
    /// a dir that holds state comes back RESOLVING. Without it the log is in memory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PRELOGIN encryption, as SQL Server's settings: off (its default: TLS when the client
    /// asks, and for the login packet), force (Force Encryption), strict (TDS 8.0: TLS
    /// before any TDS byte) or not-supported (no TLS at all, ENCRYPT_NOT_SUP).
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = parse_encryption)]
    pub encryption: Mode,
    /// The server certificate (PEM, the chain with the server's certificate first); without
    /// it a self-signed one is made at start, as SQL Server does.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn parse_login(s: &str) -> Result<(String, String), String> {
    let (name, password) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not NAME:PASSWORD"))?;
    if name.is_empty() || name.chars().count() > 128 {
        return Err(format!("login name '{name}' must be 1 to 128 characters"));
    }
    Ok((name.to_string(), password.to_string()))
}

fn parse_encryption(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_partner(s: &str) -> Result<Partner, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=ADDR:PORT[,MODE]"))?;
    if name.is_empty() || name.chars().count() > 128 {
        return Err(format!("replica name '{name}' must be 1 to 128 characters"));
    }
    let (addr, mode) = match rest.split_once(',') {
        Some((a, m)) => (a, AvailabilityMode::parse(m)?),
        None => (rest, AvailabilityMode::SynchronousCommit),
    };
    let endpoint = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an ADDR:PORT endpoint"))?;
    Ok(Partner {
        name: name.to_string(),
        endpoint,
        mode,
    })
}

fn parse_database(s: &str) -> Result<(String, DbState), String> {
    let (name, state) = match s.split_once('=') {
        Some((n, st)) => (n, st.parse::<DbState>()?),
        None => (s, DbState::Online),
    };
    if name.is_empty() || name.chars().count() > 128 {
        return Err(format!(
            "database name '{name}' must be 1 to 128 characters"
        ));
    }
    Ok((name.to_string(), state))
}

fn parse_version(s: &str) -> Result<tds_codec::Version, String> {
    let parts: Vec<&str> = s.split('.').collect();
    let bad = || format!("'{s}' is not MAJOR.MINOR.BUILD (e.g. 16.0.1000)");
    if parts.len() != 3 {
        return Err(bad());
    }
    Ok(tds_codec::Version {
        major: parts[0].parse().map_err(|_| bad())?,
        minor: parts[1].parse().map_err(|_| bad())?,
        build: parts[2].parse().map_err(|_| bad())?,
        sub_build: 0,
    })
}

impl Args {
    pub fn into_config(self) -> SimConfig {
        let mut cfg = SimConfig::new(&self.server_name, &self.ag, self.role);
        cfg.listen = self.listen;
        cfg.control = Some(self.control);
        cfg.user = self.user;
        cfg.password = self.password;
        cfg.logins = self.logins;
        cfg.databases = self.databases;
        cfg.health = self.synchronization_health;
        cfg.product_version = self.product_version;
        cfg.ag_config = AgConfig {
            endpoint: self.endpoint,
            mode: self.availability_mode,
            partners: self.partners,
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            required_synchronized_secondaries_to_commit: self
                .required_synchronized_secondaries_to_commit,
            write_lease_validity_s: self.write_lease_validity,
            data_dir: self.data_dir,
            ..AgConfig::default()
        };
        cfg.tls = TlsSettings {
            mode: self.encryption,
            cert: self.tls_cert,
            key: self.tls_key,
        };
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_databases_and_versions() {
        assert_eq!(
            parse_database("db1").unwrap(),
            ("db1".into(), DbState::Online)
        );
        assert_eq!(
            parse_database("db2=restoring").unwrap(),
            ("db2".into(), DbState::Restoring)
        );
        assert!(
            parse_database("db3=sleepy")
                .unwrap_err()
                .contains("database state")
        );
        assert!(parse_database("=ONLINE").is_err());
        assert_eq!(parse_version("15.0.2000").unwrap().build, 2000);
        assert!(parse_version("15.0").is_err());
        assert!(parse_version("15.x.1").is_err());
        let p = parse_partner("SQL2=10.0.0.2:5022,async").unwrap();
        assert_eq!(p.mode, AvailabilityMode::AsynchronousCommit);
        assert_eq!(p.endpoint.port(), 5022);
        assert_eq!(
            parse_partner("SQL3=127.0.0.1:1").unwrap().mode,
            AvailabilityMode::SynchronousCommit
        );
        assert!(parse_partner("SQL2").is_err());
        assert!(parse_partner("SQL2=nowhere").is_err());
        assert!(parse_partner("SQL2=127.0.0.1:1,maybe").is_err());
        assert_eq!(
            parse_login("watcher:pa:ss").unwrap(),
            ("watcher".into(), "pa:ss".into())
        );
        assert_eq!(parse_login("w:").unwrap(), ("w".into(), String::new()));
        assert!(
            parse_login("watcher")
                .unwrap_err()
                .contains("NAME:PASSWORD")
        );
        assert!(parse_login(":pw").is_err());
    }
}
