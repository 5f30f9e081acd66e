//! Carries out a [`PromotionAction`]: etcd transactions and T-SQL on the local replica,
//! each logged with the fencing token it was taken under, each answered with the event
//! that tells the controller how it went.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tdsvip_etcd::{Campaign as EtcdCampaign, Etcd, Lease};
use tokio::sync::{mpsc, watch};

use super::feeds::HANDOFF;
use super::fence::NodeFence;
use super::sql::{NOT_SYNCHRONIZED, ReplicaControl};
use crate::controller::promotion::{
    Campaign, Handoff, LeaderKey, PromotionAction as A, PromotionCause, PromotionController,
    PromotionEvent as E,
};
use crate::controller::{Event, OwnershipState};
use crate::driver::Input;
use crate::failsafe::FailsafeGate;
use crate::metrics::ManageMetrics;
use crate::status::StatusStore;

/// Renewal errors Microsoft's Pacemaker agent treats as harmless: the AG has no write
/// lease (47116), or the current one already lasts longer (47119).
const HARMLESS_RENEWAL: [u32; 2] = [47116, 47119];

pub(super) struct Actor {
    pub ag: String,
    pub node: String,
    pub etcd: Arc<Etcd>,
    pub lease: watch::Receiver<Option<Lease>>,
    /// The last applied heartbeat (token, send time), as the heartbeat task has it: every
    /// statement that needs the key's proof asks the controller with it right before it goes.
    pub beaten: watch::Receiver<Option<(i64, Instant)>>,
    pub control: ReplicaControl,
    pub metrics: ManageMetrics,
    /// Where this node's promises to other leaders are kept (rule 5).
    pub gate: Arc<FailsafeGate>,
    /// The router, which owns this AG's ownership controller (index `index`), and the status
    /// it publishes: a switchover lets go of the addresses through them.
    pub router: mpsc::Sender<Input>,
    pub index: usize,
    pub status: Arc<StatusStore>,
    /// How long a switchover's let-go lasts at most (the demotion follows at once).
    pub let_go_for: Duration,
    /// `[fence] aws`: stops an old primary's instance (`fence.rs`).
    pub fence: Option<Arc<NodeFence>>,
}

/// Waits until `/status` shows none of the AG's addresses owned (the release returned), at
/// most `limit`.
async fn released(status: &StatusStore, ag: &str, limit: Duration) -> bool {
    let mut rx = status.subscribe();
    let standby = |s: &crate::status::AgentStatus| {
        s.ags
            .get(ag)
            .is_none_or(|a| a.state == OwnershipState::Standby)
    };
    tokio::time::timeout(limit, rx.wait_for(standby))
        .await
        .is_ok_and(|r| r.is_ok())
}

impl Actor {
    pub(super) async fn act(&mut self, action: &A, c: &PromotionController) -> Option<E> {
        let token = c.held();
        tracing::debug!(ag = %self.ag, action = <&str>::from(action), ?token, "manage: acting");
        match action {
            A::Publish(state) => self.publish(state).await,
            A::Unpublish => self.unpublish().await,
            A::Campaign => Some(self.campaign().await),
            A::Failover { token, cause } => Some(self.failover(*token, *cause, c).await),
            A::RenewWriteLease { token } => Some(self.renew(*token, c).await),
            A::SetRequiredSynchronized {
                token,
                value,
                reported,
            } => {
                let r = self
                    .control
                    .set_required_synchronized(*value, || c.send_by_with(*self.beaten.borrow()))
                    .await;
                match r {
                    Ok(()) => {
                        tracing::info!(ag = %self.ag, token, from = reported.required, to = value, synchronous_replicas = reported.synchronous_replicas, "manage: REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT set")
                    }
                    Err(e) => {
                        tracing::warn!(ag = %self.ag, token, to = value, error = %e, "manage: REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT not set; trying again after a write-lease period")
                    }
                }
                Some(E::RequiredSynchronizedSet)
            }
            A::Resign {
                token,
                confirmed_down,
                to,
            } => self.resign(*token, *confirmed_down, to.clone()).await,
            A::LetGo { token, to } => Some(self.let_go(*token, to).await),
            A::MayHold => {
                tracing::info!(ag = %self.ag, "manage: the switchover stopped before the demotion: the addresses may be taken again");
                self.ownership(Event::MayHold).await;
                None
            }
            A::Demote { token } => Some(self.demote(*token, c).await),
            A::TakeOffline { token } => {
                let r = self.control.offline().await;
                tracing::warn!(ag = %self.ag, token, result = ?r, "manage: the leader key is no longer provably held: local replica taken OFFLINE");
                Some(E::RoleChanged)
            }
            A::SetSecondary => {
                let r = self.control.set_secondary().await;
                tracing::info!(ag = %self.ag, leader = ?c.leader().map(|l| &l.holder), result = ?r, "manage: RESOLVING replica made SECONDARY under the current leader");
                Some(E::RoleChanged)
            }
            A::Fence { token, node } => {
                match &self.fence {
                    Some(f) => f.stop(
                        &self.ag,
                        *token,
                        node,
                        c.send_by_with(*self.beaten.borrow()),
                        &self.metrics,
                    ),
                    None => {
                        tracing::error!(ag = %self.ag, token, node, "manage: fence asked for without [fence] aws")
                    }
                }
                None
            }
            A::Depose { token, revision } => self.depose(*token, *revision, c).await,
            A::Refused(r) => {
                self.metrics.count_refusal(&self.ag, r.reason());
                tracing::warn!(ag = %self.ag, reason = r.reason(), "manage: no promotion of the local replica: {r}");
                None
            }
        }
    }

    fn current_lease(&self) -> Option<Lease> {
        self.lease.borrow().clone()
    }

    async fn publish(&mut self, state: &crate::controller::promotion::MemberState) -> Option<E> {
        let Some(lease) = self.current_lease() else {
            return Some(E::Published { ok: false });
        };
        let json = serde_json::to_string(state).ok()?;
        let result = self
            .etcd
            .put_member(&self.ag, &self.node, &json, &lease)
            .await;
        if let Err(e) = &result {
            tracing::debug!(ag = %self.ag, error = %e, "manage: cannot publish the replica's state");
        }
        Some(E::Published { ok: result.is_ok() })
    }

    async fn unpublish(&mut self) -> Option<E> {
        let result = self.etcd.delete_member(&self.ag, &self.node).await;
        if let Err(e) = &result {
            tracing::debug!(ag = %self.ag, error = %e, "manage: cannot withdraw the replica's state");
        }
        Some(E::Published { ok: result.is_ok() })
    }

    async fn campaign(&mut self) -> E {
        let Some(lease) = self.current_lease() else {
            return E::EtcdFailed;
        };
        let sent = Instant::now();
        match self.etcd.campaign(&self.ag, &self.node, &lease).await {
            Ok(EtcdCampaign::Won { create_revision }) => {
                tracing::info!(ag = %self.ag, token = create_revision, "manage: won the leader key");
                E::Campaigned(Campaign::Won {
                    token: create_revision,
                    sent,
                })
            }
            Ok(EtcdCampaign::Held {
                value,
                create_revision,
                ..
            }) => E::Campaigned(Campaign::Held(LeaderKey {
                holder: value,
                token: create_revision,
            })),
            Err(e) => {
                tracing::warn!(ag = %self.ag, error = %e, "manage: campaign failed");
                E::EtcdFailed
            }
        }
    }

    async fn failover(&mut self, token: i64, cause: PromotionCause, c: &PromotionController) -> E {
        // Checked under the lock that answers acknowledgements: a promise given a moment ago
        // (not yet seen by the controller) still holds this FAILOVER back.
        let planned = cause == PromotionCause::Switchover;
        if let Err(until) = self.gate.begin_failover(Instant::now(), planned) {
            let left_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64;
            tracing::warn!(ag = %self.ag, token, left_ms, "manage: FAILOVER withheld: this node acknowledged another leader (failsafe); the key is given back");
            return E::FailedOver(Err(false));
        }
        let result = self
            .control
            .failover(|| c.send_by_with(*self.beaten.borrow()))
            .await;
        match &result {
            Ok(_) => {
                self.metrics.count_promotion(&self.ag, cause.name());
                tracing::info!(ag = %self.ag, token, cause = cause.name(), "manage: ALTER AVAILABILITY GROUP FAILOVER accepted")
            }
            Err(e) => tracing::warn!(ag = %self.ag, token, error = %e, "manage: FAILOVER failed"),
        }
        E::FailedOver(result.map_err(|e| e.code == Some(NOT_SYNCHRONIZED)))
    }

    async fn renew(&mut self, token: i64, c: &PromotionController) -> E {
        let began = Instant::now();
        let result = self
            .control
            .renew_write_lease(|| c.send_by_with(*self.beaten.borrow()))
            .await;
        self.metrics
            .observe_write_lease_renewal(&self.ag, began.elapsed());
        if let Err(e) = result
            && !e.code.is_some_and(|c| HARMLESS_RENEWAL.contains(&c))
        {
            tracing::warn!(ag = %self.ag, token, error = %e, "manage: write-lease renewal failed");
        }
        E::WriteLeaseRenewed
    }

    /// Hands `event` to this AG's ownership controller (the router's); `false` when the
    /// router is gone (the agent is stopping).
    async fn ownership(&self, event: Event) -> bool {
        self.router
            .send(Input::Ownership(self.index, event))
            .await
            .is_ok()
    }

    /// A planned switchover to `to`: the addresses go first, and the controller hears when
    /// `/status` says they are gone (the release's node call returned).
    async fn let_go(&mut self, token: i64, to: &str) -> E {
        let began = Instant::now();
        let until = began + self.let_go_for;
        let ok = self.ownership(Event::LetGo { until }).await
            && released(&self.status, &self.ag, self.let_go_for).await;
        let took_ms = began.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(ag = %self.ag, token, %to, ok, took_ms, "manage: switchover: let go of the addresses before demoting the local replica");
        E::LetGoDone { ok }
    }

    async fn demote(&mut self, token: i64, c: &PromotionController) -> E {
        // The let-go is renewed first: waiting for the release may have used most of it, and
        // a let-go that ended before the demotion would take the address back to a replica
        // about to be demoted.
        let until = Instant::now() + self.let_go_for;
        self.ownership(Event::LetGo { until }).await;
        let result = self
            .control
            .demote(|| c.send_by_with(*self.beaten.borrow()))
            .await;
        match &result {
            Ok(()) => {
                tracing::info!(ag = %self.ag, token, "manage: switchover: local replica demoted (SET ROLE = SECONDARY)")
            }
            Err(e) => {
                tracing::warn!(ag = %self.ag, token, error = %e, "manage: switchover: the demotion failed; the addresses come back")
            }
        }
        E::Demoted { ok: result.is_ok() }
    }

    /// Rule 9: the leader with `token` has not beaten since `revision`, seen `leader_timeout`
    /// ago; etcd deletes its key only if that is still so.
    async fn depose(&mut self, token: i64, revision: i64, c: &PromotionController) -> Option<E> {
        let holder = c.leader().map(|l| l.holder.clone());
        match self.etcd.depose(&self.ag, token, revision).await {
            Ok(true) => {
                tracing::warn!(ag = %self.ag, token, revision, ?holder, "manage: deposed a leader that stopped beating (its key was not rewritten within leader_timeout_ms)");
                None
            }
            Ok(false) => {
                tracing::debug!(ag = %self.ag, token, revision, "manage: no deposal: the leader beat again, or its key is gone");
                None
            }
            Err(e) => {
                tracing::warn!(ag = %self.ag, token, revision, error = %e, "manage: deposal failed; trying again");
                Some(E::DeposeFailed { token, revision })
            }
        }
    }

    async fn resign(&mut self, token: i64, confirmed_down: bool, to: Option<String>) -> Option<E> {
        let note = Handoff {
            from: self.node.clone(),
            token,
            confirmed_down,
            to,
        };
        let json = serde_json::to_string(&note).ok()?;
        match self
            .etcd
            .resign(&self.ag, token, Some((HANDOFF, &json)))
            .await
        {
            Ok(done) => {
                tracing::info!(ag = %self.ag, token, confirmed_down, to = ?note.to, done, "manage: resigned the leader key")
            }
            Err(e) => {
                tracing::warn!(ag = %self.ag, token, error = %e, "manage: resign failed; trying again");
                return Some(E::ResignFailed { token });
            }
        }
        None
    }
}
