//! Turning one trial's raw records (client attempts, owner samples, idle sessions, the lab's
//! own action times) into the numbers the lab reports. Pure, so every definition is tested.
//!
//! Definitions (all times on the lab clock, in ms):
//! - *settle* of a promotion: the end of the first attempt, finishing after the promotion,
//!   that the promoted node answered as PRIMARY with `ok`;
//! - `promotion_to_client`: settle − promotion;
//! - `client_outage`: settle − start of the first failed attempt (anything but `ok`) that
//!   started after the fault, 0 when none failed; with no promotion (kill-agent): from the
//!   first failed attempt to the end of the first `ok` after the last failure;
//! - *takeover*: the first owner sample after the fault in which the promoted node owns
//!   the overlay IP; `idle_session_reset`: for the idle sessions that tdsvip reset (the new
//!   owner's tickle or the old owner's SOCK_DESTROY, attributed as [`idle`] explains), when
//!   the session saw the RST − takeover (negative for SOCK_DESTROY: the old owner releases
//!   before the new one takes over); a session closed by anything else (a FIN, or an RST
//!   before either agent acted, as from the kernel of a killed sim) is not tdsvip's work:
//!   it is `None` there and counted apart (`idle_reset_not_by_tdsvip`);
//! - `dual_owner_samples`: samples in the trial in which more than one node was known to
//!   own it (had it on its up `eth0` and its eBPF guard did not fence it, see
//!   [`crate::sampler`]); a node whose read could not tell is not counted as an owner;
//! - `unknown_samples`: samples in the trial in which some node's read could not tell
//!   whether it owned the address (asserted zero: otherwise zero dual owners proves
//!   nothing); `owner_sample_spreads`: each sample's spread (first read start to last read
//!   end), the bound on how far apart in time one sample's nodes were seen;
//! - `fenced_holder_samples`: samples in which some node had it on its up `eth0` while its
//!   guard fenced it (reported, not asserted: the guard doing its job);
//! - `non_primary_answers`: answers received in a settled period (settle → next fault or
//!   the end) from anything but the promoted node reporting PRIMARY;
//! - `failed_after_first_success`: failed attempts that started in a settled period (after
//!   the client was served again): a takeover that flaps or serves only some attempts;
//! - `arp_dual_mac_samples` ([`dual_mac_samples`]): ARP probes of the overlay IP from the
//!   client answered by two MACs. One broadcast request reaches every node at once, so two
//!   answers are two nodes answering for the address at the same moment.

pub mod idle;

use crate::client::{Attempt, IdleSession};
use crate::sampler::OwnerSample;
use idle::{AgentBounds, ResetBy};

/// One promotion: when, which node, and that node's `@@SERVERNAME`.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub at: f64,
    pub node: usize,
    pub server: String,
}

/// What one trial did, for [`analyze`].
#[derive(Debug, Clone)]
pub struct TrialInput<'a> {
    pub start: f64,
    pub end: f64,
    /// Fault times; `faults[k]` precedes `promotions[k]`.
    pub faults: Vec<f64>,
    pub promotions: Vec<Promotion>,
    /// Without promotions: the node expected to keep serving (kill-agent).
    pub steady_server: Option<String>,
    pub attempts: &'a [Attempt],
    pub owners: &'a [OwnerSample],
    pub idle: &'a [IdleSession],
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialResult {
    pub settle: Vec<Option<f64>>,
    pub promotion_to_client: Vec<Option<f64>>,
    pub client_outage: Vec<Option<f64>>,
    pub takeover: Option<f64>,
    /// Per idle session: its reset − takeover when tdsvip reset it, else `None`.
    pub idle_reset: Vec<Option<f64>>,
    /// Per idle session: who closed it (`None`: still open at the end).
    pub idle_reset_by: Vec<Option<ResetBy>>,
    /// Closes that were not tdsvip's, − takeover (`None` without a takeover).
    pub idle_reset_not_by_tdsvip: Vec<Option<f64>>,
    /// When the agents' first steps happened at the earliest (see [`idle`]).
    pub agent_bounds: AgentBounds,
    pub dual_owner_samples: usize,
    pub unknown_samples: usize,
    /// Per owner sample in the trial, ms from its first read's start to its last read's end.
    pub owner_sample_spreads: Vec<f64>,
    pub fenced_holder_samples: usize,
    pub non_primary_answers: usize,
    /// Answers by a non-primary before the promotion settled (reported, not asserted).
    pub non_primary_before_settle: usize,
    pub failed_attempts: usize,
    pub failed_after_first_success: usize,
    /// The first failed attempts from the fault on: (start, end, outcome), for the timeline.
    pub failures: Vec<(f64, f64, &'static str)>,
}

/// ARP samples answered by more than one MAC (see the module doc).
pub fn dual_mac_samples(arp: &[(f64, Vec<String>)]) -> usize {
    arp.iter().filter(|(_, macs)| macs.len() > 1).count()
}

fn ok(a: &Attempt) -> bool {
    a.outcome == "ok"
}

pub fn analyze(t: &TrialInput<'_>) -> TrialResult {
    let mut r = TrialResult::default();
    let in_trial: Vec<&Attempt> = t
        .attempts
        .iter()
        .filter(|a| a.start >= t.start && a.start < t.end)
        .collect();
    let fault = t.faults.first().copied().unwrap_or(t.start);
    let failed: Vec<&&Attempt> = in_trial
        .iter()
        .filter(|a| a.start >= fault && !ok(a))
        .collect();
    r.failed_attempts = failed.len();
    r.failures = failed
        .iter()
        .take(12)
        .map(|a| (a.start, a.end, a.outcome))
        .collect();
    for (k, p) in t.promotions.iter().enumerate() {
        let fault = t.faults.get(k).copied().unwrap_or(p.at);
        let next_fault = t.faults.get(k + 1).copied().unwrap_or(t.end);
        let settle = in_trial
            .iter()
            .filter(|a| a.end > p.at && a.start < next_fault)
            .filter(|a| ok(a) && a.primary_answer_from(&p.server))
            .map(|a| a.end)
            .min_by(f64::total_cmp);
        r.settle.push(settle);
        r.promotion_to_client.push(settle.map(|s| s - p.at));
        r.client_outage.push(settle.map(|s| {
            in_trial
                .iter()
                .filter(|a| a.start >= fault && a.start < s && !ok(a))
                .map(|a| s - a.start)
                .fold(0.0, f64::max)
        }));
        let until = settle.unwrap_or(next_fault);
        r.non_primary_before_settle += in_trial
            .iter()
            .filter(|a| a.end > fault && a.end <= until && a.answered())
            .filter(|a| !a.primary_answer_from(&p.server))
            .count();
        if let Some(s) = settle {
            r.failed_after_first_success += in_trial
                .iter()
                .filter(|a| a.start > s && a.start < next_fault && !ok(a))
                .count();
            r.non_primary_answers += in_trial
                .iter()
                .filter(|a| a.end > s && a.end < next_fault && a.answered())
                .filter(|a| !a.primary_answer_from(&p.server))
                .count();
        }
    }
    if t.promotions.is_empty() {
        let fault = t.faults.first().copied().unwrap_or(t.start);
        let failures: Vec<&&Attempt> = in_trial
            .iter()
            .filter(|a| a.start >= fault && !ok(a))
            .collect();
        // Without a promotion the client was never meant to fail; every failure counts.
        r.failed_after_first_success = failures.len();
        let outage = match (failures.first(), failures.last()) {
            (Some(first), Some(last)) => in_trial
                .iter()
                .filter(|a| a.start > last.start && ok(a))
                .map(|a| a.end)
                .min_by(f64::total_cmp)
                .map(|e| e - first.start),
            _ => Some(0.0),
        };
        r.client_outage.push(outage);
        if let Some(server) = &t.steady_server {
            r.non_primary_answers += in_trial
                .iter()
                .filter(|a| a.start >= fault && a.answered() && !a.primary_answer_from(server))
                .count();
        }
    }
    let samples: Vec<OwnerSample> = t
        .owners
        .iter()
        .filter(|s| s.at >= t.start && s.at < t.end)
        .cloned()
        .collect();
    r.dual_owner_samples = samples.iter().filter(|s| s.count() > 1).count();
    r.unknown_samples = samples.iter().filter(|s| s.has_unknown()).count();
    r.owner_sample_spreads = samples.iter().map(|s| s.spread).collect();
    r.fenced_holder_samples = samples.iter().filter(|s| s.fenced_holders() > 0).count();
    if let (Some(p), Some(&fault)) = (t.promotions.first(), t.faults.first()) {
        r.takeover = samples
            .iter()
            .find(|s| s.at >= fault && s.owners.get(p.node).copied().unwrap_or(false))
            .map(|s| s.at);
    }
    idle_resets(t, &samples, &mut r);
    r
}

/// Attributes the idle sessions' closes ([`idle`]) and fills the idle fields of `r`.
fn idle_resets(t: &TrialInput<'_>, samples: &[OwnerSample], r: &mut TrialResult) {
    let fault = t.faults.first().copied().unwrap_or(t.start);
    let old = samples
        .iter()
        .rev()
        .find(|s| s.at < fault)
        .filter(|s| s.count() == 1)
        .and_then(|s| s.owners.iter().position(|o| *o));
    let new = t.promotions.first().map(|p| p.node);
    r.agent_bounds = idle::agent_bounds(samples, fault, old, new);
    r.idle_reset_by = idle::attribute_all(t.idle, t.end, r.agent_bounds);
    let since_takeover = |s: &IdleSession| match (&s.closed, r.takeover) {
        (Some((at, _)), Some(tk)) => Some(at - tk),
        _ => None,
    };
    r.idle_reset = t
        .idle
        .iter()
        .zip(&r.idle_reset_by)
        .map(|(s, by)| match by {
            Some(ResetBy::Tickle | ResetBy::SockDestroy) => since_takeover(s),
            _ => None,
        })
        .collect();
    r.idle_reset_not_by_tdsvip = t
        .idle
        .iter()
        .zip(&r.idle_reset_by)
        .filter(|(_, by)| **by == Some(ResetBy::NotTdsvip))
        .map(|(s, _)| since_takeover(s))
        .collect();
}

/// When, after `after`, a route sample first showed every table pointing at `eni`, minus
/// `after`; `None` if never. `samples`: (time, target per table).
pub fn routes_converged(
    samples: &[(f64, Vec<Option<String>>)],
    after: f64,
    eni: &str,
) -> Option<f64> {
    samples
        .iter()
        .filter(|(at, _)| *at >= after)
        .find(|(_, targets)| {
            !targets.is_empty() && targets.iter().all(|t| t.as_deref() == Some(eni))
        })
        .map(|(at, _)| at - after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardState;

    fn att(start: f64, outcome: &'static str, server: Option<&str>, role: &str) -> Attempt {
        Attempt {
            start,
            end: start + 2.0,
            outcome,
            server: server.map(str::to_owned),
            role: server.map(|_| role.to_owned()),
        }
    }

    fn sample(at: f64, owners: &[bool]) -> OwnerSample {
        OwnerSample::new(at, owners.iter().map(|o| (*o, GuardState::Owner)).collect())
    }

    /// A trial from 900 to 2000 ms with one fault and at most one promotion
    /// (`(at, node, server)`), no idle sessions and no steady server.
    fn trial<'a>(
        fault: f64,
        promotion: Option<(f64, usize, &str)>,
        attempts: &'a [Attempt],
        owners: &'a [OwnerSample],
    ) -> TrialInput<'a> {
        TrialInput {
            start: 900.0,
            end: 2000.0,
            faults: vec![fault],
            promotions: promotion
                .map(|(at, node, server)| Promotion {
                    at,
                    node,
                    server: server.into(),
                })
                .into_iter()
                .collect(),
            steady_server: None,
            attempts,
            owners,
            idle: &[],
        }
    }

    #[test]
    fn routes_converge_when_every_table_points_at_the_eni() {
        let s = |at: f64, t: &[Option<&str>]| {
            (
                at,
                t.iter().map(|x| x.map(str::to_owned)).collect::<Vec<_>>(),
            )
        };
        let samples = vec![
            s(5.0, &[Some("eni-b"), Some("eni-b")]),
            s(10.0, &[Some("eni-a"), Some("eni-a")]),
            s(20.0, &[Some("eni-b"), Some("eni-a")]),
            s(30.0, &[Some("eni-b"), Some("eni-b")]),
        ];
        assert_eq!(routes_converged(&samples, 8.0, "eni-b"), Some(22.0));
        assert_eq!(routes_converged(&samples, 8.0, "eni-c"), None);
        assert_eq!(routes_converged(&[s(9.0, &[])], 8.0, "eni-b"), None);
    }

    #[test]
    fn kill_primary_numbers() {
        let attempts = vec![
            att(990.0, "ok", Some("A"), "PRIMARY"),
            att(1000.0, "refused", None, ""),
            att(1010.0, "refused", None, ""),
            att(1020.0, "timeout", None, ""),
            att(1030.0, "ok", Some("B"), "PRIMARY"),
            att(1040.0, "ok", Some("B"), "PRIMARY"),
        ];
        let owners = vec![
            sample(995.0, &[true, false]),
            sample(1005.0, &[false, false]),
            sample(1025.0, &[false, true]),
            sample(1035.0, &[false, true]),
        ];
        let idle = vec![
            IdleSession {
                opened: 900.0,
                closed: Some((1030.0, "reset".into())),
            },
            IdleSession {
                opened: 900.0,
                closed: None,
            },
        ];
        let r = analyze(&TrialInput {
            idle: &idle,
            ..trial(1000.0, Some((1001.0, 1, "B")), &attempts, &owners)
        });
        assert_eq!(r.settle, vec![Some(1032.0)]);
        assert_eq!(r.promotion_to_client, vec![Some(31.0)]);
        assert_eq!(r.client_outage, vec![Some(32.0)]);
        assert_eq!(r.takeover, Some(1025.0));
        assert_eq!(r.idle_reset, vec![Some(5.0), None]);
        assert_eq!(r.dual_owner_samples, 0);
        assert_eq!(r.non_primary_answers, 0);
        assert_eq!(r.failed_attempts, 3);
        assert_eq!(r.failed_after_first_success, 0);
    }

    #[test]
    fn closes_by_the_dying_process_are_not_tdsvip_resets() {
        use GuardState::*;
        // kill-primary: the sim dies at 1000, its kernel FINs the idle sessions at 1001;
        // the old owner's agent releases (fenced, address gone) at ~1030, the new owner
        // acquires at ~1045 and a late session is reset by its tickle.
        let owners = vec![
            OwnerSample::new(995.0, vec![(true, Owner), (false, Fenced)]),
            OwnerSample::new(1025.0, vec![(true, Owner), (false, Fenced)]),
            OwnerSample::new(1035.0, vec![(false, Fenced), (false, Fenced)]),
            OwnerSample::new(1045.0, vec![(false, Fenced), (false, Fenced)]),
            OwnerSample::new(1055.0, vec![(false, Fenced), (true, Owner)]),
        ];
        let closed = |at: f64, how: &str| IdleSession {
            opened: 900.0,
            closed: Some((at, how.into())),
        };
        let idle = vec![
            closed(1001.0, "eof"),
            closed(1001.5, "reset"),
            closed(1030.0, "reset"),
            closed(1056.0, "reset"),
        ];
        let r = analyze(&TrialInput {
            idle: &idle,
            ..trial(1000.0, Some((1001.0, 1, "B")), &[], &owners)
        });
        assert_eq!(r.takeover, Some(1055.0));
        assert_eq!(r.agent_bounds.release_from, Some(1025.0));
        assert_eq!(r.agent_bounds.acquire_from, Some(1045.0));
        use idle::ResetBy::*;
        assert_eq!(
            r.idle_reset_by,
            vec![
                Some(NotTdsvip),
                Some(NotTdsvip),
                Some(SockDestroy),
                Some(Tickle)
            ]
        );
        assert_eq!(r.idle_reset, vec![None, None, Some(-25.0), Some(1.0)]);
        assert_eq!(r.idle_reset_not_by_tdsvip, vec![Some(-54.0), Some(-53.5)]);
    }

    #[test]
    fn unknown_nodes_are_neither_owners_nor_non_owners() {
        use crate::sampler::NodeRead;
        use GuardState::*;
        let read = |at: f64, present: Option<bool>, guard| {
            Some(NodeRead {
                from: at,
                to: at + 0.2,
                present,
                guard,
            })
        };
        let owners = vec![
            // Node 0 unreadable: one known owner, not dual, but an unknown sample.
            OwnerSample::from_reads(
                1000.0,
                vec![read(1000.0, None, Unknown), read(1001.0, Some(true), Owner)],
            ),
            // Address present, guard map unreadable: unknown too.
            OwnerSample::from_reads(
                1010.0,
                vec![
                    read(1010.0, Some(true), Unknown),
                    read(1010.5, Some(true), Owner),
                ],
            ),
            // No read delivered for node 1.
            OwnerSample::from_reads(1020.0, vec![read(1020.0, Some(false), Owner), None]),
            // Absent with an unreadable guard is a known non-owner.
            OwnerSample::from_reads(
                1030.0,
                vec![
                    read(1030.0, Some(false), Unknown),
                    read(1030.1, Some(true), Owner),
                ],
            ),
        ];
        assert_eq!(owners[0].owners, vec![false, true]);
        assert_eq!(owners[0].unknown, vec![true, false]);
        assert!((owners[0].spread - 1.2).abs() < 1e-9);
        assert_eq!(owners[2].unknown, vec![false, true]);
        assert!(!owners[3].has_unknown());
        let r = analyze(&trial(999.0, None, &[], &owners));
        assert_eq!(r.dual_owner_samples, 0);
        assert_eq!(r.unknown_samples, 3);
        assert_eq!(r.owner_sample_spreads.len(), 4);
    }

    #[test]
    fn failures_after_the_client_was_served_again_are_counted() {
        let attempts = vec![
            att(1000.0, "refused", None, ""),
            att(1030.0, "ok", Some("B"), "PRIMARY"),
            att(1040.0, "timeout", None, ""),
            att(1050.0, "ok", Some("B"), "PRIMARY"),
            att(1060.0, "reset", None, ""),
        ];
        let r = analyze(&trial(1000.0, Some((1001.0, 1, "B")), &attempts, &[]));
        assert_eq!(r.settle, vec![Some(1032.0)]);
        assert_eq!(r.failed_attempts, 3);
        assert_eq!(r.failed_after_first_success, 2);
    }

    #[test]
    fn two_macs_answering_one_arp_probe_are_counted() {
        let mac = |m: &str| m.to_owned();
        let arp = vec![
            (1000.0, vec![mac("aa:00:00:00:00:01")]),
            (1010.0, vec![]),
            (
                1020.0,
                vec![mac("aa:00:00:00:00:01"), mac("aa:00:00:00:00:02")],
            ),
            (1030.0, vec![mac("aa:00:00:00:00:02")]),
        ];
        assert_eq!(dual_mac_samples(&arp), 1);
        assert_eq!(dual_mac_samples(&arp[..2]), 0);
    }

    #[test]
    fn non_primary_and_dual_owner_are_counted() {
        let attempts = vec![
            att(1000.0, "not_primary", Some("A"), "SECONDARY"),
            att(1010.0, "ok", Some("B"), "PRIMARY"),
            att(1020.0, "not_primary", Some("A"), "SECONDARY"),
            att(1030.0, "ok", Some("A"), "PRIMARY"),
        ];
        let owners = vec![
            sample(1005.0, &[true, true]),
            sample(1015.0, &[false, true]),
        ];
        let r = analyze(&trial(999.0, Some((1000.0, 1, "B")), &attempts, &owners));
        assert_eq!(r.non_primary_before_settle, 1);
        // After settling, A answering (as SECONDARY, and as a second PRIMARY) both count.
        assert_eq!(r.non_primary_answers, 2);
        assert_eq!(r.dual_owner_samples, 1);
        assert_eq!(r.client_outage, vec![Some(12.0)]);
    }

    #[test]
    fn a_fenced_holder_is_not_an_owner() {
        use GuardState::*;
        let owners = vec![
            // Both hold it, the old owner's guard fences it: one owner, one fenced holder.
            OwnerSample::new(1005.0, vec![(true, Fenced), (true, Owner)]),
            // No guard (agent killed) passes everything: two owners.
            OwnerSample::new(1010.0, vec![(true, NoGuard), (true, Owner)]),
            // The guard says OWNER but the address is gone: not an owner.
            OwnerSample::new(1015.0, vec![(false, Owner), (true, Owner)]),
        ];
        assert_eq!(owners[0].owners, vec![false, true]);
        assert_eq!(owners[1].count(), 2);
        assert_eq!(owners[2].owners, vec![false, true]);
        let r = analyze(&trial(999.0, None, &[], &owners));
        assert_eq!(r.dual_owner_samples, 1);
        assert_eq!(r.fenced_holder_samples, 1);
    }

    #[test]
    fn no_settle_is_none_and_kill_agent_outage() {
        let attempts = vec![att(1000.0, "refused", None, "")];
        let r = analyze(&trial(999.0, Some((1000.0, 1, "B")), &attempts, &[]));
        assert_eq!(r.promotion_to_client, vec![None]);
        assert_eq!(r.client_outage, vec![None]);

        let attempts = vec![
            att(1000.0, "ok", Some("A"), "PRIMARY"),
            att(1010.0, "refused", None, ""),
            att(1020.0, "ok", Some("A"), "PRIMARY"),
            att(1030.0, "timeout", None, ""),
            att(1040.0, "ok", Some("A"), "PRIMARY"),
        ];
        let r = analyze(&TrialInput {
            steady_server: Some("A".into()),
            ..trial(1000.0, None, &attempts, &[])
        });
        assert_eq!(r.client_outage, vec![Some(32.0)]);
        assert_eq!(r.non_primary_answers, 0);
        let r = analyze(&TrialInput {
            steady_server: Some("A".into()),
            ..trial(1000.0, None, &attempts[..1], &[])
        });
        assert_eq!(r.client_outage, vec![Some(0.0)]);
    }
}
