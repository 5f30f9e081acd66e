//! The primary's side of replication: one task per partner that connects to the
//! partner's mirroring endpoint whenever the local replica is PRIMARY, agrees on where the
//! two histories meet, ships every record after that point and tracks what the partner
//! hardened.
//!
//! A partner is SYNCHRONIZED (for a synchronous one) once it has hardened everything the
//! primary had; it stops being so when the connection fails or stays silent for the
//! session timeout. Both are what the commit rule reads.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use super::FrameIo;
use super::codec::Frame;
use crate::ag::{AvailabilityMode, ReplMode, rules};
use crate::state::{Role, Shared};

const BATCH: usize = 256;

pub(crate) async fn run(shared: Arc<Shared>, index: usize) {
    let mut rx = shared.state.subscribe();
    loop {
        loop {
            let (role, stop) = {
                let r = rx.borrow_and_update();
                (r.role, r.shutting_down)
            };
            if stop {
                return;
            }
            let dropped = shared.ag.read().replication == ReplMode::Dropped;
            if role == Role::Primary && !dropped {
                break;
            }
            tokio::select! {
                c = rx.changed() => if c.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let err = match session(&shared, index).await {
            Ok(why) => why,
            Err(e) => e.to_string(),
        };
        let name = shared.ag.update(|s| {
            let p = &mut s.partners[index];
            if p.connected {
                info!(partner = %p.conf.name, reason = %err, "replication to partner ended");
            }
            p.connected = false;
            p.synchronized = false;
            p.last_error = err;
            p.conf.name.clone()
        });
        debug!(partner = %name, "reconnecting after a pause");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Still PRIMARY, replication not dropped, not shutting down.
fn may_ship(shared: &Shared) -> bool {
    may_ship_role(shared) && shared.ag.read().replication != ReplMode::Dropped
}

/// The role part of [`may_ship`], for a caller that already holds the AG lock.
fn may_ship_role(shared: &Shared) -> bool {
    let r = shared.state.borrow();
    r.role == Role::Primary && !r.shutting_down
}

async fn session(shared: &Shared, index: usize) -> std::io::Result<String> {
    let cfg = &shared.ag.cfg;
    let partner = cfg.partners[index].clone();
    let timeout = cfg.session_timeout;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(partner.endpoint))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut io = FrameIo::new(stream);
    let (server, ag) = {
        let r = shared.state.borrow();
        (r.server_name.clone(), r.ag.clone())
    };
    let seq = shared.ag.read().seq;
    io.send(&Frame::Hello {
        primary: server,
        ag,
        seq,
    })
    .await?;
    let spans = match io.read_within(timeout).await? {
        Frame::Welcome { spans, .. } => spans,
        Frame::Refuse { reason } => return Ok(format!("partner refused: {reason}")),
        other => return Ok(format!("unexpected {other:?} from partner")),
    };
    let theirs: Vec<rules::Span> = spans
        .iter()
        .map(|&(epoch, first, last)| rules::Span { epoch, first, last })
        .collect();
    let matched = rules::match_point(&shared.ag.read().log.spans(), &theirs);
    io.send(&Frame::Start { match_lsn: matched }).await?;
    shared.ag.update(|s| {
        let p = &mut s.partners[index];
        p.connected = true;
        p.synchronized = false;
        p.hardened_lsn = matched;
        p.last_error.clear();
    });
    info!(partner = %partner.name, match_lsn = matched, "replicating to partner");
    stream_log(shared, index, io, matched, partner.mode).await
}

async fn stream_log(
    shared: &Shared,
    index: usize,
    mut io: FrameIo,
    mut sent: u64,
    mode: AvailabilityMode,
) -> std::io::Result<String> {
    let timeout = shared.ag.cfg.session_timeout;
    let mut tick = shared.ag.tick.subscribe();
    let mut beat = tokio::time::interval(super::heartbeat_interval(timeout));
    let mut heard = Instant::now();
    // Whether the last read shipped the log to its end: a partner that then hardens all
    // of it has caught up, even if commits appended since are still on their way (those
    // wait for it once it is SYNCHRONIZED, as on SQL Server). Requiring it to match the end
    // of the log at the moment of its acknowledgement would keep it SYNCHRONIZING forever
    // under a steady stream of commits.
    let mut fed_to_end;
    loop {
        if !may_ship(shared) {
            return Ok("no longer PRIMARY (or replication dropped)".into());
        }
        let (batch, end) = {
            let s = shared.ag.read();
            (s.log.after(sent, BATCH), s.log.last_lsn())
        };
        for r in batch {
            sent = r.lsn;
            io.send(&Frame::Log(r)).await?;
        }
        fed_to_end = sent >= end;
        tokio::select! {
            c = tick.changed() => if c.is_err() { return Ok("stopped".into()) },
            _ = beat.tick() => {
                let (seq, last, synced) = {
                    let s = shared.ag.read();
                    // A demotion clears the partners' flags after the role changes: checked
                    // under the same lock, so a demoted primary never reports "not
                    // synchronized" to a partner that was.
                    if !may_ship_role(shared) {
                        return Ok("no longer PRIMARY".into());
                    }
                    (s.seq, s.log.last_lsn(), s.partners[index].synchronized)
                };
                io.send(&Frame::Heartbeat { seq, last_lsn: last, synchronized: synced }).await?;
            }
            f = io.read() => match f? {
                Frame::Ack { hardened_lsn } => {
                    heard = Instant::now();
                    let (became, seq, last) = shared.ag.update(|s| {
                        let last = s.log.last_lsn();
                        let p = &mut s.partners[index];
                        p.hardened_lsn = hardened_lsn;
                        let caught_up = hardened_lsn >= last || (fed_to_end && hardened_lsn >= sent);
                        let became = mode == AvailabilityMode::SynchronousCommit
                            && caught_up
                            && !p.synchronized;
                        p.synchronized |= became;
                        (became, s.seq, last)
                    });
                    if became {
                        // Tell the secondary at once: it is what FAILOVER checks there.
                        io.send(&Frame::Heartbeat { seq, last_lsn: last, synchronized: true }).await?;
                    }
                }
                Frame::Refuse { reason } => return Ok(format!("partner refused: {reason}")),
                other => return Ok(format!("unexpected {other:?} from partner")),
            },
            _ = tokio::time::sleep_until(heard + timeout) => {
                return Ok(format!("partner silent for the session timeout ({} ms)", timeout.as_millis()));
            }
        }
    }
}
