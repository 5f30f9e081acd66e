//! What a probe reports: a classified [`Outcome`], the [`Phase`] it reached, timings, and
//! whatever the server told about itself ([`ServerInfo`]).
//!
//! The agent decides ownership of an address from these values, so every failure must land
//! in exactly one class that an operator can act on, and the serialized names (snake_case)
//! are part of the interface (logs, `--json`, `/status`). The mapping of I/O errors lives
//! here, in one place, so that all three probes classify the same error the same way:
//!
//! | error from the socket | outcome |
//! |---|---|
//! | `ECONNREFUSED` | `refused` |
//! | `ECONNRESET`, `ECONNABORTED`, `EPIPE` | `reset` (with the phase) |
//! | `EHOSTUNREACH`, `ENETUNREACH`, `ENETDOWN`, `EHOSTDOWN` | `unreachable` |
//! | `ETIMEDOUT` from the kernel (SYN or keepalive retries) | `timeout` (with the phase) |
//! | our own deadline expiring | `timeout` (with the phase) |
//! | the peer closing (EOF) before a complete answer | `protocol_error` (a TDS server must answer) |
//! | anything else (`EADDRNOTAVAIL`, `EMFILE`, `ENOBUFS`, ...) | `io_error` (with the phase and the error text): a local problem, not a verdict on the server |

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The step of a probe that was running when it ended.
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
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Phase {
    /// TCP three-way handshake.
    Connect,
    /// PRELOGIN request and its answer.
    Prelogin,
    /// LOGIN7 and the server's answer (for the login probe this includes TLS, if any).
    Login,
    /// The health query on an established session.
    Query,
}

impl Phase {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// The classified result of one probe. Only [`Outcome::Ok`] counts as a success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Everything the probe checks held: connected / answered PRELOGIN / logged in and, with
    /// an AG configured, the local replica is PRIMARY with every configured database ONLINE.
    Ok,
    /// The connection was refused (RST to our SYN): nothing listens on the port.
    Refused,
    /// The probe's deadline (or the kernel's own timer) expired during `phase`.
    Timeout { phase: Phase },
    /// The peer reset or aborted the connection during `phase`.
    Reset { phase: Phase },
    /// No route to the host or network (`EHOSTUNREACH`, `ENETUNREACH`, ...).
    Unreachable { detail: String },
    /// The server refused the login (SQL error 18456 or any other error during login).
    LoginFailed { code: Option<u32>, message: String },
    /// The server answered something that is not the TDS we expect, or closed early.
    ProtocolError { phase: Phase, detail: String },
    /// The health query itself failed with a server error (e.g. missing `VIEW SERVER STATE`).
    QueryFailed { code: u32, message: String },
    /// The local replica is not PRIMARY for the configured AG (role, or "AG not found").
    NotPrimary {
        role: Option<String>,
        detail: String,
    },
    /// A configured database is missing (`state: None`) or not ONLINE.
    DbNotOnline {
        database: String,
        state: Option<String>,
    },
    /// A local I/O error that says nothing about the server (see the module doc).
    IoError { phase: Phase, detail: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The serialized tag, for metric labels and log fields.
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// Classifies an error from a socket operation in `phase` (the table in the module doc).
    pub fn from_io(err: &io::Error, phase: Phase) -> Outcome {
        Self::from_io_parts(err.kind(), err.raw_os_error(), &err.to_string(), phase)
    }

    /// Same as [`Outcome::from_io`] for errors that lost the `io::Error` on the way (tiberius
    /// keeps only the kind and the message).
    pub fn from_io_parts(
        kind: io::ErrorKind,
        raw_os_error: Option<i32>,
        message: &str,
        phase: Phase,
    ) -> Outcome {
        use io::ErrorKind as K;
        // The raw errno is checked first: it is exact where the kind is a best effort.
        if let Some(code) = raw_os_error {
            match code {
                libc_errno::ECONNREFUSED => return Outcome::Refused,
                libc_errno::ECONNRESET | libc_errno::ECONNABORTED | libc_errno::EPIPE => {
                    return Outcome::Reset { phase };
                }
                libc_errno::EHOSTUNREACH
                | libc_errno::ENETUNREACH
                | libc_errno::ENETDOWN
                | libc_errno::EHOSTDOWN => {
                    return Outcome::Unreachable {
                        detail: message.to_owned(),
                    };
                }
                libc_errno::ETIMEDOUT => return Outcome::Timeout { phase },
                _ => {}
            }
        }
        match kind {
            K::ConnectionRefused => Outcome::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Outcome::Reset { phase },
            K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => Outcome::Unreachable {
                detail: message.to_owned(),
            },
            K::TimedOut => Outcome::Timeout { phase },
            K::UnexpectedEof => Outcome::ProtocolError {
                phase,
                detail: "connection closed by the server before a complete answer".to_owned(),
            },
            _ => Outcome::IoError {
                phase,
                detail: message.to_owned(),
            },
        }
    }
}

/// Linux errno values, spelled out so the crate needs no libc dependency for six numbers.
mod libc_errno {
    pub const EPIPE: i32 = 32;
    pub const ENETDOWN: i32 = 100;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok | Outcome::Refused => f.write_str(self.name()),
            Outcome::Timeout { phase } | Outcome::Reset { phase } => {
                write!(f, "{} ({phase})", self.name())
            }
            Outcome::Unreachable { detail } => write!(f, "unreachable: {detail}"),
            Outcome::LoginFailed { code, message } => match code {
                Some(c) => write!(f, "login_failed: error {c}: {message}"),
                None => write!(f, "login_failed: {message}"),
            },
            Outcome::ProtocolError { phase, detail } => {
                write!(f, "protocol_error ({phase}): {detail}")
            }
            Outcome::QueryFailed { code, message } => {
                write!(f, "query_failed: error {code}: {message}")
            }
            Outcome::NotPrimary { role, detail } => match role {
                Some(r) => write!(f, "not_primary: role {r}: {detail}"),
                None => write!(f, "not_primary: {detail}"),
            },
            Outcome::DbNotOnline { database, state } => match state {
                Some(s) => write!(f, "db_not_online: {database} is {s}"),
                None => write!(
                    f,
                    "db_not_online: {database} is not a database of the AG on this replica (missing, or not joined)"
                ),
            },
            Outcome::IoError { phase, detail } => write!(f, "io_error ({phase}): {detail}"),
        }
    }
}

/// One configured database and the state the server reported for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStatus {
    pub name: String,
    /// `state_desc` from `sys.databases`; `None` when it is not a database of the AG on this
    /// replica (`sys.dm_hadr_database_replica_states`): missing, or not joined.
    pub state: Option<String>,
}

/// What the server told about itself during the probe; fields stay `None` when the probe
/// did not get that far or does not ask.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// PRELOGIN VERSION (the SQL Server product version), PRELOGIN probe only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// PRELOGIN ENCRYPTION answer (`off`, `on`, `not_supported`, `required`, `other`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// `@@SERVERNAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `role_desc` of the local replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `synchronization_health_desc` of the local replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronization_health: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DbStatus>,
}

/// Durations of the phases a probe went through; a phase not reached stays `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PhaseTimes {
    #[serde(serialize_with = "ser_opt_secs")]
    pub connect: Option<Duration>,
    #[serde(serialize_with = "ser_opt_secs")]
    pub prelogin: Option<Duration>,
    /// For the login probe: PRELOGIN + LOGIN7 as tiberius performs them together.
    #[serde(serialize_with = "ser_opt_secs")]
    pub login: Option<Duration>,
    #[serde(serialize_with = "ser_opt_secs")]
    pub query: Option<Duration>,
}

/// The full report of one probe call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub target: SocketAddr,
    pub mode: crate::Mode,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall-clock start, for logs only (it can jump); serialized as Unix seconds.
    #[serde(serialize_with = "ser_system_time")]
    pub started_wall: SystemTime,
    /// Monotonic start; latency and hysteresis timestamps derive from it.
    #[serde(skip)]
    pub started: Instant,
    /// Monotonic time from start to outcome; serialized in seconds.
    #[serde(serialize_with = "ser_secs")]
    pub latency: Duration,
    pub phases: PhaseTimes,
    /// Login probe: whether this call reused the session opened by an earlier call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_reused: Option<bool>,
    pub server: ServerInfo,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn ser_system_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    // A clock set before 1970 serializes as a negative number rather than failing the log line.
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    s.serialize_f64(secs)
}

/// The clock pair every probe starts with. Monotonic time comes from tokio so that tests
/// with a paused clock see consistent timestamps; it is a plain `std` `Instant` underneath.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub(crate) mono: tokio::time::Instant,
    pub(crate) wall: SystemTime,
}

impl Start {
    pub(crate) fn now() -> Self {
        Start {
            mono: tokio::time::Instant::now(),
            wall: SystemTime::now(),
        }
    }

    pub(crate) fn finish(
        self,
        target: SocketAddr,
        mode: crate::Mode,
        outcome: Outcome,
        phases: PhaseTimes,
        server: ServerInfo,
    ) -> ProbeResult {
        ProbeResult {
            target,
            mode,
            outcome,
            started_wall: self.wall,
            started: self.mono.into_std(),
            latency: self.mono.elapsed(),
            phases,
            session_reused: None,
            server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_by_errno_first() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(Outcome::from_io(&e, Phase::Connect), Outcome::Refused);
        let e = io::Error::from_raw_os_error(104);
        assert_eq!(
            Outcome::from_io(&e, Phase::Prelogin),
            Outcome::Reset {
                phase: Phase::Prelogin
            }
        );
        let e = io::Error::from_raw_os_error(113);
        assert_eq!(Outcome::from_io(&e, Phase::Connect).name(), "unreachable");
        let e = io::Error::from_raw_os_error(101);
        assert_eq!(Outcome::from_io(&e, Phase::Connect).name(), "unreachable");
        let e = io::Error::from_raw_os_error(110);
        assert_eq!(
            Outcome::from_io(&e, Phase::Connect),
            Outcome::Timeout {
                phase: Phase::Connect
            }
        );
        // EADDRNOTAVAIL: ephemeral ports exhausted on our side.
        let e = io::Error::from_raw_os_error(99);
        assert_eq!(Outcome::from_io(&e, Phase::Connect).name(), "io_error");
    }

    #[test]
    fn io_errors_without_errno_map_by_kind() {
        let p = Phase::Login;
        let cases = [
            (io::ErrorKind::ConnectionRefused, "refused"),
            (io::ErrorKind::ConnectionReset, "reset"),
            (io::ErrorKind::BrokenPipe, "reset"),
            (io::ErrorKind::HostUnreachable, "unreachable"),
            (io::ErrorKind::TimedOut, "timeout"),
            (io::ErrorKind::UnexpectedEof, "protocol_error"),
            (io::ErrorKind::OutOfMemory, "io_error"),
        ];
        for (kind, name) in cases {
            assert_eq!(
                Outcome::from_io_parts(kind, None, "x", p).name(),
                name,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn serde_names_are_snake_case() {
        let o = Outcome::Timeout {
            phase: Phase::Prelogin,
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"outcome":"timeout","phase":"prelogin"}"#
        );
        let o = Outcome::DbNotOnline {
            database: "db1".into(),
            state: Some("RESTORING".into()),
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"outcome":"db_not_online","database":"db1","state":"RESTORING"}"#
        );
        for o in [
            Outcome::Ok,
            Outcome::Refused,
            Outcome::LoginFailed {
                code: Some(18456),
                message: "m".into(),
            },
            Outcome::NotPrimary {
                role: None,
                detail: "d".into(),
            },
        ] {
            let v: serde_json::Value = serde_json::to_value(&o).unwrap();
            assert_eq!(v["outcome"], o.name());
            let back: Outcome = serde_json::from_value(v).unwrap();
            assert_eq!(back, o);
        }
    }
}
