//! Leases against a real etcd: the timing a renewal reports is the one the holder may rely on
//! (etcd never drops the lease's keys before `sent + ttl`), keys stay while renewed and go
//! after the TTL without renewals, and a renewal of a gone lease is an error, not success.

mod common;

use std::time::{Duration, Instant};

use common::{EtcdServer, within};
use tdsvip_etcd::EtcdError;

const AG: &str = "ag1";

#[tokio::test]
async fn grant_and_renewals_report_when_they_were_sent_and_the_ttl_etcd_answered() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let before_grant = Instant::now();
    let lease = etcd.grant(Duration::from_secs(2)).await.unwrap();
    assert!(before_grant <= lease.sent && lease.sent <= lease.answered);
    assert_eq!(lease.ttl, Duration::from_secs(2));
    assert_ne!(lease.id, 0);
    let mut previous_answer = lease.answered;
    for _ in 0..3 {
        let renewal = etcd.renew(&lease).await.unwrap();
        assert!(previous_answer <= renewal.sent, "renewals overlap");
        assert!(renewal.sent <= renewal.answered);
        assert!(renewal.answered - renewal.sent < Duration::from_secs(3));
        assert_eq!(renewal.ttl, Duration::from_secs(2));
        assert_eq!(renewal.holds_until(), renewal.sent + Duration::from_secs(2));
        previous_answer = renewal.answered;
    }
}

#[tokio::test]
async fn ttls_that_are_not_whole_seconds_are_refused_before_asking_etcd() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    for ttl in [Duration::ZERO, Duration::from_millis(1500)] {
        let err = etcd.grant(ttl).await.unwrap_err();
        assert!(matches!(err, EtcdError::InvalidTtl { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_key_stays_while_its_lease_is_renewed_and_goes_after_the_ttl_without_renewals() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(Duration::from_secs(1)).await.unwrap();
    etcd.put_member(AG, "sql-a", "{}", &lease).await.unwrap();

    // Renewed every 300 ms for 3 TTLs: the key is there after every renewal.
    let mut last = etcd.renew(&lease).await.unwrap();
    let renewing_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < renewing_until {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = etcd.renew(&lease).await.unwrap();
        assert_eq!(
            etcd.members(AG).await.unwrap().len(),
            1,
            "key gone while renewed"
        );
    }

    // Not renewed: gone, never before the last renewal's `sent + ttl`, and within the
    // expiry loop's period (500 ms) plus slack after it.
    let gone_answered = within(Duration::from_secs(5), "key expiry", async {
        loop {
            let present = !etcd.members(AG).await.unwrap().is_empty();
            let answered = Instant::now();
            if !present {
                return answered;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        gone_answered >= last.holds_until(),
        "the key went {:?} before the renewal's sent + ttl",
        last.holds_until() - gone_answered
    );
    let late = gone_answered - last.holds_until();
    assert!(
        late < Duration::from_secs(2),
        "the key went {late:?} after sent + ttl"
    );

    let err = etcd.renew(&lease).await.unwrap_err();
    assert!(
        matches!(err, EtcdError::LeaseExpired { lease_id, .. } if lease_id == lease.id),
        "{err}"
    );
}

#[tokio::test]
async fn renewing_or_revoking_a_revoked_lease_is_lease_expired_and_its_keys_are_gone() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(Duration::from_secs(10)).await.unwrap();
    etcd.renew(&lease).await.unwrap(); // the keep-alive stream is open now
    etcd.put_member(AG, "sql-a", "{}", &lease).await.unwrap();
    etcd.revoke(&lease).await.unwrap();
    assert!(etcd.members(AG).await.unwrap().is_empty());
    let err = etcd.renew(&lease).await.unwrap_err();
    assert!(matches!(err, EtcdError::LeaseExpired { .. }), "{err}");
    assert!(err.to_string().contains(&server.client_url), "{err}");
    let err = etcd.revoke(&lease).await.unwrap_err();
    assert!(matches!(err, EtcdError::LeaseExpired { .. }), "{err}");
}

#[tokio::test]
async fn renewals_of_one_lease_from_two_tasks_take_turns() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(Duration::from_secs(10)).await.unwrap();
    let clone = lease.clone();
    let (first, second) = tokio::join!(etcd.renew(&lease), etcd.renew(&clone));
    let (first, second) = (first.unwrap(), second.unwrap());
    let (earlier, later) = if first.sent <= second.sent {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        earlier.answered <= later.sent,
        "two keep-alives outstanding at once: {earlier:?} / {later:?}"
    );
}

#[tokio::test]
async fn a_renewal_that_timed_out_on_a_hung_etcd_is_no_answer_and_renewals_work_after() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let request_timeout = server.settings().request_timeout;
    let lease = etcd.grant(Duration::from_secs(10)).await.unwrap();
    etcd.renew(&lease).await.unwrap();

    server.freeze();
    let started = Instant::now();
    let err = etcd.renew(&lease).await.unwrap_err();
    assert!(matches!(err, EtcdError::NoAnswer { .. }), "{err}");
    assert!(started.elapsed() >= request_timeout);
    server.thaw();

    // The timed-out keep-alive's stream was dropped; the next renewal opens a new one.
    let thawed = Instant::now();
    let renewal = etcd.renew(&lease).await.unwrap();
    assert!(renewal.sent >= thawed);
    assert_eq!(renewal.ttl, Duration::from_secs(10));
}
