//! Route-table claims (decided with each acquire, retried with backoff while owning) and
//! what reconciliation finds.

use std::time::Instant;

use super::{AgController, OwnershipState};
use crate::controller::decision::{AlertKind, Decision};
use crate::controller::event::{ClaimSummary, Drift, DriftKind};
use crate::controller::timeline::{Direction, TimedStep};

impl AgController {
    /// Decides a cloud claim at `at` if a cloud executor is configured.
    pub(super) fn claim_cloud(&mut self, at: Instant, reason: &str, out: &mut Vec<Decision>) {
        if self.policy.cloud_retry.is_none() {
            return;
        }
        self.cloud.last_attempt += 1;
        self.cloud.outstanding = Some(self.cloud.last_attempt);
        out.push(Decision::ClaimCloud {
            ag: self.ag.clone(),
            attempt: self.cloud.last_attempt,
            at,
            reason: reason.to_owned(),
        });
    }

    pub(super) fn on_cloud(
        &mut self,
        now: Instant,
        attempt: u32,
        started: Instant,
        report: &ClaimSummary,
        out: &mut Vec<Decision>,
    ) {
        if self.cloud.outstanding != Some(attempt)
            || !matches!(
                self.state,
                OwnershipState::Acquiring | OwnershipState::Owner
            )
        {
            return;
        }
        self.cloud.outstanding = None;
        let all_here = report.all_point_here();
        if let Some(t) = self.timeline.as_mut()
            && t.direction == Direction::Acquire
            && t.cloud_done.is_none()
        {
            t.cloud_first_start.get_or_insert(started);
            t.route_tables
                .extend(report.tables.iter().map(|table| TimedStep {
                    name: table.id.clone(),
                    start: started,
                    duration: table.duration,
                    ok: table.points_here,
                    detail: match (&table.error, table.points_here) {
                        (Some(error), _) => error.clone(),
                        (None, true) => "points here".to_owned(),
                        (None, false) => "not pointing here".to_owned(),
                    },
                }));
            if all_here {
                t.cloud_done = started.checked_add(report.total);
            }
        }
        if all_here {
            self.cloud.failures = 0;
            return;
        }
        self.cloud.failures += 1;
        let Some(backoff) = self.policy.cloud_retry else {
            return;
        };
        let delay = backoff.delay(self.cloud.failures);
        let here = report.tables.iter().filter(|t| t.points_here).count();
        let errors: Vec<String> = report
            .tables
            .iter()
            .filter(|t| !t.points_here)
            .map(|t| match &t.error {
                Some(e) => format!("{}: {e}", t.id),
                None => format!("{}: not pointing here", t.id),
            })
            .collect();
        let config = if report.config_problem {
            " (a configuration or IAM problem: fix it, retries continue)"
        } else {
            ""
        };
        out.push(Decision::Alert {
            ag: self.ag.clone(),
            kind: AlertKind::CloudClaimFailed,
            reason: format!(
                "cloud claim attempt {attempt}: {here} of {} route tables point here ({}){config}; the node-level takeover stands; retry in {} ms",
                report.tables.len(),
                errors.join("; "),
                delay.as_millis()
            ),
        });
        let reason = format!(
            "retry {} of the cloud claim after {} failure(s)",
            self.cloud.last_attempt + 1,
            self.cloud.failures
        );
        self.claim_cloud(now + delay, &reason, out);
    }

    pub(super) fn on_reconcile(
        &mut self,
        now: Instant,
        drift: Vec<Drift>,
        out: &mut Vec<Decision>,
    ) {
        match self.state {
            OwnershipState::Owner => {
                let mut claim = false;
                for d in drift {
                    *self.drift_repairs.entry(d.kind).or_insert(0) += 1;
                    claim |= d.kind == DriftKind::RouteTable;
                    out.push(Decision::Repair {
                        ag: self.ag.clone(),
                        kind: d.kind,
                        reason: format!("drift: {}", d.detail),
                    });
                }
                if claim && self.cloud.outstanding.is_none() {
                    self.claim_cloud(now, "repair route-table drift", out);
                }
            }
            OwnershipState::Releasing if self.release_failed => {
                self.release_failed = false;
                out.push(Decision::Release {
                    ag: self.ag.clone(),
                    cause: self.release_cause,
                    reason: format!("retrying the failed release ({})", self.release_cause),
                });
            }
            _ => {}
        }
    }
}
