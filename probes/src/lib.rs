//! Health probes for a SQL Server replica, run on a schedule.
//!
//! Three probes, from cheapest to most telling, each bounded by one hard deadline per call
//! and each returning a classified [`Outcome`] with its latency:
//! - [`TcpProbe`]: a TCP handshake (the port accepts connections);
//! - [`PreloginProbe`]: a TDS PRELOGIN exchange (a TDS server answers), no credentials;
//! - [`LoginProbe`]: a kept tiberius session running the [`HealthQuery`] (the local AG
//!   replica is PRIMARY and its databases ONLINE), the only one that can justify owning the
//!   overlay IP.
//!
//! [`Schedule`] fires them at a fixed rate and [`ProbeRunner`] sends every result to the
//! agent as an [`Observation`] (the agent's controller does the rise/fall counting).
//! Nothing a network peer sends can make these probes panic, hang past their deadline, or
//! allocate more than a few KiB per answer beyond what the answer really contains.

#![forbid(unsafe_code)]

pub mod config;
pub mod health_query;
pub mod latency;
pub mod login;
pub mod outcome;
pub mod prelogin;
pub mod runner;
pub mod schedule;
pub mod tcp;
pub mod tls;

use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use config::{ConfigProblem, Encrypt, LoginConfig, Password, ProbeConfig, TlsConfig};
pub use health_query::{HealthQuery, ResultSet, bracketed, n_literal};
pub use latency::LatencySummary;
pub use login::LoginProbe;
pub use outcome::{DbStatus, Outcome, Phase, PhaseTimes, ProbeResult, ServerInfo};
pub use prelogin::PreloginProbe;
pub use runner::{Observation, ProbeRunner, RunSummary, StopReason};
pub use schedule::{Schedule, ScheduleConfig, Tick};
pub use tcp::TcpProbe;
pub use tls::TlsSession;

/// Which probe to run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Mode {
    Tcp,
    Prelogin,
    Login,
}

impl Mode {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl FromStr for Mode {
    type Err = ConfigProblem;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        config::parse_name("mode", s)
    }
}

/// Any of the three probes, for callers that pick the mode at run time.
#[derive(Debug)]
pub enum AnyProbe {
    Tcp(TcpProbe),
    Prelogin(PreloginProbe),
    Login(Box<LoginProbe>),
}

impl AnyProbe {
    /// Builds the probe for `mode`; the login probe needs `login` (its own timeout applies),
    /// the others use `probe`.
    pub fn new(
        mode: Mode,
        target: SocketAddr,
        probe: ProbeConfig,
        login: Option<LoginConfig>,
    ) -> Result<Self, ConfigProblem> {
        Ok(match mode {
            Mode::Tcp => AnyProbe::Tcp(TcpProbe::new(target, probe)?),
            Mode::Prelogin => AnyProbe::Prelogin(PreloginProbe::new(target, probe)?),
            Mode::Login => {
                let login = login.ok_or_else(|| {
                    ConfigProblem::new("login", "the login probe needs a user and a password")
                })?;
                AnyProbe::Login(Box::new(LoginProbe::new(target, login)?))
            }
        })
    }

    pub fn mode(&self) -> Mode {
        match self {
            AnyProbe::Tcp(_) => Mode::Tcp,
            AnyProbe::Prelogin(_) => Mode::Prelogin,
            AnyProbe::Login(_) => Mode::Login,
        }
    }

    pub fn target(&self) -> SocketAddr {
        match self {
            AnyProbe::Tcp(p) => p.target(),
            AnyProbe::Prelogin(p) => p.target(),
            AnyProbe::Login(p) => p.target(),
        }
    }

    /// The TLS session of the login probe's kept connection (`None` for the other probes,
    /// without a session, or when the session is not encrypted).
    pub fn tls_session(&self) -> Option<&TlsSession> {
        match self {
            AnyProbe::Login(p) => p.tls_session(),
            AnyProbe::Tcp(_) | AnyProbe::Prelogin(_) => None,
        }
    }

    /// Runs one probe; `&mut` because the login probe keeps its session between calls.
    pub async fn probe(&mut self) -> ProbeResult {
        match self {
            AnyProbe::Tcp(p) => p.probe().await,
            AnyProbe::Prelogin(p) => p.probe().await,
            AnyProbe::Login(p) => p.probe().await,
        }
    }
}

impl From<TcpProbe> for AnyProbe {
    fn from(p: TcpProbe) -> Self {
        AnyProbe::Tcp(p)
    }
}

impl From<PreloginProbe> for AnyProbe {
    fn from(p: PreloginProbe) -> Self {
        AnyProbe::Prelogin(p)
    }
}

impl From<LoginProbe> for AnyProbe {
    fn from(p: LoginProbe) -> Self {
        AnyProbe::Login(Box::new(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_parses_and_names_round_trip() {
        for m in [Mode::Tcp, Mode::Prelogin, Mode::Login] {
            assert_eq!(m.name().parse::<Mode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!("udp".parse::<Mode>().unwrap_err().key, "mode");
    }

    #[test]
    fn login_mode_needs_a_login_config() {
        let addr: SocketAddr = "127.0.0.1:1433".parse().unwrap();
        let e = AnyProbe::new(Mode::Login, addr, ProbeConfig::default(), None).unwrap_err();
        assert_eq!(e.key, "login");
        let p = AnyProbe::new(
            Mode::Login,
            addr,
            ProbeConfig::default(),
            Some(LoginConfig::new("u", "p")),
        )
        .unwrap();
        assert_eq!(p.mode(), Mode::Login);
        assert_eq!(p.target(), addr);
    }
}
