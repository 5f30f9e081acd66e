//! Manage mode's T-SQL against the local replica: the poll that says what this agent
//! publishes (role, commit mode, `sequence_number`, synchronization) and the AG's commit
//! rule (its synchronous replicas, `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT`), and the statements an
//! HA manager of a `CLUSTER_TYPE = EXTERNAL` AG sends, as Microsoft's Pacemaker agent sends
//! them: each batch starts with `sp_set_session_context 'external_cluster'`, without which
//! SQL Server refuses a role change (47104).
//!
//! One kept session (the probe's login: same encryption, same certificate check), every
//! statement bounded by `[cluster] statement_timeout_ms`. Every column is read as text (the
//! probe's session reads no other type), so numbers are `CAST` in the query.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tdsvip_probes::{LoginConfig, LoginProbe, Outcome, ResultSet, bracketed, n_literal};

use crate::controller::promotion::{CommitMode, CommitRule, LocalPoll, MemberRole, MemberState};

/// SQL Server's refusal of a `FAILOVER` to a replica that was not synchronized.
pub(super) const NOT_SYNCHRONIZED: u32 = 41142;

/// A statement that did not succeed: SQL Server's error number when it answered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatementError {
    pub code: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "SQL Server error {code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

pub(super) struct ReplicaControl {
    session: LoginProbe,
    node: String,
    ag: String,
    validity_s: u64,
}

impl ReplicaControl {
    pub(super) fn new(
        target: SocketAddr,
        mut login: LoginConfig,
        node: &str,
        statement_timeout: Duration,
        validity_s: u64,
    ) -> Result<Self, String> {
        login.timeout = statement_timeout;
        let ag = login.ag.clone().unwrap_or_default();
        let session = LoginProbe::new(target, login).map_err(|e| e.to_string())?;
        Ok(ReplicaControl {
            session,
            node: node.to_owned(),
            ag,
            validity_s,
        })
    }

    /// What the local replica says now; a broken session is replaced at once, so that a
    /// killed server shows as `Refused` on the first poll after its death.
    pub(super) async fn poll(&mut self) -> LocalPoll {
        let sql = member_query(&self.ag);
        for _ in 0..2 {
            if !self.session.has_session() {
                let login = self.session.probe().await;
                if login.outcome == Outcome::Refused {
                    return LocalPoll::Refused;
                }
                if !self.session.has_session() {
                    return LocalPoll::Unanswered;
                }
            }
            match self.session.query_text(&sql).await {
                Ok(sets) => {
                    return match member_state(&self.node, &sets) {
                        Ok((state, commit_rule)) => LocalPoll::Up(state, commit_rule),
                        Err(why) => {
                            tracing::warn!(ag = %self.ag, %why, "manage: the replica's state query answered something unexpected");
                            LocalPoll::Unanswered
                        }
                    };
                }
                Err(Outcome::Timeout { .. }) => return LocalPoll::Unanswered,
                Err(e) => {
                    // The session is dropped; a dead server shows as Refused at the login.
                    tracing::debug!(ag = %self.ag, outcome = %e, "manage: the replica's state query failed");
                    continue;
                }
            }
        }
        LocalPoll::Unanswered
    }

    /// `FAILOVER`, sent only before `send_by()` (the leader key's proof, asked after any
    /// login: the decision may be older than the send, and the proof newer). Accepted, it
    /// says when it went out (after the login): the failover step of the timeline starts
    /// there.
    pub(super) async fn failover(
        &mut self,
        send_by: impl Fn() -> Option<Instant>,
    ) -> Result<Instant, StatementError> {
        self.log_in().await?;
        provable(send_by())?;
        let sent = Instant::now();
        self.send(&format!(
            "ALTER AVAILABILITY GROUP {} FAILOVER;",
            bracketed(&self.ag)
        ))
        .await
        .map(|()| sent)
    }

    /// `SET (WRITE_LEASE_VALIDITY = s)`, gated as [`Self::failover`].
    pub(super) async fn renew_write_lease(
        &mut self,
        send_by: impl Fn() -> Option<Instant>,
    ) -> Result<(), StatementError> {
        self.log_in().await?;
        provable(send_by())?;
        self.send(&format!(
            "ALTER AVAILABILITY GROUP {} SET (WRITE_LEASE_VALIDITY = {});",
            bracketed(&self.ag),
            self.validity_s
        ))
        .await
    }

    /// `SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = n)`, gated as [`Self::failover`]:
    /// only the leader changes what a commit waits for.
    pub(super) async fn set_required_synchronized(
        &mut self,
        value: u32,
        send_by: impl Fn() -> Option<Instant>,
    ) -> Result<(), StatementError> {
        self.log_in().await?;
        provable(send_by())?;
        self.send(&set_required_synchronized(&self.ag, value)).await
    }

    /// `OFFLINE`: fencing needs no proof.
    pub(super) async fn offline(&mut self) -> Result<(), StatementError> {
        self.log_in().await?;
        self.send(&format!(
            "ALTER AVAILABILITY GROUP {} OFFLINE;",
            bracketed(&self.ag)
        ))
        .await
    }

    /// A planned switchover's demotion of the PRIMARY: a role change, gated as
    /// [`Self::failover`].
    pub(super) async fn demote(
        &mut self,
        send_by: impl Fn() -> Option<Instant>,
    ) -> Result<(), StatementError> {
        self.log_in().await?;
        provable(send_by())?;
        self.send_set_secondary().await
    }

    /// A RESOLVING replica under another leader: no proof needed, it writes nothing.
    pub(super) async fn set_secondary(&mut self) -> Result<(), StatementError> {
        self.log_in().await?;
        self.send_set_secondary().await
    }

    async fn send_set_secondary(&mut self) -> Result<(), StatementError> {
        self.send(&format!(
            "ALTER AVAILABILITY GROUP {} SET (ROLE = SECONDARY);",
            bracketed(&self.ag)
        ))
        .await
    }

    /// Logs in unless a session is kept.
    async fn log_in(&mut self) -> Result<(), StatementError> {
        if self.session.has_session() {
            return Ok(());
        }
        let login = self.session.probe().await;
        if self.session.has_session() {
            return Ok(());
        }
        Err(StatementError {
            code: None,
            message: format!("cannot log in to the local replica: {}", login.outcome),
        })
    }

    /// Sends `statement` after the `external_cluster` context on the kept session.
    async fn send(&mut self, statement: &str) -> Result<(), StatementError> {
        let batch = format!("{EXTERNAL_CLUSTER}\n{statement}");
        match self.session.query_text(&batch).await {
            Ok(_) => Ok(()),
            Err(Outcome::QueryFailed { code, message }) => Err(StatementError {
                code: Some(code),
                message,
            }),
            Err(other) => Err(StatementError {
                code: None,
                message: other.to_string(),
            }),
        }
    }
}

/// Whether a role change or renewal may still go out: before `send_by` (none: no proof).
fn provable(send_by: Option<Instant>) -> Result<(), StatementError> {
    match send_by {
        Some(t) if Instant::now() < t => Ok(()),
        _ => Err(StatementError {
            code: None,
            message: "not sent: the leader key is no longer provably held".to_owned(),
        }),
    }
}

const EXTERNAL_CLUSTER: &str =
    "EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes';";

fn set_required_synchronized(ag: &str, value: u32) -> String {
    format!(
        "ALTER AVAILABILITY GROUP {} SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = {value});",
        bracketed(ag)
    )
}

fn member_query(ag: &str) -> String {
    let ag = n_literal(ag);
    format!(
        "SELECT ars.role_desc AS role_desc, ar.availability_mode_desc AS availability_mode_desc, CAST(ag.sequence_number AS nvarchar(20)) AS sequence_number,\n\
         CAST(ag.required_synchronized_secondaries_to_commit AS nvarchar(20)) AS required_synchronized_secondaries_to_commit\n\
         FROM sys.dm_hadr_availability_replica_states AS ars\n\
         JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n\
         JOIN sys.availability_replicas AS ar ON ar.replica_id = ars.replica_id\n\
         WHERE ars.is_local = 1 AND ag.name = {ag};\n\
         SELECT drs.synchronization_state_desc AS synchronization_state_desc\n\
         FROM sys.dm_hadr_database_replica_states AS drs\n\
         JOIN sys.availability_groups AS ag ON ag.group_id = drs.group_id\n\
         WHERE drs.is_local = 1 AND ag.name = {ag};\n\
         SELECT ar.availability_mode_desc AS availability_mode_desc\n\
         FROM sys.availability_replicas AS ar\n\
         JOIN sys.availability_groups AS ag ON ag.group_id = ar.group_id\n\
         WHERE ag.name = {ag};"
    )
}

fn column<'a>(
    set: &'a ResultSet,
    row: &'a [Option<String>],
    name: &str,
) -> Result<&'a str, String> {
    let i = set
        .columns
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("no column {name}"))?;
    row.get(i)
        .and_then(|v| v.as_deref())
        .ok_or_else(|| format!("{name} is NULL"))
}

fn parse_commit_mode(desc: &str) -> Result<CommitMode, String> {
    match desc {
        "SYNCHRONOUS_COMMIT" => Ok(CommitMode::Synchronous),
        "ASYNCHRONOUS_COMMIT" => Ok(CommitMode::Asynchronous),
        "CONFIGURATION_ONLY" => Ok(CommitMode::ConfigurationOnly),
        other => Err(format!("unknown availability_mode_desc {other:?}")),
    }
}

fn number<T: std::str::FromStr>(
    set: &ResultSet,
    row: &[Option<String>],
    name: &str,
) -> Result<T, String> {
    let text = column(set, row, name)?;
    text.parse()
        .map_err(|_| format!("{name} {text:?} is not a number in range"))
}

/// The poll's answer as the state this agent publishes, and the AG's commit rule.
fn member_state(node: &str, sets: &[ResultSet]) -> Result<(MemberState, CommitRule), String> {
    let [replica, databases, replicas] = sets else {
        return Err(format!("{} result sets, expected 3", sets.len()));
    };
    let [row] = replica.rows.as_slice() else {
        return Err(format!(
            "{} rows for the local replica (is the AG name right?)",
            replica.rows.len()
        ));
    };
    let role = match column(replica, row, "role_desc")? {
        "PRIMARY" => MemberRole::Primary,
        "SECONDARY" => MemberRole::Secondary,
        _ => MemberRole::Resolving,
    };
    let commit_mode = parse_commit_mode(column(replica, row, "availability_mode_desc")?)?;
    let sequence_number = number(replica, row, "sequence_number")?;
    let required = number(replica, row, "required_synchronized_secondaries_to_commit")?;
    let synchronized = !databases.rows.is_empty()
        && databases.rows.iter().all(|r| {
            column(databases, r, "synchronization_state_desc").is_ok_and(|s| s == "SYNCHRONIZED")
        });
    let (mut voters, mut synchronous_replicas) = (0, 0);
    for r in &replicas.rows {
        match parse_commit_mode(column(replicas, r, "availability_mode_desc")?)? {
            CommitMode::Synchronous => {
                voters += 1;
                synchronous_replicas += 1;
            }
            CommitMode::ConfigurationOnly => voters += 1,
            CommitMode::Asynchronous => {}
        }
    }
    let state = MemberState {
        node: node.to_owned(),
        role,
        commit_mode,
        sequence_number,
        synchronized,
        voters,
    };
    let commit_rule = CommitRule {
        synchronous_replicas,
        required,
    };
    Ok((state, commit_rule))
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
