//! Who reset an idle session: tdsvip (the new owner's tickle ACKs, or the old owner's agent
//! destroying its sockets with SOCK_DESTROY) or something else (the old primary's own
//! process or kernel). Only the first two are tdsvip's work; the idle-session check counts
//! only them, and the rest is reported apart (`idle_resets_not_by_tdsvip`): in kill-primary
//! the killed sim's kernel closes every session at once, before any agent acts.
//!
//! How a close is attributed, from what the lab sees on its own clock:
//! - an EOF (a FIN) is never tdsvip's: both SOCK_DESTROY (`tcp_abort`) and a tickle (the
//!   client's challenge ACK meets the new owner's kernel, which has no such socket) produce
//!   an RST; a FIN comes from a process closing its socket or exiting;
//! - the agents' step order (their `/events` timelines): a release is `ebpf` (fence) →
//!   `sock_destroy` → `address` (removed); an acquire is `ebpf` (owner) → `address` (added)
//!   → `garp` → `tickle`. The owner sampler reads each node's guard and address with
//!   per-read lab-clock stamps, so it brackets the first step of each: SOCK_DESTROY ran
//!   after the last read that showed the old node's guard not fencing the address, and
//!   only if that node later went FENCED *and* lost the address (a guard fenced by an
//!   expired kernel lease, with the agent dead, keeps the address and destroys nothing);
//!   the tickle ran after the last read that showed the new node not owning the address, and
//!   only if its guard said OWNER when the address appeared (keepalived has no guard and
//!   sends no tickles);
//! - so an RST at or after the acquire's bound is the tickle's, one at or after the
//!   release's bound (and before the acquire's) is SOCK_DESTROY's, anything else is not
//!   tdsvip's. The client records a reset when its task wakes, never before the RST
//!   arrived, so the lower bounds cannot take a tdsvip reset for someone else's.
//!
//! Why not the timelines' own times: the lab keeps only the new owner's acquire timeline
//! (`Trial::timeline`), and its times count from the agent's own origin, not the lab clock.
//! The tests check that it agrees: a trial with resets attributed to the tickle must show
//! a `tickle` step that sent ACKs ([`tickle_sent`]).

use crate::client::IdleSession;
use crate::guard::GuardState;
use crate::sampler::OwnerSample;

/// Who closed an idle session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetBy {
    /// The new owner's tickle ACKs.
    Tickle,
    /// The old owner's agent, during its release.
    SockDestroy,
    /// Not tdsvip: a FIN, or an RST before either agent acted (e.g. a dying process).
    NotTdsvip,
}

/// When each agent's first visible step happened at the earliest (lab ms).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AgentBounds {
    /// The old owner's release (fence, then SOCK_DESTROY) started at or after this.
    pub release_from: Option<f64>,
    /// The new owner's acquire added the address (then tickled) at or after this.
    pub acquire_from: Option<f64>,
}

/// The start of node `i`'s read in `s`.
fn read_start(s: &OwnerSample, i: usize) -> Option<f64> {
    s.reads.get(i).copied().flatten().map(|(from, _)| from)
}

fn guard(s: &OwnerSample, i: usize) -> Option<GuardState> {
    s.guard.get(i).copied()
}

/// The agents' bounds for a trial whose first fault is at `fault`: `old` owned the
/// address before it, `new` was promoted. `samples` in time order.
pub fn agent_bounds(
    samples: &[OwnerSample],
    fault: f64,
    old: Option<usize>,
    new: Option<usize>,
) -> AgentBounds {
    let mut b = AgentBounds::default();
    if let Some(old) = old.filter(|o| Some(*o) != new) {
        let mut last_open = None;
        let mut fenced = false;
        for s in samples {
            let g = guard(s, old);
            let known = !s.unknown.get(old).copied().unwrap_or(true);
            if !fenced && g == Some(GuardState::Fenced) && s.at >= fault {
                fenced = true;
            } else if !fenced && known && g != Some(GuardState::Fenced) {
                last_open = read_start(s, old);
            }
            let gone = known && !s.present.get(old).copied().unwrap_or(true);
            if fenced && gone {
                b.release_from = last_open;
                break;
            }
        }
    }
    if let Some(new) = new {
        let mut last_not_owner = None;
        for s in samples {
            let known = !s.unknown.get(new).copied().unwrap_or(true);
            if !known {
                continue;
            }
            if s.owners.get(new).copied().unwrap_or(false) && s.at >= fault {
                if guard(s, new) == Some(GuardState::Owner) {
                    b.acquire_from = last_not_owner;
                }
                break;
            }
            last_not_owner = read_start(s, new);
        }
    }
    b
}

/// Who closed a session that closed at `at` with `how` (`reset`, `eof`, ...).
pub fn attribute(at: f64, how: &str, b: AgentBounds) -> ResetBy {
    if how != "reset" {
        return ResetBy::NotTdsvip;
    }
    match (b.release_from, b.acquire_from) {
        (_, Some(a)) if at >= a => ResetBy::Tickle,
        (Some(r), _) if at >= r => ResetBy::SockDestroy,
        _ => ResetBy::NotTdsvip,
    }
}

/// Per session, who closed it (`None`: still open in the window ending at `end`).
pub fn attribute_all(sessions: &[IdleSession], end: f64, b: AgentBounds) -> Vec<Option<ResetBy>> {
    sessions
        .iter()
        .map(|s| match &s.closed {
            Some((at, how)) if *at < end => Some(attribute(*at, how, b)),
            _ => None,
        })
        .collect()
}

/// ACKs the `tickle` step of an agent's `/events` timeline sent ("N sent, ..."); `None`
/// without such a step.
pub fn tickle_sent(timeline: &serde_json::Value) -> Option<u64> {
    timeline["node_steps"]
        .as_array()?
        .iter()
        .filter(|s| s["name"] == "tickle")
        .filter_map(|s| {
            s["detail"]
                .as_str()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .reduce(|a: u64, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use GuardState::*;

    fn s(at: f64, nodes: &[(bool, GuardState)]) -> OwnerSample {
        OwnerSample::new(at, nodes.to_vec())
    }

    /// Switchover: node 0 fences at ~1012 and removes the address, node 1 acquires at ~1040.
    fn switchover() -> Vec<OwnerSample> {
        vec![
            s(990.0, &[(true, Owner), (false, Fenced)]),
            s(1000.0, &[(true, Owner), (false, Fenced)]),
            s(1010.0, &[(true, Owner), (false, Fenced)]),
            s(1020.0, &[(false, Fenced), (false, Fenced)]),
            s(1030.0, &[(false, Fenced), (false, Fenced)]),
            s(1040.0, &[(false, Fenced), (true, Owner)]),
        ]
    }

    #[test]
    fn bounds_from_the_guard_and_address_reads() {
        let b = agent_bounds(&switchover(), 1000.0, Some(0), Some(1));
        assert_eq!(b.release_from, Some(1010.0));
        assert_eq!(b.acquire_from, Some(1030.0));
        // A node fenced by an expired lease keeps its address: no release, no SOCK_DESTROY.
        let lease = vec![
            s(990.0, &[(true, Owner), (false, Fenced)]),
            s(1010.0, &[(true, Fenced), (false, Fenced)]),
            s(1020.0, &[(true, Fenced), (true, Owner)]),
        ];
        let b = agent_bounds(&lease, 1000.0, Some(0), Some(1));
        assert_eq!(b.release_from, None);
        assert_eq!(b.acquire_from, Some(1010.0));
        // keepalived: no guard anywhere, so nothing is attributed.
        let k = vec![
            s(990.0, &[(true, NoGuard), (false, NoGuard)]),
            s(1010.0, &[(false, NoGuard), (false, NoGuard)]),
            s(1020.0, &[(false, NoGuard), (true, NoGuard)]),
        ];
        assert_eq!(
            agent_bounds(&k, 1000.0, Some(0), Some(1)),
            AgentBounds::default()
        );
    }

    #[test]
    fn unknown_reads_do_not_move_the_bounds() {
        let mut v = switchover();
        // The old node's read at 1010 could not tell: the release bound falls back to 1000.
        let read = crate::sampler::NodeRead {
            from: 1010.0,
            to: 1010.0,
            present: Some(false),
            guard: Fenced,
        };
        v[2] = OwnerSample::from_reads(1010.0, vec![None, Some(read)]);
        let b = agent_bounds(&v, 1000.0, Some(0), Some(1));
        assert_eq!(b.release_from, Some(1000.0));
    }

    #[test]
    fn eof_and_early_resets_are_not_tdsvip() {
        let b = agent_bounds(&switchover(), 1000.0, Some(0), Some(1));
        // The killed process's kernel: a FIN at +1 ms, or an RST before any agent acted.
        assert_eq!(attribute(1001.0, "eof", b), ResetBy::NotTdsvip);
        assert_eq!(attribute(1005.0, "reset", b), ResetBy::NotTdsvip);
        assert_eq!(attribute(1015.0, "reset", b), ResetBy::SockDestroy);
        assert_eq!(attribute(1041.0, "reset", b), ResetBy::Tickle);
        // A FIN after the takeover is still not tdsvip's.
        assert_eq!(attribute(1041.0, "eof", b), ResetBy::NotTdsvip);
        let idle = vec![
            IdleSession {
                opened: 900.0,
                closed: Some((1041.0, "reset".into())),
            },
            IdleSession {
                opened: 900.0,
                closed: None,
            },
            IdleSession {
                opened: 900.0,
                closed: Some((3000.0, "reset".into())),
            },
        ];
        assert_eq!(
            attribute_all(&idle, 2000.0, b),
            vec![Some(ResetBy::Tickle), None, None]
        );
    }

    #[test]
    fn tickle_count_from_a_timeline() {
        let tl = serde_json::json!({"node_steps": [
            {"name": "address", "detail": "1 address(es) added"},
            {"name": "tickle", "detail": "7 sent, 0 skipped, 0 failed"},
        ]});
        assert_eq!(tickle_sent(&tl), Some(7));
        assert_eq!(tickle_sent(&serde_json::json!({"node_steps": []})), None);
        assert_eq!(tickle_sent(&serde_json::json!(null)), None);
    }
}
