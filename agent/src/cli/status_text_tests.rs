//! Tests of `status_text.rs`, apart so that the module reads in one sitting.

use super::*;
use tdsvip::field_error;

fn parse(v: Value) -> Result<StatusDocument, String> {
    serde_path_to_error::deserialize(&v).map_err(field_error)
}

#[test]
fn render_prints_what_this_build_does_not_know() {
    let v = json!({
        "node": "n1",
        "ags": {
            "AG1": {
                "state": "owner",
                "replica_role": null,
                "conflicts": 2,
                "last_timeline": {"direction": "acquire", "decided": 0.5,
                    "phases": {"decide": 0.25, "tickle": 0.001}, "new_thing": [1, 2],
                    "unfinished": ["first_client_login"]}
            }
        },
        "peers": {"n2": {"url": "http://n2", "error": "refused",
            "tracked_connections": [{"client": "10.0.0.9:5000", "port": 1433}]}},
        "future": {"a": [], "b": {"c": true}}
    });
    let s = render(&parse(v).unwrap(), "http://x", 100.0);
    for needle in [
        "node n1 at http://x",
        "AG AG1: owner",
        "replica role      unknown",
        "conflicts: 2",
        "+500.000 ms  decided: acquire",
        "decide 250.000 ms, tickle 1.000 ms",
        "new_thing: 1, 2",
        "never came        first_client_login",
        "n2 (http://n2): not checked yet",
        "error             refused",
        "tracked_connections: 1 entries",
        "- client=10.0.0.9:5000, port=1433",
        "future:",
        "a: none",
        "c: true",
    ] {
        assert!(s.contains(needle), "no {needle:?} in:\n{s}");
    }
}

#[test]
fn a_promotion_prints_its_steps_before_the_acquire() {
    let v = json!({
        "node": "n2",
        "ags": {"AG1": {"state": "owner", "last_timeline": {
            "direction": "acquire", "local_primary_seen": 0.015, "decided": 0.035,
            "promotion": {"cause": "leader_lost", "term": 9, "vacancy_seen": "key_deleted",
                "previous_term": 5, "detected": 0.0, "elected": 0.002,
                "failover_sent": 0.002, "failover_answered": 0.010}}}}
    });
    let s = render(&parse(v).unwrap(), "http://x", 100.0);
    let order = [
        "+0.000 ms  detect: leader key (term 5) seen gone",
        "+2.000 ms  elect: leader key won, term 9",
        "+2.000 ms  failover: FAILOVER sent (cause leader_lost)",
        "+10.000 ms  failover: FAILOVER accepted (took 8.000 ms)",
        "+15.000 ms  local replica seen PRIMARY (re-observe: the promotion took)",
        "+35.000 ms  decided: acquire",
    ];
    let at: Vec<Option<usize>> = order.iter().map(|n| s.find(n)).collect();
    assert!(at.iter().all(Option::is_some), "{order:?} not all in:\n{s}");
    assert!(at.is_sorted(), "out of order:\n{s}");
}

#[test]
fn a_known_field_of_another_type_is_refused_by_name() {
    let odd = json!({"node": "n1", "ags": {"AG1": {"owned_addresses": "not-a-list"}}});
    let e = parse(odd).unwrap_err();
    assert!(e.contains("status.ags.AG1.owned_addresses"), "{e}");
    let e = parse(json!({"node": "n1", "ags": {"AG2": 7}})).unwrap_err();
    assert!(e.contains("status.ags.AG2"), "{e}");
    let e = parse(json!({"node": "n1"})).unwrap_err();
    assert!(e.contains("status.ags"), "{e}");
}
