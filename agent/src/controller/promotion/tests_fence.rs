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

/// This agent's `FAILOVER` was accepted at `ms`.
fn accepted(r: &mut Run, ms: u64) -> Vec<PromotionAction> {
    let sent = r.t0 + std::time::Duration::from_millis(ms - 5);
    r.at(ms, PromotionEvent::FailedOver(Ok(sent)))
}

#[test]
fn the_winner_after_an_unannounced_loss_fences_the_old_primary_once_its_failover_took() {
    let mut r = fencing_follower_b();
    let a = win_after_unannounced_loss(&mut r);
    assert_eq!(
        a,
        vec![PromotionAction::Failover {
            token: 9,
            cause: PromotionCause::LeaderLost
        }]
    );
    assert_eq!(fences(&accepted(&mut r, 1810)), vec![(9, "a".to_string())]);
    // Once: a later event asks for nothing more.
    assert!(fences(&r.at(1820, PromotionEvent::Deadline)).is_empty());
}

#[test]
fn a_refused_failover_stops_nobody_and_leaves_the_old_primary_to_the_next_winner() {
    let mut r = fencing_follower_b();
    win_after_unannounced_loss(&mut r);
    let a = r.at(1810, PromotionEvent::FailedOver(Err(true)));
    assert!(fences(&a).is_empty(), "{a:?}");
    // b gave its key back (token 9, never served); c cannot promote either; b, once another
    // node has led, wins again and its FAILOVER takes: a is still the one to stop.
    r.at(1811, unannounced(9));
    let c = LeaderKey {
        holder: "c".into(),
        token: 12,
    };
    r.at(1900, PromotionEvent::Leader(Some(c)));
    r.at(1950, unannounced(12));
    r.renewed(2700);
    assert!(campaigns(&r.at(3250, PromotionEvent::Deadline)));
    r.won(3251, 14);
    assert_eq!(fences(&accepted(&mut r, 3260)), vec![(14, "a".to_string())]);
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
    win_after_unannounced_loss(&mut r);
    assert!(fences(&accepted(&mut r, 1810)).is_empty());
}

#[test]
fn a_confirmed_down_or_demoted_primary_is_not_fenced_by_anyone() {
    let mut r = fencing_follower_b();
    r.at(50, handed_off(5, "a", 5));
    r.won(52, 9);
    assert!(fences(&accepted(&mut r, 60)).is_empty());

    // A switchover to b: neither b nor c (should b fail to take it) stops the demoted a.
    for node in ["b", "c"] {
        let mut r = fencing(node);
        r.renewed(0);
        let a = LeaderKey {
            holder: "a".into(),
            token: 5,
        };
        r.at(0, PromotionEvent::Leader(Some(a)));
        r.local(1, member(node, MemberRole::Secondary, 3));
        r.at(
            1,
            PromotionEvent::Members(vec![
                member("a", MemberRole::Primary, 3),
                member("b", MemberRole::Secondary, 3),
                member("c", MemberRole::Secondary, 3),
            ]),
        );
        let note = Handoff {
            from: "a".into(),
            token: 5,
            confirmed_down: false,
            to: Some("b".into()),
        };
        r.renewed(400);
        r.at(
            500,
            PromotionEvent::LeaderGone {
                token: 5,
                handoff: Some(note),
            },
        );
        r.renewed(1200);
        r.at(1800, PromotionEvent::Deadline);
        r.won(1801, 9);
        assert!(fences(&accepted(&mut r, 1810)).is_empty(), "{node}");
    }
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
    r.won(1901, 9);
    assert_eq!(fences(&accepted(&mut r, 1910)), vec![(9, "a".to_string())]);
}

#[test]
fn a_read_alone_names_nobody() {
    // The watch never showed a's key go (it broke; the note, if any, unseen): a read that
    // finds no key cannot tell whether a said it was down or was demoted.
    let mut r = fencing_follower_b();
    r.renewed(400);
    r.at(500, PromotionEvent::Leader(None));
    r.renewed(1200);
    assert!(campaigns(&r.at(1800, PromotionEvent::Deadline)));
    r.won(1801, 9);
    assert!(fences(&accepted(&mut r, 1810)).is_empty());
}

#[test]
fn another_node_seen_serving_takes_the_target_over() {
    // a is lost; c wins and serves (it fenced a); then c is lost: b stops c, not a.
    let mut r = fencing_follower_b();
    r.renewed(400);
    r.at(500, unannounced(5));
    let c = LeaderKey {
        holder: "c".into(),
        token: 12,
    };
    r.at(1850, PromotionEvent::Leader(Some(c)));
    r.at(
        1900,
        PromotionEvent::Members(vec![
            member("a", MemberRole::Primary, 3),
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Primary, 3),
        ]),
    );
    r.renewed(2400);
    r.at(
        2450,
        PromotionEvent::Members(vec![
            member("b", MemberRole::Secondary, 3),
            member("c", MemberRole::Secondary, 3),
        ]),
    );
    r.at(2500, unannounced(12));
    r.renewed(3100);
    assert!(campaigns(&r.at(3800, PromotionEvent::Deadline)));
    r.won(3801, 14);
    assert_eq!(fences(&accepted(&mut r, 3810)), vec![(14, "c".to_string())]);
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
