//! The promotion's steps as this agent saw them, for the failover timeline of the acquire
//! that follows (`/status`, `/events`, `tdsvip status`): **detect** (the vacancy began: the
//! leader key seen gone, or the handoff note read), **elect** (the campaign won: the key's
//! token), **failover** (`FAILOVER` sent and answered, with its cause). The last two steps,
//! **re-observe** (the local probe saw PRIMARY with every database ONLINE) and **acquire**,
//! are the ownership controller's own `local_primary_seen` and `decided`, so the record is
//! handed over to it ([`crate::controller::Event::Promoted`]) and joined to its timeline
//! there (`controller/state/promoted.rs`) instead of being kept twice.
//!
//! Pure, like the rest of the controller: every instant is an event's `now`, or, for the
//! send of `FAILOVER`, the instant the driver reported with the answer
//! ([`PromotionEvent::FailedOver`]). The record is taken from the events around the rules
//! (`handle` looks at each event before and at the actions after), so that the rules
//! themselves carry no bookkeeping.

use std::time::Instant;

use super::{PromotionAction as A, PromotionCause, PromotionController, PromotionEvent as E};

/// How this agent learnt that the AG had no leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VacancySign {
    /// The old leader's note, written with the deletion of its key.
    Handoff { from: String, term: i64 },
    /// The watch saw the key with this term deleted without a note (expired, or resigned
    /// without one).
    KeyDeleted { term: i64 },
    /// A read of the key found none (after a watch was opened again, say).
    KeyMissing,
    /// No key was known when this agent started: it waits as after an unannounced loss.
    AtStart,
}

impl VacancySign {
    /// The wire name (`promotion.vacancy_seen` of a timeline).
    pub fn name(&self) -> &'static str {
        match self {
            VacancySign::Handoff { .. } => "handoff",
            VacancySign::KeyDeleted { .. } => "key_deleted",
            VacancySign::KeyMissing => "key_missing",
            VacancySign::AtStart => "start",
        }
    }

    /// The term of the key that went, when this agent knows it.
    pub fn previous_term(&self) -> Option<i64> {
        match self {
            VacancySign::Handoff { term, .. } | VacancySign::KeyDeleted { term } => Some(*term),
            VacancySign::KeyMissing | VacancySign::AtStart => None,
        }
    }
}

/// One promotion of the local replica by this agent, as its instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionSteps {
    /// Why the AG needed a new primary (`tdsvip_promotions_total{cause}`).
    pub cause: PromotionCause,
    /// The leader key this agent won: its create revision, the fencing token.
    pub term: i64,
    pub vacancy: VacancySign,
    /// detect: the start of the vacancy the candidates' wait counted from.
    pub detected: Instant,
    /// elect: the campaign's answer (the key won) arrived.
    pub elected: Instant,
    /// failover: `FAILOVER` went out (after any login) ...
    pub failover_sent: Instant,
    /// ... and SQL Server accepted it.
    pub failover_answered: Instant,
}

/// The recorder's state inside the controller.
#[derive(Debug, Clone, Default)]
pub(super) struct StepRecorder {
    /// How the current vacancy was seen, and when it began.
    vacancy: Option<(Instant, VacancySign)>,
    /// Elected and `FAILOVER` on its way: everything but the failover's instants.
    elected: Option<Elected>,
    /// A complete record the driver has not taken yet.
    done: Option<PromotionSteps>,
}

#[derive(Debug, Clone)]
struct Elected {
    cause: PromotionCause,
    term: i64,
    vacancy: VacancySign,
    detected: Instant,
    elected: Instant,
}

impl StepRecorder {
    /// A controller that starts knows no leader: its first vacancy began at its start.
    pub(super) fn at_start(now: Instant) -> StepRecorder {
        StepRecorder {
            vacancy: Some((now, VacancySign::AtStart)),
            ..StepRecorder::default()
        }
    }
}

/// What an event may mean for the record, read before the rules consume it.
#[derive(Debug)]
pub(super) enum StepNews {
    /// The event may start a vacancy, seen this way.
    Vacancy(VacancySign),
    /// The campaign for the key was won with `term`; the vacancy before the event, if any.
    Won { term: i64, vacancy: Option<Instant> },
    /// `FAILOVER` answered: accepted (with its send instant) or not.
    FailoverAnswered(Option<Instant>),
}

impl StepNews {
    pub(super) fn of(event: &E, c: &PromotionController) -> Option<StepNews> {
        Some(match event {
            E::LeaderGone { token, handoff } => StepNews::Vacancy(match handoff {
                Some(h) if h.token == *token => VacancySign::Handoff {
                    from: h.from.clone(),
                    term: *token,
                },
                _ => VacancySign::KeyDeleted { term: *token },
            }),
            E::Leader(None) => StepNews::Vacancy(VacancySign::KeyMissing),
            E::Campaigned(super::Campaign::Won { token, .. }) => StepNews::Won {
                term: *token,
                vacancy: c.vacancy.map(|v| v.seen),
            },
            E::FailedOver(result) => StepNews::FailoverAnswered(result.ok()),
            _ => return None,
        })
    }
}

impl PromotionController {
    /// After the rules handled the event at `now` that brought `news` and decided `out`.
    pub(super) fn note_steps(&mut self, now: Instant, news: Option<StepNews>, out: &[A]) {
        let Some(news) = news else { return };
        let r = &mut self.steps;
        match news {
            StepNews::Vacancy(sign) => {
                // Only an event that (re)started the vacancy says how it was seen.
                if self.vacancy.is_some_and(|v| v.seen == now) {
                    r.vacancy = Some((now, sign));
                }
            }
            StepNews::Won { term, vacancy } => {
                let failover = out.iter().find_map(|a| match a {
                    A::Failover { token, cause } if *token == term => Some(*cause),
                    _ => None,
                });
                // A PRIMARY that takes the key promotes nothing: no record.
                let (Some(cause), Some(detected)) = (failover, vacancy) else {
                    r.elected = None;
                    return;
                };
                let sign = match r.vacancy.take() {
                    Some((at, sign)) if at == detected => sign,
                    // Unreachable as the rules stand (a vacancy starts at start or with one of
                    // the events above); a vacancy of unknown origin is one found by a read.
                    _ => VacancySign::KeyMissing,
                };
                r.elected = Some(Elected {
                    cause,
                    term,
                    vacancy: sign,
                    detected,
                    elected: now,
                });
            }
            StepNews::FailoverAnswered(sent) => {
                let elected = r.elected.take();
                if let (Some(e), Some(sent)) = (elected, sent)
                    && self.held == Some(e.term)
                {
                    r.done = Some(PromotionSteps {
                        cause: e.cause,
                        term: e.term,
                        vacancy: e.vacancy,
                        detected: e.detected,
                        elected: e.elected,
                        failover_sent: sent,
                        failover_answered: now,
                    });
                }
            }
        }
    }

    /// The last promotion of the local replica whose `FAILOVER` was accepted, once: the
    /// driver hands it to the ownership controller.
    pub fn take_promotion(&mut self) -> Option<PromotionSteps> {
        self.steps.done.take()
    }
}
