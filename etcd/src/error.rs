//! Every way a call to etcd can fail, each message naming the endpoints and what was being done,
//! so that a line in the agent's log says which cluster refused what. The etcd-client crate's
//! own errors are sorted here into what the agent can act on: not reachable in time, refused
//! credentials, an error answered by etcd, an answer that makes no sense, a lease that is gone.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::Error as ClientError;
use tonic::Code;

/// What went wrong talking to etcd; see the module comment.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd settings: {reason}")]
    Settings { reason: String },

    #[error("etcd TLS: cannot read the {role} file {}: {source}", path.display())]
    TlsFile {
        role: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("etcd {what} {name:?} cannot be used in a key: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },

    #[error("etcd lease TTL {ttl:?} refused: etcd TTLs are whole seconds, at least 1 s")]
    InvalidTtl { ttl: Duration },

    #[error("etcd at {endpoints}: {operation}: no answer within {within:?}")]
    NoAnswer {
        endpoints: String,
        operation: String,
        within: Duration,
    },

    #[error("etcd at {endpoints}: {operation}: cannot reach etcd: {detail}")]
    Unreachable {
        endpoints: String,
        operation: String,
        detail: String,
    },

    #[error("etcd at {endpoints}: authentication of user {user:?} refused: {detail}")]
    AuthenticationRefused {
        endpoints: String,
        user: String,
        detail: String,
    },

    #[error("etcd at {endpoints}: {operation}: etcd answered an error: {detail}")]
    Answered {
        endpoints: String,
        operation: String,
        detail: String,
    },

    #[error("etcd at {endpoints}: {operation}: unexpected answer: {detail}")]
    UnexpectedAnswer {
        endpoints: String,
        operation: String,
        detail: String,
    },

    #[error("etcd at {endpoints}: lease {lease_id:x} has expired or was revoked")]
    LeaseExpired { endpoints: String, lease_id: i64 },

    #[error("etcd at {endpoints}: the answering member knows no cluster leader")]
    NoClusterLeader { endpoints: String },

    #[error(
        "etcd at {endpoints}: watch of {prefix}: the revisions it asked for were compacted \
         (oldest kept: {compact_revision}); read the current state and watch from there"
    )]
    WatchCompacted {
        endpoints: String,
        prefix: String,
        compact_revision: i64,
    },

    #[error("etcd at {endpoints}: watch of {prefix} ended: {reason}")]
    WatchEnded {
        endpoints: String,
        prefix: String,
        reason: String,
    },
}

impl EtcdError {
    /// The member asked gave no answer in time or could not be reached (the client then
    /// talks to the next one); an error it answered says nothing against it.
    pub fn member_unreachable(&self) -> bool {
        matches!(
            self,
            EtcdError::NoAnswer { .. } | EtcdError::Unreachable { .. }
        )
    }
}

/// Who is being talked to, for the messages: the endpoints as configured and the user.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) endpoints: String,
    pub(crate) user: Option<String>,
}

impl Target {
    pub(crate) fn new(endpoints: &[String], user: Option<&str>) -> Target {
        Target {
            endpoints: endpoints.join(","),
            user: user.map(str::to_owned),
        }
    }

    pub(crate) fn no_answer(&self, operation: &str, within: Duration) -> EtcdError {
        EtcdError::NoAnswer {
            endpoints: self.endpoints.clone(),
            operation: operation.to_owned(),
            within,
        }
    }

    pub(crate) fn unexpected(&self, operation: &str, detail: impl Into<String>) -> EtcdError {
        EtcdError::UnexpectedAnswer {
            endpoints: self.endpoints.clone(),
            operation: operation.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn lease_expired(&self, lease_id: i64) -> EtcdError {
        EtcdError::LeaseExpired {
            endpoints: self.endpoints.clone(),
            lease_id,
        }
    }

    /// A failure of etcd-client while doing `operation`.
    pub(crate) fn failure(&self, operation: &str, error: ClientError) -> EtcdError {
        let endpoints = self.endpoints.clone();
        let operation = operation.to_owned();
        match error {
            ClientError::GRpcStatus(status) => self.status_failure(operation, &status),
            ClientError::TransportError(e) => EtcdError::Unreachable {
                endpoints,
                operation,
                detail: with_sources(&e),
            },
            ClientError::InvalidArgs(reason) => EtcdError::Settings { reason },
            ClientError::InvalidUri(e) => EtcdError::Settings {
                reason: format!("endpoint {endpoints}: {e}"),
            },
            // Stream and encoding troubles inside etcd-client: nothing etcd said, nothing to retry
            // differently from an answer that makes no sense.
            other => EtcdError::UnexpectedAnswer {
                endpoints,
                operation,
                detail: format!("etcd-client: {}", with_sources(&other)),
            },
        }
    }

    fn status_failure(&self, operation: String, status: &tonic::Status) -> EtcdError {
        let endpoints = self.endpoints.clone();
        let detail = status_detail(status);
        if connection_failed(status) {
            EtcdError::Unreachable {
                endpoints,
                operation,
                detail,
            }
        } else if status.code() == Code::Unauthenticated {
            self.authentication_refused(detail)
        } else {
            EtcdError::Answered {
                endpoints,
                operation,
                detail,
            }
        }
    }

    /// A failure of the authentication that etcd-client runs while connecting: any answer etcd
    /// gave means it refused the credentials (etcd 3.4 answers a wrong password with
    /// InvalidArgument, and credentials sent to a cluster without auth with FailedPrecondition).
    pub(crate) fn authentication_failure(&self, error: ClientError) -> EtcdError {
        match error {
            ClientError::GRpcStatus(status) if !connection_failed(&status) => {
                self.authentication_refused(status_detail(&status))
            }
            other => self.failure("authenticate", other),
        }
    }

    fn authentication_refused(&self, detail: String) -> EtcdError {
        EtcdError::AuthenticationRefused {
            endpoints: self.endpoints.clone(),
            user: self.user.clone().unwrap_or_default(),
            detail,
        }
    }
}

/// A status made on this side from a connection failure (refused, reset, TLS alert, broken
/// pipe) carries that failure as its source; one etcd answered carries none. Unavailable is
/// also etcd's answer when it has no leader: the cluster cannot be reached either way.
fn connection_failed(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable || status.source().is_some()
}

fn status_detail(status: &tonic::Status) -> String {
    let mut detail = format!("{:?}: {}", status.code(), status.message());
    append_sources(&mut detail, status);
    detail
}

/// The error and its causes, `: `-separated (tonic's transport errors say little on their own:
/// "transport error", with the refused connection in the source).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    append_sources(&mut text, error);
    text
}

fn append_sources(text: &mut String, error: &dyn std::error::Error) {
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
}
