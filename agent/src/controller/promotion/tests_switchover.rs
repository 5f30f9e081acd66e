//! Rule 7 (`switchover.rs`), replayed with exact instants: the leader lets go, demotes and
//! hands the key to a synchronized target, which promotes at once; every failure on the way
//! gives the addresses back.

use super::tests::*;
use super::*;

fn synchronized(node: &str, yes: bool) -> MemberState {
    MemberState {
        synchronized: yes,
        ..member(node, MemberRole::Secondary, 3)
    }
}

fn members(r: &mut Run, ms: u64, b_synchronized: bool) -> Vec<PromotionAction> {
    r.at(
        ms,
        PromotionEvent::Members(vec![
            member("a", MemberRole::Primary, 3),
            synchronized("b", b_synchronized),
            synchronized("c", true),
        ]),
    )
}

fn ask(r: &mut Run, ms: u64, to: &str, term: i64) -> Vec<PromotionAction> {
    r.at(
        ms,
        PromotionEvent::SwitchoverAsked(Some(Switchover {
            to: to.into(),
            term,
        })),
    )
}

fn note_to(to: &str) -> PromotionEvent {
    PromotionEvent::LeaderGone {
        token: 5,
        handoff: Some(Handoff {
            from: "a".into(),
            token: 5,
            confirmed_down: false,
            to: Some(to.into()),
        }),
    }
}

#[test]
fn the_leader_waits_for_a_synchronized_target_then_lets_go_demotes_and_hands_over() {
    let mut r = leader_a();
    members(&mut r, 3, false);
    assert!(
        ask(&mut r, 10, "b", 5).is_empty(),
        "b is not SYNCHRONIZED yet"
    );
    let a = members(&mut r, 20, true);
    let let_go = PromotionAction::LetGo {
        token: 5,
        to: "b".into(),
    };
    assert!(a.contains(&let_go), "{a:?}");
    assert!(!members(&mut r, 30, true).contains(&let_go), "once");
    let a = r.at(40, PromotionEvent::LetGoDone { ok: true });
    assert_eq!(a, vec![PromotionAction::Demote { token: 5 }]);
    let a = r.at(50, PromotionEvent::Demoted { ok: true });
    let resign = PromotionAction::Resign {
        token: 5,
        confirmed_down: false,
        to: Some("b".into()),
    };
    assert_eq!(a[0], resign, "{a:?}");
    assert!(
        a[1..]
            .iter()
            .all(|a| matches!(a, PromotionAction::Publish(m) if m.role == MemberRole::Secondary)),
        "the replica is published SECONDARY, never withdrawn (b's majority counts it): {a:?}"
    );
    assert_eq!(r.c.held(), None);
    // The poll before the demotion still said PRIMARY: no campaign on it.
    let a = r.at(60, note_to("b"));
    assert!(!campaigns(&a), "{a:?}");
}

#[test]
fn a_request_for_another_term_or_for_the_leader_itself_is_ignored() {
    let mut r = leader_a();
    members(&mut r, 3, true);
    assert!(ask(&mut r, 10, "b", 4).is_empty());
    assert!(ask(&mut r, 20, "a", 5).is_empty());
    assert!(r.at(30, PromotionEvent::Deadline).is_empty());
}

#[test]
fn a_demotion_is_sent_only_while_the_key_is_provably_held() {
    let mut r = leader_a();
    members(&mut r, 3, true);
    r.at(4, PromotionEvent::WriteLeaseRenewed);
    // Renewed at 0: 900 - 300 = 600 is the last instant to send.
    assert!(ask(&mut r, 601, "b", 5).is_empty(), "no let-go either");
    let mut r = leader_a();
    members(&mut r, 3, true);
    ask(&mut r, 10, "b", 5);
    let a = r.at(650, PromotionEvent::LetGoDone { ok: true });
    assert_eq!(a, vec![PromotionAction::MayHold]);
}

#[test]
fn every_failure_before_the_demotion_gives_the_addresses_back() {
    let start = || {
        let mut r = leader_a();
        members(&mut r, 3, true);
        ask(&mut r, 10, "b", 5);
        r
    };
    let mut r = start();
    assert_eq!(
        r.at(20, PromotionEvent::LetGoDone { ok: false }),
        vec![PromotionAction::MayHold]
    );
    let mut r = start();
    r.at(20, PromotionEvent::LetGoDone { ok: true });
    assert_eq!(
        r.at(30, PromotionEvent::Demoted { ok: false }),
        vec![PromotionAction::MayHold]
    );
    assert_eq!(r.c.held(), Some(5), "still the leader, still PRIMARY");
    let mut r = start();
    assert_eq!(
        r.at(20, PromotionEvent::SwitchoverAsked(None)),
        vec![PromotionAction::MayHold],
        "withdrawn while letting go"
    );
    assert!(r.at(30, PromotionEvent::LetGoDone { ok: true }).is_empty());
}

#[test]
fn the_target_promotes_at_once_and_the_others_wait_as_after_a_loss() {
    let mut r = follower_b();
    let a = r.at(100, note_to("b"));
    assert!(campaigns(&a), "{a:?}");
    let a = r.won(101, 9);
    assert_eq!(
        a,
        vec![PromotionAction::Failover {
            token: 9,
            cause: PromotionCause::Switchover,
        }]
    );
    let mut r = follower_b();
    assert!(!campaigns(&r.at(100, note_to("c"))), "the AG goes to c");
    r.renewed(1300);
    assert!(campaigns(&r.at(1400, PromotionEvent::Deadline)));
}

/// Seen in the lab (hang-primary): a leader that resigned saw its own key, still in etcd
/// until the deletion came back through the watch, and resigned it a second time.
#[test]
fn a_resign_is_sent_once_before_the_deletion_comes_back() {
    let mut r = leader_a();
    r.at(10, PromotionEvent::Local(LocalPoll::Refused));
    let a = r.at(20, PromotionEvent::Local(LocalPoll::Refused));
    let resigns = |a: &[PromotionAction]| {
        a.iter()
            .filter(|a| matches!(a, PromotionAction::Resign { .. }))
            .count()
    };
    assert_eq!(resigns(&a), 1, "{a:?}");
    let again = r.at(
        30,
        PromotionEvent::Leader(Some(LeaderKey {
            holder: "a".into(),
            token: 5,
        })),
    );
    assert_eq!(resigns(&again), 0, "{again:?}");
}

/// Seen in the lab: a poll that read PRIMARY just before the demotion waited in the queue
/// while the switchover ran, reached the controller after it, and the demoted primary's
/// agent took the key back as a PRIMARY without one.
#[test]
fn a_poll_older_than_the_demotion_is_ignored() {
    let mut r = leader_a();
    members(&mut r, 3, true);
    ask(&mut r, 10, "b", 5);
    r.at(20, PromotionEvent::LetGoDone { ok: true });
    r.at(30, PromotionEvent::Demoted { ok: true });
    r.at(35, note_to("b"));
    let stale = PromotionEvent::Polled {
        poll: LocalPoll::Up(member("a", MemberRole::Primary, 3), SETTLED),
        started: r.t0 + std::time::Duration::from_millis(25),
    };
    let a = r.at(40, stale);
    assert!(!campaigns(&a), "{a:?}");
    let fresh = PromotionEvent::Polled {
        poll: LocalPoll::Up(member("a", MemberRole::Secondary, 3), SETTLED),
        started: r.t0 + std::time::Duration::from_millis(41),
    };
    let a = r.at(45, fresh);
    assert!(!campaigns(&a), "{a:?}");
    assert_eq!(
        r.c.view(r.t0 + std::time::Duration::from_millis(45)).leader,
        None
    );
}

/// A resign that got no answer leaves the key in this node's name (its lease still renewed):
/// it is given back again after an interval, not left to hold up every candidate for good.
#[test]
fn a_failed_resign_is_tried_again_after_an_interval() {
    let mut r = leader_a();
    r.at(10, PromotionEvent::Local(LocalPoll::Refused));
    r.at(20, PromotionEvent::Local(LocalPoll::Refused));
    assert!(
        r.at(30, PromotionEvent::ResignFailed { token: 5 })
            .is_empty()
    );
    let key = PromotionEvent::Leader(Some(LeaderKey {
        holder: "a".into(),
        token: 5,
    }));
    let a = r.at(31, key);
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::Resign { .. })),
        "{a:?}"
    );
    assert_eq!(
        r.c.next_deadline(),
        Some(r.t0 + std::time::Duration::from_millis(230))
    );
    let a = r.at(230, PromotionEvent::Deadline);
    assert!(
        has(&a, |a| matches!(
            a,
            PromotionAction::Resign { token: 5, .. }
        )),
        "{a:?}"
    );
}

/// A switchover right after the target's agent started: the hold a fresh process starts
/// with (rule 8) does not delay it (the lab's switchover test found a 1 s wait).
#[test]
fn a_fresh_target_is_not_held_back_by_its_start_hold() {
    let mut r = fresh_secondary_b();
    r.at(
        3,
        PromotionEvent::Leader(Some(LeaderKey {
            holder: "a".into(),
            token: 5,
        })),
    );
    assert!(campaigns(&r.at(100, note_to("b"))));
}
