//! The peer to beat, kept from rotting: one kill-primary trial with keepalived at its best
//! (`keepalived`: VRRP + a `track_file` fed by `tdsvip probe --watch` at tdsvip's probe rate)
//! and one with its usual 1 s `vrrp_script` (`keepalived-script`), in real namespaces (root),
//! asserting what the bench's comparison relies on: the new primary answers the client within
//! a bound that fits each tracker, no acknowledged commit is lost, no ARP probe is answered by
//! two MACs, no answer comes from a non-primary once the promotion settled.
//!
//! Overlapping owners are reported (in a failure's timeline), not asserted zero as for
//! tdsvip, because keepalived does not achieve it: VRRP preemption is
//! make-before-break (the preempting node adds the address when it becomes MASTER; the old
//! master drops it only when that node's advert reaches it), and with 0.01 s adverts a busy
//! node that misses three adverts is taken over while it still holds the address. Measured
//! (debug build, 2 cores shared with builds): 4 of 18 kill-primary trials had 1 to 3 owner
//! samples (10 ms apart) showing two owners, none with two MACs answering ARP; one more had
//! 41 while the machine's load average was 11.7 (missed adverts: a backup took over a live
//! master). With the 1 s script they are not bounded at all: while every node's script still
//! says "not primary",
//! all priorities tie and VRRP's tie-break (highest address) hands the address to a
//! secondary and back, each move an overlap; a release bench (20 trials) had up to 9
//! dual-owner samples in one trial.
//!
//! Cargo runs test binaries one after another, so these never overlap the scenario tests;
//! `common::drill_with` keeps this file's two labs apart.

mod common;

use tdsvip_lab::DrillOutcome;
use tdsvip_lab::lab::{Impl, Settings};
use tdsvip_lab::measure::dual_mac_samples;
use tdsvip_lab::scenario::Scenario;

use common::{context, drill_with};

fn drill(implementation: Impl) -> DrillOutcome {
    let settings = Settings {
        implementation,
        ..Settings::default()
    };
    drill_with(Scenario::KillPrimary, settings)
}

/// Asserts the criteria with `bound_ms` for promotion -> client; removes the work dir when
/// they hold.
fn check(out: &DrillOutcome, bound_ms: f64) {
    let ctx = context(out);
    assert_eq!(out.trials.len(), 1, "{ctx}");
    let t = &out.trials[0];
    let r = &t.result;
    assert!(!t.promotions.is_empty(), "{ctx}");
    for (k, p) in r.promotion_to_client.iter().enumerate() {
        let p = p.unwrap_or_else(|| {
            panic!("promotion {k}: the new primary never answered the client\n{ctx}")
        });
        assert!(
            p <= bound_ms,
            "promotion {k}: client answered {p:.1} ms after promotion (> {bound_ms})\n{ctx}"
        );
    }
    assert!(t.commits.acked > 0, "no acknowledged commit\n{ctx}");
    assert!(t.commits.lost.is_empty(), "lost commits\n{ctx}");
    assert_eq!(out.summary.dual_primary_samples, 0, "{ctx}");
    assert_eq!(
        dual_mac_samples(&t.arp),
        0,
        "ARP probes answered by two MACs\n{ctx}"
    );
    assert_eq!(
        r.non_primary_answers, 0,
        "answers from a non-primary after settling\n{ctx}"
    );
    let _ = std::fs::remove_dir_all(&out.work_dir);
}

/// Bound 500 ms: measured 68 to 121 ms over 13 debug trials (rise 2 x 20 ms probes, then
/// VRRP preemption at 0.01 s adverts); 4x the worst leaves room for a loaded machine and
/// still fails if the track file were not read at once (a 1 s script would not pass).
#[test]
fn keepalived_track_file_kill_primary() {
    check(&drill(Impl::Keepalived), 500.0);
}

/// Bound 2500 ms: the script runs every 1 s and one login in a fresh process takes up to
/// ~100 ms in a debug build, so at most ~1.2 s plus preemption (measured 348 to 815 ms over
/// 5 trials); twice the worst case leaves margin for load.
#[test]
fn keepalived_script_kill_primary() {
    check(&drill(Impl::KeepalivedScript), 2500.0);
}
