//! What the controller is told, from what the outside world says: a probe's outcome becomes
//! the controller's [`Verdict`] (the table in `controller/policy.rs` says why each class
//! counts as it does), and a cloud claim's report its [`ClaimSummary`], durations included.
//! The controller itself depends on nothing that does I/O.

use tdsvip_cloud::ClaimReport;
use tdsvip_probes::Outcome;

use crate::controller::{ClaimSummary, ReleaseCause, TableSummary, Verdict};

pub(crate) fn classify(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Ok => Verdict::Primary,
        Outcome::NotPrimary { .. } => Verdict::SqlSaysNo {
            cause: ReleaseCause::NotPrimary,
            what: outcome.to_string(),
        },
        Outcome::DbNotOnline { .. } => Verdict::SqlSaysNo {
            cause: ReleaseCause::DbNotOnline,
            what: outcome.to_string(),
        },
        Outcome::Refused
        | Outcome::Timeout { .. }
        | Outcome::Reset { .. }
        | Outcome::Unreachable { .. }
        | Outcome::LoginFailed { .. }
        | Outcome::ProtocolError { .. }
        | Outcome::QueryFailed { .. }
        | Outcome::IoError { .. } => Verdict::Unconfirmed {
            what: outcome.to_string(),
        },
    }
}

pub(crate) fn claim_summary(report: &ClaimReport) -> ClaimSummary {
    ClaimSummary {
        tables: report
            .tables
            .iter()
            .map(|t| TableSummary {
                id: t.id.clone(),
                duration: t.outcome.elapsed,
                points_here: t.points_here(),
                error: t.outcome.error.clone(),
            })
            .collect(),
        total: report.total,
        config_problem: report.has_config_problem(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tdsvip_probes::Phase;

    fn every_outcome() -> Vec<Outcome> {
        vec![
            Outcome::Ok,
            Outcome::Refused,
            Outcome::Timeout {
                phase: Phase::Login,
            },
            Outcome::Reset {
                phase: Phase::Query,
            },
            Outcome::Unreachable {
                detail: "no route".into(),
            },
            Outcome::LoginFailed {
                code: Some(18456),
                message: "bad password".into(),
            },
            Outcome::ProtocolError {
                phase: Phase::Prelogin,
                detail: "eof".into(),
            },
            Outcome::QueryFailed {
                code: 300,
                message: "no VIEW SERVER STATE".into(),
            },
            Outcome::NotPrimary {
                role: Some("SECONDARY".into()),
                detail: "ag1".into(),
            },
            Outcome::DbNotOnline {
                database: "sales".into(),
                state: Some("RECOVERING".into()),
            },
            Outcome::IoError {
                phase: Phase::Connect,
                detail: "EMFILE".into(),
            },
        ]
    }

    #[test]
    fn every_outcome_has_the_documented_class() {
        for outcome in every_outcome() {
            let class = match classify(&outcome) {
                Verdict::Primary => "primary".to_owned(),
                Verdict::SqlSaysNo { cause, .. } => format!("no:{cause}"),
                Verdict::Unconfirmed { .. } => "unconfirmed".to_owned(),
            };
            let expected = match outcome.name() {
                "ok" => "primary",
                "not_primary" => "no:not_primary",
                "db_not_online" => "no:db_not_online",
                _ => "unconfirmed",
            };
            assert_eq!(class, expected, "{outcome}");
        }
    }
}
