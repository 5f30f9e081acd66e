//! The agent's HTTP listener (DESIGN.md "Interfaces other tools rely on"): `/metrics`,
//! `/healthz`, `/status`, `/primary`, `/events`, on hyper 1 with HTTP/1.1 only.
//!
//! It is on a node that runs SQL Server, possibly reachable beyond loopback, and its
//! `/status` and `/primary` answers decide handovers and load balancing, so no client may
//! starve it: a request head larger than [`MAX_HEAD_BYTES`] or not complete within the
//! header timeout ([`HEAD_TIMEOUT`], `[http] head_timeout_ms`) is refused by hyper itself
//! (431/400, or the connection is closed), bodies are never read, and the listener never
//! stops accepting: every newcomer is admitted, and when too many connections are open
//! (in all, or from one address) the one that has waited longest is closed instead
//! (`admission.rs` says why this and not a reserved pool). A connection error only ends
//! that connection; closed connections are reported in a rate-limited log line
//! (`shed_log.rs`).
//! Shutdown is graceful: on cancellation the listener closes, in-flight requests finish, and
//! connections still open after [`SHUTDOWN_GRACE`] are dropped, so `SIGTERM` stays within
//! the agent's 2 s budget.
//!
//! - `routes.rs`: the endpoints as a function of the request head; `auth.rs`: the token.

mod admission;
mod auth;
pub mod client;
mod routes;
mod shed_log;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_admission;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::failsafe::FailsafeGates;

pub(crate) use auth::load_token;
pub use auth::{Token, token_text};

use admission::{Admission, Admit, Shed};
use shed_log::{Closed, ShedLog};

use crate::config::HttpConfig;
use crate::metrics::AgentMetrics;
use crate::status::StatusStore;

/// The largest request head accepted (hyper's read buffer; its minimum is 8 KiB). Nothing
/// this server answers needs more than a path and an `Authorization` header.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client must send its whole request head within this time (slow-loris clients); it
/// also bounds how long an idle keep-alive connection stays open. Every client of this
/// server sends a few hundred bytes at once after connecting (peers, load balancers,
/// scrapers), so a second is generous even across a congested network.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// How long in-flight connections may take to finish after shutdown was requested.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Connections open at once; a newcomer beyond this closes the oldest (`admission.rs`).
/// Each is a file descriptor and a task with a read buffer of at most [`MAX_HEAD_BYTES`],
/// and the default leaves room under the usual limit of 1024 descriptors.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Connections open at once from one address (IPv6: one /64); a newcomer beyond this
/// closes that address's oldest. A peer agent opens one or two at a time, a load balancer
/// node one per health check.
pub(crate) const MAX_CONNECTIONS_PER_SOURCE: usize = 8;

/// The kernel's queue of handshakes not yet accepted (capped by `net.core.somaxconn`,
/// 4096 on current kernels). The accept loop drains it at once, but a burst of connections
/// faster than that overflows a short queue, and the kernel then drops SYNs: the client
/// that lost one retries after a second, far beyond a peer's handover deadline.
const LISTEN_BACKLOG: u32 = 4096;

/// What the endpoints read; the driver keeps its own `Arc`s to the same values.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<AgentMetrics>,
    pub status: Arc<StatusStore>,
    /// `None`: no `token_file` configured, every endpoint is open.
    pub token: Option<Token>,
    /// Manage mode's promises to other leaders (`POST /failsafe`); empty in follow mode.
    pub failsafe: FailsafeGates,
}

pub struct HttpServer {
    listener: TcpListener,
    state: Arc<HttpState>,
    max_connections: usize,
    max_per_source: usize,
    head_timeout: Duration,
}

/// The admission table's entry for a connection: how to close it, and whether its task
/// has read from it once (until then it is the last to be evicted: a client whose request
/// is already in the socket buffer gets that one chance to be answered).
struct Handle {
    close: oneshot::Sender<Shed>,
    polled: Arc<AtomicBool>,
}

impl Handle {
    fn had_its_chance(&self) -> bool {
        self.polled.load(Ordering::Relaxed)
    }
}

type Table = Mutex<Admission<Handle>>;

impl HttpServer {
    /// Binds `[http] listen`; port 0 picks a free port (see [`HttpServer::local_addr`]).
    pub async fn bind(listen: SocketAddr, state: HttpState) -> io::Result<HttpServer> {
        let socket = if listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted agent can bind while old connections
        // linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        Ok(HttpServer {
            listener,
            state: Arc::new(state),
            max_connections: MAX_CONNECTIONS,
            max_per_source: MAX_CONNECTIONS_PER_SOURCE,
            head_timeout: HEAD_TIMEOUT,
        })
    }

    /// The limits of `[http]` (validated by the config: all within range).
    pub fn with_config(self, http: &HttpConfig) -> HttpServer {
        self.with_max_connections(http.max_connections)
            .with_max_connections_per_source(http.max_connections_per_source)
            .with_head_timeout(Duration::from_millis(http.head_timeout_ms))
    }

    /// Changes the connection limit (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> HttpServer {
        self.max_connections = max.max(1);
        self
    }

    /// Changes the limit of connections from one address (at least 1, at most the
    /// connection limit).
    pub fn with_max_connections_per_source(mut self, max: usize) -> HttpServer {
        self.max_per_source = max.max(1);
        self
    }

    /// Changes how long a client may take to send a request head, idle keep-alive time
    /// included.
    pub fn with_head_timeout(mut self, timeout: Duration) -> HttpServer {
        self.head_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then shuts down gracefully.
    pub async fn run(self, cancel: CancellationToken) {
        let table: Arc<Table> = Arc::new(Mutex::new(Admission::new(
            self.max_connections,
            self.max_per_source,
        )));
        let log = Arc::new(ShedLog::default());
        let mut ticker = tokio::time::interval(shed_log::LOG_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conns = JoinSet::new();
        loop {
            // Reap finished connections so the set does not grow with every client.
            while conns.try_join_next().is_some() {}
            // Never wait for a free slot before accepting: a client left in the kernel's
            // backlog cannot be answered, and a full backlog drops even the handshake.
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {
                    log.flush();
                    continue;
                }
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (close, closed) = oneshot::channel();
                    let polled = Arc::new(AtomicBool::new(false));
                    let handle = Handle {
                        close,
                        polled: polled.clone(),
                    };
                    let admitted = lock(&table).admit(peer.ip(), || handle, Handle::had_its_chance);
                    let Admit::Admitted { id, evicted } = admitted else {
                        // Dropped at once: no task, no HTTP state for a refused client.
                        drop(stream);
                        log.note(Closed::Shed(Shed::PerSource), peer.ip());
                        continue;
                    };
                    if let Some(e) = evicted {
                        // The receiver is gone only if that connection just ended by itself.
                        let _ = e.handle.close.send(e.reason);
                        log.note(Closed::Shed(e.reason), e.source);
                    }
                    let conn = Conn {
                        peer,
                        state: self.state.clone(),
                        head_timeout: self.head_timeout,
                        log: log.clone(),
                    };
                    let (table, cancel) = (table.clone(), cancel.clone());
                    conns.spawn(async move {
                        conn.serve(stream, closed, polled, cancel).await;
                        lock(&table).release(id);
                    });
                }
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning on accept.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::debug!(
                open = conns.len(),
                "http: closing connections still open after the grace period"
            );
            conns.abort_all();
        }
        log.flush_now();
    }
}

fn lock(table: &Table) -> std::sync::MutexGuard<'_, Admission<Handle>> {
    // Nothing panics while holding it; if something did, the bookkeeping is still usable.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// One admitted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    state: Arc<HttpState>,
    head_timeout: Duration,
    log: Arc<ShedLog>,
}

impl Conn {
    async fn serve(
        self,
        stream: TcpStream,
        mut shed: oneshot::Receiver<Shed>,
        polled: Arc<AtomicBool>,
        cancel: CancellationToken,
    ) {
        // Responses are small and answered at once: no reason to wait for Nagle on a
        // health probe.
        let _ = stream.set_nodelay(true);
        let answered = Arc::new(AtomicBool::new(false));
        let (state, seen) = (self.state.clone(), answered.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            let state = state.clone();
            async move { Ok::<Response<routes::Body>, Infallible>(logged(&state, &req)) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.head_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let peer = self.peer;
        // One poll before the connection can be evicted: what the client already sent is
        // read, and a complete request answered, in it.
        let first = std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await;
        polled.store(true, Ordering::Relaxed);
        let result = if let Poll::Ready(r) = first {
            r
        } else {
            tokio::select! {
            r = conn.as_mut() => r,
            Ok(reason) = &mut shed => {
                tracing::debug!(%peer, ?reason, "http: connection closed to make room");
                return;
            }
            _ = cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            }
        };
        match result {
            Err(e) if e.is_timeout() && !answered.load(Ordering::Relaxed) => {
                self.log
                    .note(Closed::HeadTimeout, admission::source_key(peer.ip()));
            }
            // Malformed requests, oversized heads and clients that vanish end up here;
            // hyper has already answered what could be answered.
            Err(e) => tracing::debug!(%peer, error = %e, "http: connection ended with an error"),
            Ok(()) => {}
        }
    }
}

fn logged(state: &HttpState, req: &Request<Incoming>) -> Response<routes::Body> {
    let start = Instant::now();
    let response = routes::handle(state, req);
    // The path only: a query string is the client's and may carry anything.
    tracing::debug!(
        method = %req.method(),
        path = %req.uri().path(),
        status = response.status().as_u16(),
        duration_us = start.elapsed().as_micros() as u64,
        "http request"
    );
    response
}
