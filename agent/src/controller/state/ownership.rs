//! Taking and giving up the address: the acquire (with the handover question to the peers
//! first, when there are peers), the release, and what the node executor's answers do.

use std::time::Instant;

use super::{AgController, OwnershipState};
use crate::controller::decision::{AlertKind, Decision, ReleaseCause};
use crate::controller::event::NodeCall;
use crate::controller::timeline::{Direction, FailoverTimeline, TimedStep};

impl AgController {
    pub(super) fn acquire(&mut self, now: Instant, out: &mut Vec<Decision>) {
        let reason = format!(
            "local replica PRIMARY with every configured database ONLINE for {} probes in a row (rise {}), no peer reports PRIMARY",
            self.health.ok_streak(),
            self.health.rise()
        );
        self.startup_cleanup_pending = false;
        let mut timeline = FailoverTimeline::new(&self.ag, Direction::Acquire, None, &reason, now);
        timeline.local_primary_seen = self.health.first_ok_at();
        if let Some((peer, loss)) = self.peer_loss.take() {
            timeline.old_primary_failed = Some(loss.first_failure);
            timeline.old_primary_failed_by = Some(peer);
            timeline.detected = loss.detected;
        }
        timeline.promotion = self.promotion_for(&timeline, now);
        self.start_timeline(timeline);
        self.state = OwnershipState::Acquiring;
        self.hold = None;
        self.release_after_acquire = None;
        if self.policy.handover {
            self.handover.last_attempt += 1;
            self.handover.awaiting = Some(self.handover.last_attempt);
            out.push(Decision::AwaitPeerRelease {
                ag: self.ag.clone(),
                attempt: self.handover.last_attempt,
                reason: format!("{reason}; asking the peers to let go first"),
            });
            return;
        }
        self.take_over(now, reason, out);
    }

    /// The node call (and the cloud claim with it) of an acquire.
    fn take_over(&mut self, now: Instant, reason: String, out: &mut Vec<Decision>) {
        out.push(Decision::Acquire {
            ag: self.ag.clone(),
            reason,
        });
        self.cloud.failures = 0;
        self.claim_cloud(
            now,
            "point the route tables here along with the acquire",
            out,
        );
    }

    /// The peers answered handover question `attempt`: the step goes into the timeline; a
    /// holder that did not let go fails the acquire (backoff), a local verdict that changed
    /// meanwhile abandons it, and otherwise the node call is decided now.
    pub(super) fn on_peers_released(
        &mut self,
        now: Instant,
        attempt: u32,
        step: TimedStep,
        refused: Option<String>,
        out: &mut Vec<Decision>,
    ) {
        if self.handover.awaiting != Some(attempt) || self.state != OwnershipState::Acquiring {
            return;
        }
        self.handover.awaiting = None;
        if let Some(t) = self.timeline.as_mut()
            && t.direction == Direction::Acquire
        {
            t.node_steps.push(step);
        }
        if let Some(error) = refused {
            self.fail_acquire(now, &error, out);
            return;
        }
        if let Some(why) = self.abandon_reason(now) {
            self.abandon_acquire(&why, out);
            return;
        }
        let reason = format!(
            "no peer holds the addresses any more and the local replica is still PRIMARY ({} probes in a row)",
            self.health.ok_streak()
        );
        self.take_over(now, reason, out);
    }

    /// Why an acquire waiting for the peers must not go on: what would make an owner release
    /// at once, or a peer now reporting PRIMARY.
    pub(super) fn abandon_reason(&self, now: Instant) -> Option<String> {
        if let Some((_, why)) = self.release_reason(now) {
            return Some(why);
        }
        let peers = self.primary_peers(now);
        (!peers.is_empty()).then(|| format!("peer {} reports PRIMARY", peers.join(", ")))
    }

    /// Back to `Standby` without a node call: nothing was taken, so nothing is released,
    /// and the timeline of an ownership change that never happened is dropped.
    pub(super) fn abandon_acquire(&mut self, why: &str, out: &mut Vec<Decision>) {
        self.handover.awaiting = None;
        self.state = OwnershipState::Standby;
        self.timeline = None;
        self.hold = None;
        out.push(Decision::Hold {
            ag: self.ag.clone(),
            reason: format!("acquire abandoned while waiting for the peers: {why}"),
        });
    }

    /// A failed acquire: alert, back off, and undo whatever the node call did.
    fn fail_acquire(&mut self, now: Instant, error: &str, out: &mut Vec<Decision>) {
        self.acquire_failures += 1;
        let delay = self.policy.acquire_retry.delay(self.acquire_failures);
        self.acquire_not_before = Some(now + delay);
        out.push(Decision::Alert {
            ag: self.ag.clone(),
            kind: AlertKind::AcquireFailed,
            reason: format!(
                "acquire failed: {error}; releasing what was done, next acquire not before {} ms",
                delay.as_millis()
            ),
        });
        self.release_after_acquire = None;
        self.release(
            now,
            ReleaseCause::AcquireFailed,
            format!("undo the failed acquire ({error})"),
            out,
        );
    }

    pub(super) fn release(
        &mut self,
        now: Instant,
        cause: ReleaseCause,
        reason: String,
        out: &mut Vec<Decision>,
    ) {
        if cause != ReleaseCause::Startup {
            let mut timeline =
                FailoverTimeline::new(&self.ag, Direction::Release, Some(cause), &reason, now);
            if matches!(
                cause,
                ReleaseCause::NotPrimary
                    | ReleaseCause::DbNotOnline
                    | ReleaseCause::NotAnswering
                    | ReleaseCause::PeerPrimary
            ) {
                timeline.old_primary_failed = self.health.first_failure_at();
                timeline.old_primary_failed_by = Some("local".to_owned());
                // The peer's PRIMARY is what turned the failures into a verdict.
                timeline.detected = self.health.detected_at().or(Some(now));
            }
            self.start_timeline(timeline);
        }
        out.push(Decision::Release {
            ag: self.ag.clone(),
            cause,
            reason,
        });
        self.state = OwnershipState::Releasing;
        self.release_cause = cause;
        self.release_failed = false;
        self.hold = None;
        // A claim still running belongs to the ownership being given up: its result is stale.
        self.cloud.outstanding = None;
    }

    fn record_node_call(&mut self, now: Instant, call: &NodeCall, direction: Direction) {
        let Some(t) = self.timeline.as_mut() else {
            return;
        };
        if t.direction != direction {
            return;
        }
        t.node_steps.extend(call.steps.iter().cloned());
        t.node_done = Some(now);
        t.node_ok = Some(call.error.is_none());
    }

    pub(super) fn on_acquired(&mut self, now: Instant, call: NodeCall, out: &mut Vec<Decision>) {
        match self.state {
            OwnershipState::Acquiring => {}
            OwnershipState::Owner => {
                // The driver repairs node drift with another (idempotent) acquire.
                if let Some(error) = call.error {
                    out.push(Decision::Alert {
                        ag: self.ag.clone(),
                        kind: AlertKind::AcquireFailed,
                        reason: format!(
                            "repairing the node state failed: {error}; retried on the next reconcile tick"
                        ),
                    });
                }
                return;
            }
            OwnershipState::Standby | OwnershipState::Releasing => return,
        }
        self.record_node_call(now, &call, Direction::Acquire);
        if let Some(error) = call.error {
            self.fail_acquire(now, &error, out);
            return;
        }
        self.state = OwnershipState::Owner;
        self.acquire_failures = 0;
        self.acquire_not_before = None;
        if let Some((cause, reason)) = self.release_after_acquire.take() {
            self.release(
                now,
                cause,
                format!("{reason} (arrived during the acquire)"),
                out,
            );
        }
    }

    pub(super) fn on_released(&mut self, now: Instant, call: NodeCall, out: &mut Vec<Decision>) {
        if self.state != OwnershipState::Releasing {
            return;
        }
        self.record_node_call(now, &call, Direction::Release);
        if let Some(error) = call.error {
            self.release_failed = true;
            out.push(Decision::Alert {
                ag: self.ag.clone(),
                kind: AlertKind::ReleaseFailed,
                reason: format!(
                    "release ({}) failed: {error}; retried on the next reconcile tick",
                    self.release_cause
                ),
            });
            return;
        }
        self.state = OwnershipState::Standby;
        self.release_failed = false;
        self.hold = None;
    }
}
