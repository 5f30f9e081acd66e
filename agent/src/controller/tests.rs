//! The controller's policy, row by row of DESIGN.md's table, plus flapping, conflicting
//! primaries, in-flight calls, stop, cloud retries and the failover timeline. Time is a
//! fixed base instant plus milliseconds, so every assertion on timing is exact.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tdsvip_cloud::{ClaimReport, RouteState, TableClaim};
use tdsvip_probes::{Outcome, Phase};

use super::*;
use crate::driver::verdict::{claim_summary, classify};

fn secondary() -> Outcome {
    Outcome::NotPrimary {
        role: Some("SECONDARY".into()),
        detail: "ag1".into(),
    }
}

fn resolving() -> Outcome {
    Outcome::NotPrimary {
        role: Some("RESOLVING".into()),
        detail: "ag1".into(),
    }
}

fn timeout() -> Outcome {
    Outcome::Timeout {
        phase: Phase::Login,
    }
}

fn db_recovering() -> Outcome {
    Outcome::DbNotOnline {
        database: "sales".into(),
        state: Some("RECOVERING".into()),
    }
}

/// A node step that started `offset_ms` after its call did (at `call`).
fn step(call: Instant, name: &str, offset_ms: u64, duration_ms: u64) -> TimedStep {
    TimedStep {
        name: name.into(),
        start: call + Duration::from_millis(offset_ms),
        duration: Duration::from_millis(duration_ms),
        ok: true,
        detail: String::new(),
    }
}

/// A cloud report as the executor writes it, summarised as the driver hands it in.
fn claim_report(tables: &[(&str, bool)], total_ms: u64) -> Box<ClaimSummary> {
    let total = Duration::from_millis(total_ms);
    Box::new(claim_summary(&ClaimReport {
        address: Ipv4Addr::new(192, 168, 100, 10),
        eni: "eni-aaaa".into(),
        mode: tdsvip_cloud::ClaimMode::Route,
        tables: tables
            .iter()
            .map(|(id, ok)| TableClaim {
                id: (*id).into(),
                before: None,
                after: Some(if *ok {
                    RouteState::ThisEni
                } else {
                    RouteState::OtherEni {
                        eni: "eni-bbbb".into(),
                        instance: None,
                    }
                }),
                outcome: tdsvip_cloud::TableCalls {
                    elapsed: total,
                    attempts: 1,
                    error: (!ok).then(|| "RequestLimitExceeded: throttled".to_owned()),
                    error_code: (!ok).then(|| "RequestLimitExceeded".to_owned()),
                    config_problem: false,
                    calls: vec![],
                },
            })
            .collect(),
        total,
        budget: Duration::from_millis(8700),
    }))
}

/// A controller on a fixed clock; `ms` arguments are milliseconds after the base instant.
struct Bench {
    c: AgController,
    t0: Instant,
}

impl Bench {
    fn new(policy: AgPolicy) -> Bench {
        Bench {
            c: AgController::new("ag1", policy).unwrap(),
            t0: Instant::now(),
        }
    }

    fn default() -> Bench {
        Bench::new(AgPolicy::new(2, 3))
    }

    fn with_cloud() -> Bench {
        let mut p = AgPolicy::new(2, 3);
        p.cloud_retry = Some(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        });
        Bench::new(p)
    }

    fn t(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn send(&mut self, ms: u64, event: Event) -> Vec<Decision> {
        let now = self.t(ms);
        self.c.handle(now, event)
    }

    /// A probe that started at `ms` and whose result arrived 5 ms later.
    fn probe(&mut self, ms: u64, outcome: Outcome) -> Vec<Decision> {
        let started = self.t(ms);
        let now = self.t(ms + 5);
        let verdict = classify(&outcome);
        self.c.handle(now, Event::LocalProbe { verdict, started })
    }

    fn node_ok(&self, ms: u64) -> NodeCall {
        NodeCall {
            started: self.t(ms),
            steps: vec![],
            error: None,
        }
    }

    fn acquired(&mut self, ms: u64) -> Vec<Decision> {
        let call = self.node_ok(ms);
        self.send(ms + 1, Event::NodeAcquired(call))
    }

    fn released(&mut self, ms: u64) -> Vec<Decision> {
        let call = self.node_ok(ms);
        self.send(ms + 1, Event::NodeReleased(call))
    }

    fn peer(&mut self, ms: u64, name: &str, role: Option<ReplicaRole>) -> Vec<Decision> {
        let at = self.t(ms);
        self.send(
            ms,
            Event::Peer(PeerReport {
                peer: name.into(),
                at,
                view: Some(PeerView {
                    role,
                    primary_lost: None,
                    overlay_logins: None,
                }),
            }),
        )
    }

    fn peer_unreachable(&mut self, ms: u64, name: &str) -> Vec<Decision> {
        let at = self.t(ms);
        self.send(
            ms,
            Event::Peer(PeerReport {
                peer: name.into(),
                at,
                view: None,
            }),
        )
    }

    /// Runs the startup cleanup (a SECONDARY first verdict releases once), returning the
    /// time used, so a test can start from a settled `Standby`.
    fn settled(&mut self) -> u64 {
        let (cause, _) = only_release(&self.probe(0, secondary()));
        assert_eq!(cause, ReleaseCause::Startup);
        assert!(self.released(6).is_empty());
        assert_eq!(self.c.state(), OwnershipState::Standby);
        20
    }

    /// Brings the controller to `Owner` (rise 2), returning the time used.
    fn own(&mut self) -> u64 {
        assert!(self.probe(0, Outcome::Ok).is_empty());
        let d = self.probe(20, Outcome::Ok);
        assert!(matches!(d[0], Decision::Acquire { .. }), "{d:?}");
        assert!(self.acquired(26).is_empty());
        assert_eq!(self.c.state(), OwnershipState::Owner);
        40
    }
}

fn only_release(d: &[Decision]) -> (ReleaseCause, String) {
    match d {
        [Decision::Release { cause, reason, .. }] => (*cause, reason.clone()),
        other => panic!("expected one Release, got {other:?}"),
    }
}

fn count(d: &[Decision], pred: impl Fn(&Decision) -> bool) -> usize {
    d.iter().filter(|x| pred(x)).count()
}

fn is_acquire(d: &Decision) -> bool {
    matches!(d, Decision::Acquire { .. })
}

fn is_release(d: &Decision) -> bool {
    matches!(d, Decision::Release { .. })
}

// Row 1: local replica PRIMARY, databases ONLINE, rise count met → acquire (or keep).
#[test]
fn primary_online_and_rise_met_acquires_then_keeps() {
    let mut b = Bench::default();
    assert!(b.probe(0, Outcome::Ok).is_empty(), "rise 2 needs two oks");
    let d = b.probe(20, Outcome::Ok);
    match d.as_slice() {
        [Decision::Acquire { ag, reason }] => {
            assert_eq!(ag, "ag1");
            assert!(reason.contains("PRIMARY"), "{reason}");
            assert!(reason.contains("2 probes in a row (rise 2)"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.c.state(), OwnershipState::Acquiring);
    assert!(
        b.probe(40, Outcome::Ok).is_empty(),
        "no second acquire in flight"
    );
    assert!(b.acquired(41).is_empty());
    assert_eq!(b.c.state(), OwnershipState::Owner);
    for i in 0..50 {
        assert!(b.probe(60 + i * 20, Outcome::Ok).is_empty());
    }
    assert_eq!(b.c.state(), OwnershipState::Owner);
}

// Row 1, the databases: never own while a configured database is not ONLINE.
#[test]
fn a_database_not_online_blocks_acquire_and_releases_at_once() {
    let mut b = Bench::default();
    let t = b.settled();
    for (i, o) in [Outcome::Ok, db_recovering(), Outcome::Ok, db_recovering()]
        .into_iter()
        .enumerate()
    {
        assert!(b.probe(t + i as u64 * 20, o).is_empty());
    }
    assert_eq!(b.c.state(), OwnershipState::Standby);

    let mut b = Bench::default();
    let t = b.own();
    let (cause, reason) = only_release(&b.probe(t, db_recovering()));
    assert_eq!(cause, ReleaseCause::DbNotOnline);
    assert!(reason.contains("sales is RECOVERING"), "{reason}");
}

// Row 2: local replica SECONDARY / RESOLVING → release at once, whatever the fall count.
#[test]
fn secondary_or_resolving_releases_at_once() {
    for (outcome, role) in [(secondary(), "SECONDARY"), (resolving(), "RESOLVING")] {
        let mut b = Bench::new(AgPolicy::new(2, 100));
        let t = b.own();
        let (cause, reason) = only_release(&b.probe(t, outcome));
        assert_eq!(cause, ReleaseCause::NotPrimary);
        assert!(reason.contains(role), "{reason}");
        assert_eq!(b.c.state(), OwnershipState::Releasing);
        assert!(b.released(t + 10).is_empty());
        assert_eq!(b.c.state(), OwnershipState::Standby);
    }
}

// Row 3: local SQL not answering → release once the fall count is reached, not before.
#[test]
fn not_answering_releases_after_exactly_the_fall_count() {
    let silent = [
        Outcome::Refused,
        timeout(),
        Outcome::Reset {
            phase: Phase::Prelogin,
        },
        Outcome::Unreachable {
            detail: "no route to host".into(),
        },
        Outcome::LoginFailed {
            code: Some(18456),
            message: "login failed".into(),
        },
        Outcome::ProtocolError {
            phase: Phase::Login,
            detail: "eof".into(),
        },
        Outcome::QueryFailed {
            code: 300,
            message: "no permission".into(),
        },
        Outcome::IoError {
            phase: Phase::Connect,
            detail: "EMFILE".into(),
        },
    ];
    for outcome in silent {
        let mut b = Bench::default();
        let t = b.own();
        assert!(b.probe(t, outcome.clone()).is_empty(), "{outcome}");
        assert!(b.probe(t + 20, outcome.clone()).is_empty(), "{outcome}");
        let (cause, reason) = only_release(&b.probe(t + 40, outcome.clone()));
        assert_eq!(cause, ReleaseCause::NotAnswering, "{outcome}");
        assert!(
            reason.contains("3 failed probes in a row (fall 3)"),
            "{reason}"
        );
        assert!(reason.contains(outcome.name()), "{reason}");
    }
    // An ok in between restarts the count.
    let mut b = Bench::default();
    let t = b.own();
    for (i, o) in [timeout(), timeout(), Outcome::Ok, timeout(), timeout()]
        .into_iter()
        .enumerate()
    {
        assert!(b.probe(t + i as u64 * 20, o).is_empty());
    }
    assert_eq!(b.c.state(), OwnershipState::Owner);
}

// Row 4: a peer replica also reports PRIMARY → do not acquire; alert and count.
#[test]
fn a_peer_reporting_primary_blocks_acquire_and_counts_one_conflict() {
    let mut b = Bench::default();
    assert!(b.probe(0, Outcome::Ok).is_empty());
    // Seen PRIMARY after the local replica was, then the local one confirmed PRIMARY again:
    // two primaries at once.
    assert!(b.peer(10, "node-b", Some(ReplicaRole::Primary)).is_empty());
    let d = b.probe(20, Outcome::Ok);
    match d.as_slice() {
        [
            Decision::Alert { kind, reason, .. },
            Decision::Hold { reason: held, .. },
        ] => {
            assert_eq!(*kind, AlertKind::Conflict);
            assert!(reason.contains("node-b"), "{reason}");
            assert!(reason.contains("not acquiring"), "{reason}");
            assert!(held.contains("node-b"), "{held}");
        }
        other => panic!("{other:?}"),
    }
    for i in 2..20 {
        assert!(
            b.peer(i * 20, "node-b", Some(ReplicaRole::Primary))
                .is_empty()
        );
        assert!(
            b.probe(i * 20, Outcome::Ok).is_empty(),
            "one alert, one hold"
        );
    }
    assert_eq!(b.c.conflicts(), 1);
    assert_eq!(b.c.state(), OwnershipState::Standby);
    // The peer is demoted: the conflict is over and the local PRIMARY acquires.
    let d = b.peer(400, "node-b", Some(ReplicaRole::Secondary));
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
    assert_eq!(b.c.conflicts(), 1);
}

// Row 4, the holder: it keeps the address only while its own replica is PRIMARY.
#[test]
fn the_holder_keeps_the_address_only_while_its_own_replica_is_primary() {
    let mut b = Bench::default();
    let t = b.own();
    // The peer's report, then a local probe that confirms PRIMARY: the conflict starts.
    assert!(b.peer(t, "node-b", Some(ReplicaRole::Primary)).is_empty());
    let d = b.probe(t, Outcome::Ok);
    match d.as_slice() {
        [Decision::Alert { kind, reason, .. }] => {
            assert_eq!(*kind, AlertKind::Conflict);
            assert!(reason.contains("keeping the address"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.c.state(), OwnershipState::Owner);
    assert!(b.probe(t + 20, Outcome::Ok).is_empty());
    assert_eq!(b.c.conflicts(), 1);
    let (cause, _) = only_release(&b.probe(t + 40, resolving()));
    assert_eq!(cause, ReleaseCause::NotPrimary);
    assert!(b.released(t + 50).is_empty());
    // Local PRIMARY again while the peer still says PRIMARY: a new episode, no acquire.
    assert!(b.probe(t + 60, Outcome::Ok).is_empty());
    assert!(
        b.peer(t + 70, "node-b", Some(ReplicaRole::Primary))
            .is_empty()
    );
    let d = b.probe(t + 80, Outcome::Ok);
    assert_eq!(count(&d, |d| matches!(d, Decision::Alert { .. })), 1);
    assert_eq!(count(&d, is_acquire), 0, "{d:?}");
    assert_eq!(b.c.conflicts(), 2);
}

// Row 5: cloud API unreachable or throttled → retry with backoff; node ownership stands.
#[test]
fn cloud_failure_keeps_ownership_and_schedules_retries_with_backoff() {
    let mut b = Bench::with_cloud();
    b.probe(0, Outcome::Ok);
    let d = b.probe(20, Outcome::Ok);
    let t25 = b.t(25);
    match d.as_slice() {
        [
            Decision::Acquire { .. },
            Decision::ClaimCloud { attempt: 1, at, .. },
        ] => assert_eq!(*at, t25),
        other => panic!("{other:?}"),
    }
    assert!(b.acquired(26).is_empty());
    let fail = claim_report(&[("rtb-1", true), ("rtb-2", false)], 30);
    let started = b.t(25);
    let d = b.send(
        60,
        Event::CloudClaimed {
            attempt: 1,
            started,
            report: fail.clone(),
        },
    );
    match d.as_slice() {
        [
            Decision::Alert {
                kind: AlertKind::CloudClaimFailed,
                reason,
                ..
            },
            Decision::ClaimCloud { attempt: 2, at, .. },
        ] => {
            assert!(reason.contains("1 of 2 route tables"), "{reason}");
            assert!(reason.contains("rtb-2: RequestLimitExceeded"), "{reason}");
            assert!(reason.contains("node-level takeover stands"), "{reason}");
            assert!(reason.contains("retry in 100 ms"), "{reason}");
            assert_eq!(*at, b.t(160));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.c.state(), OwnershipState::Owner);
    // A late duplicate of attempt 1 is stale.
    let d = b.send(
        70,
        Event::CloudClaimed {
            attempt: 1,
            started,
            report: fail.clone(),
        },
    );
    assert!(d.is_empty(), "{d:?}");
    let started = b.t(160);
    let d = b.send(
        200,
        Event::CloudClaimed {
            attempt: 2,
            started,
            report: fail,
        },
    );
    match d.as_slice() {
        [
            Decision::Alert { reason, .. },
            Decision::ClaimCloud { attempt: 3, at, .. },
        ] => {
            assert!(reason.contains("retry in 200 ms"), "{reason}");
            assert_eq!(*at, b.t(400));
        }
        other => panic!("{other:?}"),
    }
    let started = b.t(400);
    let d = b.send(
        450,
        Event::CloudClaimed {
            attempt: 3,
            started,
            report: claim_report(&[("rtb-1", true), ("rtb-2", true)], 20),
        },
    );
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(b.c.state(), OwnershipState::Owner);
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    // From the first claim's start (25 ms) to the end of the successful one (400 + 20 ms).
    assert_eq!(
        done[0].phases().route_table,
        Some(Duration::from_millis(395))
    );
}

// Row 6: peer agents unreachable → no effect on ownership.
#[test]
fn unreachable_peers_do_not_change_ownership() {
    let mut b = Bench::default();
    let t = b.own();
    for i in 0..10 {
        assert!(b.peer_unreachable(t + i * 20, "node-b").is_empty());
        assert!(b.probe(t + i * 20, Outcome::Ok).is_empty());
    }
    assert_eq!(b.c.state(), OwnershipState::Owner);
    // A dead old primary: its last report said PRIMARY, then it became unreachable. Its
    // stale view is forgotten, so the new primary is not blocked forever.
    let mut b = Bench::default();
    b.probe(0, Outcome::Ok);
    b.peer(10, "node-b", Some(ReplicaRole::Primary));
    b.probe(20, Outcome::Ok);
    assert_eq!(b.c.state(), OwnershipState::Standby);
    let d = b.peer_unreachable(40, "node-b");
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
}

#[test]
fn a_stale_peer_report_stops_counting() {
    let mut p = AgPolicy::new(2, 3);
    p.peer_stale_after = Duration::from_millis(500);
    let mut b = Bench::new(p);
    b.probe(0, Outcome::Ok);
    b.peer(10, "node-b", Some(ReplicaRole::Primary));
    assert!(b.probe(480, Outcome::Ok).iter().all(|d| !is_acquire(d)));
    let d = b.probe(510, Outcome::Ok);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
}

// A switchover or failover: the peer's last report (PRIMARY) was seen before the local
// replica became PRIMARY. It is the old primary, not a second one: acquiring waits for no
// newer report of it (that would cost a poll interval of every failover).
#[test]
fn the_old_primary_seen_before_the_promotion_does_not_block() {
    let mut b = Bench::default();
    b.peer(0, "node-b", Some(ReplicaRole::Primary));
    assert!(b.probe(10, Outcome::Ok).is_empty());
    let d = b.probe(30, Outcome::Ok);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
    assert_eq!(b.c.conflicts(), 0);
    // Reports seen during the local PRIMARY streak do count.
    assert!(b.acquired(36).is_empty());
    assert!(b.peer(40, "node-b", Some(ReplicaRole::Primary)).is_empty());
    let d = b.probe(50, Outcome::Ok);
    assert_eq!(count(&d, |d| matches!(d, Decision::Alert { .. })), 1);
    assert_eq!(b.c.conflicts(), 1);
}

#[test]
fn flapping_never_moves_the_address_more_than_rise_and_fall_allow() {
    // Standby, alternating ok / timeout and ok / not_primary: the rise of 2 is never met.
    for bad in [timeout(), secondary(), db_recovering()] {
        let mut b = Bench::default();
        let t = b.settled();
        for i in 0..500u64 {
            let o = if i % 2 == 0 { Outcome::Ok } else { bad.clone() };
            assert!(b.probe(t + i * 20, o).is_empty());
        }
        assert_eq!(b.c.state(), OwnershipState::Standby);
    }
    // Owner, alternating ok / timeout (and ok, timeout, timeout): fall 3 is never met.
    for pattern in [&[true, false][..], &[true, false, false]] {
        let mut b = Bench::default();
        let t = b.own();
        for i in 0..600u64 {
            let o = if pattern[i as usize % pattern.len()] {
                Outcome::Ok
            } else {
                timeout()
            };
            assert!(b.probe(t + i * 20, o).is_empty());
        }
        assert_eq!(b.c.state(), OwnershipState::Owner);
    }
    // Owner, alternating ok / SECONDARY: one release at the first SECONDARY, then nothing.
    let mut b = Bench::default();
    let t = b.own();
    let mut releases = 0;
    let mut acquires = 0;
    for i in 0..500u64 {
        let o = if i % 2 == 0 { secondary() } else { Outcome::Ok };
        let d = b.probe(t + i * 20, o);
        releases += count(&d, is_release);
        acquires += count(&d, is_acquire);
        if releases == 1 && b.c.state() == OwnershipState::Releasing {
            b.released(t + i * 20 + 6);
        }
    }
    assert_eq!((releases, acquires), (1, 0));
}

#[test]
fn the_first_verdict_not_to_own_removes_a_leftover_address_once() {
    // SQL Server says SECONDARY at once.
    let mut b = Bench::default();
    let (cause, reason) = only_release(&b.probe(0, secondary()));
    assert_eq!(cause, ReleaseCause::Startup);
    assert!(reason.contains("SECONDARY"), "{reason}");
    assert!(reason.contains("left behind"), "{reason}");
    assert!(b.released(6).is_empty());
    for i in 1..10 {
        assert!(b.probe(i * 20, secondary()).is_empty(), "only once");
    }
    assert!(
        b.c.take_completed_timelines().is_empty(),
        "a cleanup is not a failover"
    );
    // Local SQL silent from the start: after the fall count.
    let mut b = Bench::default();
    assert!(b.probe(0, timeout()).is_empty());
    assert!(b.probe(20, timeout()).is_empty());
    assert_eq!(
        only_release(&b.probe(40, timeout())).0,
        ReleaseCause::Startup
    );
    // PRIMARY first: the acquire takes over whatever is there, no cleanup afterwards.
    let mut b = Bench::default();
    let t = b.own();
    assert_eq!(
        only_release(&b.probe(t, secondary())).0,
        ReleaseCause::NotPrimary
    );
}

#[test]
fn a_release_in_flight_blocks_acquire_until_it_completes() {
    let mut b = Bench::default();
    let t = b.own();
    only_release(&b.probe(t, secondary()));
    assert!(b.probe(t + 20, Outcome::Ok).is_empty());
    let d = b.probe(t + 40, Outcome::Ok);
    match d.as_slice() {
        [Decision::Hold { reason, .. }] => {
            assert!(
                reason.contains("release (not_primary) is still in flight"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    for i in 3..10 {
        assert!(b.probe(t + i * 20, Outcome::Ok).is_empty());
    }
    let d = b.released(t + 200);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
}

#[test]
fn a_demotion_during_the_acquire_releases_as_soon_as_it_returns() {
    let mut b = Bench::default();
    b.probe(0, Outcome::Ok);
    assert_eq!(count(&b.probe(20, Outcome::Ok), is_acquire), 1);
    assert!(b.probe(40, secondary()).is_empty(), "the executor is busy");
    let (cause, reason) = only_release(&b.acquired(50));
    assert_eq!(cause, ReleaseCause::NotPrimary);
    assert!(reason.contains("arrived during the acquire"), "{reason}");
}

#[test]
fn stop_releases_and_never_acquires_again() {
    let mut b = Bench::default();
    let t = b.own();
    let (cause, reason) = only_release(&b.send(t, Event::Stop));
    assert_eq!(cause, ReleaseCause::Stop);
    assert!(reason.contains("stopping"), "{reason}");
    assert!(b.released(t + 5).is_empty());
    assert_eq!(b.c.state(), OwnershipState::Standby);
    for i in 1..10 {
        assert!(b.probe(t + i * 20, Outcome::Ok).is_empty());
    }
    // Standby: nothing to give up.
    let mut b = Bench::default();
    assert!(b.send(0, Event::Stop).is_empty());
    // Acquiring: the release follows the acquire.
    let mut b = Bench::default();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    assert!(b.send(30, Event::Stop).is_empty());
    assert_eq!(only_release(&b.acquired(35)).0, ReleaseCause::Stop);
}

#[test]
fn a_planned_switchover_lets_go_of_a_primary_and_holds_off_until_its_deadline() {
    let mut b = Bench::default();
    let t = b.own();
    let until = b.t(t + 500);
    let (cause, reason) = only_release(&b.send(t, Event::LetGo { until }));
    assert_eq!(cause, ReleaseCause::Switchover);
    assert!(
        reason.contains("before the local replica is demoted"),
        "{reason}"
    );
    let d = b.released(t + 5);
    assert!(
        matches!(d.as_slice(), [Decision::Hold { reason, .. }] if reason.contains("planned switchover")),
        "still PRIMARY, yet no acquire: {d:?}"
    );
    assert!(
        b.probe(t + 20, Outcome::Ok).is_empty(),
        "held once per episode"
    );
    assert_eq!(b.c.next_deadline(), Some(until));
    // The demotion never came: past the deadline the PRIMARY's addresses come back.
    let d = b.send(t + 500, Event::Deadline);
    assert!(d.iter().any(is_acquire), "{d:?}");
}

#[test]
fn may_hold_ends_a_let_go_at_once_and_a_demotion_needs_nothing_more() {
    let mut b = Bench::default();
    let t = b.own();
    let until = b.t(t + 5000);
    b.send(t, Event::LetGo { until });
    b.released(t + 5);
    let d = b.send(t + 10, Event::MayHold);
    assert!(d.iter().any(is_acquire), "{d:?}");
    // The usual end: the replica is demoted while let go, and nothing is acquired after.
    let mut b = Bench::default();
    let t = b.own();
    b.send(
        t,
        Event::LetGo {
            until: b.t(t + 300),
        },
    );
    b.released(t + 5);
    for i in 1..30 {
        assert!(!b.probe(t + i * 20, secondary()).iter().any(is_acquire));
    }
    assert_eq!(b.c.state(), OwnershipState::Standby);
}

#[test]
fn a_failed_acquire_is_undone_and_backed_off() {
    let mut b = Bench::default();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    let started = b.t(25);
    let d = b.send(
        30,
        Event::NodeAcquired(NodeCall {
            started,
            steps: vec![step(started, "ebpf", 0, 1)],
            error: Some("address add: permission denied".into()),
        }),
    );
    match d.as_slice() {
        [
            Decision::Alert {
                kind: AlertKind::AcquireFailed,
                reason: alert,
                ..
            },
            Decision::Release {
                cause: ReleaseCause::AcquireFailed,
                reason,
                ..
            },
            Decision::Hold { reason: hold, .. },
        ] => {
            assert!(
                hold.contains("release (acquire_failed) is still in flight"),
                "{hold}"
            );
            assert!(alert.contains("permission denied"), "{alert}");
            assert!(alert.contains("200 ms"), "{alert}");
            assert!(reason.contains("permission denied"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Released at 41 ms, still PRIMARY, but within the backoff: one hold, then silence.
    let d = b.released(40);
    assert!(
        matches!(d.as_slice(), [Decision::Hold { reason, .. }] if reason.contains("backoff after 1 failed")),
        "{d:?}"
    );
    assert_eq!(b.c.state(), OwnershipState::Standby);
    assert!(b.probe(60, Outcome::Ok).is_empty());
    assert!(b.probe(200, Outcome::Ok).is_empty());
    // 30 ms + 200 ms of backoff: the probe seen at 230 ms may acquire again.
    let d = b.probe(225, Outcome::Ok);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
}

#[test]
fn a_failed_release_is_retried_on_the_next_reconcile_tick_and_blocks_acquire() {
    let mut b = Bench::default();
    let t = b.own();
    only_release(&b.probe(t, secondary()));
    let started = b.t(t + 6);
    let d = b.send(
        t + 10,
        Event::NodeReleased(NodeCall {
            started,
            steps: vec![],
            error: Some("netlink: busy".into()),
        }),
    );
    assert!(
        matches!(d.as_slice(), [Decision::Alert { kind: AlertKind::ReleaseFailed, reason, .. }] if reason.contains("netlink: busy")),
        "{d:?}"
    );
    b.probe(t + 20, Outcome::Ok);
    let d = b.probe(t + 40, Outcome::Ok);
    assert_eq!(count(&d, is_acquire), 0, "{d:?}");
    let (cause, reason) = only_release(&b.send(t + 50, Event::Reconcile { drift: vec![] }));
    assert_eq!(cause, ReleaseCause::NotPrimary);
    assert!(reason.contains("retrying"), "{reason}");
    let d = b.released(t + 60);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
}

#[test]
fn reconcile_drift_is_repaired_and_counted_by_kind() {
    let mut b = Bench::with_cloud();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    b.acquired(26);
    let started = b.t(25);
    b.send(
        50,
        Event::CloudClaimed {
            attempt: 1,
            started,
            report: claim_report(&[("rtb-1", true)], 10),
        },
    );
    let drift = vec![
        Drift {
            kind: DriftKind::Address,
            detail: "192.168.100.10/32 missing on eth0".into(),
        },
        Drift {
            kind: DriftKind::RouteTable,
            detail: "rtb-1 points to eni-bbbb".into(),
        },
    ];
    let d = b.send(5000, Event::Reconcile { drift });
    match d.as_slice() {
        [
            Decision::Repair {
                kind: DriftKind::Address,
                reason: r1,
                ..
            },
            Decision::Repair {
                kind: DriftKind::RouteTable,
                reason: r2,
                ..
            },
            Decision::ClaimCloud { attempt: 2, .. },
        ] => {
            assert!(r1.contains("missing on eth0"), "{r1}");
            assert!(r2.contains("eni-bbbb"), "{r2}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.c.drift_repairs(DriftKind::Address), 1);
    assert_eq!(b.c.drift_repairs(DriftKind::RouteTable), 1);
    assert_eq!(b.c.drift_repairs(DriftKind::Ebpf), 0);
    // Not an owner: drift reports are not acted on.
    let mut b = Bench::default();
    let d = b.send(
        0,
        Event::Reconcile {
            drift: vec![Drift {
                kind: DriftKind::Ebpf,
                detail: "x".into(),
            }],
        },
    );
    assert!(d.is_empty());
    assert_eq!(b.c.drift_repairs(DriftKind::Ebpf), 0);
}

#[test]
fn the_acquire_timeline_has_every_phase_at_its_exact_duration() {
    let mut p = AgPolicy::new(2, 3);
    p.cloud_retry = Some(Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(1000),
    });
    p.expect_overlay_login = true;
    let mut b = Bench::new(p);
    // A peer saw the old primary's first failed probe at 0 ms and reached its fall at 60 ms.
    let (lost, detected) = (b.t(0), b.t(60));
    let at = b.t(70);
    b.send(
        70,
        Event::Peer(PeerReport {
            peer: "node-b".into(),
            at,
            view: Some(PeerView {
                role: Some(ReplicaRole::Secondary),
                primary_lost: Some(PrimaryLoss {
                    first_failure: lost,
                    detected: Some(detected),
                }),
                overlay_logins: Some(OverlayLogins::default()),
            }),
        }),
    );
    // Local PRIMARY first seen at 105 ms (probe 100 + 5), rise met at 125 ms: decision.
    b.probe(100, Outcome::Ok);
    assert_eq!(count(&b.probe(120, Outcome::Ok), is_acquire), 1);
    let node = NodeCall {
        started: b.t(127),
        steps: vec![
            step(b.t(127), "ebpf", 0, 1),
            step(b.t(127), "address", 1, 3),
            step(b.t(127), "garp", 4, 2),
            step(b.t(127), "tickle", 6, 1),
        ],
        error: None,
    };
    b.send(134, Event::NodeAcquired(node));
    let claim_start = b.t(126);
    b.send(
        200,
        Event::CloudClaimed {
            attempt: 1,
            started: claim_start,
            report: claim_report(&[("rtb-1", true), ("rtb-2", true)], 42),
        },
    );
    assert!(
        b.c.take_completed_timelines().is_empty(),
        "waits for the login"
    );
    b.send(160, Event::LocalOverlayLogin);
    b.send(170, Event::LocalOverlayLogin);
    assert!(
        b.c.take_completed_timelines().is_empty(),
        "waits for a peer's login through the overlay IP"
    );
    // node-b's logins through the overlay IP have been answered here since 172 ms.
    let (at, since) = (b.t(190), b.t(172));
    b.send(190, client_login_report("node-b", at, Some(since)));
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    let tl = &done[0];
    assert_eq!(tl.direction, Direction::Acquire);
    assert_eq!(tl.old_primary_failed_by.as_deref(), Some("node-b"));
    let ms = Duration::from_millis;
    let p = tl.phases();
    assert_eq!(p.detect, Some(ms(60)));
    assert_eq!(p.decide, Some(ms(20)));
    assert_eq!(p.ebpf, Some(ms(1)));
    assert_eq!(p.address, Some(ms(3)));
    assert_eq!(p.garp, Some(ms(2)));
    assert_eq!(p.route_table, Some(ms(42)));
    assert_eq!(p.first_local_login, Some(ms(35)));
    assert_eq!(p.first_client_login, Some(ms(47)));
    assert_eq!(tl.first_client_login_by.as_deref(), Some("node-b"));
    assert_eq!(p.known().len(), 8);

    let json = serde_json::to_value(tl).unwrap();
    let secs = |v: &serde_json::Value| (v.as_f64().unwrap() * 1e6).round() / 1e6;
    assert_eq!(secs(&json["old_primary_failed"]), 0.0);
    assert_eq!(secs(&json["detected"]), 0.06);
    assert_eq!(secs(&json["local_primary_seen"]), 0.105);
    assert_eq!(secs(&json["decided"]), 0.125);
    assert_eq!(json["node_steps"][1]["name"], "address");
    assert_eq!(secs(&json["node_steps"][1]["at"]), 0.128);
    assert_eq!(json["route_tables"][1]["name"], "rtb-2");
    assert_eq!(secs(&json["route_tables"][1]["duration"]), 0.042);
    assert_eq!(secs(&json["first_local_login"]), 0.16);
    assert_eq!(secs(&json["first_client_login"]), 0.172);
    assert_eq!(json["first_client_login_by"], "node-b");
    assert_eq!(secs(&json["phases"]["detect"]), 0.06);
    assert_eq!(secs(&json["phases"]["route_table"]), 0.042);
    assert_eq!(json["direction"], "acquire");
    assert_eq!(json["reason_label"], "primary");
}

#[test]
fn the_release_timeline_measures_local_detection() {
    let mut b = Bench::default();
    let t = b.own();
    b.probe(t, timeout());
    b.probe(t + 20, timeout());
    only_release(&b.probe(t + 40, timeout()));
    let node = NodeCall {
        started: b.t(t + 46),
        steps: vec![
            step(b.t(t + 46), "ebpf", 0, 1),
            step(b.t(t + 46), "sock_destroy", 1, 1),
            step(b.t(t + 46), "address", 2, 2),
        ],
        error: None,
    };
    b.send(t + 50, Event::NodeReleased(node));
    let done = b.c.take_completed_timelines();
    // The acquire's timeline (closed by the release) and the release's.
    assert_eq!(done.len(), 2);
    let tl = &done[1];
    assert_eq!(tl.direction, Direction::Release);
    assert_eq!(tl.reason_label(), "not_answering");
    assert_eq!(tl.old_primary_failed_by.as_deref(), Some("local"));
    let p = tl.phases();
    // First failed probe started at t, the third result arrived at t + 45.
    assert_eq!(p.detect, Some(Duration::from_millis(45)));
    assert_eq!(p.decide, Some(Duration::ZERO));
    assert_eq!(p.address, Some(Duration::from_millis(2)));
    assert_eq!(p.garp, None);
}

#[test]
fn a_peer_loss_withdrawn_by_the_peer_is_not_stamped_into_the_timeline() {
    let mut b = Bench::default();
    let (lost, at) = (b.t(0), b.t(10));
    let report = |at, primary_lost| {
        Event::Peer(PeerReport {
            peer: "node-b".into(),
            at,
            view: Some(PeerView {
                role: Some(ReplicaRole::Secondary),
                primary_lost,
                overlay_logins: None,
            }),
        })
    };
    let loss = PrimaryLoss {
        first_failure: lost,
        detected: None,
    };
    b.send(10, report(at, Some(loss)));
    let at = b.t(20);
    b.send(20, report(at, None));
    b.own();
    let done = b.c.take_completed_timelines();
    let tl = &done[0];
    assert_eq!(tl.old_primary_failed, None);
    assert_eq!(tl.phases().detect, None);
    // Reported and kept: the next acquire gets it.
    let mut b = Bench::default();
    let at = b.t(10);
    b.send(10, report(at, Some(loss)));
    b.own();
    let done = b.c.take_completed_timelines();
    let tl = &done[0];
    assert_eq!(tl.old_primary_failed, Some(lost));
    assert_eq!(tl.old_primary_failed_by.as_deref(), Some("node-b"));
}

/// A small deterministic generator, so the invariant test needs no extra dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Random interleavings of probes, peer reports, executor results and stops, against a
/// driver model: an Acquire is never decided while a node call is in flight, while the last
/// fresh report of a reachable peer, seen during the local PRIMARY streak, said PRIMARY, or
/// after a stop.
#[test]
fn never_two_owners_under_random_interleavings() {
    let mut acquires = 0;
    for seed in 0..40u64 {
        let mut rng = Lcg(seed);
        let mut b = Bench::new(AgPolicy::new(
            1 + rng.next(3) as u32,
            1 + rng.next(3) as u32,
        ));
        let stale = AgPolicy::new(1, 1).peer_stale_after;
        let mut in_flight: Option<bool> = None; // Some(true) acquire, Some(false) release
        let mut peer_primary_at: Option<u64> = None;
        // When the local PRIMARY streak's first ok arrived (probes answer 5 ms after `ms`).
        let mut local_since: Option<u64> = None;
        let mut stopped = false;
        for i in 0..3000u64 {
            let ms = i * 10;
            let d = match rng.next(10) {
                0..=4 => {
                    let o = match rng.next(4) {
                        0 | 1 => Outcome::Ok,
                        2 => secondary(),
                        _ => timeout(),
                    };
                    if o == Outcome::Ok {
                        local_since.get_or_insert(ms + 5);
                    } else {
                        local_since = None;
                    }
                    b.probe(ms, o)
                }
                5 => {
                    let role = if rng.next(3) == 0 {
                        peer_primary_at = Some(ms);
                        ReplicaRole::Primary
                    } else {
                        peer_primary_at = None;
                        ReplicaRole::Secondary
                    };
                    b.peer(ms, "node-b", Some(role))
                }
                6 => {
                    peer_primary_at = None;
                    b.peer_unreachable(ms, "node-b")
                }
                7 | 8 => match in_flight.take() {
                    Some(true) => b.acquired(ms),
                    Some(false) => b.released(ms),
                    None => vec![],
                },
                _ => {
                    if rng.next(50) == 0 {
                        stopped = true;
                        b.send(ms, Event::Stop)
                    } else {
                        vec![]
                    }
                }
            };
            for x in &d {
                match x {
                    Decision::Acquire { .. } => {
                        acquires += 1;
                        assert_eq!(in_flight, None, "seed {seed} at {ms} ms: {d:?}");
                        assert!(!stopped, "seed {seed}: acquire after stop");
                        let fresh = peer_primary_at.is_some_and(|at| {
                            Duration::from_millis(ms + 5 - at) <= stale
                                && local_since.is_none_or(|since| at >= since)
                        });
                        assert!(!fresh, "seed {seed} at {ms} ms: peer is PRIMARY");
                        in_flight = Some(true);
                    }
                    Decision::Release { .. } => {
                        assert_eq!(in_flight, None, "seed {seed} at {ms} ms: {d:?}");
                        in_flight = Some(false);
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(
        acquires > 100,
        "the generator must exercise acquires: {acquires}"
    );
}

// SQL Server not listening on the overlay IP: the acquire's timeline must still reach
// /events and the metrics, saying what never came.
#[test]
fn an_acquire_timeline_closes_at_its_limit_naming_what_never_came() {
    let mut p = AgPolicy::new(2, 3);
    p.expect_overlay_login = true;
    p.timeline_limit = Duration::from_millis(1000);
    let mut b = Bench::new(p);
    b.probe(0, Outcome::Ok);
    let d = b.probe(20, Outcome::Ok);
    assert_eq!(count(&d, is_acquire), 1);
    b.acquired(26);
    assert!(b.c.take_completed_timelines().is_empty());
    b.probe(500, Outcome::Ok);
    assert!(b.c.take_completed_timelines().is_empty());
    b.probe(1020, Outcome::Ok);
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].unfinished, ["first_local_login"]);
    let json = serde_json::to_value(&done[0]).unwrap();
    assert_eq!(json["unfinished"], serde_json::json!(["first_local_login"]));
    assert_eq!(b.c.state(), OwnershipState::Owner);

    // Cut short by a demotion before any overlay login: it says so too.
    let mut b2 = Bench::new({
        let mut p = AgPolicy::new(2, 3);
        p.expect_overlay_login = true;
        p
    });
    b2.probe(0, Outcome::Ok);
    b2.probe(20, Outcome::Ok);
    b2.acquired(26);
    b2.probe(40, secondary());
    let done = b2.c.take_completed_timelines();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].unfinished, ["first_local_login"]);
}

// A failing owner whose peer replica is seen PRIMARY after the owner last was: SQL Server
// has a new primary, release without waiting out the fall count.
#[test]
fn a_failing_owner_releases_at_once_when_a_peer_became_primary() {
    let mut b = Bench::default();
    let t = b.own();
    assert!(b.probe(t, Outcome::Ok).is_empty());
    // The old primary's SQL dies; a peer replica is promoted and seen PRIMARY.
    assert!(
        b.peer(t + 10, "node-b (tds)", Some(ReplicaRole::Primary))
            .is_empty()
    );
    let (cause, reason) = only_release(&b.probe(t + 20, Outcome::Refused));
    assert_eq!(cause, ReleaseCause::PeerPrimary);
    assert!(
        reason.contains("node-b (tds)") && reason.contains("fall 3"),
        "{reason}"
    );
    b.released(t + 26);
    let done = b.c.take_completed_timelines();
    let release = done.last().unwrap();
    assert_eq!(release.reason_label(), "peer_primary");
    assert!(release.detected.is_some() && release.old_primary_failed.is_some());

    // A PRIMARY report from before the local replica was last confirmed does not count:
    // one failed probe is not enough then.
    let mut b = Bench::default();
    let t = b.own();
    b.peer(t, "node-b", Some(ReplicaRole::Primary));
    assert!(
        b.probe(t + 10, Outcome::Ok)
            .iter()
            .all(|d| !matches!(d, Decision::Release { .. }))
    );
    assert!(b.probe(t + 30, Outcome::Refused).is_empty());
    assert_eq!(b.c.state(), OwnershipState::Owner);
    // Nor does a peer report while the local replica still answers PRIMARY (a conflict:
    // the holder keeps the address while its own replica is PRIMARY).
    let mut b = Bench::default();
    let t = b.own();
    b.probe(t, Outcome::Ok);
    b.peer(t + 10, "node-b", Some(ReplicaRole::Primary));
    assert!(
        b.probe(t + 20, Outcome::Ok)
            .iter()
            .all(|d| !matches!(d, Decision::Release { .. }))
    );
    assert_eq!(b.c.state(), OwnershipState::Owner);
}

/// A controller whose AG has peers: every acquire starts with the handover question.
fn with_handover() -> Bench {
    let mut p = AgPolicy::new(2, 3);
    p.handover = true;
    Bench::new(p)
}

fn handover_step(b: &Bench, ms: u64) -> TimedStep {
    TimedStep {
        name: "peer_release".into(),
        start: b.t(ms),
        duration: Duration::from_millis(3),
        ok: true,
        detail: "1 round(s)".into(),
    }
}

fn peers_released(b: &mut Bench, ms: u64, attempt: u32, refused: Option<&str>) -> Vec<Decision> {
    let step = handover_step(b, ms - 3);
    let event = Event::PeersReleased {
        attempt,
        step,
        refused: refused.map(str::to_owned),
    };
    b.send(ms, event)
}

#[test]
fn with_peers_the_node_call_waits_for_the_handover_answer() {
    let mut b = with_handover();
    b.probe(0, Outcome::Ok);
    let d = b.probe(20, Outcome::Ok);
    assert!(
        matches!(
            d.as_slice(),
            [Decision::AwaitPeerRelease { attempt: 1, .. }]
        ),
        "{d:?}"
    );
    assert_eq!(b.c.state(), OwnershipState::Acquiring);
    // Probes while waiting decide nothing more.
    assert!(b.probe(40, Outcome::Ok).is_empty());
    let d = peers_released(&mut b, 50, 1, None);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
    assert!(b.acquired(52).is_empty());
    assert_eq!(b.c.state(), OwnershipState::Owner);
    let done = b.c.take_completed_timelines();
    let t = &done[0];
    assert_eq!(t.node_steps[0].name, "peer_release");
    assert_eq!(
        t.decided,
        b.t(25),
        "the timeline starts at the first decision"
    );
}

#[test]
fn a_demotion_during_the_handover_abandons_the_acquire_without_a_node_call() {
    let mut b = with_handover();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    let d = b.probe(40, secondary());
    match d.as_slice() {
        [Decision::Hold { reason, .. }] => {
            assert!(reason.contains("acquire abandoned"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.c.state(), OwnershipState::Standby);
    // The answer of the abandoned question changes nothing.
    assert!(peers_released(&mut b, 60, 1, None).is_empty());
    assert_eq!(b.c.state(), OwnershipState::Standby);
    assert!(b.c.current_timeline().is_none());
}

#[test]
fn the_handover_answer_is_checked_against_the_latest_verdict() {
    // The local replica stops answering during the wait (one failure: below the fall count,
    // so no release reason for an owner) and a peer is seen PRIMARY since: the release rule
    // `peer_primary` would release at once, so the acquire is abandoned, not started.
    let mut b = with_handover();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    b.probe(40, timeout());
    let d = b.peer(60, "node-b", Some(ReplicaRole::Primary));
    assert!(
        matches!(d.as_slice(), [Decision::Hold { reason, .. }] if reason.contains("abandoned")),
        "{d:?}"
    );
    assert_eq!(count(&peers_released(&mut b, 70, 1, None), is_acquire), 0);
}

#[test]
fn a_holder_that_does_not_let_go_fails_the_acquire_with_backoff() {
    let mut b = with_handover();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    let d = peers_released(&mut b, 1030, 1, Some("peer n2 still holds the addresses"));
    match d.as_slice() {
        [
            Decision::Alert {
                kind: AlertKind::AcquireFailed,
                reason,
                ..
            },
            Decision::Release {
                cause: ReleaseCause::AcquireFailed,
                ..
            },
            ..,
        ] => assert!(reason.contains("still holds"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let done = b.c.take_completed_timelines();
    assert_eq!(
        done.len(),
        1,
        "the failed acquire's timeline, cut short by the undo"
    );
    assert_eq!(done[0].node_steps[0].name, "peer_release");
}

#[test]
fn the_acquire_backoff_is_a_deadline_of_its_own() {
    let mut b = Bench::default();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    let started = b.t(25);
    let failed = NodeCall {
        started,
        steps: vec![],
        error: Some("address add: permission denied".into()),
    };
    b.send(30, Event::NodeAcquired(failed));
    b.released(40);
    assert_eq!(b.c.state(), OwnershipState::Standby);
    // 30 ms + 200 ms of backoff: the controller asks to be woken then, with no probe.
    assert_eq!(b.c.next_deadline(), Some(b.t(230)));
    assert!(b.send(229, Event::Deadline).is_empty());
    let d = b.send(230, Event::Deadline);
    assert_eq!(count(&d, is_acquire), 1, "{d:?}");
    // Owning with nothing pending: no deadline (the overlay login is not expected here).
    b.acquired(232);
    assert_eq!(b.c.next_deadline(), None);
}

#[test]
fn an_acquire_timeline_waiting_for_its_first_login_wakes_at_its_limit() {
    let mut p = AgPolicy::new(2, 3);
    p.expect_overlay_login = true;
    let mut b = Bench::new(p);
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    b.acquired(26);
    let limit = b.t(25) + Duration::from_secs(30);
    assert_eq!(b.c.next_deadline(), Some(limit));
    let ms = 25 + 30_000;
    b.send(ms, Event::Deadline);
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].unfinished, ["first_local_login"]);
    assert_eq!(
        b.c.next_deadline(),
        None,
        "a closed timeline waits for nothing"
    );
}

#[test]
fn a_backoff_deadline_seen_late_is_still_due_and_then_cleared() {
    // The router may handle another input at the very instant of a deadline and come back
    // after it: the deadline must still be reported (due at once), and be gone once handled.
    let mut b = Bench::default();
    b.probe(0, Outcome::Ok);
    b.probe(20, Outcome::Ok);
    let failed = NodeCall {
        started: b.t(25),
        steps: vec![],
        error: Some("address add: permission denied".into()),
    };
    b.send(30, Event::NodeAcquired(failed));
    b.released(40);
    // Past the deadline, before any event: still reported.
    assert_eq!(b.c.next_deadline(), Some(b.t(230)));
    // A peer saw PRIMARY meanwhile: the acquire is held, and the passed backoff is not
    // reported again (no busy wake-ups while blocked for another reason).
    b.peer(235, "node-b", Some(ReplicaRole::Primary));
    assert_eq!(count(&b.send(240, Event::Deadline), is_acquire), 0);
    assert_eq!(b.c.next_deadline(), None);
}

// The kernel ownership lease is extended from PRIMARY verdicts only, and only while this node
// owns (or is acquiring): a failed or refusing probe never extends it.
#[test]
fn the_lease_basis_is_the_last_primary_verdict_while_owning() {
    let mut b = Bench::default();
    assert!(b.probe(0, Outcome::Ok).is_empty());
    assert_eq!(b.c.lease_basis(), None, "standby has no lease");
    assert!(is_acquire(&b.probe(20, Outcome::Ok)[0]));
    assert_eq!(
        b.c.lease_basis(),
        Some(b.t(20)),
        "acquiring on the probe of 20"
    );
    assert!(b.acquired(26).is_empty());
    assert_eq!(b.c.lease_basis(), Some(b.t(20)));
    b.probe(40, timeout());
    assert_eq!(
        b.c.lease_basis(),
        Some(b.t(20)),
        "a timeout does not extend"
    );
    b.probe(60, Outcome::Ok);
    assert_eq!(b.c.lease_basis(), Some(b.t(60)), "from the probe's start");
    let (cause, _) = only_release(&b.probe(80, secondary()));
    assert_eq!(cause, ReleaseCause::NotPrimary);
    assert_eq!(b.c.lease_basis(), None, "releasing");
    assert!(b.released(86).is_empty());
    assert_eq!(b.c.lease_basis(), None, "standby again");
}

/// A peer agent's report (SECONDARY) whose logins through the overlay IP have been answered
/// by this node's replica since `since`.
fn client_login_report(peer: &str, at: Instant, since: Option<Instant>) -> Event {
    Event::Peer(PeerReport {
        peer: peer.into(),
        at,
        view: Some(PeerView {
            role: Some(ReplicaRole::Secondary),
            primary_lost: None,
            overlay_logins: Some(OverlayLogins {
                answered_here_since: since,
            }),
        }),
    })
}

/// An owner with a route-table claim outstanding (so its timeline stays open) after a
/// decision at 125 ms, its own login through the overlay IP seen at 140 ms.
fn open_acquire_with_a_measuring_peer() -> Bench {
    let mut p = AgPolicy::new(2, 3);
    p.cloud_retry = Some(Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(1000),
    });
    p.expect_overlay_login = true;
    let mut b = Bench::new(p);
    let at = b.t(50);
    b.send(50, client_login_report("node-b", at, None));
    b.probe(100, Outcome::Ok);
    assert_eq!(count(&b.probe(120, Outcome::Ok), is_acquire), 1);
    b.acquired(130);
    b.send(140, Event::LocalOverlayLogin);
    b
}

#[test]
fn the_earliest_peer_login_answered_here_after_the_decision_is_the_client_login() {
    let mut b = open_acquire_with_a_measuring_peer();
    // A run that began before the decision (an earlier ownership) proves nothing.
    let (at, before) = (b.t(150), b.t(100));
    b.send(150, client_login_report("node-b", at, Some(before)));
    let (at, late) = (b.t(160), b.t(158));
    b.send(160, client_login_report("node-b", at, Some(late)));
    let (at, early) = (b.t(170), b.t(145));
    b.send(170, client_login_report("node-c", at, Some(early)));
    let claim_start = b.t(126);
    b.send(
        300,
        Event::CloudClaimed {
            attempt: 1,
            started: claim_start,
            report: claim_report(&[("rtb-1", true)], 42),
        },
    );
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    let p = done[0].phases();
    assert_eq!(p.first_local_login, Some(Duration::from_millis(15)));
    assert_eq!(p.first_client_login, Some(Duration::from_millis(20)));
    assert_eq!(done[0].first_client_login_by.as_deref(), Some("node-c"));
    assert!(done[0].unfinished.is_empty());
}

#[test]
fn a_timeline_waits_for_a_client_login_only_while_a_peer_agent_can_be_read() {
    let mut b = open_acquire_with_a_measuring_peer();
    let claim_start = b.t(126);
    b.send(
        200,
        Event::CloudClaimed {
            attempt: 1,
            started: claim_start,
            report: claim_report(&[("rtb-1", true)], 42),
        },
    );
    assert!(
        b.c.take_completed_timelines().is_empty(),
        "a readable peer agent can still measure it"
    );
    // The peer's agent can no longer be read: nobody is left to measure it.
    b.peer_unreachable(210, "node-b");
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].phases().first_client_login, None);
    assert!(done[0].unfinished.is_empty(), "{:?}", done[0].unfinished);
}

#[test]
fn a_client_login_never_reported_by_a_readable_peer_is_named_unfinished() {
    let mut b = open_acquire_with_a_measuring_peer();
    let claim_start = b.t(126);
    b.send(
        200,
        Event::CloudClaimed {
            attempt: 1,
            started: claim_start,
            report: claim_report(&[("rtb-1", true)], 42),
        },
    );
    let at = b.t(30_000);
    b.send(30_000, client_login_report("node-b", at, None));
    b.send(30_200, Event::Deadline);
    let done = b.c.take_completed_timelines();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].unfinished, vec!["first_client_login"]);
}
