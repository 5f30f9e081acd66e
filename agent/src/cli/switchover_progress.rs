//! What `tdsvip switchover` makes of the AG's keys while it waits, kept apart from the etcd
//! calls so that each rule is unit-tested with plain values: which leader-key change ends
//! the wait (the target took the key: success; someone else did: the request is void), which
//! is the leader's own heartbeat (same term: nothing happened), and how the target's
//! published state reads to a person, for the checks before the request and the report after
//! a timeout.

use tdsvip::controller::promotion::{CommitMode, MemberRole, MemberState};
use tdsvip_etcd::{AgEvent, MemberKey};

/// The suffix of the leader key under the AG's directory, as the watch reports it.
const LEADER: &str = "leader";

/// What one change means for the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep waiting; print the line, if any, as progress.
    Wait(Option<String>),
    /// The target holds the leader key, in this term.
    Done { term: i64 },
    /// Someone else took the key: the request (addressed to the old term) is void.
    Void(String),
}

/// The wait's view of the AG: who holds the leader key, and the target's published state.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The term the request was addressed to.
    term: i64,
    to: String,
    /// The leader key as last seen: (holder, term); `None` while there is none.
    pub leader: Option<(String, i64)>,
    /// The target's published state as last seen (`None`: it publishes none).
    pub target: Option<String>,
}

impl Progress {
    pub fn new(leader: &str, term: i64, to: &str, target: Option<String>) -> Progress {
        Progress {
            term,
            to: to.to_owned(),
            leader: Some((leader.to_owned(), term)),
            target,
        }
    }

    /// One change under the AG's directory (from the watch).
    pub fn on_event(&mut self, event: &AgEvent) -> Step {
        let member_key = format!("members/{}", self.to);
        match event {
            AgEvent::Put {
                key_suffix,
                value,
                create_revision,
                ..
            } if key_suffix == LEADER => self.on_leader(Some((value.clone(), *create_revision))),
            AgEvent::Delete { key_suffix, .. } if key_suffix == LEADER => self.on_leader(None),
            AgEvent::Put {
                key_suffix, value, ..
            } if *key_suffix == member_key => {
                let was_synchronized = self.target_synchronized();
                self.target = Some(value.clone());
                let line = (!was_synchronized && self.target_synchronized())
                    .then(|| format!("{} is SYNCHRONIZED now", self.to));
                Step::Wait(line)
            }
            AgEvent::Delete { key_suffix, .. } if *key_suffix == member_key => {
                self.target = None;
                Step::Wait(Some(format!(
                    "{} withdrew its published state (its SQL Server stopped answering, or its agent stopped)",
                    self.to
                )))
            }
            _ => Step::Wait(None),
        }
    }

    /// The leader key as it is now (from a change, or read after the watch was reopened):
    /// `(holder, term)`, `None` when there is none.
    pub fn on_leader(&mut self, now: Option<(String, i64)>) -> Step {
        let before = std::mem::replace(&mut self.leader, now.clone());
        match now {
            // The leader's own heartbeat rewrites the key in its term.
            Some((_, term)) if term == self.term => Step::Wait(None),
            Some((holder, term)) if holder == self.to => Step::Done { term },
            Some((holder, term)) => Step::Void(format!(
                "{holder} took the leader key instead of {} (term {term}): the request to term {} is void and {} does not lead; see `tdsvip status`",
                self.to, self.term, self.to
            )),
            None => match before {
                Some((holder, term)) if term == self.term => Step::Wait(Some(format!(
                    "{holder} gave up the leader key (term {term} is over); waiting for {} to take it",
                    self.to
                ))),
                _ => Step::Wait(None),
            },
        }
    }

    fn target_synchronized(&self) -> bool {
        self.target
            .as_deref()
            .and_then(|json| serde_json::from_str::<MemberState>(json).ok())
            .is_some_and(|state| state.synchronized)
    }
}

/// The target's published state if a switchover to it can be asked for, else why not.
pub fn judge_target(ag: &str, to: &str, members: &[MemberKey]) -> Result<MemberState, String> {
    let Some(member) = members.iter().find(|m| m.node == to) else {
        return Err(format!(
            "{to} publishes no state in AG {ag}: its agent is not running (in manage mode), or its SQL Server does not answer (see `tdsvip status` on {to})"
        ));
    };
    let state: MemberState = serde_json::from_str(&member.value)
        .map_err(|e| format!("{to}'s published state in AG {ag} is not readable: {e}"))?;
    if state.role != MemberRole::Secondary {
        return Err(format!(
            "{to}'s replica is {} in AG {ag}: only a SECONDARY replica can be switched over to",
            <&str>::from(state.role)
        ));
    }
    if state.commit_mode != CommitMode::Synchronous {
        return Err(format!(
            "{to}'s replica is in {} commit mode in AG {ag}: only a synchronous-commit replica takes over without losing commits (change its AVAILABILITY_MODE first)",
            <&str>::from(state.commit_mode)
        ));
    }
    Ok(state)
}

/// A published state for a person: `secondary, synchronous, sequence 12, not synchronized`.
pub fn describe_state(json: Option<&str>) -> String {
    let Some(json) = json else {
        return "publishes no state (its agent is not running, or its SQL Server does not answer)"
            .to_owned();
    };
    match serde_json::from_str::<MemberState>(json) {
        Ok(state) => format!(
            "{}, {}, sequence {}, {}",
            <&str>::from(state.role),
            <&str>::from(state.commit_mode),
            state.sequence_number,
            if state.synchronized {
                "synchronized"
            } else {
                "not synchronized"
            }
        ),
        Err(e) => format!("publishes a state this command cannot read ({e}): {json}"),
    }
}

/// The leader key for a person: `sql-a leads (term 7)` or `there is no leader`.
pub fn describe_leader(leader: Option<&(String, i64)>) -> String {
    match leader {
        Some((holder, term)) => format!("{holder} leads (term {term})"),
        None => "there is no leader".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(role: &str, mode: &str, synchronized: bool) -> String {
        format!(
            r#"{{"node":"sql-b","role":"{role}","commit_mode":"{mode}","sequence_number":12,"synchronized":{synchronized},"voters":3}}"#
        )
    }

    fn member(node: &str, value: String) -> MemberKey {
        MemberKey {
            node: node.to_owned(),
            value,
            mod_revision: 3,
        }
    }

    fn put(key: &str, value: &str, create_revision: i64) -> AgEvent {
        AgEvent::Put {
            key_suffix: key.to_owned(),
            value: value.to_owned(),
            mod_revision: create_revision,
            create_revision,
        }
    }

    fn delete(key: &str) -> AgEvent {
        AgEvent::Delete {
            key_suffix: key.to_owned(),
            mod_revision: 20,
        }
    }

    #[test]
    fn only_a_published_synchronous_secondary_is_a_target() {
        let members = [
            member("sql-a", state("primary", "synchronous", true)),
            member("sql-b", state("secondary", "synchronous", false)),
            member("sql-c", state("secondary", "asynchronous", true)),
            member("sql-d", state("resolving", "synchronous", true)),
            member("sql-e", "{not json".to_owned()),
        ];
        let ok = judge_target("ag1", "sql-b", &members).unwrap();
        assert!(!ok.synchronized);
        let why = |to| judge_target("ag1", to, &members).unwrap_err();
        assert!(why("sql-x").contains("sql-x publishes no state in AG ag1"));
        assert!(why("sql-a").contains("is primary"), "{}", why("sql-a"));
        assert!(why("sql-d").contains("is resolving"), "{}", why("sql-d"));
        assert!(why("sql-c").contains("asynchronous commit mode"));
        assert!(why("sql-e").contains("not readable"));
    }

    #[test]
    fn the_targets_key_in_a_new_term_ends_the_wait() {
        let mut progress = Progress::new("sql-a", 7, "sql-b", None);
        assert_eq!(
            progress.on_event(&put("leader", "sql-a", 7)),
            Step::Wait(None),
            "a heartbeat of the same term"
        );
        assert_eq!(
            progress.on_event(&put("switchover", "{}", 9)),
            Step::Wait(None)
        );
        let Step::Wait(Some(line)) = progress.on_event(&delete("leader")) else {
            panic!("the resignation is progress");
        };
        assert!(
            line.contains("sql-a gave up the leader key (term 7 is over)"),
            "{line}"
        );
        assert_eq!(progress.on_event(&delete("leader")), Step::Wait(None));
        assert_eq!(
            progress.on_event(&put("leader", "sql-b", 11)),
            Step::Done { term: 11 }
        );
    }

    #[test]
    fn another_holder_in_a_new_term_voids_the_request() {
        let mut progress = Progress::new("sql-a", 7, "sql-b", None);
        let Step::Void(why) = progress.on_leader(Some(("sql-a".to_owned(), 12))) else {
            panic!("the old leader in a new term is not the target");
        };
        assert!(
            why.contains("sql-a took the leader key instead of sql-b (term 12)"),
            "{why}"
        );
        assert!(matches!(
            progress.on_leader(Some(("sql-c".to_owned(), 13))),
            Step::Void(_)
        ));
        assert_eq!(progress.leader, Some(("sql-c".to_owned(), 13)));
    }

    #[test]
    fn the_targets_state_is_followed_and_its_synchronization_reported_once() {
        let mut progress = Progress::new("sql-a", 7, "sql-b", None);
        let late = state("secondary", "synchronous", false);
        let synced = state("secondary", "synchronous", true);
        assert_eq!(
            progress.on_event(&put("members/sql-b", &late, 8)),
            Step::Wait(None)
        );
        assert_eq!(
            progress.on_event(&put("members/sql-b", &synced, 9)),
            Step::Wait(Some("sql-b is SYNCHRONIZED now".to_owned()))
        );
        assert_eq!(
            progress.on_event(&put("members/sql-b", &synced, 10)),
            Step::Wait(None)
        );
        assert_eq!(
            progress.on_event(&put("members/sql-c", &late, 11)),
            Step::Wait(None)
        );
        assert_eq!(progress.target.as_deref(), Some(synced.as_str()));
        assert!(matches!(
            progress.on_event(&delete("members/sql-b")),
            Step::Wait(Some(_))
        ));
        assert_eq!(progress.target, None);
    }

    #[test]
    fn states_and_leaders_read_for_a_person() {
        assert_eq!(
            describe_state(Some(&state("secondary", "synchronous", false))),
            "secondary, synchronous, sequence 12, not synchronized"
        );
        assert!(describe_state(None).starts_with("publishes no state"));
        assert!(describe_state(Some("[]")).contains("cannot read"));
        assert_eq!(
            describe_leader(Some(&("sql-a".to_owned(), 7))),
            "sql-a leads (term 7)"
        );
        assert_eq!(describe_leader(None), "there is no leader");
    }
}
