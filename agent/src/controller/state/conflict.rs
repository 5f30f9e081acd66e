//! Peers' reports and what they forbid: a peer seen PRIMARY blocks an acquire, makes a
//! conflict when the local replica is PRIMARY too, and releases a failing owner at once
//! (`peer_primary`).

use std::time::Instant;

use super::AgController;
use crate::controller::decision::{AlertKind, Decision, ReleaseCause};
use crate::controller::event::{PeerReport, ReplicaRole};

use super::OwnershipState;

impl AgController {
    pub(super) fn on_peer(&mut self, report: PeerReport) {
        match report.view {
            None => {
                self.peers.remove(&report.peer);
            }
            Some(view) => {
                // A peer reports only its latest loss; once it reports none, its earlier one
                // must not be stamped into a later, unrelated acquire's timeline.
                match view.primary_lost {
                    Some(loss) => self.peer_loss = Some((report.peer.clone(), loss)),
                    None => {
                        if self
                            .peer_loss
                            .as_ref()
                            .is_some_and(|(p, _)| *p == report.peer)
                        {
                            self.peer_loss = None;
                        }
                    }
                }
                if let Some(at) = view.overlay_logins.and_then(|o| o.answered_here_since) {
                    self.note_client_login(&report.peer, at);
                }
                self.peers.insert(report.peer, (report.at, view));
            }
        }
    }

    /// Peers whose fresh report says their replica is PRIMARY, seen so no earlier than the
    /// local replica was: a peer seen PRIMARY before the local replica became PRIMARY is the
    /// old primary of a switchover or a failover, not a second primary, and waiting for a
    /// newer report of it would cost a poll interval of every failover.
    pub fn primary_peers(&self, now: Instant) -> Vec<String> {
        let local_since = self.health.first_ok_at();
        self.peers
            .iter()
            .filter(|(_, (at, view))| {
                view.role == Some(ReplicaRole::Primary)
                    && now.saturating_duration_since(*at) <= self.policy.peer_stale_after
                    && local_since.is_none_or(|since| *at >= since)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Peers seen PRIMARY that the local replica was confirmed PRIMARY after: two primaries
    /// at once. A peer seen PRIMARY after the local replica's latest `ok` is not one yet:
    /// that is what every failover looks like from the old primary (its SQL died, a peer
    /// was promoted), and it must not raise a conflict alert.
    fn conflicting_peers(&self, now: Instant) -> Vec<String> {
        let Some(confirmed) = self.health.last_ok_started() else {
            return Vec::new();
        };
        self.primary_peers(now)
            .into_iter()
            .filter(|name| self.peers.get(name).is_some_and(|(at, _)| confirmed >= *at))
            .collect()
    }

    pub(super) fn track_conflict(&mut self, now: Instant, out: &mut Vec<Decision>) {
        // An episode starts on the strict condition and lasts while any fresh peer report
        // still says PRIMARY (a newer report of the same peer must not end it and start a
        // new one before the local replica is probed again).
        let peers = if self.in_conflict {
            self.primary_peers(now)
        } else {
            self.conflicting_peers(now)
        };
        let active = self.health.says_primary() && !peers.is_empty();
        if active && !self.in_conflict {
            self.conflicts += 1;
            let stance = match self.state {
                OwnershipState::Standby | OwnershipState::Releasing => "not acquiring",
                OwnershipState::Acquiring | OwnershipState::Owner => {
                    "keeping the address only while the local replica stays PRIMARY"
                }
            };
            let reason = format!(
                "conflict: the local replica and peer {} both report PRIMARY; {stance}",
                peers.join(", ")
            );
            out.push(Decision::Alert {
                ag: self.ag.clone(),
                kind: AlertKind::Conflict,
                reason,
            });
        }
        self.in_conflict = active;
    }

    pub(super) fn release_reason(&self, now: Instant) -> Option<(ReleaseCause, String)> {
        if self.stopped {
            return Some((ReleaseCause::Stop, "the agent is stopping".to_owned()));
        }
        if self.let_go_until.is_some_and(|until| now < until) {
            let why = "a planned switchover: the addresses go before the local replica is demoted";
            return Some((ReleaseCause::Switchover, why.to_owned()));
        }
        if let Some(why) = self.health.must_release() {
            return Some(why);
        }
        let (failures, last) = self.health.unanswered()?;
        let since = self.health.last_ok_started();
        let newer: Vec<&str> = self
            .peers
            .iter()
            .filter(|(_, (at, view))| {
                view.role == Some(ReplicaRole::Primary)
                    && now.saturating_duration_since(*at) <= self.policy.peer_stale_after
                    && since.is_none_or(|s| *at >= s)
            })
            .map(|(name, _)| name.as_str())
            .collect();
        (!newer.is_empty()).then(|| {
            (
                ReleaseCause::PeerPrimary,
                format!(
                    "local SQL Server not answering ({failures} failed probe(s), fall {}, last {last}) and peer {} seen PRIMARY since the local replica last was: SQL Server has a new primary",
                    self.policy.fall,
                    newer.join(", ")
                ),
            )
        })
    }
}
