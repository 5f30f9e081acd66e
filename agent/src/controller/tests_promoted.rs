//! Manage mode's promotion steps joined to the acquire's timeline (`state/promoted.rs`),
//! with exact instants: the whole path detect → elect → failover → re-observe → acquire in
//! one record, whichever of the two controllers hears of it first, and never in an acquire
//! that did not follow the promotion.

use std::time::{Duration, Instant};

use tdsvip_probes::Outcome;

use super::promotion::{PromotionCause, PromotionSteps, VacancySign};
use super::*;
use crate::driver::verdict::classify;

struct Bench {
    c: AgController,
    t0: Instant,
}

impl Bench {
    /// Rise 2, settled in `Standby` over a SECONDARY (the startup cleanup done).
    fn secondary() -> Bench {
        let mut p = AgPolicy::new(2, 3);
        p.timeline_limit = Duration::from_millis(1000);
        let mut b = Bench {
            c: AgController::new("ag1", p).unwrap(),
            t0: Instant::now(),
        };
        let not_primary = Outcome::NotPrimary {
            role: Some("SECONDARY".into()),
            detail: "ag1".into(),
        };
        b.probe(0, not_primary);
        b.node_call(6, false);
        assert_eq!(b.c.state(), OwnershipState::Standby);
        b
    }

    fn t(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// A probe that started at `ms` and whose result arrived 5 ms later.
    fn probe(&mut self, ms: u64, outcome: Outcome) -> Vec<Decision> {
        let verdict = classify(&outcome);
        let started = self.t(ms);
        self.c
            .handle(self.t(ms + 5), Event::LocalProbe { verdict, started })
    }

    /// The node call that started at `ms` returned 1 ms later.
    fn node_call(&mut self, ms: u64, acquire: bool) {
        let call = NodeCall {
            started: self.t(ms),
            steps: vec![],
            error: None,
        };
        let e = match acquire {
            true => Event::NodeAcquired(call),
            false => Event::NodeReleased(call),
        };
        self.c.handle(self.t(ms + 1), e);
    }

    /// This agent's promotion: vacancy at `at`, key won 2 ms later, `FAILOVER` sent 1 ms
    /// after that and accepted 7 ms after the send; its record arrives at `arrives`.
    fn promoted(&mut self, at: u64, arrives: u64) -> PromotionSteps {
        let p = PromotionSteps {
            cause: PromotionCause::PrimaryDown,
            term: 9,
            vacancy: VacancySign::Handoff {
                from: "a".into(),
                term: 5,
            },
            detected: self.t(at),
            elected: self.t(at + 2),
            failover_sent: self.t(at + 3),
            failover_answered: self.t(at + 10),
        };
        let e = Event::Promoted(Box::new(p.clone()));
        self.c.handle(self.t(arrives), e);
        p
    }

    /// Two PRIMARY probes from `ms` (rise 2) and the acquire's node call: the completed
    /// timeline.
    /// After this agent's own promotion: one PRIMARY probe from `ms` and the acquire's node
    /// call.
    fn acquire_promoted(&mut self, ms: u64) -> FailoverTimeline {
        let d = self.probe(ms, Outcome::Ok);
        assert!(matches!(d[..], [Decision::Acquire { .. }]), "{d:?}");
        self.node_call(ms + 6, true);
        let mut done = self.c.take_completed_timelines();
        assert_eq!(done.len(), 1, "{done:?}");
        done.remove(0)
    }

    fn acquire(&mut self, ms: u64) -> FailoverTimeline {
        self.probe(ms, Outcome::Ok);
        let d = self.probe(ms + 20, Outcome::Ok);
        assert!(matches!(d[..], [Decision::Acquire { .. }]), "{d:?}");
        self.node_call(ms + 26, true);
        let mut done = self.c.take_completed_timelines();
        assert_eq!(done.len(), 1, "{done:?}");
        done.remove(0)
    }
}

#[test]
fn a_promotion_heard_before_the_acquire_is_in_its_timeline_in_order() {
    let mut b = Bench::secondary();
    let p = b.promoted(100, 110);
    // The promoted replica is seen PRIMARY at 115 (probe from 110) and acquired at once:
    // one probe begun after its FAILOVER meets the rise count.
    let t = b.acquire_promoted(110);
    assert_eq!(t.promotion.as_ref(), Some(&p));
    assert_eq!(t.local_primary_seen, Some(b.t(115)));
    assert_eq!(t.decided, b.t(115));
    assert_eq!(t.origin(), b.t(100), "the vacancy is the timeline's start");

    let json = serde_json::to_value(&t).unwrap();
    let promotion = &json["promotion"];
    assert_eq!(promotion["cause"], "primary_down");
    assert_eq!(promotion["term"], 9);
    assert_eq!(promotion["vacancy_seen"], "handoff");
    assert_eq!(promotion["previous_leader"], "a");
    assert_eq!(promotion["previous_term"], 5);
    // detect ≤ elect ≤ failover ≤ re-observe ≤ acquire, in seconds from the vacancy.
    let steps = [
        &promotion["detected"],
        &promotion["elected"],
        &promotion["failover_sent"],
        &promotion["failover_answered"],
        &json["local_primary_seen"],
        &json["decided"],
    ];
    let secs: Vec<f64> = steps.iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(secs, [0.0, 0.002, 0.003, 0.010, 0.015, 0.015]);
}

#[test]
fn a_promotion_heard_after_the_acquire_began_joins_its_open_timeline() {
    let mut b = Bench::secondary();
    // The ownership probe saw PRIMARY before the manage task handed the record over.
    b.probe(104, Outcome::Ok);
    let d = b.probe(124, Outcome::Ok);
    assert!(matches!(d[..], [Decision::Acquire { .. }]), "{d:?}");
    let p = b.promoted(100, 131);
    b.node_call(130, true);
    let done = b.c.take_completed_timelines();
    assert_eq!(done[0].promotion.as_ref(), Some(&p));
}

#[test]
fn an_acquire_whose_primary_run_began_before_the_failover_was_sent_is_not_joined() {
    let mut b = Bench::secondary();
    b.probe(95, Outcome::Ok);
    b.probe(115, Outcome::Ok);
    // Seen PRIMARY at 100, before this FAILOVER went out at 103: not its acquire.
    b.promoted(100, 121);
    b.node_call(121, true);
    let done = b.c.take_completed_timelines();
    assert_eq!(done[0].promotion, None);
}

#[test]
fn a_record_that_came_too_late_or_waited_too_long_joins_no_later_acquire() {
    // Too late: the acquire it led to is closed; the next ownership is another story.
    let mut b = Bench::secondary();
    let t = b.acquire(110);
    assert_eq!(t.promotion, None);
    b.promoted(100, 150);
    let gone = Outcome::NotPrimary {
        role: Some("SECONDARY".into()),
        detail: "ag1".into(),
    };
    b.probe(200, gone);
    b.node_call(206, false);
    b.c.take_completed_timelines();
    assert_eq!(b.acquire(300).promotion, None);

    // Waited longer than the timeline limit (1 s) for its acquire.
    let mut b = Bench::secondary();
    b.promoted(100, 110);
    assert_eq!(b.acquire(1111).promotion, None);
}

#[test]
fn after_its_own_promotion_one_primary_probe_begun_after_the_failover_meets_the_rise_count() {
    // A PRIMARY probe that began before FAILOVER was sent (at 103) is no proof the promotion
    // took: the rise count (2) stands.
    let mut b = Bench::secondary();
    b.promoted(100, 110);
    assert!(b.probe(102, Outcome::Ok).is_empty());
    let d = b.probe(122, Outcome::Ok);
    assert!(matches!(d[..], [Decision::Acquire { .. }]), "{d:?}");

    // Begun after it: one is enough, also when the record arrives after the probe's answer.
    let mut b = Bench::secondary();
    assert!(b.probe(104, Outcome::Ok).is_empty());
    let d = b.c.handle(
        b.t(112),
        Event::Promoted(Box::new(PromotionSteps {
            cause: PromotionCause::LeaderLost,
            term: 9,
            vacancy: VacancySign::KeyDeleted { term: 5 },
            detected: b.t(90),
            elected: b.t(100),
            failover_sent: b.t(103),
            failover_answered: b.t(111),
        })),
    );
    assert!(matches!(d[..], [Decision::Acquire { .. }]), "{d:?}");

    // Without a promotion of its own (follow mode), one probe is not enough.
    let mut b = Bench::secondary();
    assert!(b.probe(104, Outcome::Ok).is_empty());
}

#[test]
fn a_promotion_undone_before_its_acquire_lowers_no_rise_count() {
    // FAILOVER sent at 103. A SECONDARY read at 104 (the role not shown yet) keeps the
    // record; PRIMARY at 110 (an acquire held back, here by a let-go), then
    // SECONDARY at 130 (taken OFFLINE, made SECONDARY again): the run ended, and a later
    // PRIMARY run needs the whole rise count again.
    let mut b = Bench::secondary();
    b.promoted(100, 102);
    let not_primary = || Outcome::NotPrimary {
        role: Some("SECONDARY".into()),
        detail: "ag1".into(),
    };
    b.probe(104, not_primary());
    b.c.handle(b.t(108), Event::LetGo { until: b.t(125) });
    let held = b.probe(110, Outcome::Ok);
    assert!(
        !held.iter().any(|d| matches!(d, Decision::Acquire { .. })),
        "held back by the let-go: {held:?}"
    );
    b.probe(130, not_primary());
    assert!(b.probe(150, Outcome::Ok).is_empty());
    let d = b.probe(170, Outcome::Ok);
    assert!(matches!(d[..], [Decision::Acquire { .. }]), "{d:?}");
    let mut done = {
        b.node_call(176, true);
        b.c.take_completed_timelines()
    };
    assert_eq!(done.remove(0).promotion, None);
}
