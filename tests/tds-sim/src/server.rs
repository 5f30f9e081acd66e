//! The TDS listener: accepts connections and spawns a session for each, and implements
//! the `refuse` fault by closing the listening socket and binding the same address again
//! when the fault is cleared.
//!
//! The socket is bound with SO_REUSEADDR so that the re-bind succeeds immediately even with
//! connections from the previous socket still in TIME_WAIT. The listener publishes whether
//! it is listening, so the control API can answer a fault change only once it is in effect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::session;
use crate::state::{Counters, Fault, Shared};
use crate::tls::Setup;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn refused(shared: &Shared) -> Option<bool> {
    let r = shared.state.borrow();
    if r.shutting_down {
        None
    } else {
        Some(r.fault == Fault::Refuse)
    }
}

pub(crate) async fn run(
    mut listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Arc<Setup>,
) {
    let ids = AtomicU64::new(1);
    let mut rx = shared.state.subscribe();
    loop {
        shared.listening.send_replace(true);
        // Serve until shutdown or `refuse`.
        loop {
            match refused(&shared) {
                None => return,
                Some(true) => break,
                Some(false) => {}
            }
            tokio::select! {
                acc = listener.accept() => match acc {
                    Ok((stream, peer)) => {
                        Counters::bump(&shared.counters.connections);
                        let _ = stream.set_nodelay(true);
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(session::serve(stream, peer, shared.clone(), tls.clone(), id));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
        drop(listener);
        shared.listening.send_replace(false);
        info!(%addr, reason = "fault refuse", "listener closed; connects are refused");
        loop {
            match refused(&shared) {
                None => return,
                Some(false) => break,
                Some(true) => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        listener = loop {
            match bind(addr) {
                Ok(l) => break l,
                Err(e) => {
                    warn!(%addr, error = %e, "re-binding the listener failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if refused(&shared).is_none() {
                        return;
                    }
                }
            }
        };
        info!(%addr, reason = "fault cleared", "listener re-bound on the same address");
    }
}
