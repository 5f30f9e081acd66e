//! The agent's HTTP listener (DESIGN.md "Interfaces other tools rely on"): `/metrics`,
//! `/healthz`, `/status`, `/primary`, `/events`, on hyper 1 with HTTP/1.1 only.
//!
//! It is on a node that runs SQL Server, possibly reachable beyond loopback, so the
//! connection limits are tight: a request head larger than [`MAX_HEAD_BYTES`] or not
//! complete within [`HEAD_TIMEOUT`] is refused by hyper itself (431/400, or the connection is
//! closed), bodies are never read, at most [`MAX_CONNECTIONS`] are served at once, and a
//! connection error only ends that connection.
//! Shutdown is graceful: on cancellation the listener closes, in-flight requests finish, and
//! connections still open after [`SHUTDOWN_GRACE`] are dropped, so `SIGTERM` stays within
//! the agent's 2 s budget.
//!
//! - `routes.rs`: the endpoints as a function of the request head; `auth.rs`: the token.

mod auth;
pub mod client;
mod routes;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use auth::load_token;
pub use auth::{Token, token_text};

use crate::metrics::AgentMetrics;
use crate::status::StatusStore;

/// The largest request head accepted (hyper's read buffer; its minimum is 8 KiB). Nothing
/// this server answers needs more than a path and an `Authorization` header.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client must send its whole request head within this time (slow-loris clients); it
/// also bounds how long an idle keep-alive connection holds one of the connection slots.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight connections may take to finish after shutdown was requested.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Connections served at once; further clients wait in the kernel's accept backlog, so a
/// flood of idle connections costs bounded memory and tasks.
pub(crate) const MAX_CONNECTIONS: usize = 128;

/// What the endpoints read; the driver keeps its own `Arc`s to the same values.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<AgentMetrics>,
    pub status: Arc<StatusStore>,
    /// `None`: no `token_file` configured, every endpoint is open.
    pub token: Option<Token>,
}

pub struct HttpServer {
    listener: TcpListener,
    state: Arc<HttpState>,
    slots: Arc<Semaphore>,
    head_timeout: Duration,
}

impl HttpServer {
    /// Binds `[http] listen`; port 0 picks a free port (see [`HttpServer::local_addr`]).
    pub async fn bind(listen: SocketAddr, state: HttpState) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(listen).await?;
        Ok(HttpServer {
            listener,
            state: Arc::new(state),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            head_timeout: HEAD_TIMEOUT,
        })
    }

    /// Changes the connection limit (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> HttpServer {
        self.slots = Arc::new(Semaphore::new(max.max(1)));
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
        let mut conns = JoinSet::new();
        loop {
            // Reap finished connections so the set does not grow with every client.
            while conns.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = self.slots.clone().acquire_owned() => p,
            };
            // The semaphore is never closed, so this does not happen; stop rather than spin.
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Responses are small and answered at once: no reason to wait for
                    // Nagle on a health probe.
                    let _ = stream.set_nodelay(true);
                    let (state, cancel) = (self.state.clone(), cancel.clone());
                    let head_timeout = self.head_timeout;
                    conns.spawn(async move {
                        serve_connection(stream, peer, state, head_timeout, cancel).await;
                        drop(permit);
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
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<HttpState>,
    head_timeout: Duration,
    cancel: CancellationToken,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<Response<routes::Body>, Infallible>(logged(&state, &req)) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Malformed requests, oversized heads and clients that vanish end up here; hyper
        // has already answered what could be answered.
        tracing::debug!(%peer, error = %e, "http: connection ended with an error");
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
