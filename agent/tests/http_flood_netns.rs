//! The end-to-end form of `http_flood.rs` (issue 13, "HTTP that cannot be starved"): a real
//! `tdsvip run` owning the overlay address in a network namespace, its HTTP listener on the
//! node's own address as in production, and 2,000 half-sent requests from 20 addresses of
//! the client namespace. While the flood runs, the owner keeps the address (sampled every
//! 50 ms) and `/primary` and a peer's authenticated `/status`, asked from the client
//! namespace as a load balancer and a peer would, keep answering, each within [`BOUND`].
//!
//! The bed is `common::netns`; this file's labs carry the prefix `thf` on 10.232.43.0/24.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::netns::{Lab, enter_netns, in_ns, runtime, sh, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "thf";
const NET: u8 = 43;
const FLOOD: usize = 2_000;
/// Flooding addresses in the client namespace: 10.232.43.10 to .29.
const SOURCES: u8 = 20;
/// How long every question may take, connect to last byte (as in `http_flood.rs`).
const BOUND: Duration = Duration::from_millis(200);
const TOKEN: &str = "flood-netns-token-0123456789abcdef";

async fn connect_from(src: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(server).await
}

/// One flooder: keeps one half-sent request open, reopening it 100 ms after each close.
async fn flooder(src: IpAddr, server: SocketAddr, stop: CancellationToken) {
    let mut buf = [0u8; 256];
    while !stop.is_cancelled() {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), connect_from(src, server)).await
            && s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_ok()
        {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = s.read(&mut buf) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The flood on a thread inside the client namespace, until `stop` fires.
fn start_flood(
    client_ns: &str,
    server: SocketAddr,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let ns = client_ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns);
        runtime().block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..FLOOD {
                let src = IpAddr::V4(Ipv4Addr::new(
                    10,
                    232,
                    NET,
                    10 + (i % SOURCES as usize) as u8,
                ));
                tasks.spawn(flooder(src, server, stop.clone()));
            }
            while tasks.join_next().await.is_some() {}
        });
    })
}

/// `GET path` from the client namespace's own address: the status code and how long it
/// took, or why it failed.
fn ask(
    client_ns: &str,
    server: SocketAddr,
    path: &'static str,
    token: Option<&'static str>,
) -> (Result<u16, String>, Duration) {
    in_ns(client_ns, move || {
        runtime().block_on(async move {
            let start = Instant::now();
            let exchange = async {
                let mut s = TcpStream::connect(server)
                    .await
                    .map_err(|e| e.to_string())?;
                let auth =
                    token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: agent\r\n{auth}Connection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&out);
                text.split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("no status line in {text:?}"))
            };
            let r = tokio::time::timeout(Duration::from_secs(3), exchange)
                .await
                .unwrap_or_else(|_| Err("no answer within 3 s".into()));
            (r, start.elapsed())
        })
    })
}

#[test]
fn the_owner_keeps_the_address_and_answers_under_a_flood() {
    let mut lab = Lab::new(PREFIX, NET);
    for i in 0..SOURCES {
        let cidr = format!("10.232.{NET}.{}/24", 10 + i);
        sh(&["ip", "-n", &lab.client, "addr", "add", &cidr, "dev", "eth0"]);
    }
    let sim = lab.start_sim();
    let token_file = lab.dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let http_addr = SocketAddr::from(([10, 232, NET, 2], 19477));
    let config = lab.agent_config(
        &sim,
        &format!(
            "listen = \"{http_addr}\"\ntoken_file = \"{}\"",
            token_file.display()
        ),
        "[ebpf]\nenabled = true",
    );
    lab.start_agent(&config, &[]);
    assert!(
        lab.listening_within(http_addr, Duration::from_secs(5)),
        "agent HTTP never came up:\n{}",
        lab.agent_log()
    );
    assert!(
        within(Duration::from_secs(3), || lab.has_overlay()
            && ask(&lab.client, http_addr, "/primary", None).0 == Ok(200)),
        "not the owner within 3 s:\n{}",
        lab.agent_log()
    );

    let stop = CancellationToken::new();
    let flood = start_flood(&lab.client, http_addr, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut lost_address = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if !lab.has_overlay() {
            lost_address += 1;
        }
        for (path, token) in [("/primary", None), ("/status", Some(TOKEN))] {
            let (answer, took) = ask(&lab.client, http_addr, path, token);
            latencies.push(took);
            if answer != Ok(200) || took > BOUND {
                failures.push(format!("{path}: {answer:?} after {took:?}"));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.cancel();
    flood.join().unwrap();
    latencies.sort();
    let stats = format!(
        "{} questions: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[(latencies.len() - 1) * 99 / 100],
        latencies[latencies.len() - 1],
    );
    eprintln!("{stats}");
    let log = lab.agent_log();
    assert_eq!(
        lost_address, 0,
        "the owner lost the address under the flood\n{log}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} questions failed or took more than {BOUND:?}: {:#?}\n{stats}",
        failures.len(),
        latencies.len(),
        &failures[..failures.len().min(10)]
    );
    // The operator sees the flood, in one line (not one per connection).
    let flood_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("http: closed connections"))
        .collect();
    eprintln!("{}", flood_lines.join("\n"));
    let lines = flood_lines.len();
    assert!((1..=3).contains(&lines), "{lines} flood lines in\n{log}");
    assert!(lab.has_overlay());
}
