//! The leader keeps `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT` (`commit_quorum.rs`),
//! replayed with exact instants: who sends it, when, and how often.

use super::tests::*;
use super::*;

/// Three synchronous replicas, the AG still at the 0 it was created with.
const UNSET: CommitRule = CommitRule {
    synchronous_replicas: 3,
    required: 0,
};

fn poll(state: MemberState, rule: CommitRule) -> PromotionEvent {
    PromotionEvent::Local(LocalPoll::Up(state, rule))
}

/// The values the actions set, with their tokens.
fn sets(actions: &[PromotionAction]) -> Vec<(i64, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            PromotionAction::SetRequiredSynchronized { token, value, .. } => Some((*token, *value)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_leader_sets_microsofts_value_once_and_not_again_while_a_poll_lags() {
    let mut r = leader_a();
    let a = r.at(10, poll(member("a", MemberRole::Primary, 3), UNSET));
    assert_eq!(sets(&a), [(5, 1)]);
    assert!(has(&a, |a| *a
        == PromotionAction::SetRequiredSynchronized {
            token: 5,
            value: 1,
            reported: UNSET
        }));
    // In flight, then answered while a poll that started before still reads 0.
    assert!(sets(&r.at(20, poll(member("a", MemberRole::Primary, 3), UNSET))).is_empty());
    r.at(30, PromotionEvent::RequiredSynchronizedSet);
    assert!(sets(&r.at(40, poll(member("a", MemberRole::Primary, 3), UNSET))).is_empty());
    // Set: nothing more to send.
    assert!(sets(&r.at(60, poll(member("a", MemberRole::Primary, 3), SETTLED))).is_empty());
}

#[test]
fn a_change_that_did_not_take_is_sent_again_after_a_write_lease_period() {
    let mut r = leader_a();
    r.at(10, poll(member("a", MemberRole::Primary, 3), UNSET));
    r.at(30, PromotionEvent::RequiredSynchronizedSet);
    r.renewed(500);
    assert!(sets(&r.at(1000, poll(member("a", MemberRole::Primary, 3), UNSET))).is_empty());
    // 10 ms + write_lease_validity (1000 ms).
    let a = r.at(1010, poll(member("a", MemberRole::Primary, 3), UNSET));
    assert_eq!(sets(&a), [(5, 1)]);
}

#[test]
fn nothing_is_sent_without_the_keys_proof() {
    let mut r = leader_a();
    // Key deadline 0 + 1000 - 100 = 900 ms; a statement needs 300 ms of it left.
    let a = r.at(650, poll(member("a", MemberRole::Primary, 3), UNSET));
    assert!(sets(&a).is_empty(), "{a:?}");
}

#[test]
fn only_the_leader_over_a_primary_sends_it() {
    // A secondary's agent under leader a.
    let mut r = follower_b();
    let a = r.at(10, poll(member("b", MemberRole::Secondary, 3), UNSET));
    assert!(sets(&a).is_empty(), "{a:?}");
    // A PRIMARY's agent that has not won the key yet campaigns first.
    let mut r = Run::new("a");
    r.renewed(0);
    let a = r.at(1, poll(member("a", MemberRole::Primary, 3), UNSET));
    assert!(campaigns(&a) && sets(&a).is_empty(), "{a:?}");
    // Once it holds the key, it sets the value with the key's token.
    let a = r.won(2, 7);
    assert_eq!(sets(&a), [(7, 1)]);
}

#[test]
fn a_promoted_replica_gets_the_value_once_it_reads_primary() {
    // The lab's sims keep the value they were started with: the new primary's agent sets it.
    let mut r = follower_b();
    r.at(50, handed_off(5, "a", 5));
    r.won(52, 9);
    r.at(60, PromotionEvent::FailedOver(Ok(r.t0 + 55 * MS)));
    let a = r.at(70, poll(member("b", MemberRole::Secondary, 3), UNSET));
    assert!(sets(&a).is_empty(), "still a SECONDARY: {a:?}");
    let a = r.at(90, poll(member("b", MemberRole::Primary, 4), UNSET));
    assert_eq!(sets(&a), [(9, 1)]);
}

#[test]
fn two_synchronous_replicas_get_zero_unless_the_config_says_otherwise() {
    let two = |required| CommitRule {
        synchronous_replicas: 2,
        required,
    };
    let mut r = leader_a();
    let a = r.at(10, poll(member("a", MemberRole::Primary, 3), two(1)));
    assert_eq!(sets(&a), [(5, 0)]);

    let mut r = leader_a();
    r.c.s.required_synchronized = Some(1);
    assert!(sets(&r.at(10, poll(member("a", MemberRole::Primary, 3), two(1)))).is_empty());
    let a = r.at(20, poll(member("a", MemberRole::Primary, 3), two(0)));
    assert_eq!(sets(&a), [(5, 1)]);
}

#[test]
fn a_switchover_under_way_is_not_interrupted() {
    let mut r = leader_a();
    let b = MemberState {
        synchronized: true,
        ..member("b", MemberRole::Secondary, 3)
    };
    r.at(3, PromotionEvent::Members(vec![b]));
    let asked = Switchover {
        to: "b".into(),
        term: 5,
    };
    let a = r.at(10, PromotionEvent::SwitchoverAsked(Some(asked)));
    assert!(
        has(&a, |a| matches!(a, PromotionAction::LetGo { .. })),
        "{a:?}"
    );
    let a = r.at(20, poll(member("a", MemberRole::Primary, 3), UNSET));
    assert!(sets(&a).is_empty(), "while letting go: {a:?}");
    let a = r.at(30, PromotionEvent::LetGoDone { ok: true });
    assert!(
        has(&a, |a| matches!(a, PromotionAction::Demote { .. })),
        "{a:?}"
    );
    let a = r.at(40, poll(member("a", MemberRole::Primary, 3), UNSET));
    assert!(sets(&a).is_empty(), "while demoting: {a:?}");
}
