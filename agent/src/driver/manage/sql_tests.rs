//! Tests of `sql.rs`, apart so that the module reads in one sitting.

use super::*;

fn set(columns: &[&str], rows: &[&[&str]]) -> ResultSet {
    ResultSet {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows
            .iter()
            .map(|r| r.iter().map(|v| Some(v.to_string())).collect())
            .collect(),
    }
}

fn replica(role: &str, mode: &str, seq: &str) -> ResultSet {
    replica_requiring(role, mode, seq, "1")
}

fn replica_requiring(role: &str, mode: &str, seq: &str, required: &str) -> ResultSet {
    set(
        &[
            "role_desc",
            "availability_mode_desc",
            "sequence_number",
            "required_synchronized_secondaries_to_commit",
        ],
        &[&[role, mode, seq, required]],
    )
}

fn modes(m: &[&str]) -> ResultSet {
    let rows: Vec<&[&str]> = m.iter().map(std::slice::from_ref).collect();
    set(&["availability_mode_desc"], &rows)
}

#[test]
fn a_synchronized_synchronous_secondary() {
    let dbs = set(
        &["synchronization_state_desc"],
        &[&["SYNCHRONIZED"], &["SYNCHRONIZED"]],
    );
    let all = modes(&[
        "SYNCHRONOUS_COMMIT",
        "SYNCHRONOUS_COMMIT",
        "ASYNCHRONOUS_COMMIT",
        "CONFIGURATION_ONLY",
    ]);
    let (s, commit_rule) = member_state(
        "b",
        &[replica("SECONDARY", "SYNCHRONOUS_COMMIT", "7"), dbs, all],
    )
    .unwrap();
    assert_eq!(
        s,
        MemberState {
            node: "b".into(),
            role: MemberRole::Secondary,
            commit_mode: CommitMode::Synchronous,
            sequence_number: 7,
            synchronized: true,
            voters: 3,
        }
    );
    // Configuration-only and asynchronous replicas are not synchronous ones.
    assert_eq!(
        commit_rule,
        CommitRule {
            synchronous_replicas: 2,
            required: 1,
        }
    );
}

#[test]
fn the_commit_rule_is_read_as_the_ag_reports_it() {
    let dbs = set(&["synchronization_state_desc"], &[&["SYNCHRONIZED"]]);
    let all = modes(&["SYNCHRONOUS_COMMIT"; 3]);
    let (_, commit_rule) = member_state(
        "a",
        &[
            replica_requiring("PRIMARY", "SYNCHRONOUS_COMMIT", "9", "0"),
            dbs,
            all,
        ],
    )
    .unwrap();
    assert_eq!(
        commit_rule,
        CommitRule {
            synchronous_replicas: 3,
            required: 0,
        }
    );
}

#[test]
fn one_database_not_synchronized_makes_the_replica_not_synchronized() {
    let dbs = set(
        &["synchronization_state_desc"],
        &[&["SYNCHRONIZED"], &["NOT SYNCHRONIZING"]],
    );
    let (s, _) = member_state(
        "b",
        &[
            replica("RESOLVING", "ASYNCHRONOUS_COMMIT", "3"),
            dbs,
            modes(&[]),
        ],
    )
    .unwrap();
    assert!(!s.synchronized);
    assert_eq!(
        (s.role, s.commit_mode),
        (MemberRole::Resolving, CommitMode::Asynchronous)
    );
}

#[test]
fn unexpected_answers_are_errors_not_guesses() {
    let dbs = set(&["synchronization_state_desc"], &[]);
    let m = modes(&["SYNCHRONOUS_COMMIT"]);
    let answer =
        |replica: ResultSet, modes: ResultSet| member_state("b", &[replica, dbs.clone(), modes]);
    assert!(answer(replica("PRIMARY", "SYNCHRONOUS_COMMIT", "1"), m.clone()).is_ok());
    let bad = [
        answer(replica("PRIMARY", "SYNCHRONOUS_COMMIT", "x"), m.clone()),
        answer(replica("PRIMARY", "SOMETIMES", "1"), m.clone()),
        answer(set(&["role_desc"], &[]), m.clone()),
        answer(
            replica("PRIMARY", "SYNCHRONOUS_COMMIT", "1"),
            set(&["other"], &[&["x"]]),
        ),
        member_state("b", &[dbs.clone(), dbs.clone()]),
        // The commit rule: missing, not a number, negative, and a replica of an
        // availability mode nobody knows.
        answer(
            set(
                &["role_desc", "availability_mode_desc", "sequence_number"],
                &[&["PRIMARY", "SYNCHRONOUS_COMMIT", "1"]],
            ),
            m.clone(),
        ),
        answer(
            replica_requiring("PRIMARY", "SYNCHRONOUS_COMMIT", "1", "one"),
            m.clone(),
        ),
        answer(
            replica_requiring("PRIMARY", "SYNCHRONOUS_COMMIT", "1", "-1"),
            m.clone(),
        ),
        answer(
            replica("PRIMARY", "SYNCHRONOUS_COMMIT", "1"),
            modes(&["SYNCHRONOUS_COMMIT", "SOMETIMES"]),
        ),
    ];
    for (i, b) in bad.iter().enumerate() {
        assert!(b.is_err(), "answer {i} was taken: {b:?}");
    }
}

#[test]
fn nothing_goes_out_without_the_keys_proof() {
    let later = Instant::now() + Duration::from_secs(60);
    assert!(provable(Some(later)).is_ok());
    assert!(provable(Some(Instant::now())).is_err());
    assert!(provable(None).is_err());
}

#[test]
fn names_are_quoted_not_spliced() {
    assert_eq!(bracketed("a]b"), "[a]]b]");
    assert!(member_query("x' OR 1=1 --").contains("N'x'' OR 1=1 --'"));
    assert_eq!(
        set_required_synchronized("a]b", 1),
        "ALTER AVAILABILITY GROUP [a]]b] SET (REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT = 1);"
    );
}
