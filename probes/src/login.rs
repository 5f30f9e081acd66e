//! The login probe: a persistent tiberius session that runs the health query once per call.
//!
//! Logging in costs a PRELOGIN, a LOGIN7 and (in SQL Server) an entry in the login audit; at
//! 20-50 probes a second that would be most of the probe's cost and a flood in the server's
//! log. So the probe logs in once and keeps the session; every call runs one query on it.
//! After any failure of the session (timeout, reset, protocol or server error) the session
//! is dropped, because its state is unknown (tiberius may be mid-response), and the next
//! call logs in again. `not_primary` and `db_not_online` are answers, not failures: the
//! session stays, so the next call sees a role change on the same connection.
//!
//! The TCP connection is ours (see `tcp`: NODELAY, SO_LINGER 0, a timed connect phase), and
//! so are the PRELOGIN and the TLS handshake (see `tls`): tiberius, built without TLS, runs
//! LOGIN7 and the queries on the stream `tls::session` hands it. A failure before LOGIN7 is
//! reported in phase `prelogin`, the TLS handshake and LOGIN7 in `login`. tiberius's own
//! 15 s / 30 s timeouts are switched off; one deadline per call bounds every phase instead.

use std::net::SocketAddr;

use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel};
use tokio::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::Mode;
use crate::config::{ConfigProblem, LoginConfig};
use crate::health_query::{HealthQuery, ResultSet};
use crate::outcome::{Outcome, Phase, PhaseTimes, ProbeResult, ServerInfo, Start};
use crate::prelogin::encryption_name;
use crate::tls::session::{SessionStream, open};
use crate::tls::{TlsClient, TlsSession};

type Session = Client<Compat<SessionStream>>;

/// A new session and what the operator is told about its protection.
struct LoggedIn {
    client: Session,
    tls: Option<TlsSession>,
    server_encryption: String,
}

/// Logs in once, then runs the health query on the kept session at every call.
pub struct LoginProbe {
    target: SocketAddr,
    config: LoginConfig,
    query: HealthQuery,
    tls: TlsClient,
    session: Option<Session>,
    /// The TLS session of the kept connection (`None`: not encrypted, or no session).
    session_tls: Option<TlsSession>,
    /// The server's PRELOGIN ENCRYPTION answer on the kept connection.
    server_encryption: Option<String>,
    logins: u64,
}

impl std::fmt::Debug for LoginProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginProbe")
            .field("target", &self.target)
            .field("config", &self.config)
            .field("connected", &self.session.is_some())
            .field("logins", &self.logins)
            .finish()
    }
}

impl LoginProbe {
    pub fn new(target: SocketAddr, config: LoginConfig) -> Result<Self, ConfigProblem> {
        config.validate()?;
        let query = HealthQuery::new(config.ag.as_deref(), &config.databases);
        let tls = TlsClient::new(&config.tls, target.ip())?;
        Ok(LoginProbe {
            target,
            config,
            query,
            tls,
            session: None,
            session_tls: None,
            server_encryption: None,
            logins: 0,
        })
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The health query this probe runs.
    pub fn health_query(&self) -> &HealthQuery {
        &self.query
    }

    /// How many logins this probe has completed (1 while a session is kept healthy).
    pub fn logins(&self) -> u64 {
        self.logins
    }

    /// Whether a logged-in session is currently kept.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Drops the kept session (the next call logs in again).
    pub fn disconnect(&mut self) {
        self.session = None;
        self.session_tls = None;
    }

    /// The TLS session of the kept connection: `None` while no session is kept, or when it
    /// is not encrypted at all.
    pub fn tls_session(&self) -> Option<&TlsSession> {
        self.session.as_ref().and(self.session_tls.as_ref())
    }

    /// Runs `sql` on the kept session (log in with [`Self::probe`] first), every column
    /// read as text: for one-off checks such as `check-config --online`, bounded by the
    /// probe's timeout. A failure drops the session like a failed probe.
    pub async fn query_text(&mut self, sql: &str) -> Result<Vec<ResultSet>, Outcome> {
        let Some(session) = self.session.as_mut() else {
            return Err(Outcome::ProtocolError {
                phase: Phase::Query,
                detail: "no session: the login did not succeed".to_owned(),
            });
        };
        let answer = tokio::time::timeout(self.config.timeout, async {
            session.simple_query(sql).await?.into_results().await
        })
        .await;
        let result = match answer {
            Err(_) => Err(Outcome::Timeout {
                phase: Phase::Query,
            }),
            Ok(Err(e)) => Err(query_error(e)),
            Ok(Ok(rows)) => to_result_sets(rows),
        };
        if result.is_err() {
            self.disconnect();
        }
        result
    }

    pub async fn probe(&mut self) -> ProbeResult {
        let start = Start::now();
        let deadline = start.mono + self.config.timeout;
        let mut phases = PhaseTimes::default();
        let reused = self.session.is_some();
        let (outcome, server) = match self.run(deadline, start, &mut phases).await {
            Ok(pair) => pair,
            Err(o) => {
                // The session's state is unknown after any failure: start over next time.
                if self.session.take().is_some() {
                    tracing::debug!(target = %self.target, outcome = %o, "dropped the session");
                }
                (o, ServerInfo::default())
            }
        };
        let mut server = server;
        if self.session.is_some() {
            server.encryption.clone_from(&self.server_encryption);
        }
        let mut result = start.finish(self.target, Mode::Login, outcome, phases, server);
        result.session_reused = Some(reused);
        result
    }

    async fn run(
        &mut self,
        deadline: Instant,
        start: Start,
        phases: &mut PhaseTimes,
    ) -> Result<(Outcome, ServerInfo), Outcome> {
        let session = match &mut self.session {
            Some(s) => s,
            None => {
                let new = self.login(deadline, start, phases).await?;
                self.logins += 1;
                tracing::debug!(target = %self.target, logins = self.logins, encryption = %new.server_encryption, tls = new.tls.is_some(), "logged in");
                self.session_tls = new.tls;
                self.server_encryption = Some(new.server_encryption);
                self.session.insert(new.client)
            }
        };
        let began = Instant::now();
        let answer = tokio::time::timeout_at(deadline, async {
            let stream = session.simple_query(self.query.sql()).await?;
            stream.into_results().await
        })
        .await;
        phases.query = Some(began.elapsed());
        let rows = match answer {
            Err(_) => {
                return Err(Outcome::Timeout {
                    phase: Phase::Query,
                });
            }
            Ok(Err(e)) => return Err(query_error(e)),
            Ok(Ok(rows)) => rows,
        };
        let sets = to_result_sets(rows)?;
        let (outcome, info) = self.query.interpret(&sets);
        if let Outcome::ProtocolError { .. } = outcome {
            return Err(outcome);
        }
        Ok((outcome, info))
    }

    async fn login(
        &self,
        deadline: Instant,
        start: Start,
        phases: &mut PhaseTimes,
    ) -> Result<LoggedIn, Outcome> {
        let connected = crate::tcp::connect(self.target, deadline).await;
        phases.connect = Some(start.mono.elapsed());
        let tcp = connected?;
        let began = Instant::now();
        let opened = tokio::time::timeout_at(deadline, open(tcp, &self.tls)).await;
        let opened = match opened {
            Err(_) => {
                phases.prelogin = Some(began.elapsed());
                return Err(Outcome::Timeout {
                    phase: Phase::Prelogin,
                });
            }
            Ok(r) => {
                phases.prelogin = Some(began.elapsed());
                r?
            }
        };
        let began = Instant::now();
        let res = tokio::time::timeout_at(
            deadline,
            Client::connect(self.tiberius_config(), opened.stream.compat()),
        )
        .await;
        phases.login = Some(began.elapsed());
        match res {
            Err(_) => Err(Outcome::Timeout {
                phase: Phase::Login,
            }),
            Ok(Err(e)) => Err(login_error(e, Phase::Login)),
            Ok(Ok(client)) => Ok(LoggedIn {
                client,
                tls: opened.tls,
                server_encryption: encryption_name(opened.server_encryption),
            }),
        }
    }

    fn tiberius_config(&self) -> Config {
        let mut c = Config::new();
        c.host(self.target.ip());
        c.port(self.target.port());
        c.authentication(AuthMethod::sql_server(
            &self.config.user,
            self.config.password.expose(),
        ));
        c.application_name(&self.config.application_name);
        // Our deadline bounds every phase; tiberius's own timers would only add a second,
        // much longer, clock (and a timer thread).
        c.handshake_timeout(None);
        c.command_timeout(None);
        // TLS, if any, is below the stream tiberius gets (`tls::session`): for tiberius the
        // server answered NOT_SUP and it must not start TLS itself.
        c.encryption(EncryptionLevel::NotSupported);
        c
    }
}

/// Classifies an error during PRELOGIN/LOGIN7.
fn login_error(e: tiberius::error::Error, phase: Phase) -> Outcome {
    use tiberius::error::Error as E;
    match e {
        E::Server(t) => Outcome::LoginFailed {
            code: Some(t.code()),
            message: t.message().to_owned(),
        },
        E::Io { kind, message } => io_error(kind, &message, phase),
        E::Tls(m) => Outcome::LoginFailed {
            code: None,
            message: format!("TLS: {m}"),
        },
        E::Routing { host, port } => Outcome::LoginFailed {
            code: None,
            message: format!("server redirected the login to {host}:{port}"),
        },
        other => Outcome::ProtocolError {
            phase,
            detail: other.to_string(),
        },
    }
}

/// Classifies an error while running the health query on an established session.
fn query_error(e: tiberius::error::Error) -> Outcome {
    use tiberius::error::Error as E;
    match e {
        E::Server(t) => Outcome::QueryFailed {
            code: t.code(),
            message: t.message().to_owned(),
        },
        E::Io { kind, message } => io_error(kind, &message, Phase::Query),
        other => Outcome::ProtocolError {
            phase: Phase::Query,
            detail: other.to_string(),
        },
    }
}

/// tiberius keeps only the kind and text of an I/O error. Its packet decoder reports a close
/// in the middle of a packet as an `Other` error with this text; that is the peer closing
/// early, like `UnexpectedEof`, not a local I/O problem.
fn io_error(kind: std::io::ErrorKind, message: &str, phase: Phase) -> Outcome {
    if kind == std::io::ErrorKind::Other && message.contains("bytes remaining on stream") {
        return Outcome::ProtocolError {
            phase,
            detail: "connection closed by the server in the middle of a packet".to_owned(),
        };
    }
    Outcome::from_io_parts(kind, None, message, phase)
}

/// Converts tiberius rows into text result sets; every column of the health query is a
/// string type, so anything else is a protocol error.
fn to_result_sets(sets: Vec<Vec<tiberius::Row>>) -> Result<Vec<ResultSet>, Outcome> {
    sets.into_iter()
        .map(|rows| {
            let columns = rows
                .first()
                .map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect())
                .unwrap_or_default();
            let rows = rows
                .iter()
                .map(|row| {
                    row.cells()
                        .map(|(col, data)| match data {
                            ColumnData::String(s) => Ok(s.as_deref().map(str::to_owned)),
                            _ => Err(Outcome::ProtocolError {
                                phase: Phase::Query,
                                detail: format!(
                                    "column {:?} has type {:?}, expected a string",
                                    col.name(),
                                    col.column_type()
                                ),
                            }),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ResultSet { columns, rows })
        })
        .collect()
}
