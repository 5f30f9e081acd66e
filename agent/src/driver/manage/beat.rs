//! The leader's heartbeat (rule 9, `controller::promotion::beats`): while this agent holds
//! the AG's leader key, it rewrites the key every renew interval, in a transaction that
//! applies only while the key carries its token, and reports each answer with the instant
//! its request was *sent*, the only instant the key is provably held from. Its own task,
//! like the lease renewals, so that a heartbeat never waits behind a T-SQL statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tdsvip_etcd::Etcd;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::controller::promotion::PromotionEvent;
use crate::metrics::ManageMetrics;

pub(super) struct Heartbeat {
    pub etcd: Arc<Etcd>,
    pub ag: String,
    /// The key's value: this node's name, as the campaign wrote it.
    pub node: String,
    pub every: Duration,
    /// The token of the key this agent holds, as the controller last said.
    pub held: watch::Receiver<Option<i64>>,
    /// The token and send time of the last applied heartbeat, as it happens: the failsafe's
    /// askers read it, and the manage task feeds it to the controller before every event
    /// and action (the event queue waits while an action runs, up to a switchover's let-go,
    /// longer than the heartbeats' 200 ms of slack).
    pub beaten_tx: watch::Sender<Option<(i64, Instant)>>,
    pub metrics: ManageMetrics,
}

impl Heartbeat {
    pub(super) fn spawn(self, tx: mpsc::Sender<PromotionEvent>, cancel: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut held = self.held.clone();
            let mut failing = 0u32;
            loop {
                // A new term beats at once: its campaign is its only heartbeat so far.
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                    Ok(()) = held.changed() => {}
                }
                let Some(token) = *held.borrow_and_update() else {
                    continue;
                };
                let Some(event) = self.beat(token, &mut failing).await else {
                    continue;
                };
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        });
    }

    /// One heartbeat; `failing` counts the failures in a row, so that a run of them is
    /// logged once when it starts and once when it ends.
    async fn beat(&self, token: i64, failing: &mut u32) -> Option<PromotionEvent> {
        let sent = Instant::now();
        let result = self.etcd.heartbeat(&self.ag, token, &self.node).await;
        if result.is_ok() && *failing > 0 {
            tracing::info!(ag = %self.ag, token, failed = *failing, "manage: heartbeats applied again");
            *failing = 0;
        }
        match result {
            Ok(Some(_)) => {
                self.metrics
                    .observe_heartbeat(&self.ag, Some(sent.elapsed()));
                self.beaten_tx.send_replace(Some((token, sent)));
                Some(PromotionEvent::Beaten { token, sent })
            }
            Ok(None) => {
                tracing::warn!(ag = %self.ag, token, "manage: the leader key is no longer this agent's (deposed, or its lease expired)");
                Some(PromotionEvent::BeatRefused { token })
            }
            Err(e) => {
                self.metrics.observe_heartbeat(&self.ag, None);
                if *failing == 0 {
                    tracing::warn!(ag = %self.ag, token, error = %e, "manage: heartbeat failed (the key's proof runs out leader_timeout_ms - key_margin_ms after the last applied one)");
                }
                *failing += 1;
                None
            }
        }
    }
}
