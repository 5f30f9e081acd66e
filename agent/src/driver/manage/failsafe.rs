//! Rule 5's leader side: while the controller wants acknowledgements (its key renewals are
//! late, `controller::promotion::failsafe`), every peer agent is asked once per renew
//! interval, `POST /failsafe`, all of them at once; a round that every peer acknowledged is
//! reported with the instant it was sent, the only instant the peers' promises are known to
//! start after. A peer that refuses, or does not answer in time, makes the round count for
//! nothing, and the log says which and why. A round is skipped while the lease feed's last
//! answered renewal is recent: the controller hears of renewals through its event queue,
//! which waits while an action runs (a statement to a hung SQL Server, 300 ms), and would
//! otherwise take etcd for unreachable (found in the hang-primary bench: the peers held back
//! for 2.4 s and the failover came 1.1 s later than it could).

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::controller::promotion::{LATE_RENEWALS, PromotionEvent};
use crate::failsafe::FailsafeAck;
use crate::http::client::{self, Bearer, Target};

/// The peer agents of one AG and how to ask them.
pub(super) struct Acknowledgers {
    pub ag: String,
    pub node: String,
    /// Each `[[peer]]`'s name and `/status` target.
    pub peers: Vec<(String, Target)>,
    pub token: Option<Bearer>,
    /// Between the starts of two rounds.
    pub every: Duration,
    /// Each request's deadline.
    pub deadline: Duration,
    /// The shortest promise a round may rest on: this agent's own `ack_hold` (a peer with
    /// other timing, in a rolling config change, may promise less than the leader relies on).
    pub min_hold: Duration,
}

impl Acknowledgers {
    /// Asks while `want` names a term (the leader key's token) and the lease's renewals are
    /// late; reports to `tx`.
    /// `renewed`: when the last answered renewal of this agent's etcd lease was sent, and
    /// `beaten` the last applied heartbeat of its key (the lease feed's and the heartbeat's
    /// own records): the key is provably held by both.
    pub(super) fn spawn(
        self,
        mut want: watch::Receiver<Option<i64>>,
        renewed: watch::Receiver<Option<Instant>>,
        beaten: watch::Receiver<Option<(i64, Instant)>>,
        tx: mpsc::Sender<PromotionEvent>,
        cancel: CancellationToken,
    ) {
        if self.peers.is_empty() {
            // Nobody to promise anything: no round could prove that nobody promotes.
            tracing::warn!(ag = %self.ag, "manage: no [[peer]] configured: a leader cannot keep its primary through etcd trouble (rule 5)");
            return;
        }
        tokio::spawn(async move {
            let mut missing_before: Vec<String> = Vec::new();
            loop {
                let term = tokio::select! {
                    _ = cancel.cancelled() => return,
                    t = wanted(&mut want) => match t { Some(t) => t, None => return },
                };
                let sent = Instant::now();
                let late = self.every * LATE_RENEWALS;
                let recent = |t: Option<Instant>| t.is_some_and(|t| sent < t + late);
                let beat = (*beaten.borrow())
                    .filter(|(t, _)| *t == term)
                    .map(|(_, s)| s);
                let renewing = recent(*renewed.borrow()) && recent(beat);
                if renewing {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep_until((sent + self.every).into()) => {}
                    }
                    continue;
                }
                let (from, missing) = self.round(term).await;
                if missing.is_empty() {
                    let event = PromotionEvent::Acknowledged {
                        token: term,
                        sent,
                        from,
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                } else if missing != missing_before {
                    tracing::warn!(ag = %self.ag, term, ?missing, "manage: etcd does not renew the leader key and not every peer acknowledges this leader: the primary is taken offline when the last proof runs out");
                }
                missing_before = missing;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until((sent + self.every).into()) => {}
                }
            }
        });
    }

    /// One round: the nodes that acknowledged `term`, and each other peer with the reason.
    async fn round(&self, term: i64) -> (Vec<String>, Vec<String>) {
        let mut asks = JoinSet::new();
        for (name, target) in &self.peers {
            let path = format!("/failsafe?ag={}&leader={}&term={term}", self.ag, self.node);
            let (name, target, token) = (name.clone(), target.sibling(&path), self.token.clone());
            let deadline = self.deadline;
            asks.spawn(async move {
                let answer = ask(&target, token.as_ref(), deadline).await;
                (name, answer)
            });
        }
        let (mut from, mut missing) = (Vec::new(), Vec::new());
        while let Some(joined) = asks.join_next().await {
            match joined {
                Ok((name, Ok(ack))) if ack.hold_ms < self.min_hold.as_millis() as u64 => missing
                    .push(format!(
                        "{name}: promised {} ms, less than this leader's {} ms",
                        ack.hold_ms,
                        self.min_hold.as_millis()
                    )),
                Ok((_, Ok(ack))) if ack.term == term && ack.leader == self.node => {
                    from.push(ack.node)
                }
                Ok((name, Ok(ack))) => missing.push(format!(
                    "{name}: acknowledged {} term {} instead",
                    ack.leader, ack.term
                )),
                Ok((name, Err(e))) => missing.push(format!("{name}: {e}")),
                Err(e) => missing.push(format!("a request task failed: {e}")),
            }
        }
        missing.sort();
        (from, missing)
    }
}

/// Waits until `want` names a term; `None` when the manage task is gone.
async fn wanted(want: &mut watch::Receiver<Option<i64>>) -> Option<i64> {
    loop {
        if let Some(term) = *want.borrow_and_update() {
            return Some(term);
        }
        want.changed().await.ok()?;
    }
}

async fn ask(
    target: &Target,
    token: Option<&Bearer>,
    deadline: Duration,
) -> Result<FailsafeAck, String> {
    let (value, _) = client::post(target, token, deadline)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| format!("not an acknowledgement: {e}"))
}
