//! Manage mode's running side, one task per AG: it feeds the pure
//! [`PromotionController`] with the local replica's polls, this agent's etcd lease renewals
//! and the AG's keys in etcd, and carries out what it decides (etcd transactions, T-SQL on
//! the local replica). The address is not touched here: when the replica becomes PRIMARY,
//! the router's follow-mode controller sees it in its own probe and acquires, unchanged.
//!
//! Five feeders run beside the loop so that nothing waits behind a slow call: `poll`
//! (the replica, every probe interval), `lease` (grant and renew, every renew interval: a
//! renewal must never queue behind a T-SQL statement), the leader's heartbeat (`beat.rs`,
//! rule 9, likewise), `watch` (the AG's keys) and, while the controller wants them, the
//! peers' acknowledgements (`failsafe.rs`, rule 5). Actions
//! run in the loop, one at a time, each bounded by its deadline; every one is logged with
//! the leader key's create revision, the fencing token it was taken under.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tdsvip_etcd::EtcdSettings;
use tdsvip_probes::Password;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Input;
use crate::config::{AgConfig, AgentConfig, StopAddresses};
use crate::controller::Event;
use crate::controller::promotion::{
    ClusterView, PromotionController, PromotionEvent, PromotionSettings,
};
use crate::failsafe::{Acknowledgement, FailsafeGate};
use crate::http::client::{Bearer, parse_url};
use crate::metrics::ManageMetrics;
use crate::status::StatusStore;

mod act;
mod beat;
mod failsafe;
mod feeds;
mod fence;
mod sql;

pub(crate) use fence::NodeFence;
use sql::ReplicaControl;

/// Everything one AG's manage task needs, built before the agent runs (so a bad value
/// stops the start with its key).
pub(super) struct ManagedAg {
    ag: String,
    node: String,
    settings: PromotionSettings,
    etcd: EtcdSettings,
    key_ttl: Duration,
    poll_interval: Duration,
    revoke_at_stop: bool,
    poll: ReplicaControl,
    control: ReplicaControl,
    acknowledgers: failsafe::Acknowledgers,
    gate: Arc<FailsafeGate>,
    fence: Option<Arc<NodeFence>>,
}

impl ManagedAg {
    /// `gates` is where the HTTP listener finds this AG's [`FailsafeGate`]; `token` is sent
    /// to the peers with every `POST /failsafe`.
    pub(super) fn new(
        config: &AgentConfig,
        password: &Password,
        ag: &AgConfig,
        etcd: EtcdSettings,
        gates: &mut crate::failsafe::FailsafeGates,
        token: Option<Bearer>,
        fence: Option<Arc<NodeFence>>,
    ) -> Result<Self, String> {
        let c = &config.cluster;
        let node = config.node_name();
        let login = config.login_config(password, &ag.name, &ag.databases);
        let endpoint = config.sql.endpoint;
        let validity = c.write_lease_validity_s;
        let poll_timeout = Duration::from_millis(config.probe.timeout_ms);
        let settings = PromotionSettings {
            node: node.clone(),
            key_margin: c.key_margin(),
            leader_timeout: c.leader_timeout(),
            renew_interval: c.renew_interval(),
            write_lease_validity: c.write_lease_validity(),
            statement_timeout: c.statement_timeout(),
            confirm_down: c.confirm_down,
            fall: config.probe.fall,
            ack_window: c.key_ttl(),
            required_synchronized: c.required_synchronized_secondaries_to_commit,
            fence: config.fence.aws,
        };
        let acknowledgers = acknowledgers(config, &node, &ag.name, token, settings.ack_hold())?;
        let hold = settings.ack_hold();
        let gate = gates.insert(FailsafeGate::new(&node, &ag.name, hold, Instant::now()));
        Ok(ManagedAg {
            ag: ag.name.clone(),
            settings,
            acknowledgers,
            gate,
            poll: ReplicaControl::new(endpoint, login.clone(), &node, poll_timeout, validity)?,
            control: ReplicaControl::new(endpoint, login, &node, c.statement_timeout(), validity)?,
            node,
            etcd,
            key_ttl: c.key_ttl(),
            poll_interval: Duration::from_millis(config.probe.interval_ms),
            revoke_at_stop: config.shutdown.addresses == StopAddresses::Release,
            fence,
        })
    }

    /// Runs until `w.cancel`.
    pub(super) fn spawn(self, w: Wiring) {
        tokio::spawn(self.run(w));
    }

    async fn run(self, w: Wiring) {
        let ManagedAg {
            ag,
            node,
            settings,
            etcd,
            key_ttl,
            poll_interval,
            revoke_at_stop,
            poll,
            control,
            acknowledgers,
            gate,
            fence,
        } = self;
        let (tx, rx) = mpsc::channel(64);
        feeds::spawn_poll(poll, poll_interval, tx.clone(), w.cancel.clone());
        let every = settings.renew_interval;
        let let_go_for = settings.write_lease_validity + settings.statement_timeout;
        let controller = PromotionController::new(settings, Instant::now());
        // Seen before etcd answers: no leader, no lease (an agent that cannot reach etcd at
        // start must not look like one in follow mode, which has no series at all).
        publish_view(&w.status, &w.metrics, &ag, &controller);
        let etcd = match feeds::connect(&etcd, &w.cancel).await {
            Some(e) => Arc::new(e),
            None => return,
        };
        let (lease_tx, lease_rx) = watch::channel(None);
        let (renewed_tx, renewed_rx) = watch::channel(None);
        let lease = feeds::LeaseFeed {
            etcd: etcd.clone(),
            ttl: key_ttl,
            every,
            revoke_at_stop,
            lease_tx,
            renewed_tx,
            metrics: w.metrics.clone(),
            ag: ag.clone(),
        };
        lease.spawn(tx.clone(), w.cancel.clone());
        feeds::spawn_watch(etcd.clone(), ag.clone(), tx.clone(), w.cancel.clone());
        let (held_tx, held_rx) = watch::channel(None);
        let (beaten_tx, beaten_rx) = watch::channel(None);
        let heartbeat = beat::Heartbeat {
            etcd: etcd.clone(),
            ag: ag.clone(),
            node: node.clone(),
            every,
            held: held_rx,
            beaten_tx,
            metrics: w.metrics.clone(),
        };
        heartbeat.spawn(tx.clone(), w.cancel.clone());
        let (want_tx, want_rx) = watch::channel(None);
        acknowledgers.spawn(want_rx, renewed_rx, beaten_rx.clone(), tx, w.cancel.clone());
        let actor = act::Actor {
            ag,
            node,
            etcd,
            lease: lease_rx,
            beaten: beaten_rx.clone(),
            control,
            metrics: w.metrics.clone(),
            gate,
            router: w.router.clone(),
            index: w.index,
            status: w.status.clone(),
            let_go_for,
            fence,
        };
        let task = ManageTask {
            controller,
            actor,
            want_tx,
            held_tx,
            beaten: beaten_rx,
        };
        task.run(rx, &w).await;
    }
}

/// What a manage task shares with the rest of the agent.
pub(super) struct Wiring {
    pub cancel: CancellationToken,
    pub metrics: ManageMetrics,
    pub status: Arc<StatusStore>,
    /// The router's inputs, and this AG's index among its controllers: a switchover lets
    /// go of the addresses through it.
    pub router: mpsc::Sender<super::Input>,
    pub index: usize,
}

/// The running loop: events in, the controller's actions carried out, the view published.
struct ManageTask {
    controller: PromotionController,
    actor: act::Actor,
    /// What the acknowledgement rounds ask for (rule 5).
    want_tx: watch::Sender<Option<i64>>,
    /// The token the heartbeat rewrites the key under (rule 9).
    held_tx: watch::Sender<Option<i64>>,
    /// The last applied heartbeat, as the heartbeat task saw it answered.
    beaten: watch::Receiver<Option<(i64, Instant)>>,
}

impl ManageTask {
    async fn run(mut self, mut rx: mpsc::Receiver<PromotionEvent>, w: &Wiring) {
        let gate = self.actor.gate.clone();
        let mut given = gate.subscribe();
        let mut last_given = None;
        loop {
            let deadline = self.controller.next_deadline();
            // Events already queued go before a deadline: a renewal or acknowledgement that
            // arrived must count before the rule that its absence would trigger.
            let event = tokio::select! {
                biased;
                _ = w.cancel.cancelled() => break,
                e = rx.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
                Ok(()) = given.changed() => match acknowledgement(&given, &mut last_given, &w.metrics, &self.actor.ag) {
                    Some(e) => e,
                    None => continue,
                },
                _ = sleep_until(deadline) => PromotionEvent::Deadline,
            };
            release_on_handoff(&gate, &event);
            self.handle(event).await;
            publish_view(&w.status, &w.metrics, &self.actor.ag, &self.controller);
        }
        stopped(&w.status, &w.metrics, &self.actor.ag);
    }

    /// One event and every action that follows from it, each action's result fed back.
    /// The last applied heartbeat goes in first each time: it is a fact whenever it is
    /// heard, and the queue may hold it back behind a slow action, after which a stale proof
    /// would take a healthy primary offline (or refuse a switchover's demotion).
    async fn handle(&mut self, event: PromotionEvent) {
        let mut pending = self.fresh_heartbeat();
        pending.extend(self.controller.handle(Instant::now(), event));
        while !pending.is_empty() {
            let mut next = Vec::new();
            for action in pending {
                // A term won a moment ago beats from now, not once its FAILOVER returned.
                self.publish_held();
                next.extend(self.fresh_heartbeat());
                if let Some(result) = self.actor.act(&action, &self.controller).await {
                    next.extend(self.fresh_heartbeat());
                    next.extend(self.controller.handle(Instant::now(), result));
                }
            }
            pending = next;
        }
        self.hand_over_promotion().await;
        let c = &self.controller;
        self.actor
            .gate
            .update(c.leads_or_promotes(), c.leader().map(|k| k.token));
        self.publish_held();
        let c = &self.controller;
        self.want_tx.send_if_modified(|w| {
            let now = c.wants_acknowledgements(Instant::now());
            std::mem::replace(w, now) != now
        });
    }

    /// An accepted promotion's steps go to this AG's ownership controller, which joins them
    /// to the timeline of the acquire that follows (`/status`, `/events`).
    async fn hand_over_promotion(&mut self) {
        let Some(steps) = self.controller.take_promotion() else {
            return;
        };
        let event = Event::Promoted(Box::new(steps));
        let a = &self.actor;
        if a.router
            .send(Input::Ownership(a.index, event))
            .await
            .is_err()
        {
            tracing::debug!(ag = %a.ag, "manage: the router is gone: the promotion's steps stay out of the timeline");
        }
    }
}

impl ManageTask {
    /// Tells the heartbeat task which term to beat.
    fn publish_held(&self) {
        let held = self.controller.held();
        self.held_tx
            .send_if_modified(|h| std::mem::replace(h, held) != held);
    }

    fn fresh_heartbeat(&mut self) -> Vec<crate::controller::promotion::PromotionAction> {
        if !self.beaten.has_changed().unwrap_or(false) {
            return Vec::new();
        }
        let latest = *self.beaten.borrow_and_update();
        match latest {
            Some((token, sent)) => self
                .controller
                .handle(Instant::now(), PromotionEvent::Beaten { token, sent }),
            None => Vec::new(),
        }
    }
}

/// Rule 5's askers for `ag`: every `[[peer]]`, with this node's token.
fn acknowledgers(
    config: &AgentConfig,
    node: &str,
    ag: &str,
    token: Option<Bearer>,
    min_hold: Duration,
) -> Result<failsafe::Acknowledgers, String> {
    let peers = config
        .peers
        .iter()
        .map(|p| Ok((p.name.clone(), parse_url(&p.status_url)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(failsafe::Acknowledgers {
        ag: ag.to_owned(),
        node: node.to_owned(),
        peers,
        token,
        every: config.cluster.renew_interval(),
        deadline: config.cluster.statement_timeout(),
        min_hold,
    })
}

/// An acknowledgement this node just gave another leader, as the controller's event. The
/// leader asks every renew interval: only the first of a run (another term, or after the
/// last hold ended) is logged at info.
fn acknowledgement(
    given: &watch::Receiver<Acknowledgement>,
    last: &mut Acknowledgement,
    metrics: &ManageMetrics,
    ag: &str,
) -> Option<PromotionEvent> {
    let (token, until) = (*given.borrow())?;
    metrics.count_acknowledgement(ag);
    let now = Instant::now();
    let hold_ms = until.saturating_duration_since(now).as_millis() as u64;
    let continued = last.is_some_and(|(t, u)| t == token && u > now);
    if continued {
        tracing::debug!(%ag, term = token, hold_ms, "manage: acknowledged the leader again (failsafe)");
    } else {
        tracing::info!(%ag, term = token, hold_ms, "manage: acknowledged another leader whose key etcd does not renew (failsafe): no promotion of the local replica during the hold");
    }
    *last = Some((token, until));
    Some(PromotionEvent::AcknowledgedLeader { token, until })
}

/// A leader that hands off saying its SQL Server is down writes nothing: the promise this
/// node gave it ends (the controller ends its own record of it on the same event).
fn release_on_handoff(gate: &FailsafeGate, event: &PromotionEvent) {
    if let PromotionEvent::LeaderGone {
        token,
        handoff: Some(h),
    } = event
        && h.confirmed_down
        && h.token == *token
    {
        gate.release(*token);
    }
}

/// The election as `/status` and the metrics show it; `/status` is written only when it
/// changed, so that readers waiting for a change are not woken by every renewal.
fn publish_view(
    status: &StatusStore,
    metrics: &ManageMetrics,
    ag: &str,
    controller: &PromotionController,
) {
    let view = controller.view(Instant::now());
    metrics.set_leader(ag, view.leading);
    metrics.set_term(ag, view.leader.as_ref().map(|k| k.token));
    metrics.set_etcd_lease_alive(ag, view.lease_alive);
    metrics.set_failsafe(ag, view.failsafe);
    status.update_ag_if(ag, |a| {
        let was = a.cluster.as_ref().is_some_and(|c| c.failsafe);
        log_failsafe(ag, was, &view);
        let changed = a.cluster.as_ref() != Some(&view);
        if changed {
            a.cluster = Some(view);
        }
        changed
    });
}

fn log_failsafe(ag: &str, was: bool, view: &ClusterView) {
    match (was, view.failsafe) {
        (false, true) => {
            tracing::warn!(%ag, "manage: etcd does not renew the leader key, and every peer acknowledges this leader: the primary keeps its write lease (failsafe)")
        }
        (true, false) if view.lease_alive => {
            tracing::info!(%ag, "manage: etcd renews the leader key again: failsafe over")
        }
        (true, false) => {
            tracing::warn!(%ag, "manage: neither etcd nor every peer proves this agent leads any more: failsafe over")
        }
        _ => {}
    }
}

/// The task is gone (the agent stops): it leads nothing and renews nothing any more, which
/// the metrics and `/status` say until the process exits.
fn stopped(status: &StatusStore, metrics: &ManageMetrics, ag: &str) {
    metrics.set_leader(ag, false);
    metrics.set_term(ag, None);
    metrics.set_etcd_lease_alive(ag, false);
    metrics.set_failsafe(ag, false);
    status.update_ag_if(ag, |a| match a.cluster.as_mut() {
        Some(c) => {
            c.leading = false;
            c.lease_alive = false;
            c.failsafe = false;
            true
        }
        None => false,
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
