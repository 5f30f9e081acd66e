//! The leader key against a real etcd: concurrent campaigns have one winner, the token
//! (create_revision) guards resign and heartbeat, a resignation's note is written in the same
//! transaction; member states and plain keys read back as written; a switchover request is
//! written only to the leader of the term it names, and lives on the caller's lease.

mod common;

use std::time::Duration;

use common::{EtcdServer, within};
use tdsvip_etcd::{AgEvent, Campaign, Etcd, EtcdError, Lease, MemberKey, SWITCHOVER_KEY_SUFFIX};

const AG: &str = "ag1";
const TTL: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(5);

async fn won(etcd: &Etcd, value: &str, lease: &Lease) -> i64 {
    match etcd.campaign(AG, value, lease).await.unwrap() {
        Campaign::Won { create_revision } => create_revision,
        held => panic!("expected to win, got {held:?}"),
    }
}

#[tokio::test]
async fn two_agents_campaigning_at_once_get_exactly_one_winner() {
    let server = EtcdServer::start().await;
    let (a, b) = (server.connect().await, server.connect().await);
    let (lease_a, lease_b) = (a.grant(TTL).await.unwrap(), b.grant(TTL).await.unwrap());
    let (result_a, result_b) = tokio::join!(
        a.campaign(AG, "sql-a", &lease_a),
        b.campaign(AG, "sql-b", &lease_b)
    );
    let (result_a, result_b) = (result_a.unwrap(), result_b.unwrap());
    let (winner, winner_lease, token, loser) = match (&result_a, &result_b) {
        (Campaign::Won { create_revision }, held) => ("sql-a", &lease_a, *create_revision, held),
        (held, Campaign::Won { create_revision }) => ("sql-b", &lease_b, *create_revision, held),
        _ => panic!("no single winner: {result_a:?} / {result_b:?}"),
    };
    let Campaign::Held {
        value,
        create_revision,
        mod_revision,
    } = loser
    else {
        panic!("both won: {result_a:?} / {result_b:?}");
    };
    assert_eq!((value.as_str(), *create_revision), (winner, token));
    assert_eq!(*mod_revision, token);
    let leader = a.leader(AG).await.unwrap().unwrap();
    assert_eq!(leader.value, winner);
    assert_eq!(leader.create_revision, token);
    assert_eq!(leader.lease, winner_lease.id);
}

#[tokio::test]
async fn resigning_with_a_stale_token_changes_nothing() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(TTL).await.unwrap();
    let token = won(&etcd, "sql-a", &lease).await;
    for stale in [token - 1, token + 1000, 0] {
        let note = Some(("handoff", "must not be written"));
        assert!(!etcd.resign(AG, stale, note).await.unwrap(), "{stale}");
    }
    let leader = etcd.leader(AG).await.unwrap().unwrap();
    assert_eq!(
        (leader.value.as_str(), leader.create_revision),
        ("sql-a", token)
    );
    assert_eq!(etcd.get("ag1/handoff").await.unwrap(), None);
    assert!(etcd.resign(AG, token, None).await.unwrap());
    assert_eq!(etcd.leader(AG).await.unwrap(), None);
    assert!(
        !etcd.resign(AG, token, None).await.unwrap(),
        "resigned twice"
    );
}

#[tokio::test]
async fn a_resignation_writes_its_note_in_the_same_transaction() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(TTL).await.unwrap();
    let token = won(&etcd, "sql-a", &lease).await;
    let mut watch = etcd.watch_ag(AG, Some(token + 1)).await.unwrap();
    let note = r#"{"from":"sql-a","to":"sql-b"}"#;
    assert!(
        etcd.resign(AG, token, Some(("handoff", note)))
            .await
            .unwrap()
    );

    let first = within(WAIT, "first event", watch.next()).await.unwrap();
    let second = within(WAIT, "second event", watch.next()).await.unwrap();
    let AgEvent::Delete {
        key_suffix,
        mod_revision: deleted_at,
    } = first
    else {
        panic!("expected the leader's deletion first, got {first:?}");
    };
    assert_eq!(key_suffix, "leader");
    assert_eq!(
        second,
        AgEvent::Put {
            key_suffix: "handoff".to_owned(),
            value: note.to_owned(),
            mod_revision: deleted_at,
            create_revision: deleted_at,
        },
        "one revision for both: one transaction"
    );
    let stored = etcd.get("ag1/handoff").await.unwrap().unwrap();
    assert_eq!(
        (stored.value.as_str(), stored.mod_revision),
        (note, deleted_at)
    );
}

#[tokio::test]
async fn a_heartbeat_rewrites_only_our_key_and_keeps_its_lease() {
    let server = EtcdServer::start().await;
    let (a, b) = (server.connect().await, server.connect().await);
    let lease_a = a.grant(TTL).await.unwrap();
    let token = won(&a, "sql-a@1", &lease_a).await;
    let beat = a.heartbeat(AG, token, "sql-a@2").await.unwrap().unwrap();
    assert!(beat > token);
    let leader = a.leader(AG).await.unwrap().unwrap();
    assert_eq!(leader.value, "sql-a@2");
    assert_eq!((leader.create_revision, leader.mod_revision), (token, beat));
    assert_eq!(leader.lease, lease_a.id, "the heartbeat dropped the lease");

    // The key is lost with the lease: the heartbeat does not recreate it.
    a.revoke(&lease_a).await.unwrap();
    assert_eq!(a.heartbeat(AG, token, "sql-a@3").await.unwrap(), None);
    assert_eq!(a.leader(AG).await.unwrap(), None);

    // Someone else's key: the old token neither rewrites nor resigns it.
    let lease_b = b.grant(TTL).await.unwrap();
    let token_b = won(&b, "sql-b", &lease_b).await;
    assert_ne!(token_b, token);
    assert_eq!(a.heartbeat(AG, token, "sql-a@4").await.unwrap(), None);
    assert!(!a.resign(AG, token, None).await.unwrap());
    let leader = a.leader(AG).await.unwrap().unwrap();
    assert_eq!(
        (leader.value.as_str(), leader.create_revision),
        ("sql-b", token_b)
    );
}

#[tokio::test]
async fn member_states_and_plain_keys_read_back_as_written() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(TTL).await.unwrap();
    let rev_b = etcd
        .put_member(AG, "sql-b", r#"{"role":"SECONDARY"}"#, &lease)
        .await
        .unwrap();
    let rev_a = etcd
        .put_member(AG, "sql-a", r#"{"role":"PRIMARY"}"#, &lease)
        .await
        .unwrap();
    etcd.put_member("ag2", "sql-c", "{}", &lease).await.unwrap();
    let members = etcd.members(AG).await.unwrap();
    assert_eq!(
        members,
        vec![
            MemberKey {
                node: "sql-a".to_owned(),
                value: r#"{"role":"PRIMARY"}"#.to_owned(),
                mod_revision: rev_a,
            },
            MemberKey {
                node: "sql-b".to_owned(),
                value: r#"{"role":"SECONDARY"}"#.to_owned(),
                mod_revision: rev_b,
            },
        ]
    );
    assert!(etcd.members("ag3").await.unwrap().is_empty());
    etcd.delete_member(AG, "sql-a").await.unwrap();
    etcd.delete_member(AG, "sql-a").await.unwrap();
    let left: Vec<String> = etcd
        .members(AG)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.node)
        .collect();
    assert_eq!(left, ["sql-b"]);

    assert_eq!(etcd.get("ag1/handoff").await.unwrap(), None);
    let written = etcd.put("ag1/handoff", "to sql-b").await.unwrap();
    let stored = etcd.get("ag1/handoff").await.unwrap().unwrap();
    assert_eq!(stored.value, "to sql-b");
    assert_eq!(
        (stored.create_revision, stored.mod_revision),
        (written, written)
    );
    assert!(etcd.put("ag1//x", "v").await.is_err());
}

#[tokio::test]
async fn writes_under_a_lease_that_is_gone_say_so() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(TTL).await.unwrap();
    etcd.revoke(&lease).await.unwrap();
    let err = etcd.campaign(AG, "sql-a", &lease).await.unwrap_err();
    assert!(
        matches!(err, EtcdError::LeaseExpired { lease_id, .. } if lease_id == lease.id),
        "{err}"
    );
    let err = etcd
        .put_member(AG, "sql-a", "{}", &lease)
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::LeaseExpired { .. }), "{err}");
    assert_eq!(etcd.leader(AG).await.unwrap(), None);
}

const REQUEST: &str = r#"{"to":"sql-b","term":7}"#;

#[tokio::test]
async fn a_switchover_request_to_the_current_term_is_written_under_the_callers_lease() {
    let server = EtcdServer::start().await;
    let (leader, operator) = (server.connect().await, server.connect().await);
    let leader_lease = leader.grant(TTL).await.unwrap();
    let token = won(&leader, "sql-a", &leader_lease).await;
    let mut watch = leader.watch_ag(AG, Some(token + 1)).await.unwrap();
    let request_lease = operator.grant(TTL).await.unwrap();
    assert!(
        operator
            .request_switchover(AG, token, REQUEST, &request_lease)
            .await
            .unwrap()
    );

    // The leader's watch of the AG sees it under its suffix.
    let seen = within(WAIT, "the request", watch.next()).await.unwrap();
    let AgEvent::Put {
        key_suffix, value, ..
    } = seen
    else {
        panic!("expected the request's put, got {seen:?}");
    };
    assert_eq!(
        (key_suffix.as_str(), value.as_str()),
        (SWITCHOVER_KEY_SUFFIX, REQUEST)
    );
    let stored = operator.get("ag1/switchover").await.unwrap().unwrap();
    assert_eq!(stored.value, REQUEST);

    // It lives on the caller's lease, not the leader's: revoking that deletes it alone.
    operator.revoke(&request_lease).await.unwrap();
    let gone = within(WAIT, "the request's deletion", watch.next())
        .await
        .unwrap();
    assert!(
        matches!(&gone, AgEvent::Delete { key_suffix, .. } if key_suffix == SWITCHOVER_KEY_SUFFIX),
        "{gone:?}"
    );
    assert_eq!(operator.get("ag1/switchover").await.unwrap(), None);
    let still = leader.leader(AG).await.unwrap().unwrap();
    assert_eq!(
        (still.value.as_str(), still.create_revision),
        ("sql-a", token)
    );

    // A request under a lease that is gone says so.
    let err = operator
        .request_switchover(AG, token, REQUEST, &request_lease)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EtcdError::LeaseExpired { lease_id, .. } if lease_id == request_lease.id),
        "{err}"
    );
    assert_eq!(operator.get("ag1/switchover").await.unwrap(), None);
}

/// A request for `term` is refused and writes nothing.
async fn assert_refused(etcd: &Etcd, term: i64, lease: &Lease) {
    let written = etcd.request_switchover(AG, term, REQUEST, lease).await;
    assert!(!written.unwrap(), "term {term}");
    assert_eq!(
        etcd.get("ag1/switchover").await.unwrap(),
        None,
        "term {term}"
    );
}

#[tokio::test]
async fn a_switchover_request_to_a_stale_term_is_refused_and_writes_nothing() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let leader_lease = etcd.grant(TTL).await.unwrap();
    let token = won(&etcd, "sql-a", &leader_lease).await;
    let request_lease = etcd.grant(TTL).await.unwrap();
    for stale in [token - 1, token + 1000, 0] {
        assert_refused(&etcd, stale, &request_lease).await;
    }
    assert_eq!(etcd.get("ag1/switchover").await.unwrap(), None);

    // The same node elected again is a new term: the old one is stale too.
    assert!(etcd.resign(AG, token, None).await.unwrap());
    let again = won(&etcd, "sql-a", &leader_lease).await;
    assert_ne!(again, token);
    assert_refused(&etcd, token, &request_lease).await;
}

#[tokio::test]
async fn a_switchover_request_without_a_leader_is_refused_and_writes_nothing() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let request_lease = etcd.grant(TTL).await.unwrap();
    for term in [0, 1, 5] {
        assert_refused(&etcd, term, &request_lease).await;
    }
    // A leader that was there and is gone (its lease revoked) leaves no term to address.
    let leader_lease = etcd.grant(TTL).await.unwrap();
    let token = won(&etcd, "sql-a", &leader_lease).await;
    etcd.revoke(&leader_lease).await.unwrap();
    assert_refused(&etcd, token, &request_lease).await;
    assert!(
        etcd.request_switchover("a/b", token, REQUEST, &request_lease)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_deposal_needs_the_last_heartbeat_it_saw_and_the_token() {
    let server = EtcdServer::start().await;
    let (a, b) = (server.connect().await, server.connect().await);
    let lease_a = a.grant(TTL).await.unwrap();
    let token = won(&a, "sql-a", &lease_a).await;
    let seen = b.leader(AG).await.unwrap().unwrap().mod_revision;
    let beat = a.heartbeat(AG, token, "sql-a").await.unwrap().unwrap();

    // A heartbeat landed after the revision b saw: the leader is alive, the key stays.
    assert!(!b.depose(AG, token, seen).await.unwrap());
    assert_eq!(a.leader(AG).await.unwrap().unwrap().mod_revision, beat);
    // The right revision with another term's token changes nothing either.
    assert!(!b.depose(AG, token + 1000, beat).await.unwrap());
    assert!(a.leader(AG).await.unwrap().is_some());

    // No heartbeat since the one b saw: deposed, while a's lease is still alive; a's next
    // heartbeat and resign find nothing of theirs.
    let mut watch = b.watch_ag(AG, None).await.unwrap();
    assert!(b.depose(AG, token, beat).await.unwrap());
    assert_eq!(a.leader(AG).await.unwrap(), None);
    assert!(
        a.renew(&lease_a).await.is_ok(),
        "the lease went with the key"
    );
    assert_eq!(a.heartbeat(AG, token, "sql-a").await.unwrap(), None);
    assert!(!a.resign(AG, token, None).await.unwrap());
    let event = within(WAIT, "the deletion", watch.next()).await.unwrap();
    assert!(
        matches!(&event, AgEvent::Delete { key_suffix, .. } if key_suffix == "leader"),
        "{event:?}"
    );
    // Nothing to depose twice; and a new campaign gets a new token.
    assert!(!b.depose(AG, token, beat).await.unwrap());
    let lease_b = b.grant(TTL).await.unwrap();
    assert!(won(&b, "sql-b", &lease_b).await > beat);
}
