//! Replication between replicas over TCP: the frame codec, the hardened log, the
//! primary's sender (one task per partner) and the secondary's mirroring endpoint.
//!
//! [`FrameIo`] wraps one connection with a read buffer so that reading a frame can sit in
//! a `select!` next to timers and state changes without losing bytes when another branch
//! wins.

pub mod codec;
pub mod log;
pub(crate) mod primary;
pub(crate) mod secondary;

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use codec::{DecodeError, Frame};

pub(crate) struct FrameIo {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FrameIo {
    pub fn new(stream: TcpStream) -> FrameIo {
        let _ = stream.set_nodelay(true);
        FrameIo {
            stream,
            buf: Vec::with_capacity(8192),
        }
    }

    /// The next frame; cancel-safe (bytes already read stay in the buffer).
    pub async fn read(&mut self) -> io::Result<Frame> {
        loop {
            match Frame::decode(&self.buf) {
                Ok((f, n)) => {
                    self.buf.drain(..n);
                    return Ok(f);
                }
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the replication connection",
                ));
            }
        }
    }

    /// The next frame within `limit`.
    pub async fn read_within(&mut self, limit: Duration) -> io::Result<Frame> {
        match tokio::time::timeout(limit, self.read()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no frame within {} ms", limit.as_millis()),
            )),
        }
    }

    pub async fn send(&mut self, f: &Frame) -> io::Result<()> {
        self.stream.write_all(&f.encode()).await
    }

    /// Sends a refusal and closes.
    pub async fn refuse(mut self, reason: String) {
        let _ = self.send(&Frame::Refuse { reason }).await;
        let _ = self.stream.shutdown().await;
    }
}

/// How often a primary speaks when it has nothing to ship.
pub(crate) fn heartbeat_interval(session_timeout: Duration) -> Duration {
    (session_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}
