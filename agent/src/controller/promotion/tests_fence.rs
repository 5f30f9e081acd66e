//! Rule 4d, `[fence] aws`: who is stopped, by whom, and when not.

use super::tests::*;
use super::*;

fn fencing(node: &str) -> Run {
    Run::with(PromotionSettings {
        fence: true,
        ..settings(node)
    })
}

/// `b`'s agent with fencing on, following leader `a` (token 5), whose replica the members
/// show PRIMARY.
fn fencing_follower_b() -> Run {
    let mut r = fencing("b");
    r.renewed(0);
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
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    r
}

fn fences(a: &[PromotionAction]) -> Vec<(i64, String)> {
    a.iter()
        .filter_map(|a| match a {
            PromotionAction::Fence { token, node } => Some((*token, node.clone())),
            _ => None,
        })
        .collect()
}

/// After an unannounced loss of `a`'s key at 500 ms (its member state withdrawn, as when its
/// SQL Server stops answering), `b` waits, campaigns and wins token 9.
fn win_after_unannounced_loss(r: &mut Run) -> Vec<PromotionAction> {
    r.renewed(400);
    r.at(
        450,
        PromotionEvent::Members(vec![
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    r.at(500, unannounced(5));
    r.renewed(1200);
    assert!(campaigns(&r.at(1800, PromotionEvent::Deadline)));
    r.won(1801, 9)
}

#[test]
fn the_winner_after_an_unannounced_loss_fences_the_old_primary_before_its_failover() {
    let mut r = fencing_follower_b();
    let a = win_after_unannounced_loss(&mut r);
    assert_eq!(
        a,
        vec![
            PromotionAction::Fence {
                token: 9,
                node: "a".into()
            },
            PromotionAction::Failover {
                token: 9,
                cause: PromotionCause::LeaderLost
            }
        ]
    );
}

#[test]
fn without_fence_aws_nothing_is_stopped() {
    let mut r = follower_b();
    r.at(
        1,
        PromotionEvent::Members(vec![
            member("a", MemberRole::Primary, 3),
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    assert!(fences(&win_after_unannounced_loss(&mut r)).is_empty());
}

#[test]
fn a_confirmed_down_or_demoted_primary_is_not_fenced() {
    let mut r = fencing_follower_b();
    r.at(50, handed_off(5, "a", 5));
    let a = r.won(52, 9);
    assert!(fences(&a).is_empty(), "{a:?}");
    assert!(has(&a, |a| matches!(a, PromotionAction::Failover { .. })));

    let mut r = fencing_follower_b();
    let note = Handoff {
        from: "a".into(),
        token: 5,
        confirmed_down: false,
        to: Some("b".into()),
    };
    let gone = PromotionEvent::LeaderGone {
        token: 5,
        handoff: Some(note),
    };
    assert!(campaigns(&r.at(50, gone)));
    let a = r.won(52, 9);
    assert!(fences(&a).is_empty(), "{a:?}");
}

#[test]
fn a_read_that_finds_no_key_after_the_watch_showed_it_go_still_fences_whom_it_went_from() {
    let mut r = fencing_follower_b();
    r.renewed(400);
    r.at(500, unannounced(5));
    // The watch broke and a fresh read finds no key: a new wait, the same old primary.
    r.at(600, PromotionEvent::Leader(None));
    r.renewed(1300);
    assert!(campaigns(&r.at(1900, PromotionEvent::Deadline)));
    assert_eq!(fences(&r.won(1901, 9)), vec![(9, "a".to_string())]);
}

#[test]
fn a_leader_that_never_served_is_not_fenced_and_one_fence_per_loss() {
    // `a` is lost and `c` wins, fences `a`, and is refused with 41142; `c`'s key then goes
    // unannounced. `b` wins that vacancy: `c` was never PRIMARY, and `a` was `c`'s to fence.
    let mut r = fencing_follower_b();
    r.renewed(400);
    r.at(500, unannounced(5));
    let c = LeaderKey {
        holder: "c".into(),
        token: 7,
    };
    r.at(1850, PromotionEvent::Leader(Some(c)));
    r.at(1900, unannounced(7));
    r.renewed(2600);
    assert!(campaigns(&r.at(3200, PromotionEvent::Deadline)));
    let a = r.won(3201, 9);
    assert!(fences(&a).is_empty(), "{a:?}");
    assert!(has(&a, |a| matches!(a, PromotionAction::Failover { .. })));
}

#[test]
fn a_primary_that_takes_its_own_lost_key_back_fences_nobody() {
    let mut r = fencing("a");
    r.renewed(0);
    r.at(
        0,
        PromotionEvent::Members(vec![member("a", MemberRole::Primary, 3)]),
    );
    r.local(1, member("a", MemberRole::Primary, 3));
    r.won(2, 5);
    // Its key deposed (a slow etcd): it campaigns again at once, without a failover.
    r.at(300, PromotionEvent::BeatRefused { token: 5 });
    let a = r.won(310, 8);
    assert!(fences(&a).is_empty(), "{a:?}");
    assert!(!has(&a, |a| matches!(a, PromotionAction::Failover { .. })));
}
