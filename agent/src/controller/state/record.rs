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
        if self.policy.expect_overlay_login && t.first_client_login.is_none() {
            waiting.push("first_client_login");
        }
        waiting
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
