//! The secondary's side of replication: the mirroring endpoint. It accepts a primary's
//! connection only when the AG rules allow (SECONDARY role, no newer `sequence_number`
//! seen, replication not dropped), truncates history the primary does not share (counting
//! the discarded transactions), hardens each record before acknowledging it, and
//! remembers, when the primary goes away or falls silent for the session timeout, whether
//! it was SYNCHRONIZED at that moment — what `FAILOVER` checks later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::FrameIo;
use super::codec::Frame;
use crate::ag::{ReplMode, Upstream, rules};
use crate::state::{Role, Shared};

pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let mut rx = shared.state.subscribe();
    loop {
        if rx.borrow_and_update().shutting_down {
            return;
        }
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, peer)) => {
                    tokio::spawn(serve(FrameIo::new(stream), peer, shared.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "mirroring endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            c = rx.changed() => if c.is_err() { return },
        }
    }
}

async fn serve(mut io: FrameIo, peer: SocketAddr, shared: Arc<Shared>) {
    let timeout = shared.ag.cfg.session_timeout;
    let (primary, ag, seq) = match io.read_within(timeout).await {
        Ok(Frame::Hello { primary, ag, seq }) => (primary, ag, seq),
        Ok(other) => return io.refuse(format!("expected Hello, got {other:?}")).await,
        Err(e) => {
            warn!(%peer, error = %e, "mirroring endpoint: bad first frame");
            return;
        }
    };
    let (role, my_ag, me) = {
        let r = shared.state.borrow();
        (r.role, r.ag.clone(), r.server_name.clone())
    };
    if !ag.eq_ignore_ascii_case(&my_ag) {
        return io
            .refuse(format!("this replica is in AG '{my_ag}', not '{ag}'"))
            .await;
    }
    let admitted = shared.ag.update(|s| {
        if s.replication == ReplMode::Dropped {
            return Err("replication dropped (control API)".to_string());
        }
        rules::accept_log(role, s.seq, s.upstream.as_ref().map(|u| u.seq), seq)?;
        if seq > s.seq {
            s.seq = seq;
            if let Err(e) = s.log.save_seq(seq) {
                warn!(error = %e, "cannot persist sequence_number");
            }
        }
        let conn = s.new_conn();
        s.upstream = Some(Upstream {
            conn,
            primary: primary.clone(),
            seq,
            synchronized: false,
            primary_last_lsn: u64::MAX,
        });
        let spans = s
            .log
            .spans()
            .iter()
            .map(|x| (x.epoch, x.first, x.last))
            .collect();
        Ok((conn, spans, s.seq))
    });
    let (conn, spans, seq) = match admitted {
        Ok(a) => a,
        Err(reason) => {
            info!(%peer, %primary, %reason, "refusing log from primary");
            return io.refuse(reason).await;
        }
    };
    let end = follow(&mut io, &shared, conn, me, spans, seq).await;
    let synced = shared.ag.update(|s| {
        if s.upstream.as_ref().is_some_and(|u| u.conn == conn) {
            let mode = shared.ag.cfg.mode;
            s.was_synchronized = s.synchronized_now_or_at_loss(mode);
            s.upstream = None;
        }
        s.was_synchronized
    });
    info!(%primary, reason = %end, was_synchronized = synced, "primary lost");
}

/// Whether this connection still feeds the replica.
fn current(shared: &Shared, conn: u64) -> Result<(), String> {
    let role = shared.state.borrow().role;
    still_fed_by(role, &shared.ag.read(), conn)
}

/// [`current`] over a state already locked: the check and the append it guards must happen
/// under one lock, or a record held while stalled could land after a promotion.
fn still_fed_by(role: Role, s: &crate::ag::AgState, conn: u64) -> Result<(), String> {
    if role != Role::Secondary {
        return Err("no longer SECONDARY".into());
    }
    if s.replication == ReplMode::Dropped {
        return Err("replication dropped (control API)".into());
    }
    if s.upstream.as_ref().is_none_or(|u| u.conn != conn) {
        return Err("replaced by a newer primary".into());
    }
    Ok(())
}

async fn follow(
    io: &mut FrameIo,
    shared: &Shared,
    conn: u64,
    me: String,
    spans: Vec<(u64, u64, u64)>,
    seq: u64,
) -> String {
    let timeout = shared.ag.cfg.session_timeout;
    if let Err(e) = io
        .send(&Frame::Welcome {
            replica: me,
            seq,
            spans,
        })
        .await
    {
        return e.to_string();
    }
    match io.read_within(timeout).await {
        Ok(Frame::Start { match_lsn }) => {
            let cut = shared.ag.update(|s| {
                let cut = s.log.truncate_after(match_lsn);
                if let Ok(n) = cut {
                    s.discarded_on_rejoin += n;
                }
                cut
            });
            match cut {
                Ok(0) => {}
                Ok(n) => warn!(
                    discarded = n,
                    match_lsn, "discarded transactions the new primary never had"
                ),
                Err(e) => return format!("cannot truncate the log: {e}"),
            }
        }
        Ok(other) => return format!("expected Start, got {other:?}"),
        Err(e) => return e.to_string(),
    }
    loop {
        if let Err(why) = current(shared, conn) {
            return why;
        }
        let frame = match io.read_within(timeout).await {
            Ok(f) => f,
            Err(e) => return e.to_string(),
        };
        // Stalled (control API): hold what arrived, read nothing more, harden nothing.
        while shared.ag.read().replication == ReplMode::Stalled {
            if let Err(why) = current(shared, conn) {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let hardened = match frame {
            Frame::Log(r) => shared.ag.update(|s| {
                still_fed_by(shared.state.borrow().role, s, conn)?;
                s.log
                    .append(r)
                    .map(|_| s.log.last_lsn())
                    .map_err(|e| e.to_string())
            }),
            Frame::Heartbeat {
                seq,
                last_lsn,
                synchronized,
            } => Ok(shared.ag.update(|s| {
                if let Some(u) = s.upstream.as_mut().filter(|u| u.conn == conn) {
                    u.synchronized = synchronized;
                    u.primary_last_lsn = last_lsn;
                    u.seq = seq;
                }
                // A configuration change on the primary bumped its sequence_number.
                if seq > s.seq {
                    s.seq = seq;
                    if let Err(e) = s.log.save_seq(seq) {
                        warn!(error = %e, "cannot persist sequence_number");
                    }
                }
                s.log.last_lsn()
            })),
            other => Err(format!("unexpected {other:?} from primary")),
        };
        let lsn = match hardened {
            Ok(l) => l,
            Err(e) => return e,
        };
        if let Err(e) = io.send(&Frame::Ack { hardened_lsn: lsn }).await {
            return e.to_string();
        }
    }
}
