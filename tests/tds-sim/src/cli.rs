//! The command line, shared by the binary and its tests.
//!
//! clap reports a bad argument by name and exits with status 2; value parsers here make
//! sure a bad role, database state or version is reported the same way.

use std::net::SocketAddr;

use clap::Parser;

use crate::{DbState, Health, Role, SimConfig};

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
    /// SQL login accepted by the simulator.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Its password.
    #[arg(long, value_name = "PASSWORD")]
    pub password: String,
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
        cfg.databases = self.databases;
        cfg.health = self.synchronization_health;
        cfg.product_version = self.product_version;
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
    }
}
