//! The failover timeline's bookkeeping: one record per ownership change, closed when
//! everything it waits for has come, or at its time limit naming what never came.

use std::time::Instant;

use super::{AgController, OwnershipState};
use crate::controller::timeline::{Direction, FailoverTimeline};

impl AgController {
    pub(super) fn start_timeline(&mut self, timeline: FailoverTimeline) {
        if let Some(mut open) = self.timeline.replace(timeline) {
            // Cut short by the next ownership change (a demotion before the first login
            // through the overlay IP, say): say what it never got.
            open.unfinished = self.still_waiting(&open);
            self.completed.push(open);
        }
    }

    /// What an acquire's timeline still waits for after a successful node call.
    pub(super) fn still_waiting(&self, t: &FailoverTimeline) -> Vec<&'static str> {
        let mut waiting = Vec::new();
        if t.direction != Direction::Acquire || t.node_ok != Some(true) {
            return waiting;
        }
        if self.policy.cloud_retry.is_some() && t.cloud_done.is_none() {
            waiting.push("route_tables");
        }
        if self.policy.expect_overlay_login && t.first_local_login.is_none() {
            waiting.push("first_local_login");
        }
        if self.policy.expect_overlay_login
            && t.first_client_login.is_none()
            && self.a_peer_measures_client_logins()
        {
            waiting.push("first_client_login");
        }
        waiting
    }

    /// Some peer agent's latest readable report carries its logins through the overlay IP:
    /// one can measure `first_client_login` (a peer that cannot be read is forgotten).
    fn a_peer_measures_client_logins(&self) -> bool {
        self.peers.values().any(|(_, v)| v.overlay_logins.is_some())
    }

    /// This node's own login through the overlay IP (`first_local_login`).
    pub(super) fn note_local_login(&mut self, now: Instant) {
        if let Some(t) = self.timeline.as_mut()
            && t.direction == Direction::Acquire
            && t.first_local_login.is_none()
        {
            t.first_local_login = Some(now);
        }
    }

    /// A peer's logins through the overlay IP answered here since `at`: the earliest such
    /// report after the decision is the open acquire's `first_client_login`. One from before
    /// the decision belongs to an earlier ownership and is not evidence of this one.
    pub(super) fn note_client_login(&mut self, peer: &str, at: Instant) {
        if let Some(t) = self.timeline.as_mut()
            && t.direction == Direction::Acquire
            && at >= t.decided
            && t.first_client_login.is_none_or(|seen| at < seen)
        {
            t.first_client_login = Some(at);
            t.first_client_login_by = Some(peer.to_owned());
        }
    }

    pub(super) fn close_timeline_if_complete(&mut self, now: Instant) {
        let waiting = match &self.timeline {
            Some(t) => self.still_waiting(t),
            None => return,
        };
        let Some(t) = &mut self.timeline else {
            return;
        };
        let complete = match t.direction {
            Direction::Release => self.state == OwnershipState::Standby && t.node_ok == Some(true),
            Direction::Acquire => match t.node_ok {
                Some(false) => true,
                Some(true) => {
                    let mut waiting = waiting;
                    if !waiting.is_empty()
                        && now.saturating_duration_since(t.decided) >= self.policy.timeline_limit
                    {
                        t.unfinished = waiting.clone();
                        waiting.clear();
                    }
                    waiting.is_empty()
                }
                None => false,
            },
        };
        if complete && let Some(done) = self.timeline.take() {
            self.completed.push(done);
        }
    }
}
