//! Watching an AG against a real etcd: changes arrive in order with their revisions, a watch
//! from an earlier revision replays what happened since, a compacted start revision ends the
//! watch with an error; and the cluster leader is the member etcd lists.

mod common;

use std::time::Duration;

use common::{EtcdServer, within};
use tdsvip_etcd::{AgEvent, Campaign, EtcdError};

const AG: &str = "ag1";
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_watch_sees_a_put_then_a_delete_with_their_revisions() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let mut watch = etcd.watch_ag(AG, None).await.unwrap();
    let lease = etcd.grant(Duration::from_secs(10)).await.unwrap();
    etcd.put_member("ag2", "sql-x", "{}", &lease).await.unwrap(); // another AG: not seen
    let Campaign::Won { create_revision } = etcd.campaign(AG, "sql-a", &lease).await.unwrap()
    else {
        panic!("no competitor, yet not won");
    };
    assert!(etcd.resign(AG, create_revision, None).await.unwrap());

    let put = within(WAIT, "put", watch.next()).await.unwrap();
    assert_eq!(
        put,
        AgEvent::Put {
            key_suffix: "leader".to_owned(),
            value: "sql-a".to_owned(),
            mod_revision: create_revision,
            create_revision,
        }
    );
    let delete = within(WAIT, "delete", watch.next()).await.unwrap();
    assert_eq!(
        delete,
        AgEvent::Delete {
            key_suffix: "leader".to_owned(),
            mod_revision: create_revision + 1,
        }
    );
    let nothing = tokio::time::timeout(Duration::from_millis(200), watch.next()).await;
    assert!(nothing.is_err(), "unexpected event {nothing:?}");
}

#[tokio::test]
async fn a_watch_from_an_earlier_revision_replays_what_happened_since() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(Duration::from_secs(10)).await.unwrap();
    let first = etcd.put_member(AG, "sql-a", "1", &lease).await.unwrap();
    let second = etcd.put_member(AG, "sql-b", "2", &lease).await.unwrap();
    let mut watch = etcd.watch_ag(AG, Some(first)).await.unwrap();
    for (node, value, revision) in [("sql-a", "1", first), ("sql-b", "2", second)] {
        let event = within(WAIT, "replayed put", watch.next()).await.unwrap();
        assert_eq!(
            event,
            AgEvent::Put {
                key_suffix: format!("members/{node}"),
                value: value.to_owned(),
                mod_revision: revision,
                create_revision: revision,
            }
        );
    }
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_ends_with_an_error_and_stays_ended() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let first = etcd.put("ag1/note", "1").await.unwrap();
    let latest = etcd.put("ag1/note", "2").await.unwrap();
    let mut raw = server.raw_client().await;
    raw.compact(latest, None).await.unwrap();

    // etcd 3.4 confirms the watch, then cancels it with the compaction revision.
    let mut watch = etcd.watch_ag(AG, Some(first)).await.unwrap();
    let err = within(WAIT, "compaction error", watch.next())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EtcdError::WatchCompacted { compact_revision, .. } if compact_revision == latest),
        "{err}"
    );
    assert!(err.to_string().contains(&server.client_url), "{err}");
    let again = within(WAIT, "second error", watch.next())
        .await
        .unwrap_err();
    assert!(matches!(again, EtcdError::WatchEnded { .. }), "{again}");
}

#[tokio::test]
async fn the_cluster_leader_is_the_one_member() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let leader = etcd.cluster_leader().await.unwrap();
    let mut raw = server.raw_client().await;
    let members = raw.member_list().await.unwrap();
    let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
    assert_eq!(ids, vec![leader]);
}

#[tokio::test]
async fn a_watch_opened_again_after_its_confirmed_revision_misses_nothing() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(Duration::from_secs(10)).await.unwrap();
    let before = etcd.put_member(AG, "sql-a", "1", &lease).await.unwrap();
    let watch = etcd.watch_ag(AG, None).await.unwrap();
    let confirmed = watch.confirmed_revision();
    assert_eq!(
        confirmed, before,
        "the store's revision when the watch began"
    );
    drop(watch);
    // While no watch is open: a leader comes and goes.
    let Campaign::Won { create_revision } = etcd.campaign(AG, "sql-a", &lease).await.unwrap()
    else {
        panic!("no competitor, yet not won");
    };
    assert!(etcd.resign(AG, create_revision, None).await.unwrap());
    let mut again = etcd.watch_ag(AG, Some(confirmed + 1)).await.unwrap();
    let put = within(WAIT, "replayed put", again.next()).await.unwrap();
    assert!(
        matches!(&put, AgEvent::Put { key_suffix, mod_revision, .. } if key_suffix == "leader" && *mod_revision == create_revision),
        "{put:?}"
    );
    let delete = within(WAIT, "replayed delete", again.next()).await.unwrap();
    assert_eq!(
        delete,
        AgEvent::Delete {
            key_suffix: "leader".to_owned(),
            mod_revision: create_revision + 1,
        }
    );
}
