//! Manage mode's decisions for one AG (`[cluster] mode = "manage"`): when this node's agent
//! campaigns for the AG's leader key in etcd, promotes its replica, renews SQL Server's write
//! lease, resigns, or takes its replica offline. Sans-I/O like the ownership controller: the
//! driver runs the [`PromotionAction`]s (etcd calls, T-SQL) and feeds their results back as
//! [`PromotionEvent`]s with the instant it saw them. The address itself is not decided here:
//! once a replica is PRIMARY, follow mode's controller acquires it as before.
//!
//! The leader is the agent of the node whose replica is (or is being made) PRIMARY. The rules
//! (the README's "Manage mode" section has the argument):
//! - **Only while provably held.** The leader key lives on this agent's etcd lease. A renewal
//!   sent at `t` and acknowledged with TTL `ttl` proves the lease alive until `t + ttl` on
//!   this clock (the server counts from when it received it, later). Role changes and write-
//!   lease renewals are issued only while `now + statement_timeout < t + ttl - key_margin`;
//!   past `t + ttl - key_margin` the key is taken to be lost and a PRIMARY replica is taken
//!   `OFFLINE`.
//! - **A challenger waits the old primary out.** Once the leader key is gone, a candidate
//!   waits `write_lease_validity + statement_timeout` from when it saw it go (the last
//!   renewal the old leader could have had in flight, plus the lease it granted), unless the
//!   old leader resigned saying its SQL Server refuses connections: a replica that is not
//!   running accepts no write.
//! - **No data loss.** Only a replica [`candidate::eligibility`] accepts campaigns, and
//!   `FAILOVER` itself refuses one that was not synchronized (41142): then the key is given
//!   back for the next candidate. The leader keeps the AG's
//!   `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT` where that rule needs it
//!   (`commit_quorum.rs`).
//! - **etcd trouble is not an outage** (`failsafe.rs`): while its key renewals fail, the
//!   leader asks every peer agent to acknowledge it; a round that all of them acknowledged
//!   proves, like a key renewal, that nobody promotes for a while, and every peer that
//!   acknowledged holds its own promotion back for [`PromotionSettings::ack_hold`].

use std::time::{Duration, Instant};

pub mod candidate;
pub mod commit_quorum;
mod events;
mod steps;
mod switchover;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_beats;
#[cfg(test)]
mod tests_commit_quorum;
#[cfg(test)]
mod tests_failsafe;
#[cfg(test)]
mod tests_fence;
#[cfg(test)]
mod tests_steps;
#[cfg(test)]
mod tests_switchover;

pub use candidate::{CommitMode, MemberRole, MemberState, Refusal, eligibility};
pub use commit_quorum::CommitRule;
pub use events::{
    Campaign, Handoff, LeaderKey, LocalPoll, PromotionAction, PromotionCause, PromotionEvent,
};
pub use failsafe::LATE_RENEWALS;
pub use steps::{PromotionSteps, VacancySign};
pub use switchover::Switchover;

/// Timing and identity; all from `[cluster]` and `[probe]`.
#[derive(Debug, Clone)]
pub struct PromotionSettings {
    pub node: String,
    /// Subtracted from `sent + ttl`: clock-rate difference and scheduling delay.
    pub key_margin: Duration,
    /// A leader acts only this long after the send of its last applied heartbeat; the others
    /// depose a key not rewritten for this long (`beats.rs`).
    pub leader_timeout: Duration,
    /// Between two write-lease renewals.
    pub renew_interval: Duration,
    /// `WRITE_LEASE_VALIDITY` the leader sets at every renewal.
    pub write_lease_validity: Duration,
    /// Deadline of every T-SQL statement the agent sends; a statement may land this late.
    pub statement_timeout: Duration,
    /// Consecutive refused connections that prove the local SQL Server is not running.
    pub confirm_down: u32,
    /// Consecutive polls without an answer after which a leader resigns (unconfirmed).
    pub fall: u32,
    /// How long after it was sent a round of acknowledgements that every peer answered
    /// lets the leader send role changes and write-lease renewals (the key's TTL).
    pub ack_window: Duration,
    /// `[cluster] required_synchronized_secondaries_to_commit`: the value the leader keeps
    /// the AG at; `None`: the one Microsoft's agent computes (`commit_quorum.rs`).
    pub required_synchronized: Option<u32>,
    /// `[fence] aws`: the key holder stops the instance of an old primary it could not
    /// confirm down or demoted (`fence.rs`).
    pub fence: bool,
}

impl PromotionSettings {
    /// How long a peer that acknowledged a leader holds its own promotion back: the
    /// leader may send a renewal until `ack_window` after the round (which the peer
    /// answered later), the renewal may land a statement deadline after that, and the
    /// write lease it grants lasts `write_lease_validity` more; `key_margin` covers the
    /// two clocks' rates.
    pub fn ack_hold(&self) -> Duration {
        self.ack_window + self.statement_timeout + self.write_lease_validity + self.key_margin
    }
}

/// When the key was seen gone, how long candidates wait from then, and why it went.
#[derive(Debug, Clone, Copy)]
struct Vacancy {
    seen: Instant,
    wait: Duration,
    cause: PromotionCause,
}

/// What the controller knows of the AG's election, for `/status` and `tdsvip status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// The leader key as last read: holder and term (its create revision, the fencing token).
    pub leader: Option<LeaderKey>,
    /// This agent holds the key.
    pub leading: bool,
    /// Every member state in etcd, this node's own included.
    pub members: Vec<MemberState>,
    /// This agent's etcd lease is provably alive (a renewal answered within its TTL).
    pub lease_alive: bool,
    /// Why this replica may not be promoted, as last reported in a vacancy.
    pub refusal: Option<Refusal>,
    /// In a vacancy: until when candidates wait before campaigning.
    pub candidates_wait_until: Option<Instant>,
    /// This agent leads on its peers' acknowledgements alone: etcd does not renew its key.
    pub failsafe: bool,
    /// This agent acknowledged another leader and promotes nothing until then.
    pub acknowledged_until: Option<Instant>,
    /// The AG's commit rule as the local replica last reported it, and the
    /// `REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT` a leader keeps it at.
    pub commit_rule: Option<(CommitRule, u32)>,
}

pub struct PromotionController {
    s: PromotionSettings,
    local: Option<MemberState>,
    refused: u32,
    unanswered: u32,
    members: Vec<MemberState>,
    leader: Option<LeaderKey>,
    vacancy: Option<Vacancy>,
    /// `sent + ttl - key_margin` of the last renewal of this agent's etcd lease.
    key_deadline: Option<Instant>,
    failsafe: failsafe::Failsafe,
    beats: beats::Beats,
    planned: switchover::Planned,
    held: Option<i64>,
    in_flight: InFlight,
    last_renewal: Option<Instant>,
    published: Option<MemberState>,
    /// The AG's commit rule as the last answered poll reported it.
    commit_rule: Option<CommitRule>,
    /// When this agent last sent a change of it.
    commit_rule_sent: Option<Instant>,
    /// The refusal reported in this vacancy (one event per reason, not one per poll).
    refusal: Option<Refusal>,
    offline_for: Option<i64>,
    /// A key in this node's name that this controller did not win, already resigned.
    stale_key: Option<i64>,
    /// After a failed resign: when the stale-key rule may try again.
    resign_retry_at: Option<Instant>,
    last_set_secondary: Option<Instant>,
    /// A failed publish is tried again from then on, not at every event.
    publish_retry_at: Option<Instant>,
    /// This replica's `FAILOVER` answered 41142 in this vacancy: it does not campaign again
    /// until another node has led.
    not_synchronized: bool,
    /// After an accepted `FAILOVER`, until when the role may still read SECONDARY.
    awaiting_primary_until: Option<Instant>,
    /// When the last role change this agent sent returned (see [`PromotionEvent::Polled`]).
    role_changed_at: Option<Instant>,
    /// The instant of the last event handled: deadlines not after it are not asked for
    /// again (a due rule that cannot act yet must not wake the loop in a spin).
    last_event: Instant,
    /// The promotion's steps for the failover timeline (`steps.rs`).
    steps: steps::StepRecorder,
    /// The old primary a winner's accepted `FAILOVER` would stop (`fence.rs`).
    fence_target: Option<String>,
    /// This agent's won term's stop, asked for once its `FAILOVER` is accepted.
    fence_pending: Option<String>,
    /// The last node any member state showed PRIMARY: a node's state is withdrawn when its
    /// SQL Server stops answering and expires with its agent, but it may still write.
    last_primary: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    campaign: bool,
    failover: bool,
    renewal: bool,
    commit_rule: bool,
}

mod beats;
mod failsafe;
mod fence;
mod lead;
mod rules;

impl PromotionController {
    pub fn new(settings: PromotionSettings, now: Instant) -> Self {
        // At start nobody is known to hold the key: wait as after an unannounced loss.
        let wait = settings.write_lease_validity + settings.statement_timeout;
        let failsafe = failsafe::Failsafe::at_start(now, settings.ack_hold());
        PromotionController {
            s: settings,
            local: None,
            refused: 0,
            unanswered: 0,
            members: Vec::new(),
            leader: None,
            vacancy: Some(Vacancy {
                seen: now,
                wait,
                cause: PromotionCause::LeaderLost,
            }),
            key_deadline: None,
            failsafe,
            beats: beats::Beats::default(),
            planned: switchover::Planned::default(),
            held: None,
            in_flight: InFlight::default(),
            last_renewal: None,
            published: None,
            commit_rule: None,
            commit_rule_sent: None,
            refusal: None,
            offline_for: None,
            stale_key: None,
            resign_retry_at: None,
            last_set_secondary: None,
            publish_retry_at: None,
            not_synchronized: false,
            awaiting_primary_until: None,
            role_changed_at: None,
            last_event: now,
            steps: steps::StepRecorder::at_start(now),
            fence_target: None,
            fence_pending: None,
            last_primary: None,
        }
    }

    /// The token of the leader key while this agent holds it.
    pub fn held(&self) -> Option<i64> {
        self.held
    }

    pub fn leader(&self) -> Option<&LeaderKey> {
        self.leader.as_ref()
    }

    /// The election as this agent sees it at `now`.
    pub fn view(&self, now: Instant) -> ClusterView {
        ClusterView {
            leader: self.leader.clone(),
            leading: self.held.is_some(),
            members: self.members.clone(),
            lease_alive: self.key_deadline.is_some_and(|d| now < d),
            // A 41142 is not kept in `refusal` (the resign after it starts a new vacancy),
            // but it is why this replica stays out of the vacancy: say so.
            refusal: if self.not_synchronized {
                Some(Refusal::NotSynchronized)
            } else {
                self.refusal.clone()
            },
            candidates_wait_until: self
                .vacancy
                .filter(|_| self.leader.is_none())
                .map(|v| v.seen + v.wait),
            failsafe: self.on_acknowledgements(now),
            acknowledged_until: self.acknowledged_until(now),
            commit_rule: self
                .commit_rule
                .map(|r| (r, commit_quorum::wanted(r, self.s.required_synchronized))),
        }
    }

    pub fn handle(&mut self, now: Instant, event: PromotionEvent) -> Vec<PromotionAction> {
        let mut out = Vec::new();
        let news = steps::StepNews::of(&event, self);
        self.absorb(now, event, &mut out);
        self.evaluate(now, &mut out);
        self.note_steps(now, news, &out);
        self.last_event = now;
        out
    }

    /// The latest instant a role change or write-lease renewal may be *sent* and still land
    /// while the key is provably held; the driver checks it again right before sending
    /// (after a login, say), since the decision may be older than the send.
    pub fn send_by(&self) -> Option<Instant> {
        self.send_by_with(None)
    }

    /// [`Self::send_by`] once `heard`, the last applied heartbeat (token, send time) as the
    /// heartbeat task has it, is counted: the driver asks right before each statement, so
    /// that a heartbeat still queued behind the action (or applied during its login) counts.
    pub fn send_by_with(&self, heard: Option<(i64, Instant)>) -> Option<Instant> {
        self.proof_deadline_with(heard)
            .and_then(|d| d.checked_sub(self.s.statement_timeout))
    }

    fn may_send(&self, now: Instant) -> bool {
        self.send_by().is_some_and(|t| now < t)
    }

    /// When the controller wants a [`PromotionEvent::Deadline`] even if nothing happens.
    pub fn next_deadline(&self) -> Option<Instant> {
        let vacancy = self
            .vacancy
            .filter(|_| self.leader.is_none())
            .map(|v| v.seen + v.wait);
        let renewal = self
            .held
            .and(self.last_renewal)
            .map(|t| t + self.s.renew_interval);
        let promoting = self.held.and(self.awaiting_primary_until);
        [
            self.proof_deadline(),
            self.key_deadline,
            vacancy,
            renewal,
            promoting,
            self.publish_retry_at,
            self.resign_retry_at,
            self.failsafe_deadline(),
            self.depose_deadline(),
        ]
        .into_iter()
        .flatten()
        .filter(|&d| d > self.last_event)
        .min()
    }
}
