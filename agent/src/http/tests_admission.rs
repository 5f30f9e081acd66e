//! The listener's admission on real sockets: a newcomer is served, the connection that
//! waited longest is closed to make room, an address beyond its cap is refused (what is logged
//! about it: `agent/tests/http_log.rs`). Sources other than 127.0.0.1 are other
//! loopback addresses (all of 127.0.0.0/8 is local), bound before connecting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{HttpServer, HttpState};
use crate::metrics::AgentMetrics;
use crate::status::{AgentStatus, StatusStore};

async fn serve(
    max: usize,
    per_source: usize,
    head_timeout: Duration,
) -> (SocketAddr, CancellationToken) {
    let state = HttpState {
        metrics: Arc::new(AgentMetrics::new().unwrap()),
        status: Arc::new(StatusStore::new(AgentStatus::new("sql1"), 8)),
        token: None,
        failsafe: Default::default(),
    };
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap()
        .with_max_connections(max)
        .with_max_connections_per_source(per_source)
        .with_head_timeout(head_timeout);
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(server.run(cancel.clone()));
    (addr, cancel)
}

async fn connect_from(last_octet: u8, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)), 0);
    socket.bind(src).unwrap();
    socket.connect(server).await.unwrap()
}

/// A connection that sent half a request head and then nothing.
async fn half_sent(last_octet: u8, server: SocketAddr) -> TcpStream {
    let mut s = connect_from(last_octet, server).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// Whether the server closed `s` within `wait` (end of stream or reset).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// `GET /healthz` from 127.0.0.`last_octet`; the status line and how long it took.
async fn healthz_from(last_octet: u8, server: SocketAddr) -> (String, Duration) {
    let start = Instant::now();
    let mut s = connect_from(last_octet, server).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    (
        text.lines().next().unwrap_or("").to_owned(),
        start.elapsed(),
    )
}

#[tokio::test]
async fn a_newcomer_beyond_the_limit_is_served_and_the_oldest_is_closed() {
    let (addr, cancel) = serve(1, 1, Duration::from_secs(10)).await;
    // The only slot is held by a client that sent half a request head.
    let mut first = half_sent(1, addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (line, took) = healthz_from(2, addr).await;
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(
        closed_within(&mut first, Duration::from_secs(1)).await,
        "the oldest connection was closed to make room"
    );
    cancel.cancel();
}

#[tokio::test]
async fn one_address_beyond_its_cap_is_refused_and_no_one_else_is_closed() {
    let (addr, cancel) = serve(100, 2, Duration::from_secs(10)).await;
    let mut other = half_sent(3, addr).await;
    let a1 = half_sent(2, addr).await;
    let mut a2 = half_sent(2, addr).await;
    let mut a3 = half_sent(2, addr).await;
    assert!(
        closed_within(&mut a3, Duration::from_secs(1)).await,
        "beyond the cap"
    );
    assert!(!closed_within(&mut a2, Duration::from_millis(200)).await);
    assert!(!closed_within(&mut other, Duration::from_millis(50)).await);
    // Once one of its connections ended, the address is served again.
    drop(a1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (line, _) = healthz_from(2, addr).await;
    assert_eq!(line, "HTTP/1.1 200 OK");
    cancel.cancel();
}

#[tokio::test]
async fn a_flood_from_one_address_leaves_the_others_served() {
    let (addr, cancel) = serve(16, 4, Duration::from_secs(10)).await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(half_sent(9, addr).await);
    }
    for octet in [1, 2, 3] {
        let (line, took) = healthz_from(octet, addr).await;
        assert_eq!(line, "HTTP/1.1 200 OK");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
    // Only the first four of the flood are still open; the rest were refused.
    let mut open = 0;
    for s in &mut flood {
        if !closed_within(s, Duration::from_millis(5)).await {
            open += 1;
        }
    }
    assert_eq!(open, 4);
    cancel.cancel();
}
