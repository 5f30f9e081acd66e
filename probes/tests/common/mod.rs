//! In-test TCP servers on 127.0.0.1 that misbehave in controlled ways, and the helpers the
//! integration tests share (a time bound for every test, TIME_WAIT counting).
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tds_codec::packet::encode_message;
use tds_codec::{Encryption, PacketType, Prelogin, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Every test runs under this bound, so a hang is a failure, not a stuck CI job.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its 20 s bound"),
    }
}

/// A port on 127.0.0.1 with nothing listening: bound, then released.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// What an in-test server does with each connection.
#[derive(Debug, Clone)]
pub enum Script {
    /// Accept and never send anything; keep the connection open.
    Silent,
    /// Accept, then close with an RST (SO_LINGER 0).
    Reset,
    /// Read the request (`expect` bytes, or one read if 0), send `chunks` with `gap` between them, then either
    /// keep the connection open (`hold`) or close it.
    Answer {
        expect: usize,
        chunks: Vec<Vec<u8>>,
        gap: Duration,
        hold: bool,
    },
    /// Read until the client goes away (for connect-only probes).
    Drain,
}

impl Script {
    pub fn answer(expect: usize, bytes: Vec<u8>, hold: bool) -> Script {
        Script::Answer {
            expect,
            chunks: vec![bytes],
            gap: Duration::ZERO,
            hold,
        }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(script: Script) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(handle(stream, script.clone()));
        }
    });
    Server { addr, task }
}

async fn handle(mut stream: TcpStream, script: Script) {
    match script {
        Script::Silent => {
            let mut buf = [0u8; 1024];
            // Read (and ignore) whatever comes until the client goes away.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        Script::Reset => {
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(stream);
        }
        Script::Answer {
            expect,
            chunks,
            gap,
            hold,
        } => {
            if expect == 0 {
                // Length unknown (tiberius's PRELOGIN): one read takes a whole small
                // request on loopback.
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).await.is_err() {
                    return;
                }
            } else {
                let mut req = vec![0u8; expect];
                if stream.read_exact(&mut req).await.is_err() {
                    return;
                }
            }
            for (i, c) in chunks.iter().enumerate() {
                if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                if stream.write_all(c).await.is_err() {
                    return;
                }
            }
            if hold {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        Script::Drain => {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// The PRELOGIN answer SQL Server 2022 RTM gives a plain-text client.
pub fn sql2022_answer() -> Prelogin {
    Prelogin {
        version: Some(Version {
            major: 16,
            minor: 0,
            build: 1000,
            sub_build: 6,
        }),
        encryption: Some(Encryption::NotSupported),
        instance: Some(vec![]),
        thread_id: Some(None),
        mars: Some(false),
        ..Default::default()
    }
}

pub fn tabular(payload: &[u8]) -> Vec<u8> {
    encode_message(PacketType::TabularResult, payload, 4096, 0)
}

/// Sockets in TIME_WAIT (state 06 in /proc/net/tcp) with `port` on either end.
pub fn time_wait_count(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            f.len() > 3
                && f[3] == "06"
                && (port_of(f[1]) == Some(port) || port_of(f[2]) == Some(port))
        })
        .count()
}
