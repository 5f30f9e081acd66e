//! `--promote agent` (issue "The agent promotes"): the agents run the failover themselves,
//! coordinated by a three-member etcd cluster on the nodes; the lab only kills the primary's
//! SQL Server and watches. One kill-primary trial asserts the safety columns and that the
//! agents, not the lab, did the work:
//! - a secondary was promoted, and no T-SQL `FAILOVER` came from the lab;
//! - no acknowledged commit was lost, no sample ever showed two replicas that would
//!   acknowledge a commit, two owners of the address, or two MACs answering ARP for it;
//! - a client crossing the network was served by the new primary, and the writer's commits
//!   resumed (a finite write outage);
//! - the restarted old primary (RESOLVING) was made SECONDARY again by its own agent
//!   (`aftermath::restore` fails the trial otherwise).

mod common;

use tdsvip_lab::lab::{Promote, Settings};
use tdsvip_lab::measure::dual_mac_samples;
use tdsvip_lab::scenario::Scenario;

use common::{MAX_SAMPLE_GAP_MS, context, drill_with};

#[test]
fn kill_primary_the_agents_promote_without_losing_a_commit() {
    let settings = Settings {
        promote: Promote::Agent,
        write_lease_validity_s: 1,
        ..Settings::default()
    };
    let out = drill_with(Scenario::KillPrimary, settings);
    let ctx = context(&out);
    let t = &out.trials[0];
    assert_ne!(t.new, t.old, "no other replica became primary\n{ctx}");
    assert!(
        !t.actions.iter().any(|(_, _, a)| a.contains("FAILOVER")),
        "the lab sent a FAILOVER itself\n{ctx}"
    );
    assert!(
        t.commits.acked > 0,
        "the writer got no acknowledgement\n{ctx}"
    );
    assert!(
        t.commits.lost.is_empty(),
        "lost: {:?}\n{ctx}",
        t.commits.lost
    );
    let outage = t.commits.write_outage_ms;
    assert!(
        outage.is_some_and(|ms| ms < 5000.0),
        "the writer's commits did not resume within 5 s: {outage:?}\n{ctx}"
    );
    let p = t.primaries;
    assert!(
        p.samples > 0 && p.max_gap_ms <= MAX_SAMPLE_GAP_MS,
        "sampler gap: {p:?}\n{ctx}"
    );
    assert_eq!(
        p.dual, 0,
        "two replicas would have acknowledged a commit\n{ctx}"
    );
    assert!(p.unknown * 20 < p.samples, "{p:?}\n{ctx}");
    let r = &t.result;
    assert_eq!(r.dual_owner_samples, 0, "dual-owner samples\n{ctx}");
    assert_eq!(r.unknown_samples, 0, "unknown owner samples\n{ctx}");
    assert_eq!(dual_mac_samples(&t.arp), 0, "{ctx}");
    assert_eq!(
        r.non_primary_answers, 0,
        "answers from a non-primary\n{ctx}"
    );
    let served = r.promotion_to_client.first().copied().flatten();
    assert!(
        served.is_some_and(|ms| ms < 1000.0),
        "the client was not served by the new primary within 1 s of its promotion: {served:?}\n{ctx}"
    );
}
