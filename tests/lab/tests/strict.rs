//! TDS 8.0 in the lab (issue 14): one kill-primary trial with `--encrypt strict`, where the
//! sims refuse anything but TLS first (ALPN `tds/8.0`) and every connection, the agents'
//! probes, peers', the measuring client's, the writer's and the lab's own T-SQL, starts with
//! TLS verified against the lab CA. Asserts what scenarios.rs asserts for kill-primary's
//! safety: the new primary answers the client within 1 s of its promotion, no sample shows
//! two owners or two MACs answering ARP, no acknowledged commit is lost, no two sims would
//! acknowledge a commit, no write-lease renewal failed.
//!
//! Cargo runs test binaries one after another, so this never overlaps the scenario tests;
//! `common::drill_with` keeps this file's labs apart.

mod common;

use tdsvip_lab::lab::{Encrypt, Settings};
use tdsvip_lab::measure::dual_mac_samples;
use tdsvip_lab::scenario::Scenario;

use common::{MAX_SAMPLE_GAP_MS, context, drill_with};

#[test]
fn kill_primary_with_strict() {
    let settings = Settings {
        encrypt: Encrypt::Strict,
        ..Settings::default()
    };
    let out = drill_with(Scenario::KillPrimary, settings);
    let ctx = context(&out);
    assert_eq!(out.trials.len(), 1, "{ctx}");
    // The agents did run strict (a mandatory agent cannot talk to a strict sim at all).
    let agent = std::fs::read_to_string(out.work_dir.join("node1.toml")).unwrap_or_default();
    assert!(agent.contains("encrypt = \"strict\""), "{agent}\n{ctx}");

    let t = &out.trials[0];
    let r = &t.result;
    assert!(!t.promotions.is_empty(), "{ctx}");
    for (k, p) in r.promotion_to_client.iter().enumerate() {
        let p = p.unwrap_or_else(|| {
            panic!("promotion {k}: the new primary never answered the client\n{ctx}")
        });
        assert!(
            p <= 1000.0,
            "promotion {k}: client answered {p:.1} ms after promotion (> 1 s)\n{ctx}"
        );
    }
    assert_eq!(r.dual_owner_samples, 0, "dual-owner samples\n{ctx}");
    assert_eq!(
        dual_mac_samples(&t.arp),
        0,
        "ARP probes answered by two MACs\n{ctx}"
    );

    // Synchronous commit: every acknowledged commit survives; the writer did commit, so
    // its strict sessions worked.
    assert!(
        t.commits.acked > 0,
        "the writer got no acknowledgement\n{ctx}"
    );
    assert!(
        t.commits.lost.is_empty(),
        "acknowledged commits lost: {:?}\n{ctx}",
        t.commits.lost
    );
    assert_eq!(out.summary.lost_commits, 0, "{ctx}");
    let p = t.primaries;
    assert!(
        p.samples > 0 && p.max_gap_ms <= MAX_SAMPLE_GAP_MS,
        "the would-acknowledge sampler left a gap: {p:?}\n{ctx}"
    );
    assert_eq!(p.dual, 0, "dual-primary samples\n{ctx}");
    // The lab's own strict T-SQL renewed the write lease throughout.
    assert!(
        t.lease_failures.is_empty(),
        "failed lease renewals: {:?}\n{ctx}",
        t.lease_failures
    );
    let _ = std::fs::remove_dir_all(&out.work_dir);
}
