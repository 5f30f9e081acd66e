//! Every manage-mode rule, replayed with exact instants.

use std::time::{Duration, Instant};

use super::*;

pub(super) const MS: Duration = Duration::from_millis(1);

pub(super) fn settings(node: &str) -> PromotionSettings {
    PromotionSettings {
        node: node.into(),
        key_margin: 100 * MS,
        // As long as the key's TTL: the lease's proof binds, as these tests were written;
        // `tests_beats.rs` shortens it.
        leader_timeout: 1000 * MS,
        renew_interval: 200 * MS,
        write_lease_validity: 1000 * MS,
        statement_timeout: 300 * MS,
        confirm_down: 2,
        fall: 3,
        ack_window: 1000 * MS,
        required_synchronized: None,
        fence: false,
    }
}

/// Three synchronous replicas (as [`member`]'s `voters`) whose AG already has the value
/// Microsoft's agent computes: nothing to set.
pub(super) const SETTLED: CommitRule = CommitRule {
    synchronous_replicas: 3,
    required: 1,
};

pub(super) fn member(node: &str, role: MemberRole, seq: i64) -> MemberState {
    MemberState {
        node: node.into(),
        role,
        commit_mode: CommitMode::Synchronous,
        sequence_number: seq,
        synchronized: true,
        voters: 3,
    }
}

pub(super) struct Run {
    pub(super) c: PromotionController,
    pub(super) t0: Instant,
}

impl Run {
    /// A controller whose process started at `t0`.
    pub(super) fn fresh(node: &str) -> Self {
        let t0 = Instant::now() + Duration::from_secs(10);
        Run {
            c: PromotionController::new(settings(node), t0),
            t0,
        }
    }

    /// A controller at `t0` whose process started `ack_hold` earlier (so that the hold a
    /// fresh process starts with, rule 8, is over) and has not heard from etcd yet.
    pub(super) fn new(node: &str) -> Self {
        Run::with(settings(node))
    }

    /// [`Run::new`] with other settings.
    pub(super) fn with(s: PromotionSettings) -> Self {
        let t0 = Instant::now() + Duration::from_secs(10);
        let started = t0 - s.ack_hold();
        let mut c = PromotionController::new(s, started);
        // Its start-up vacancy counts from `t0`, as the tests were written.
        c.handle(t0, PromotionEvent::Leader(None));
        Run { c, t0 }
    }
    pub(super) fn at(&mut self, ms: u64, e: PromotionEvent) -> Vec<PromotionAction> {
        self.c.handle(self.t0 + Duration::from_millis(ms), e)
    }
    /// This agent's etcd lease renewed and, while it holds the key, its heartbeat applied,
    /// both sent at `ms`.
    pub(super) fn renewed(&mut self, ms: u64) -> Vec<PromotionAction> {
        let mut out = self.lease_renewed(ms);
        if let Some(token) = self.c.held() {
            out.extend(self.beaten(ms, token));
        }
        out
    }
    pub(super) fn lease_renewed(&mut self, ms: u64) -> Vec<PromotionAction> {
        let sent = self.t0 + Duration::from_millis(ms);
        self.at(
            ms,
            PromotionEvent::KeyRenewed {
                sent,
                ttl: Duration::from_secs(1),
            },
        )
    }
    pub(super) fn beaten(&mut self, ms: u64, token: i64) -> Vec<PromotionAction> {
        let sent = self.t0 + Duration::from_millis(ms);
        self.at(ms, PromotionEvent::Beaten { token, sent })
    }
    /// This agent's campaign, sent at `ms`, won the key with `token`.
    pub(super) fn won(&mut self, ms: u64, token: i64) -> Vec<PromotionAction> {
        let sent = self.t0 + Duration::from_millis(ms);
        self.at(
            ms,
            PromotionEvent::Campaigned(Campaign::Won { token, sent }),
        )
    }
    pub(super) fn local(&mut self, ms: u64, state: MemberState) -> Vec<PromotionAction> {
        self.at(ms, PromotionEvent::Local(LocalPoll::Up(state, SETTLED)))
    }
}

/// The leader key with `token` deleted by a resign whose note, from `from` for
/// `note_token`, confirms the old primary's SQL Server down.
pub(super) fn handed_off(token: i64, from: &str, note_token: i64) -> PromotionEvent {
    PromotionEvent::LeaderGone {
        token,
        handoff: Some(Handoff {
            from: from.into(),
            token: note_token,
            confirmed_down: true,
            to: None,
        }),
    }
}

/// The leader key with `token` gone without a note (expired, or an unconfirmed resign).
pub(super) fn unannounced(token: i64) -> PromotionEvent {
    PromotionEvent::LeaderGone {
        token,
        handoff: None,
    }
}

pub(super) fn has(actions: &[PromotionAction], f: impl Fn(&PromotionAction) -> bool) -> bool {
    actions.iter().any(f)
}

pub(super) fn campaigns(a: &[PromotionAction]) -> bool {
    has(a, |a| *a == PromotionAction::Campaign)
}

/// A leader on node `a` with token 5, its replica PRIMARY.
pub(super) fn leader_a() -> Run {
    let mut r = Run::new("a");
    r.renewed(0);
    let a = r.local(1, member("a", MemberRole::Primary, 3));
    assert!(has(&a, |a| matches!(a, PromotionAction::Publish(_))));
    assert!(
        campaigns(&a),
        "a PRIMARY without a leader key campaigns at once: {a:?}"
    );
    let a = r.won(2, 5);
    assert!(!has(&a, |a| matches!(a, PromotionAction::Failover { .. })));
    assert_eq!(a, vec![PromotionAction::RenewWriteLease { token: 5 }]);
    assert_eq!(r.c.held(), Some(5));
    r
}

/// A secondary's agent on `b` whose process started at `t0`, with its own and `c`'s
/// reports (no leader key read yet).
pub(super) fn fresh_secondary_b() -> Run {
    let mut r = Run::fresh("b");
    r.renewed(0);
    r.local(1, member("b", MemberRole::Secondary, 3));
    r.at(
        2,
        PromotionEvent::Members(vec![
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    r
}

/// A secondary's agent on `b` that saw leader `a` (token 5) and both peers' reports.
pub(super) fn follower_b() -> Run {
    let mut r = Run::new("b");
    r.renewed(0);
    r.at(
        0,
        PromotionEvent::Leader(Some(LeaderKey {
            holder: "a".into(),
            token: 5,
        })),
    );
    r.local(1, member("b", MemberRole::Secondary, 3));
    r.at(
        1,
        PromotionEvent::Members(vec![
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    r
}

#[test]
fn a_leader_renews_the_write_lease_at_its_interval() {
    let mut r = leader_a();
    assert!(
        r.at(3, PromotionEvent::Deadline).is_empty(),
        "one renewal at a time"
    );
    r.at(10, PromotionEvent::WriteLeaseRenewed);
    assert!(!has(&r.at(100, PromotionEvent::Deadline), |a| matches!(
        a,
        PromotionAction::RenewWriteLease { .. }
    )));
    r.renewed(150);
    let a = r.at(203, PromotionEvent::Deadline);
    assert!(has(&a, |a| *a == PromotionAction::RenewWriteLease { token: 5 }));
}

#[test]
fn renewals_stop_when_the_key_is_not_provably_held_and_the_primary_goes_offline() {
    let mut r = leader_a();
    r.at(4, PromotionEvent::WriteLeaseRenewed);
    // Deadline = 0 + 1000 - 100 = 900 ms; a renewal needs 300 ms of it left.
    let a = r.at(650, PromotionEvent::Deadline);
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::RenewWriteLease { .. })),
        "a renewal that could land after the key is lost: {a:?}"
    );
    let a = r.at(900, PromotionEvent::Deadline);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, PromotionAction::TakeOffline { token: 5 }))
            .count(),
        1
    );
    assert_eq!(r.c.held(), None);
    assert!(r.at(950, PromotionEvent::Deadline).is_empty());
}

#[test]
fn a_leader_whose_sql_server_refuses_connections_resigns_confirmed() {
    let mut r = leader_a();
    r.at(20, PromotionEvent::Local(LocalPoll::Refused));
    let a = r.at(40, PromotionEvent::Local(LocalPoll::Refused));
    assert!(has(&a, |a| *a
        == PromotionAction::Resign {
            token: 5,
            confirmed_down: true,
            to: None
        }));
    assert!(has(&a, |a| *a == PromotionAction::Unpublish) || r.c.held().is_none());
}

#[test]
fn a_leader_whose_sql_server_hangs_resigns_unconfirmed() {
    let mut r = leader_a();
    for t in [20, 40] {
        assert!(
            r.at(t, PromotionEvent::Local(LocalPoll::Unanswered))
                .iter()
                .all(|a| !matches!(a, PromotionAction::Resign { .. }))
        );
    }
    let a = r.at(60, PromotionEvent::Local(LocalPoll::Unanswered));
    assert!(has(&a, |a| *a
        == PromotionAction::Resign {
            token: 5,
            confirmed_down: false,
            to: None
        }));
}

#[test]
fn a_confirmed_handoff_lets_the_candidate_promote_at_once() {
    let mut r = follower_b();
    let a = r.at(50, handed_off(5, "a", 5));
    assert!(campaigns(&a), "{a:?}");
    let a = r.won(52, 9);
    assert_eq!(
        a,
        vec![PromotionAction::Failover {
            token: 9,
            cause: PromotionCause::PrimaryDown
        }]
    );
}

#[test]
fn an_unannounced_loss_waits_out_the_write_lease_and_the_statement_deadline() {
    let mut r = follower_b();
    r.renewed(400);
    let a = r.at(500, unannounced(5));
    assert!(!campaigns(&a));
    // The key renewed at 400 ms is next due at 1300 ms, before the vacancy ends at 1800.
    assert_eq!(
        r.c.next_deadline(),
        Some(r.t0 + Duration::from_millis(1300))
    );
    r.renewed(1200);
    assert!(!campaigns(&r.at(1799, PromotionEvent::Deadline)));
    let view = r.c.view(r.t0 + Duration::from_millis(1799));
    assert_eq!(
        view.candidates_wait_until,
        Some(r.t0 + Duration::from_millis(1800))
    );
    assert!(view.lease_alive && !view.leading && view.leader.is_none());
    assert!(campaigns(&r.at(1800, PromotionEvent::Deadline)));
    let a = r.won(1801, 9);
    assert_eq!(
        a,
        vec![PromotionAction::Failover {
            token: 9,
            cause: PromotionCause::LeaderLost
        }]
    );
    let view = r.c.view(r.t0 + Duration::from_millis(1802));
    assert!(view.leading);
    assert_eq!(
        view.leader.map(|k| (k.holder, k.token)),
        Some(("b".into(), 9))
    );
    assert_eq!(view.candidates_wait_until, None);
}

#[test]
fn a_handoff_for_another_token_is_not_a_confirmation() {
    let mut r = follower_b();
    let a = r.at(50, handed_off(5, "a", 4));
    assert!(!campaigns(&a));
}

#[test]
fn a_replica_behind_the_highest_sequence_number_is_refused_once() {
    let mut r = follower_b();
    r.at(
        2,
        PromotionEvent::Members(vec![
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 4),
        ]),
    );
    let gone = handed_off(5, "a", 5);
    let a = r.at(50, gone);
    assert_eq!(
        a,
        vec![PromotionAction::Refused(Refusal::BehindSequence {
            local: 3,
            highest: 4
        })]
    );
    assert!(r.at(70, PromotionEvent::Deadline).is_empty());
}

#[test]
fn two_candidates_race_and_the_loser_follows_the_winner() {
    let mut r = follower_b();
    let gone = handed_off(5, "a", 5);
    assert!(campaigns(&r.at(50, gone)));
    let c = LeaderKey {
        holder: "c".into(),
        token: 9,
    };
    let a = r.at(52, PromotionEvent::Campaigned(Campaign::Held(c.clone())));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(r.c.leader(), Some(&c));
    r.renewed(2900);
    assert!(!campaigns(&r.at(3000, PromotionEvent::Deadline)));
}

#[test]
fn a_failover_refused_with_41142_gives_the_key_back_and_does_not_retry() {
    let mut r = follower_b();
    let gone = handed_off(5, "a", 5);
    r.at(50, gone);
    r.won(52, 9);
    let a = r.at(60, PromotionEvent::FailedOver(Err(true)));
    assert!(has(&a, |a| *a
        == PromotionAction::Refused(Refusal::NotSynchronized)));
    assert!(has(&a, |a| *a
        == PromotionAction::Resign {
            token: 9,
            confirmed_down: false,
            to: None
        }));
    r.at(61, unannounced(9));
    // /status says why this replica stays out of the vacancy.
    let view = r.c.view(r.t0 + Duration::from_millis(62));
    assert_eq!(view.refusal, Some(Refusal::NotSynchronized));
    assert!(!view.leading);
    // The lease is alive and the wait is over: only the refusal keeps it from trying again.
    r.renewed(2900);
    assert!(!campaigns(&r.at(3000, PromotionEvent::Deadline)));
    // Once another node has led, it is a candidate again.
    let c = LeaderKey {
        holder: "c".into(),
        token: 12,
    };
    r.at(3001, PromotionEvent::Leader(Some(c)));
    let gone = handed_off(12, "c", 12);
    assert!(campaigns(&r.at(3002, gone)));
}

#[test]
fn losing_the_key_mid_promotion_takes_the_replica_offline() {
    let mut r = follower_b();
    let gone = handed_off(5, "a", 5);
    r.at(50, gone);
    r.won(52, 9);
    // No renewal since t = 0: the key is provably held until 900 ms only.
    let a = r.at(900, PromotionEvent::Deadline);
    // Its state is unknown until the next poll: withdrawn from the candidates' view.
    assert_eq!(
        a,
        vec![
            PromotionAction::TakeOffline { token: 9 },
            PromotionAction::Resign {
                token: 9,
                confirmed_down: false,
                to: None
            },
            PromotionAction::Unpublish
        ]
    );
}

#[test]
fn without_etcd_nothing_campaigns_not_even_a_primary() {
    let mut r = Run::new("a");
    let a = r.local(1, member("a", MemberRole::Primary, 3));
    assert!(!campaigns(&a));
    assert!(!campaigns(&r.at(5000, PromotionEvent::Deadline)));
}

#[test]
fn a_resolving_replica_under_another_leader_is_made_secondary_at_most_once_a_lease() {
    let mut r = follower_b();
    let a = r.local(10, member("b", MemberRole::Resolving, 3));
    assert!(has(&a, |a| *a == PromotionAction::SetSecondary));
    assert!(!has(
        &r.local(30, member("b", MemberRole::Resolving, 3)),
        |a| *a == PromotionAction::SetSecondary
    ));
    assert!(has(
        &r.local(1010, member("b", MemberRole::Resolving, 3)),
        |a| *a == PromotionAction::SetSecondary
    ));
}

#[test]
fn a_candidate_without_a_majority_of_reports_is_refused() {
    let mut r = follower_b();
    r.at(
        2,
        PromotionEvent::Members(vec![member("b", MemberRole::Secondary, 3)]),
    );
    let a = r.at(50, handed_off(5, "a", 5));
    assert_eq!(
        a,
        vec![PromotionAction::Refused(Refusal::TooFewReporters {
            reporting: 1,
            needed: 2
        })]
    );
}

#[test]
fn a_lost_etcd_lease_ends_the_leadership_even_if_a_new_lease_renews() {
    let mut r = leader_a();
    let a = r.at(300, PromotionEvent::LeaseLost);
    assert_eq!(
        a,
        vec![
            PromotionAction::TakeOffline { token: 5 },
            PromotionAction::Resign {
                token: 5,
                confirmed_down: false,
                to: None
            }
        ]
    );
    assert_eq!(r.c.held(), None);
    r.renewed(310);
    assert!(!has(&r.at(320, PromotionEvent::Deadline), |a| matches!(
        a,
        PromotionAction::RenewWriteLease { .. }
    )));
}

#[test]
fn a_leader_over_a_resolving_replica_gives_the_key_back() {
    let mut r = leader_a();
    let a = r.local(50, member("a", MemberRole::Resolving, 3));
    assert!(has(&a, |a| *a
        == PromotionAction::Resign {
            token: 5,
            confirmed_down: false,
            to: None
        }));
}

#[test]
fn a_key_in_this_nodes_name_that_it_does_not_hold_is_given_back_once() {
    // A restarted agent finds its killed predecessor's key.
    let mut r = Run::new("a");
    r.renewed(0);
    assert!(campaigns(&r.local(1, member("a", MemberRole::Primary, 3))));
    let stale = LeaderKey {
        holder: "a".into(),
        token: 4,
    };
    let a = r.at(2, PromotionEvent::Campaigned(Campaign::Held(stale.clone())));
    assert_eq!(
        a,
        vec![PromotionAction::Resign {
            token: 4,
            confirmed_down: false,
            to: None
        }]
    );
    assert!(r.at(3, PromotionEvent::Leader(Some(stale))).is_empty());
    // Once it is gone, the PRIMARY's agent takes the key again without a failover.
    let a = r.at(4, unannounced(4));
    assert!(campaigns(&a), "{a:?}");
}

#[test]
fn a_failed_publish_is_retried_after_an_interval_and_a_new_lease_republishes() {
    let mut r = follower_b();
    let a = r.local(10, member("b", MemberRole::Secondary, 4));
    assert!(has(&a, |a| matches!(a, PromotionAction::Publish(_))));
    r.at(11, PromotionEvent::Published { ok: false });
    assert!(!has(&r.at(50, PromotionEvent::Deadline), |a| matches!(
        a,
        PromotionAction::Publish(_)
    )));
    assert!(has(&r.at(211, PromotionEvent::Deadline), |a| matches!(
        a,
        PromotionAction::Publish(_)
    )));
    r.at(212, PromotionEvent::Published { ok: true });
    assert!(r.at(220, PromotionEvent::Deadline).is_empty());
    assert!(has(&r.at(230, PromotionEvent::LeaseGranted), |a| matches!(
        a,
        PromotionAction::Publish(_)
    )));
}

#[test]
fn a_read_without_a_leader_starts_the_wait_again() {
    let mut r = follower_b();
    let gone = unannounced(5);
    r.at(50, gone);
    // The watch broke and was read again much later: nobody leads, but who knows who led
    // (and promoted) meanwhile.
    let a = r.at(1000, PromotionEvent::Leader(None));
    assert!(!campaigns(&a), "{a:?}");
    // The first wait would have ended at 1350; the read at 1000 starts one to 2300.
    r.renewed(2000);
    assert!(!campaigns(&r.at(2299, PromotionEvent::Deadline)));
    assert!(campaigns(&r.at(2300, PromotionEvent::Deadline)));
}

#[test]
fn a_leader_whose_failover_did_not_take_gives_the_key_back_after_the_grace() {
    let mut r = follower_b();
    let gone = handed_off(5, "a", 5);
    r.at(50, gone);
    r.won(52, 9);
    let sent = r.t0 + 53 * MS;
    r.at(55, PromotionEvent::FailedOver(Ok(sent)));
    // Still SECONDARY right after FAILOVER: SQL Server changes the role a moment later.
    r.renewed(500);
    let a = r.local(600, member("b", MemberRole::Secondary, 3));
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::Resign { .. })),
        "{a:?}"
    );
    r.renewed(1300);
    let a = r.local(1360, member("b", MemberRole::Secondary, 3));
    assert!(has(&a, |a| *a
        == PromotionAction::Resign {
            token: 9,
            confirmed_down: false,
            to: None
        }));
}

#[test]
fn deadlines_already_passed_do_not_wake_the_loop_again() {
    let mut r = follower_b();
    r.at(
        2,
        PromotionEvent::Members(vec![
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 4),
        ]),
    );
    r.at(50, unannounced(5));
    r.renewed(1300);
    // The wait ended at 1350, refused (behind): nothing more to do until something changes.
    r.at(1400, PromotionEvent::Deadline);
    let next = r.c.next_deadline().expect("the key's deadline");
    assert!(next > r.t0 + Duration::from_millis(1400), "{next:?}");
}

#[test]
fn refusals_in_a_row_only_confirm_a_dead_server() {
    let mut r = leader_a();
    r.at(20, PromotionEvent::Local(LocalPoll::Refused));
    r.at(40, PromotionEvent::Local(LocalPoll::Unanswered));
    let a = r.at(60, PromotionEvent::Local(LocalPoll::Refused));
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::Resign { .. })),
        "{a:?}"
    );
}
