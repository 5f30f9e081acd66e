//! Rule 6 of manage mode: a planned switchover (`tdsvip switchover --ag AG --to NODE`
//! writes the request next to the leader key, guarded by the leader's term). The leader
//! hands the AG over in the order that keeps every client off a secondary and never leaves
//! two writable primaries:
//! 1. it waits until the target's replica is a SYNCHRONIZED synchronous-commit SECONDARY
//!    (published in etcd), so that `FAILOVER` there loses nothing;
//! 2. it lets go of the addresses while its replica is still PRIMARY ([`PromotionAction::LetGo`]:
//!    the ownership controller releases and takes nothing for a while);
//! 3. it demotes its own replica (`SET (ROLE = SECONDARY)`, Microsoft's order for an
//!    `EXTERNAL` AG: demote, then promote), while its key is provably held by etcd (not on
//!    the peers' acknowledgements alone: the resign that follows needs etcd);
//! 4. it resigns with a note naming the target and saying its replica was demoted: the target
//!    campaigns at once (a SECONDARY writes nothing, so there is no write lease to wait out),
//!    every other candidate waits as after an unannounced loss, which leaves the target the
//!    key; the target's `FAILOVER` and follow mode's acquire do the rest.
//!
//! A step that fails gives the addresses back ([`PromotionAction::MayHold`]) and drops the
//! request; after the demotion nothing is taken back: the AG is then a vacancy like any other.

use std::time::Instant;

use super::candidate::{CommitMode, MemberRole};
use super::{PromotionAction as A, PromotionController};

/// A switchover asked for in etcd: hand the AG to `to`, if `term` is still the leader's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switchover {
    pub to: String,
    pub term: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    LettingGo,
    Demoting,
}

#[derive(Debug, Default)]
pub(super) struct Planned {
    asked: Option<Switchover>,
    step: Option<Step>,
}

impl PromotionController {
    /// The request key was written (`Some`) or deleted (`None`: done, withdrawn, or the
    /// caller gave up). Withdrawn before the demotion: the addresses come back.
    pub(super) fn switchover_asked(&mut self, asked: Option<Switchover>, out: &mut Vec<A>) {
        if asked.is_none() && self.planned.step == Some(Step::LettingGo) {
            self.planned.step = None;
            out.push(A::MayHold);
        }
        self.planned.asked = asked;
    }

    /// The leader's part, from `lead`: starts once the target is ready.
    pub(super) fn switch_over(&mut self, now: Instant, token: i64, out: &mut Vec<A>) {
        let Some(ask) = &self.planned.asked else {
            return;
        };
        let primary = self
            .local
            .as_ref()
            .is_some_and(|l| l.role == MemberRole::Primary);
        let ours = ask.term == token && ask.to != self.s.node;
        if !ours || !primary || self.planned.step.is_some() || !self.key_proves(now) {
            return;
        }
        let ready = self.members.iter().any(|m| {
            m.node == ask.to
                && m.role == MemberRole::Secondary
                && m.commit_mode == CommitMode::Synchronous
                && m.synchronized
        });
        if ready {
            self.planned.step = Some(Step::LettingGo);
            out.push(A::LetGo {
                token,
                to: ask.to.clone(),
            });
        }
    }

    /// The addresses were let go (`ok`), or the ownership controller did not confirm it.
    pub(super) fn let_go_done(&mut self, now: Instant, ok: bool, out: &mut Vec<A>) {
        if self.planned.step != Some(Step::LettingGo) {
            return;
        }
        match self.held {
            Some(token) if ok && self.key_proves(now) => {
                self.planned.step = Some(Step::Demoting);
                out.push(A::Demote { token });
            }
            _ => self.abandon_switchover(out),
        }
    }

    /// `SET (ROLE = SECONDARY)` answered.
    pub(super) fn demoted(&mut self, ok: bool, out: &mut Vec<A>) {
        if self.planned.step != Some(Step::Demoting) {
            return;
        }
        if !ok {
            return self.abandon_switchover(out);
        }
        self.planned.step = None;
        let to = self.planned.asked.take().map(|a| a.to);
        // SQL Server said so: the PRIMARY seen before the demotion must not make this agent
        // campaign again as a primary without a key (the next poll confirms it).
        if let Some(local) = self.local.as_mut() {
            local.role = MemberRole::Secondary;
        }
        self.awaiting_primary_until = None;
        if let Some(token) = self.held.take() {
            // Resigned here, with the note: not a stale key of this node's to resign again.
            self.stale_key = Some(token);
            out.push(A::Resign {
                token,
                confirmed_down: false,
                to,
            });
        }
    }

    /// A switchover is letting go of the addresses or demoting the replica.
    pub(super) fn switching_over(&self) -> bool {
        self.planned.step.is_some()
    }

    /// The vacancy is a switchover to this node: its old primary was demoted.
    pub(super) fn planned_for_me(&self) -> bool {
        self.vacancy
            .is_some_and(|v| v.cause == super::PromotionCause::Switchover)
    }

    /// The key itself (not the peers' acknowledgements, rule 8) proves this agent leads
    /// until a statement sent now lands: a switchover ends in a resign, which needs etcd.
    fn key_proves(&self, now: Instant) -> bool {
        self.key_deadline
            .is_some_and(|d| now + self.s.statement_timeout < d)
    }

    fn abandon_switchover(&mut self, out: &mut Vec<A>) {
        self.planned = Planned::default();
        out.push(A::MayHold);
    }
}
