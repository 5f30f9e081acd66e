//! What the HTTP endpoint logs: one DEBUG line per request without secrets, and closed
//! connections summarised once per period with the busiest source.
//!
//! Why a binary of its own with one global subscriber: a subscriber installed per test (a
//! thread's default) races with other tests registering the same callsites in parallel —
//! tracing-core may cache "never" for a callsite from the list of subscribers it read just
//! before this one was added, and no rebuild afterwards can close that window (it failed CI
//! once). Here every test installs the same global DEBUG subscriber before the server logs
//! anything, and its writer hands each line to the buffer of the thread that wrote it: each
//! test runs the server on its own current-thread runtime, so its lines are its own.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::Duration;

use tdsvip::{AgStatus, AgentMetrics, AgentStatus, HttpServer, HttpState, StatusStore, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0ken-for-tests";

thread_local! {
    static LINES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes into the calling thread's [`LINES`].
struct ThreadBuffer;

impl std::io::Write for ThreadBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the global DEBUG subscriber (once per binary) and empties this thread's buffer.
fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| ThreadBuffer)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
    LINES.with(|l| l.borrow_mut().clear());
}

/// What this thread logged since [`capture`].
fn captured() -> String {
    LINES.with(|l| String::from_utf8(l.borrow().clone()).unwrap())
}

async fn serve(
    token: Option<&str>,
    (max, per_source): (usize, usize),
    head_timeout: Duration,
) -> (SocketAddr, CancellationToken) {
    let mut status = AgentStatus::new("sql1");
    status.ags.insert(
        "ag1".into(),
        AgStatus::new(vec!["10.9.0.10".parse().unwrap()]),
    );
    let state = HttpState {
        metrics: Arc::new(AgentMetrics::new().unwrap()),
        status: Arc::new(StatusStore::new(status, 8)),
        token: token.map(|t| Token::parse(t, "test".as_ref()).unwrap()),
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

/// One request on its own connection; the status line of the answer.
async fn ask(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
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

#[tokio::test(flavor = "current_thread")]
async fn every_request_is_logged_at_debug_without_secrets() {
    capture();
    let (addr, cancel) = serve(Some(TOKEN), (256, 8), Duration::from_secs(1)).await;
    let good = format!("Bearer {TOKEN}");
    assert!(
        ask(addr, "GET", "/status", Some("Bearer wrong-secret"))
            .await
            .contains("401")
    );
    assert!(
        ask(addr, "GET", "/status", Some(&good))
            .await
            .contains("200")
    );
    assert!(
        ask(addr, "POST", "/events", Some(&good))
            .await
            .contains("405")
    );
    assert!(
        ask(addr, "GET", "/primary?ag=query-secret", None)
            .await
            .contains("404")
    );

    let log = captured();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("http request")).collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("DEBUG") && l.contains("duration_us="))
    );
    assert!(
        lines[0].contains("method=GET path=/status status=401"),
        "{log}"
    );
    assert!(
        lines[1].contains("method=GET path=/status status=200"),
        "{log}"
    );
    assert!(
        lines[2].contains("method=POST path=/events status=405"),
        "{log}"
    );
    assert!(lines[3].contains("path=/primary status=404"), "{log}");
    for secret in [TOKEN, "wrong-secret", "query-secret"] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "current_thread")]
async fn closed_connections_are_logged_once_per_period_with_the_busiest_source() {
    capture();
    let (addr, cancel) = serve(None, (100, 2), Duration::from_millis(300)).await;
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(half_sent(7, addr).await);
    }
    assert!(closed_within(&mut flood[0], Duration::from_secs(1)).await);
    let log = captured();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("http: closed")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("WARN"), "{log}");
    assert!(lines[0].contains("per_source_cap=1 "), "{log}");
    assert!(lines[0].contains("busiest_source=127.0.0.7 "), "{log}");
    cancel.cancel();
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_client_is_logged_and_an_idle_keep_alive_one_is_not() {
    capture();
    let (addr, cancel) = serve(None, (100, 8), Duration::from_millis(200)).await;
    let mut idle = connect_from(4, addr).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await);
    assert!(!captured().contains("http: closed"), "{}", captured());

    let mut silent = half_sent(5, addr).await;
    assert!(closed_within(&mut silent, Duration::from_secs(2)).await);
    let log = captured();
    assert!(log.contains("head_timeout=1 "), "{log}");
    assert!(log.contains("busiest_source=127.0.0.5 "), "{log}");
    cancel.cancel();
}
