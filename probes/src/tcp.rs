//! The TCP connect probe, and the connect step every other probe builds on.
//!
//! Sockets are made with socket2 so that options are set before the SYN leaves:
//! TCP_NODELAY (a PRELOGIN or a query is one small write we want on the wire now) and
//! SO_LINGER 0, so that closing sends RST instead of FIN. At 20-50 probes a second a FIN
//! close would leave one TIME_WAIT socket per probe on our side for 60 s (thousands of
//! them, eating ephemeral ports); an RST leaves none on either side. The socket is then
//! handed to tokio, whose `TcpSocket::connect` does the non-blocking connect, and the
//! caller's deadline bounds it.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::Mode;
use crate::config::{ConfigProblem, ProbeConfig};
use crate::outcome::{Outcome, Phase, PhaseTimes, ProbeResult, ServerInfo, Start};

/// Opens a TCP connection to `addr` with NODELAY and SO_LINGER 0, failing with a classified
/// outcome if it is not established by `deadline`.
pub(crate) async fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, Outcome> {
    let socket = new_socket(addr).map_err(|e| Outcome::from_io(&e, Phase::Connect))?;
    match tokio::time::timeout_at(deadline, socket.connect(addr)).await {
        Err(_) => Err(Outcome::Timeout {
            phase: Phase::Connect,
        }),
        Ok(Err(e)) => Err(Outcome::from_io(&e, Phase::Connect)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_linger(Some(std::time::Duration::ZERO))?;
    socket.set_cloexec(true)?;
    let std_stream: std::net::TcpStream = socket.into();
    Ok(TcpSocket::from_std_stream(std_stream))
}

/// Connects and closes at once (with RST). `ok` means the port accepted the handshake;
/// it says nothing about SQL Server beyond the kernel's listen queue.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    target: SocketAddr,
    config: ProbeConfig,
}

impl TcpProbe {
    pub fn new(target: SocketAddr, config: ProbeConfig) -> Result<Self, ConfigProblem> {
        config.validate()?;
        Ok(TcpProbe { target, config })
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub async fn probe(&self) -> ProbeResult {
        let start = Start::now();
        let deadline = start.mono + self.config.timeout;
        let outcome = match connect(self.target, deadline).await {
            // Dropping the stream closes it; SO_LINGER 0 makes that an RST.
            Ok(_stream) => Outcome::Ok,
            Err(o) => o,
        };
        let phases = PhaseTimes {
            connect: Some(start.mono.elapsed()),
            ..Default::default()
        };
        start.finish(
            self.target,
            Mode::Tcp,
            outcome,
            phases,
            ServerInfo::default(),
        )
    }
}
