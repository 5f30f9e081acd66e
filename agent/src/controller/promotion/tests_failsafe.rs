//! Rule 8 (`failsafe.rs`), replayed with exact instants: a leader whose key renewals stop
//! keeps its primary while every peer acknowledges it, and a peer that acknowledged holds
//! its own promotion back.

use std::time::Duration;

use super::tests::*;
use super::*;

fn offline(a: &[PromotionAction]) -> bool {
    has(a, |a| matches!(a, PromotionAction::TakeOffline { .. }))
}

fn renews(a: &[PromotionAction]) -> bool {
    has(a, |a| matches!(a, PromotionAction::RenewWriteLease { .. }))
}

/// Leader `a` (token 5, key renewed at 0 only: deadline 900 ms) with `b` and `c` reported.
fn leader_with_members() -> Run {
    let mut r = leader_a();
    r.at(4, PromotionEvent::WriteLeaseRenewed);
    r.at(
        5,
        PromotionEvent::Members(vec![
            member("a", MemberRole::Primary, 3),
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    r
}

fn acknowledged(r: &mut Run, ms: u64, token: i64, from: &[&str]) -> Vec<PromotionAction> {
    let sent = r.t0 + Duration::from_millis(ms);
    r.at(
        ms,
        PromotionEvent::Acknowledged {
            token,
            sent,
            from: from.iter().map(|s| s.to_string()).collect(),
        },
    )
}

#[test]
fn the_hold_covers_the_window_a_late_landing_and_the_write_lease() {
    // 1000 window + 300 statement + 1000 write lease + 100 margin.
    assert_eq!(settings("a").ack_hold(), 2400 * MS);
}

#[test]
fn a_leader_asks_its_peers_only_once_its_key_renewals_are_late() {
    let mut r = leader_with_members();
    assert_eq!(r.c.wants_acknowledgements(r.t0 + 599 * MS), None);
    assert_eq!(r.c.wants_acknowledgements(r.t0 + 600 * MS), Some(5));
    assert_eq!(
        r.c.next_deadline(),
        Some(r.t0 + 202 * MS),
        "the next write-lease renewal (due 200 ms after the one at 2 ms) comes first"
    );
    r.renewed(500);
    assert_eq!(r.c.wants_acknowledgements(r.t0 + 700 * MS), None);
    assert_eq!(
        Run::new("b").c.wants_acknowledgements(r.t0 + 5000 * MS),
        None,
        "only the key's holder asks"
    );
}

#[test]
fn a_leader_every_peer_acknowledges_keeps_its_primary_past_the_keys_deadline() {
    let mut r = leader_with_members();
    // The key alone lets a renewal be sent until 900 - 300 = 600; the round proves until
    // 600 + 1000 (+ 300 for the landing): sends until 1600.
    let a = acknowledged(&mut r, 600, 5, &["b", "c"]);
    assert!(renews(&a), "{a:?}");
    r.at(610, PromotionEvent::WriteLeaseRenewed);
    let a = r.at(901, PromotionEvent::Deadline);
    assert!(!offline(&a), "{a:?}");
    assert!(renews(&a), "the write lease is renewed on the round: {a:?}");
    let view = r.c.view(r.t0 + 1000 * MS);
    assert!(
        view.failsafe && view.leading && !view.lease_alive,
        "{view:?}"
    );
    r.at(1000, PromotionEvent::WriteLeaseRenewed);
    assert!(
        !renews(&r.at(1601, PromotionEvent::Deadline)),
        "a renewal that could land after the round's proof"
    );
    let a = r.at(1900, PromotionEvent::Deadline);
    assert!(offline(&a), "no proof left at all: {a:?}");
    assert_eq!(r.c.held(), None);
    assert!(!r.c.view(r.t0 + 1900 * MS).failsafe);
}

#[test]
fn a_round_missing_a_reporting_node_or_for_another_key_proves_nothing() {
    let mut r = leader_with_members();
    acknowledged(&mut r, 600, 5, &["b"]);
    acknowledged(&mut r, 610, 4, &["b", "c"]);
    acknowledged(&mut r, 620, 5, &[]);
    let a = r.at(900, PromotionEvent::Deadline);
    assert!(offline(&a), "c did not answer, and c may promote: {a:?}");
}

#[test]
fn the_key_renewing_again_ends_the_failsafe_without_a_gap() {
    let mut r = leader_with_members();
    acknowledged(&mut r, 600, 5, &["b", "c"]);
    r.renewed(1500);
    assert!(!r.c.view(r.t0 + 1550 * MS).failsafe);
    assert_eq!(r.c.wants_acknowledgements(r.t0 + 1550 * MS), None);
    assert!(!offline(&r.at(1900, PromotionEvent::Deadline)));
    assert_eq!(r.c.held(), Some(5));
}

#[test]
fn a_peer_that_acknowledged_a_leader_does_not_campaign_until_its_hold_ends() {
    let mut r = follower_b();
    let until = r.t0 + 2400 * MS;
    r.at(0, PromotionEvent::AcknowledgedLeader { token: 5, until });
    r.at(100, unannounced(5));
    r.renewed(1400);
    assert!(
        !campaigns(&r.at(1401, PromotionEvent::Deadline)),
        "the vacancy's wait is over, the hold is not"
    );
    assert_eq!(r.c.view(r.t0 + 1401 * MS).acknowledged_until, Some(until));
    r.renewed(2300);
    assert_eq!(r.c.next_deadline(), Some(until));
    assert!(campaigns(&r.at(2400, PromotionEvent::Deadline)));
}

#[test]
fn a_later_acknowledgement_extends_the_hold_and_an_earlier_one_does_not_shorten_it() {
    let mut r = follower_b();
    r.at(
        0,
        PromotionEvent::AcknowledgedLeader {
            token: 5,
            until: r.t0 + 2400 * MS,
        },
    );
    r.at(
        10,
        PromotionEvent::AcknowledgedLeader {
            token: 5,
            until: r.t0 + 2000 * MS,
        },
    );
    assert_eq!(
        r.c.view(r.t0 + 10 * MS).acknowledged_until,
        Some(r.t0 + 2400 * MS)
    );
}

#[test]
fn a_confirmed_down_handoff_from_the_acknowledged_leader_ends_the_hold() {
    let mut r = follower_b();
    r.at(
        0,
        PromotionEvent::AcknowledgedLeader {
            token: 5,
            until: r.t0 + 2400 * MS,
        },
    );
    let a = r.at(100, handed_off(5, "a", 5));
    assert!(campaigns(&a), "its SQL Server writes nothing: {a:?}");
}

#[test]
fn a_confirmed_handoff_of_another_key_keeps_the_hold() {
    let mut r = follower_b();
    r.at(
        0,
        PromotionEvent::AcknowledgedLeader {
            token: 7,
            until: r.t0 + 2400 * MS,
        },
    );
    assert!(!campaigns(&r.at(100, handed_off(5, "a", 5))));
}

/// A promise lives in the process that gave it: an agent restarted right after
/// acknowledging a leader without etcd must not promote before that promise would have
/// ended, so a fresh controller waits `ack_hold` (longer than an unannounced loss's wait).
#[test]
fn a_restarted_agent_waits_out_any_promise_its_previous_process_gave() {
    let mut r = fresh_secondary_b();
    // The first read of the leader key finds none: a vacancy's wait would start again here,
    // shorter than the promise it must outlast.
    r.at(5, PromotionEvent::Leader(None));
    r.renewed(1300);
    assert!(
        !campaigns(&r.at(1310, PromotionEvent::Deadline)),
        "an unannounced loss's wait is not enough"
    );
    r.renewed(2300);
    assert!(campaigns(&r.at(2400, PromotionEvent::Deadline)));
}

#[test]
fn a_round_needs_as_many_answers_as_the_local_catalog_has_synchronous_replicas() {
    let mut r = leader_with_members();
    // The local replica's catalog lists four synchronous replicas; etcd showed only b and
    // c (a fourth node missing from [[peer]], its key not seen since etcd went away).
    r.local(
        6,
        MemberState {
            voters: 4,
            ..member("a", MemberRole::Primary, 3)
        },
    );
    acknowledged(&mut r, 600, 5, &["b", "c"]);
    assert!(offline(&r.at(900, PromotionEvent::Deadline)));
}

#[test]
fn a_switchover_needs_the_key_not_just_the_peers() {
    let mut r = leader_with_members();
    acknowledged(&mut r, 600, 5, &["b", "c"]);
    let a = r.at(
        700,
        PromotionEvent::SwitchoverAsked(Some(Switchover {
            to: "b".into(),
            term: 5,
        })),
    );
    assert!(
        !has(&a, |a| matches!(a, PromotionAction::LetGo { .. })),
        "it would end in a resign etcd cannot take: {a:?}"
    );
}

/// A leader whose replica does not answer is about to give it up (rule 2): it does not ask
/// its peers to keep it (found in the hang-primary bench, where their holds delayed the
/// failover).
#[test]
fn a_leader_whose_replica_does_not_answer_asks_nobody() {
    let mut r = leader_with_members();
    r.at(300, PromotionEvent::Local(LocalPoll::Unanswered));
    assert_eq!(r.c.wants_acknowledgements(r.t0 + 700 * MS), None);
}
