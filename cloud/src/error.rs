//! The errors of the cloud executor.
//!
//! Every message names the operation, the resource (route table, ENI) and, when AWS answered,
//! AWS's error code, because the operator's next step depends on exactly those: a wrong table
//! id is fixed in the config, `UnauthorizedOperation` in the IAM policy, throttling by waiting.

use std::fmt;

use crate::config::ConfigProblem;
use crate::report::{CallResult, Operation};

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    #[error("invalid [cloud] section: {}", ProblemList(.0))]
    Config(Vec<ConfigProblem>),

    /// AWS refused the call in a way that retrying cannot change.
    #[error(
        "{operation} {resource}: AWS error {code}: {message} ({})",
        if *.config_problem { "a configuration problem, not retried" } else { "not retried" }
    )]
    Rejected {
        operation: Operation,
        resource: String,
        code: String,
        message: String,
        config_problem: bool,
    },

    /// Every attempt failed in a way that might have healed (throttling, 5xx, timeouts,
    /// connection errors), or the call's time budget ran out.
    #[error(
        "{operation} {resource}: gave up after {attempts} attempt(s) ({result}{}): {last}",
        .code.as_deref().map(|c| format!(", AWS error {c}")).unwrap_or_default()
    )]
    GaveUp {
        operation: Operation,
        resource: String,
        attempts: u32,
        result: CallResult,
        code: Option<String>,
        last: String,
    },

    #[error(
        "source/destination check is enabled on {eni}: EC2 drops traffic to the overlay IP \
         arriving at this ENI; disable it with \
         `aws ec2 modify-network-interface-attribute --network-interface-id {eni} --no-source-dest-check`"
    )]
    SourceDestCheckEnabled { eni: String },

    #[error("instance metadata (IMDSv2) {path}: {detail}")]
    Imds { path: String, detail: String },

    #[error(
        "no AWS region: set cloud.region, or AWS_REGION, or run where IMDS can tell the region"
    )]
    NoRegion,

    /// AWS answered successfully but not with what the operation needs.
    #[error("{operation} {resource}: {detail}")]
    Unexpected {
        operation: Operation,
        resource: String,
        detail: String,
    },
}

impl CloudError {
    /// AWS's error code when AWS answered with one (for reports and metrics labels).
    pub fn code(&self) -> Option<&str> {
        match self {
            CloudError::Rejected { code, .. } => Some(code),
            CloudError::GaveUp { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// True when the fix is in the config, IAM policy or instance setup rather than in time:
    /// the agent's `routes` command exits 2 on these.
    pub fn is_config_problem(&self) -> bool {
        match self {
            CloudError::Config(_) | CloudError::SourceDestCheckEnabled { .. } => true,
            CloudError::NoRegion => true,
            CloudError::Rejected { config_problem, .. } => *config_problem,
            _ => false,
        }
    }
}

struct ProblemList<'a>(&'a [ConfigProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
