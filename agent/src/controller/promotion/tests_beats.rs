//! Rule 9 (`beats.rs`), replayed with exact instants: the leader acts only within its last
//! applied heartbeat, the others depose a key that stopped being rewritten, and candidates
//! wait from the last heartbeat they saw.

use super::tests::*;
use super::*;

/// 700 ms: a leader acts until `sent + 600`, and may send until `sent + 300`.
fn beating(node: &str) -> Run {
    let mut s = settings(node);
    s.leader_timeout = 700 * MS;
    Run::with(s)
}

/// Leader `a` (token 5) under [`beating`]: the campaign sent at 2 ms is its first heartbeat.
fn leader() -> Run {
    let mut r = beating("a");
    r.lease_renewed(0);
    r.local(1, member("a", MemberRole::Primary, 3));
    let a = r.won(2, 5);
    assert_eq!(a, vec![PromotionAction::RenewWriteLease { token: 5 }]);
    r.at(4, PromotionEvent::WriteLeaseRenewed);
    r
}

/// `b` under [`beating`], following leader `a` (token 5), whose key it saw at revision 11 at
/// 100 ms.
fn follower() -> Run {
    let mut r = beating("b");
    r.lease_renewed(0);
    let a = LeaderKey {
        holder: "a".into(),
        token: 5,
    };
    r.at(0, PromotionEvent::Leader(Some(a)));
    r.local(1, member("b", MemberRole::Secondary, 3));
    r.at(
        1,
        PromotionEvent::Members(vec![
            member("a", MemberRole::Primary, 3),
            member("b", MemberRole::Secondary, 3),
        ]),
    );
    beat(&mut r, 0, 10);
    beat(&mut r, 100, 11);
    r
}

fn beat(r: &mut Run, ms: u64, revision: i64) -> Vec<PromotionAction> {
    r.at(ms, PromotionEvent::Beat { token: 5, revision })
}

fn deposes(a: &[PromotionAction]) -> bool {
    has(a, |a| {
        *a == PromotionAction::Depose {
            token: 5,
            revision: 11,
        }
    })
}

fn offline(a: &[PromotionAction]) -> bool {
    has(a, |a| matches!(a, PromotionAction::TakeOffline { .. }))
}

#[test]
fn a_leader_acts_only_within_its_last_applied_heartbeat_though_its_lease_lives() {
    let mut r = leader();
    assert_eq!(r.c.send_by(), Some(r.t0 + 302 * MS), "2 + 700 - 100 - 300");
    r.beaten(150, 5);
    assert_eq!(r.c.send_by(), Some(r.t0 + 450 * MS));
    // The lease is renewed, the key is not rewritten: the lease proves nothing about the key
    // (another agent may have deposed it).
    r.lease_renewed(500);
    let a = r.at(451, PromotionEvent::Deadline);
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::RenewWriteLease { .. })),
        "{a:?}"
    );
    assert!(!offline(&r.at(749, PromotionEvent::Deadline)));
    let a = r.at(750, PromotionEvent::Deadline);
    assert!(offline(&a), "{a:?}");
    assert_eq!(r.c.held(), None);
}

#[test]
fn a_refused_heartbeat_ends_the_lead_and_a_primary_campaigns_again_without_going_offline() {
    // Within its proof only a leader on its peers' acknowledgements (rule 8) can be deposed:
    // the deposers wait `leader_timeout`, its own proof ends `key_margin` sooner.
    let mut r = leader();
    assert!(
        r.at(50, PromotionEvent::BeatRefused { token: 4 })
            .is_empty()
    );
    assert_eq!(r.c.held(), Some(5), "another term's answer");
    let a = r.at(60, PromotionEvent::BeatRefused { token: 5 });
    assert_eq!(r.c.held(), None);
    assert!(!offline(&a), "{a:?}");
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::Resign { .. })),
        "nothing of ours to resign: {a:?}"
    );
    assert!(campaigns(&a), "still the PRIMARY SQL Server chose: {a:?}");
}

#[test]
fn a_leader_asks_its_peers_when_its_heartbeats_are_late_though_its_lease_renews() {
    let mut r = leader();
    r.lease_renewed(500);
    assert_eq!(r.c.wants_acknowledgements(r.t0 + 601 * MS), None);
    assert_eq!(
        r.c.wants_acknowledgements(r.t0 + 602 * MS),
        Some(5),
        "3 renew intervals after the heartbeat sent at 2"
    );
}

#[test]
fn a_silent_leader_is_deposed_once_per_revision_leader_timeout_after_it_was_seen() {
    let mut r = follower();
    assert_eq!(r.c.next_deadline(), Some(r.t0 + 800 * MS));
    assert!(!deposes(&r.at(799, PromotionEvent::Deadline)));
    assert!(deposes(&r.at(800, PromotionEvent::Deadline)));
    assert!(!deposes(&r.at(850, PromotionEvent::Deadline)), "sent once");
    // etcd did not answer: again one renew interval later, not in a spin.
    let a = r.at(
        860,
        PromotionEvent::DeposeFailed {
            token: 5,
            revision: 11,
        },
    );
    assert!(!deposes(&a));
    assert!(!deposes(&r.at(900, PromotionEvent::Deadline)));
    assert_eq!(r.c.next_deadline(), Some(r.t0 + 1060 * MS));
    assert!(!deposes(&r.at(1059, PromotionEvent::Deadline)));
    assert!(deposes(&r.at(1060, PromotionEvent::Deadline)));
}

#[test]
fn a_heartbeat_seen_puts_the_deposal_off_and_a_replayed_older_one_does_not() {
    let mut r = follower();
    assert!(beat(&mut r, 500, 10).is_empty(), "a replay of revision 10");
    assert!(deposes(&r.at(800, PromotionEvent::Deadline)));
    let mut r = follower();
    beat(&mut r, 700, 12);
    let a = r.at(800, PromotionEvent::Deadline);
    assert!(!has(&a, |a| matches!(a, PromotionAction::Depose { .. })));
    let a = r.at(1400, PromotionEvent::Deadline);
    assert!(has(&a, |a| *a
        == PromotionAction::Depose {
            token: 5,
            revision: 12
        }));
}

#[test]
fn a_leader_does_not_depose_itself() {
    let mut r = leader();
    r.at(
        3,
        PromotionEvent::Beat {
            token: 5,
            revision: 6,
        },
    );
    for ms in [800, 900, 2000] {
        let a = r.at(ms, PromotionEvent::Deadline);
        assert!(!has(&a, |a| matches!(a, PromotionAction::Depose { .. })));
    }
}

#[test]
fn after_a_deposal_candidates_wait_from_the_last_heartbeat_they_saw() {
    let mut r = follower();
    // Deposed at 800 (by anyone): the leader's last renewal left before 100 + 700 - 100 -
    // 300 = 400 and landed by 700; its write lease ran out by 1700. Candidates wait until
    // 100 + 700 + 1000 = 1800, not 800 + 1000 + 300 = 2100.
    let a = r.at(800, unannounced(5));
    assert!(!campaigns(&a));
    let view = r.c.view(r.t0 + 800 * MS);
    assert_eq!(view.candidates_wait_until, Some(r.t0 + 1800 * MS));
    r.lease_renewed(1500);
    assert!(!campaigns(&r.at(1799, PromotionEvent::Deadline)));
    assert!(campaigns(&r.at(1800, PromotionEvent::Deadline)));
}

#[test]
fn a_key_that_expired_is_waited_out_from_its_last_heartbeat_too() {
    let mut r = follower();
    r.lease_renewed(900);
    r.at(1400, unannounced(5));
    assert_eq!(
        r.c.view(r.t0 + 1400 * MS).candidates_wait_until,
        Some(r.t0 + 1800 * MS)
    );
}

#[test]
fn a_loss_whose_heartbeats_were_not_seen_waits_the_whole_time() {
    let mut r = follower();
    r.at(
        200,
        PromotionEvent::Leader(Some(LeaderKey {
            holder: "c".into(),
            token: 7,
        })),
    );
    r.at(300, unannounced(7));
    assert_eq!(
        r.c.view(r.t0 + 300 * MS).candidates_wait_until,
        Some(r.t0 + 1600 * MS),
        "300 + 1000 + 300: token 7's heartbeats were never seen"
    );
    // A read that finds no key: what happened meanwhile is unknown.
    let mut r = follower();
    r.at(400, PromotionEvent::Leader(None));
    assert_eq!(
        r.c.view(r.t0 + 400 * MS).candidates_wait_until,
        Some(r.t0 + 1700 * MS)
    );
}

#[test]
fn a_heartbeat_still_queued_counts_when_the_driver_asks_right_before_sending() {
    let r = leader();
    assert_eq!(r.c.send_by(), Some(r.t0 + 302 * MS));
    let heard = |ms: u64, token| Some((token, r.t0 + std::time::Duration::from_millis(ms)));
    assert_eq!(r.c.send_by_with(heard(250, 5)), Some(r.t0 + 550 * MS));
    assert_eq!(
        r.c.send_by_with(heard(500, 5)),
        Some(r.t0 + 600 * MS),
        "never past the lease's own proof (renewed at 0: 900 - 300)"
    );
    assert_eq!(
        r.c.send_by_with(heard(250, 4)),
        Some(r.t0 + 302 * MS),
        "another term's heartbeat proves nothing about this key"
    );
    assert_eq!(r.c.send_by_with(heard(1, 5)), Some(r.t0 + 302 * MS));
}
