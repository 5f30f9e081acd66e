//! Connecting against a real etcd: an endpoint nobody listens on, or one that never answers,
//! fails within the connect timeout and is named; calls and watches fail, not hang, when etcd
//! goes away; user/password authentication works and a wrong password is a clear
//! refusal; TLS with a CA and a client certificate works, and without the certificate or with
//! the wrong CA it does not.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{EtcdServer, closed_port};
use tdsvip_etcd::{Etcd, EtcdError, EtcdSettings, EtcdTls};

const SLACK: Duration = Duration::from_millis(500);

fn settings_for(endpoint: String) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![endpoint],
        prefix: "/tdsvip-test".to_owned(),
        connect_timeout: Duration::from_millis(700),
        request_timeout: Duration::from_secs(2),
        user: None,
        tls: None,
    }
}

/// Connects, expecting a failure within the connect timeout (+ slack).
async fn refused(settings: &EtcdSettings) -> EtcdError {
    let started = Instant::now();
    let err = Etcd::connect(settings).await.expect_err("connected");
    let took = started.elapsed();
    assert!(
        took < settings.connect_timeout + SLACK,
        "took {took:?}: {err}"
    );
    err
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_fails_at_once_and_is_named() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let err = refused(&settings_for(endpoint.clone())).await;
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test]
async fn an_endpoint_that_never_answers_fails_within_the_connect_timeout_and_is_named() {
    // The kernel completes TCP handshakes into the backlog; nothing ever speaks HTTP/2.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let settings = settings_for(endpoint.clone());
    let started = Instant::now();
    let err = refused(&settings).await;
    assert!(started.elapsed() >= settings.connect_timeout);
    assert!(
        matches!(&err, EtcdError::NoAnswer { within, .. } if *within == settings.connect_timeout),
        "{err}"
    );
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test]
async fn when_etcd_goes_away_renewals_and_watches_fail_instead_of_waiting() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let lease = etcd.grant(Duration::from_secs(5)).await.unwrap();
    etcd.renew(&lease).await.unwrap();
    let mut watch = etcd.watch_ag("ag1", None).await.unwrap();
    let endpoint = server.client_url.clone();
    let request_timeout = server.settings().request_timeout;
    drop(server);

    let started = Instant::now();
    let err = etcd.renew(&lease).await.unwrap_err();
    assert!(started.elapsed() <= request_timeout + SLACK, "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
    let err = common::within(request_timeout, "watch error", watch.next())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test]
async fn when_etcd_hangs_calls_time_out_and_an_idle_watch_ends_after_unanswered_pings() {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let request_timeout = server.settings().request_timeout;
    let lease = etcd.grant(Duration::from_secs(60)).await.unwrap();
    let mut watch = etcd.watch_ag("ag1", None).await.unwrap();

    // Idle longer than the ping interval (10 s): etcd tolerates the pings, the watch lives.
    tokio::time::sleep(Duration::from_secs(12)).await;
    etcd.put("ag1/note", "still watched").await.unwrap();
    let event = common::within(request_timeout, "event", watch.next()).await;
    assert!(event.is_ok(), "{event:?}");

    server.freeze();
    let started = Instant::now();
    let err = etcd.renew(&lease).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, EtcdError::NoAnswer { .. }), "{err}");
    assert!(
        took >= request_timeout && took < request_timeout + SLACK,
        "{took:?}"
    );
    // A ping unanswered for request_timeout closes the connection, ending the watch.
    let bound = Duration::from_secs(10) + request_timeout + SLACK;
    let err = common::within(bound, "watch end", watch.next())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&server.client_url), "{err}");
}

#[tokio::test]
async fn user_and_password_authenticate_and_a_wrong_password_is_refused() {
    let server = EtcdServer::start().await;
    let raw = server.raw_client().await;
    let mut auth = raw.auth_client();
    auth.user_add("root", "root-secret", None).await.unwrap();
    auth.user_grant_role("root", "root").await.unwrap();
    auth.auth_enable().await.unwrap();
    drop(raw);

    let right = EtcdSettings {
        user: Some(("root".to_owned(), "root-secret".to_owned())),
        ..server.settings()
    };
    let etcd = Etcd::connect(&right).await.unwrap();
    etcd.put("ag1/note", "written with a password")
        .await
        .unwrap();
    let stored = etcd.get("ag1/note").await.unwrap().unwrap();
    assert_eq!(stored.value, "written with a password");

    let wrong = EtcdSettings {
        user: Some(("root".to_owned(), "not-the-password".to_owned())),
        ..server.settings()
    };
    let err = refused(&wrong).await;
    assert!(
        matches!(&err, EtcdError::AuthenticationRefused { user, .. } if user == "root"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&server.client_url) && text.contains("authentication"),
        "{text}"
    );

    // Without credentials etcd refuses the first read.
    let err = refused(&server.settings()).await;
    assert!(matches!(err, EtcdError::Answered { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&server.client_url) && text.contains("user name is empty"),
        "{text}"
    );
}

#[tokio::test]
async fn tls_with_a_client_certificate_works_and_without_it_or_with_another_ca_does_not() {
    let server = EtcdServer::start_tls().await;
    let pki = server.pki.clone().unwrap();
    assert!(server.client_url.starts_with("https://"));
    let etcd = Etcd::connect(&server.settings()).await.unwrap();
    let lease = etcd.grant(Duration::from_secs(5)).await.unwrap();
    etcd.put_member("ag1", "sql-a", "{}", &lease).await.unwrap();
    assert_eq!(etcd.members("ag1").await.unwrap().len(), 1);

    let fast = |tls: EtcdTls| EtcdSettings {
        tls: Some(tls),
        connect_timeout: Duration::from_millis(1500),
        ..server.settings()
    };
    let no_client_cert = fast(EtcdTls {
        ca: pki.ca.clone(),
        cert: None,
        key: None,
    });
    // With TLS 1.3 the client finishes its handshake before etcd checks the certificate, so
    // the refusal is etcd's alert or just a closed connection, depending on timing.
    let err = refused(&no_client_cert).await;
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&server.client_url), "{err}");

    let other_ca = fast(EtcdTls {
        ca: pki.other_ca.clone(),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
    });
    let err = refused(&other_ca).await;
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&server.client_url) && text.contains("UnknownIssuer"),
        "{text}"
    );

    let plain = EtcdSettings {
        endpoints: vec![server.client_url.replace("https://", "http://")],
        ..fast(EtcdTls {
            ca: pki.ca.clone(),
            cert: None,
            key: None,
        })
    };
    let err = Etcd::connect(&plain).await.unwrap_err();
    assert!(matches!(err, EtcdError::Settings { .. }), "{err}");
}
