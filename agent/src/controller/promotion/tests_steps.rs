//! The promotion's steps for the failover timeline (`steps.rs`), replayed with exact
//! instants: detect, elect and failover as this agent saw them, one record per accepted
//! `FAILOVER`, none for anything else.

use std::time::Duration;

use super::tests::*;
use super::*;

/// `FAILOVER` sent at `sent_ms`, its acceptance handled at `ms`.
fn accepted(r: &mut Run, sent_ms: u64, ms: u64) {
    let sent = r.t0 + Duration::from_millis(sent_ms);
    r.at(ms, PromotionEvent::FailedOver(Ok(sent)));
}

#[test]
fn a_confirmed_handoff_records_detect_elect_and_failover() {
    let mut r = follower_b();
    assert!(campaigns(&r.at(50, handed_off(5, "a", 5))));
    r.won(52, 9);
    assert_eq!(r.c.take_promotion(), None, "FAILOVER not answered yet");
    accepted(&mut r, 53, 60);
    let t = |ms: u64| r.t0 + Duration::from_millis(ms);
    assert_eq!(
        r.c.take_promotion(),
        Some(PromotionSteps {
            cause: PromotionCause::PrimaryDown,
            term: 9,
            vacancy: VacancySign::Handoff {
                from: "a".into(),
                term: 5
            },
            detected: t(50),
            elected: t(52),
            failover_sent: t(53),
            failover_answered: t(60),
        })
    );
    assert_eq!(r.c.take_promotion(), None, "taken once");
}

#[test]
fn an_unannounced_loss_is_detected_when_the_key_went_not_when_the_wait_ended() {
    let mut r = follower_b();
    r.at(500, unannounced(5));
    r.renewed(1700);
    assert!(campaigns(&r.at(1800, PromotionEvent::Deadline)));
    r.won(1803, 11);
    accepted(&mut r, 1804, 1815);
    let p = r.c.take_promotion().expect("a record");
    assert_eq!(p.cause, PromotionCause::LeaderLost);
    assert_eq!(p.vacancy, VacancySign::KeyDeleted { term: 5 });
    assert_eq!(p.vacancy.previous_term(), Some(5));
    assert_eq!(p.detected, r.t0 + 500 * MS);
    assert_eq!(p.elected, r.t0 + 1803 * MS);
    assert_eq!(p.failover_sent, r.t0 + 1804 * MS);
    assert_eq!(p.failover_answered, r.t0 + 1815 * MS);
}

#[test]
fn a_read_without_a_key_restarts_the_vacancy_and_is_its_sign() {
    let mut r = follower_b();
    r.at(50, unannounced(5));
    r.at(1000, PromotionEvent::Leader(None));
    r.renewed(2200);
    assert!(campaigns(&r.at(2300, PromotionEvent::Deadline)));
    r.won(2301, 12);
    accepted(&mut r, 2302, 2309);
    let p = r.c.take_promotion().expect("a record");
    assert_eq!(p.vacancy, VacancySign::KeyMissing);
    assert_eq!(
        p.detected,
        r.t0 + 1000 * MS,
        "the wait counted from the read"
    );
}

#[test]
fn the_vacancy_of_a_fresh_agent_began_at_its_start() {
    let mut r = fresh_secondary_b();
    r.renewed(2300);
    assert!(campaigns(&r.at(2400, PromotionEvent::Deadline)));
    r.won(2401, 3);
    accepted(&mut r, 2402, 2410);
    let p = r.c.take_promotion().expect("a record");
    assert_eq!(p.vacancy, VacancySign::AtStart);
    assert_eq!(p.vacancy.name(), "start");
    assert_eq!(p.detected, r.t0);
}

#[test]
fn the_switchover_target_records_the_note_naming_it() {
    let mut r = follower_b();
    let note = PromotionEvent::LeaderGone {
        token: 5,
        handoff: Some(Handoff {
            from: "a".into(),
            token: 5,
            confirmed_down: false,
            to: Some("b".into()),
        }),
    };
    assert!(campaigns(&r.at(100, note)));
    r.won(101, 9);
    accepted(&mut r, 102, 104);
    let p = r.c.take_promotion().expect("a record");
    assert_eq!(p.cause, PromotionCause::Switchover);
    assert_eq!(p.vacancy.name(), "handoff");
}

#[test]
fn nothing_is_recorded_without_an_accepted_failover() {
    // A PRIMARY's agent takes the key without a failover.
    let mut r = leader_a();
    assert_eq!(r.c.take_promotion(), None);

    // FAILOVER refused (41142): the key goes back, no promotion.
    let mut r = follower_b();
    r.at(50, handed_off(5, "a", 5));
    r.won(52, 9);
    r.at(60, PromotionEvent::FailedOver(Err(true)));
    assert_eq!(r.c.take_promotion(), None);

    // A late acceptance with no campaign won before it records nothing either.
    accepted(&mut r, 70, 75);
    assert_eq!(r.c.take_promotion(), None);

    // Lost to another candidate: no record.
    let mut r = follower_b();
    r.at(50, handed_off(5, "a", 5));
    let c_holds = LeaderKey {
        holder: "c".into(),
        token: 9,
    };
    r.at(52, PromotionEvent::Campaigned(Campaign::Held(c_holds)));
    accepted(&mut r, 53, 60);
    assert_eq!(r.c.take_promotion(), None);
}
