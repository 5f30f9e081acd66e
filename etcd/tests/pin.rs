//! One member at a time (`pin.rs`): a member that stops answering without closing its
//! connections (SIGSTOP, as a partitioned host looks from outside) costs one call, not
//! seconds, and a watch open on it ends when the client moves on. Two independent one-member
//! etcds stand in for two members here, so that which one answered is visible in the data:
//! a key written to the first is not in the second.

mod common;

use std::time::Duration;

use common::{EtcdServer, closed_port, within};
use tdsvip_etcd::{Etcd, EtcdError, EtcdSettings};

const TIMEOUT: Duration = Duration::from_millis(300);

fn settings(endpoints: Vec<String>) -> EtcdSettings {
    EtcdSettings {
        endpoints,
        prefix: "/tdsvip-test".to_owned(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: TIMEOUT,
        user: None,
        tls: None,
    }
}

async fn connect(endpoints: Vec<String>) -> Etcd {
    Etcd::connect(&settings(endpoints))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

async fn value(etcd: &Etcd, key: &str) -> Option<String> {
    etcd.get(key).await.unwrap().map(|v| v.value)
}

#[tokio::test]
async fn a_member_that_stops_answering_costs_one_call_then_the_next_member_answers() {
    let a = EtcdServer::start().await;
    let b = EtcdServer::start().await;
    let etcd = connect(vec![a.client_url.clone(), b.client_url.clone()]).await;
    etcd.put("k", "written to a").await.unwrap();
    assert_eq!(value(&etcd, "k").await.as_deref(), Some("written to a"));

    a.freeze();
    let e = etcd.get("k").await.unwrap_err();
    assert!(
        matches!(e, EtcdError::NoAnswer { .. }),
        "the frozen member: {e}"
    );
    // The next call goes to b, which never saw the key, and every call after it.
    assert_eq!(value(&etcd, "k").await, None);
    etcd.put("k", "written to b").await.unwrap();
    a.thaw();
    assert_eq!(value(&etcd, "k").await.as_deref(), Some("written to b"));
}

#[tokio::test]
async fn a_watch_on_the_member_left_ends() {
    let a = EtcdServer::start().await;
    let b = EtcdServer::start().await;
    let etcd = connect(vec![a.client_url.clone(), b.client_url.clone()]).await;
    let mut watch = etcd.watch_ag("ag1", None).await.unwrap();
    a.freeze();
    // Another call finds the member silent; the watch, which would wait for events that
    // never come, ends.
    assert!(etcd.get("k").await.is_err());
    let ended = within(Duration::from_secs(2), "the watch's end", watch.next()).await;
    match ended {
        Err(EtcdError::WatchEnded { reason, .. }) => {
            assert!(reason.contains("left its member"), "{reason}")
        }
        other => panic!("expected the watch to end, got {other:?}"),
    }
    // A new watch is opened on b and sees b's writes.
    let mut watch = etcd.watch_ag("ag1", None).await.unwrap();
    etcd.put("ag1/leader", "n2").await.unwrap();
    let event = within(Duration::from_secs(2), "an event from b", watch.next()).await;
    assert!(event.is_ok(), "{event:?}");
    a.thaw();
}

#[tokio::test]
async fn connect_passes_over_a_member_nobody_listens_on() {
    let b = EtcdServer::start().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let etcd = connect(vec![dead, b.client_url.clone()]).await;
    etcd.put("k", "v").await.unwrap();
    assert_eq!(value(&etcd, "k").await.as_deref(), Some("v"));
}

#[tokio::test]
async fn the_last_member_failing_brings_the_client_back_to_the_first() {
    let a = EtcdServer::start().await;
    let b = EtcdServer::start().await;
    let etcd = connect(vec![a.client_url.clone(), b.client_url.clone()]).await;
    etcd.put("k", "a").await.unwrap();
    a.freeze();
    assert!(etcd.get("k").await.is_err());
    assert_eq!(value(&etcd, "k").await, None, "b answers");
    a.thaw();
    b.freeze();
    assert!(etcd.get("k").await.is_err());
    assert_eq!(value(&etcd, "k").await.as_deref(), Some("a"));
    b.thaw();
}
