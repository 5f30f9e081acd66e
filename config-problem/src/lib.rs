//! One problem in a configuration, the one shape every tdsvip crate reports them in: the
//! full key path as an operator reads it in TOML (`ag[1].addresses[0]`, `cloud.mode`,
//! `probe.timeout_ms`) and why its value is refused. The agent's file, the cloud section
//! and the probes' settings all say `KEY: reason`, so a person fixing a file at 3 a.m. reads
//! one format, and the agent can gather every crate's problems into one list.

#![forbid(unsafe_code)]

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigProblem {
    /// The key, as written in the file (`[n]` for the n-th element of an array).
    pub key: String,
    pub reason: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same problem with its key placed under `prefix` (`cloud` + `mode` → `cloud.mode`).
    pub fn under(self, prefix: &str) -> ConfigProblem {
        ConfigProblem {
            key: format!("{prefix}.{}", self.key),
            reason: self.reason,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigProblem {}

/// Every problem of one file, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_key_colon_reason_one_per_line() {
        let p = ConfigProblem::new("mode", "\"x\" is not route or secondary_ip").under("cloud");
        assert_eq!(
            p.to_string(),
            "cloud.mode: \"x\" is not route or secondary_ip"
        );
        let all = ConfigProblems(vec![p, ConfigProblem::new("interface", "missing")]);
        assert_eq!(
            all.to_string(),
            "cloud.mode: \"x\" is not route or secondary_ip\ninterface: missing"
        );
    }
}
