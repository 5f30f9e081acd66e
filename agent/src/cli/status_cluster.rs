//! `tdsvip status`'s manage-mode lines for one AG: who leads its failover, in which term,
//! whether this agent's etcd lease is alive, and every replica's published state (role,
//! commit mode, sequence number, synchronized) — what a person checks before a switchover
//! or after a refused promotion; and a failover timeline's promotion steps (detect, elect,
//! failover), which the timeline prints among its other events.

use tdsvip::{ClusterDocument, MemberDocument, PromotionDocument};

use super::status_text::{inline_object, line, others};

fn member(m: &MemberDocument) -> String {
    let sync = if m.synchronized {
        "synchronized"
    } else {
        "not synchronized"
    };
    let known = format!(
        "{:<16} {:<10} {:<13} sequence {:<6} {sync}",
        m.node, m.role, m.commit_mode, m.sequence_number
    );
    // A newer agent's fields this build does not know are shown, not dropped.
    if m.other.is_empty() {
        known
    } else {
        format!("{known} {}", inline_object(&m.other))
    }
}

/// Appends the cluster lines, indented under their AG.
pub(super) fn render(out: &mut String, c: &ClusterDocument) {
    let leader = match (&c.leader, c.term) {
        (Some(node), Some(term)) => format!("{node} (term {term})"),
        (Some(node), None) => node.clone(),
        (None, _) => match c.candidates_wait_ms {
            Some(ms) if ms > 0.0 => format!("none: candidates wait {ms:.0} ms more"),
            _ => "none".to_owned(),
        },
    };
    let me = if c.leading { ", this agent" } else { "" };
    line(out, 2, "leader", format!("{leader}{me}"));
    let lease = match (c.etcd_lease_alive, c.failsafe) {
        (true, _) => "alive",
        (false, true) => "not provably alive: leading on every peer's acknowledgement (failsafe)",
        (false, false) => "not provably alive (etcd unreachable?)",
    };
    line(out, 2, "etcd lease", lease);
    if let Some(ms) = c.acknowledged_hold_ms {
        let hold = format!("acknowledged the leader without etcd: no promotion for {ms:.0} ms");
        line(out, 2, "failsafe", hold);
    }
    if let Some(r) = &c.promotion_refused {
        line(out, 2, "promotion refused", r);
    }
    if let Some(now) = c.required_synchronized {
        let rule = format!("REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = {now}");
        let rule = match c.required_synchronized_wanted {
            Some(wanted) if wanted != now => format!("{rule} (the leader sets {wanted})"),
            _ => rule,
        };
        line(out, 2, "commit rule", rule);
    }
    if c.members.is_empty() {
        line(out, 2, "members", "none published");
    }
    for (i, m) in c.members.iter().enumerate() {
        let label = if i == 0 { "members" } else { "" };
        line(out, 2, label, member(m));
    }
    others(out, 2, &c.other);
}

/// The promotion's steps as a timeline's events, `(seconds, label)`, in the order they
/// happen (the caller sorts all events stably, so this order wins at equal instants). A
/// newer agent's fields this build does not know are appended to the last one.
pub(super) fn promotion_events(p: &PromotionDocument) -> Vec<(f64, String)> {
    let previous = match (&p.previous_leader, p.previous_term) {
        (Some(node), Some(term)) => format!(" of {node} (term {term})"),
        (Some(node), None) => format!(" of {node}"),
        (None, Some(term)) => format!(" (term {term})"),
        (None, None) => String::new(),
    };
    let detect = match p.vacancy_seen.as_str() {
        "handoff" => format!("handoff note{previous} read"),
        "key_deleted" => format!("leader key{previous} seen gone"),
        "key_missing" => "no leader key found by a read".to_owned(),
        "start" => "no leader key known at the agent's start".to_owned(),
        other => format!("vacancy seen ({other}){previous}"),
    };
    let term = p.term.map(|t| format!(", term {t}")).unwrap_or_default();
    let took = match (p.failover_sent, p.failover_answered) {
        (Some(sent), Some(answered)) => format!(" (took {:.3} ms)", (answered - sent) * 1000.0),
        _ => String::new(),
    };
    let mut accepted = format!("failover: FAILOVER accepted{took}");
    if !p.other.is_empty() {
        accepted = format!("{accepted} {}", inline_object(&p.other));
    }
    let steps = [
        (p.detected, format!("detect: {detect}")),
        (p.elected, format!("elect: leader key won{term}")),
        (
            p.failover_sent,
            format!("failover: FAILOVER sent (cause {})", p.cause),
        ),
        (p.failover_answered, accepted),
    ];
    steps
        .into_iter()
        .filter_map(|(at, label)| Some((at?, label)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> ClusterDocument {
        ClusterDocument {
            leader: Some("sqlnode1".into()),
            term: Some(42),
            leading: true,
            etcd_lease_alive: true,
            members: vec![
                MemberDocument {
                    node: "sqlnode1".into(),
                    role: "primary".into(),
                    commit_mode: "synchronous".into(),
                    sequence_number: 7,
                    synchronized: true,
                    ..Default::default()
                },
                MemberDocument {
                    node: "sqlnode3".into(),
                    role: "secondary".into(),
                    commit_mode: "asynchronous".into(),
                    sequence_number: 0,
                    synchronized: false,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn shows_the_failsafe_on_both_sides() {
        let mut out = String::new();
        let leader = ClusterDocument {
            etcd_lease_alive: false,
            failsafe: true,
            ..doc()
        };
        render(&mut out, &leader);
        assert!(
            out.contains("leading on every peer's acknowledgement"),
            "{out}"
        );
        let mut out = String::new();
        let peer = ClusterDocument {
            leading: false,
            acknowledged_hold_ms: Some(1234.4),
            ..doc()
        };
        render(&mut out, &peer);
        assert!(out.contains("no promotion for 1234 ms"), "{out}");
    }

    #[test]
    fn shows_the_commit_rule_and_what_the_leader_sets() {
        let mut out = String::new();
        render(&mut out, &doc());
        assert!(!out.contains("commit rule"), "{out}");
        let kept = ClusterDocument {
            required_synchronized: Some(1),
            required_synchronized_wanted: Some(1),
            ..doc()
        };
        render(&mut out, &kept);
        assert!(
            out.contains("commit rule       REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 1\n"),
            "{out}"
        );
        let mut out = String::new();
        let differs = ClusterDocument {
            required_synchronized_wanted: Some(0),
            ..kept
        };
        render(&mut out, &differs);
        assert!(
            out.contains("REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 1 (the leader sets 0)"),
            "{out}"
        );
    }

    #[test]
    fn shows_leader_term_and_every_member() {
        let mut out = String::new();
        render(&mut out, &doc());
        assert!(
            out.contains("leader            sqlnode1 (term 42), this agent"),
            "{out}"
        );
        assert!(out.contains("etcd lease        alive"), "{out}");
        assert!(
            out.contains("sqlnode1         primary    synchronous   sequence 7      synchronized"),
            "{out}"
        );
        assert!(
            out.contains(
                "sqlnode3         secondary  asynchronous  sequence 0      not synchronized"
            ),
            "{out}"
        );
    }

    #[test]
    fn fields_of_a_newer_agent_are_printed() {
        let mut c = doc();
        c.other
            .insert("failsafe".into(), serde_json::json!("peers acknowledge"));
        c.members[0]
            .other
            .insert("lag_ms".into(), serde_json::json!(3));
        let mut out = String::new();
        render(&mut out, &c);
        assert!(out.contains("failsafe"), "{out}");
        assert!(out.contains("peers acknowledge"), "{out}");
        assert!(out.contains("lag_ms"), "{out}");
    }

    #[test]
    fn a_promotion_reads_as_its_steps_in_order() {
        let p = PromotionDocument {
            cause: "primary_down".into(),
            term: Some(12),
            vacancy_seen: "handoff".into(),
            previous_term: Some(7),
            previous_leader: Some("sqlnode1".into()),
            detected: Some(0.0),
            elected: Some(0.002),
            failover_sent: Some(0.0025),
            failover_answered: Some(0.0105),
            ..Default::default()
        };
        let labels: Vec<String> = promotion_events(&p).into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            labels,
            [
                "detect: handoff note of sqlnode1 (term 7) read",
                "elect: leader key won, term 12",
                "failover: FAILOVER sent (cause primary_down)",
                "failover: FAILOVER accepted (took 8.000 ms)",
            ]
        );
    }

    #[test]
    fn a_vacancy_says_how_long_candidates_wait_and_why_this_one_may_not() {
        let mut c = doc();
        c.leader = None;
        c.term = None;
        c.leading = false;
        c.candidates_wait_ms = Some(812.4);
        c.promotion_refused = Some("the local replica is not a synchronous-commit replica".into());
        let mut out = String::new();
        render(&mut out, &c);
        assert!(
            out.contains("leader            none: candidates wait 812 ms more"),
            "{out}"
        );
        assert!(
            out.contains("promotion refused the local replica is not a synchronous-commit replica"),
            "{out}"
        );
    }
}
