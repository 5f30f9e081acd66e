//! The question asked to the peers before an acquire: "do you still hold this AG's
//! addresses?", asked of every peer at once and again every [`RETRY`] until none says yes
//! or `peer_poll.release_wait_ms` runs out. It runs as a task of its own (its answer comes
//! back as `Input::Handover`), so that other AGs' events flow while one AG waits; the
//! controller then re-checks its local verdict before deciding the node call.
//!
//! A peer that answers is a holder or not. A peer whose agent does not answer is told apart by
//! its node (`peer_status::Unreadable`):
//! - its node does not answer either (no SYN-ACK within `handover_timeout_ms`, unreachable):
//!   a crashed or cut-off node, taken as gone at once, as fast as a failover can be;
//! - its node answers (refuses the connection, or accepts it and its agent stays silent): the
//!   agent is dead, frozen or starved, and its pinned guard may still pass the address. It
//!   counts as a holder until its kernel lease has provably run out: `lease` after the first
//!   time it was seen so (by the peer poll or by this question). A dead or frozen agent renews
//!   nothing after that moment, so its lease, at most `lease` long when written, is over then.
//!   The peers' lease is taken to be this node's (`[ebpf] lease_ms`, one setting for the AG);
//!   with eBPF off there is no lease to wait for and such a peer is gone at once, as before.
//!
//! The one window left: a node that clients can reach and its peers cannot (no SYN-ACK from
//! it) is taken as gone while it may still answer its clients until its lease runs out.
//! The answers also list the clients the peers saw, for the new owner to tickle.

use std::time::{Duration, Instant};

use tdsvip_node::Connection;

use super::peer_reports::PeerRuntime;
use crate::config::PeerPollConfig;
use crate::controller::TimedStep;
use crate::http::client::{Bearer, Target};
use crate::peer_status::{fetch_status, parse_status};

/// How recent a peer's "I do not hold the addresses" must be to skip asking it again.
const HOLD_REPORT_FRESH: Duration = Duration::from_secs(1);
/// Between two questions to a peer that still holds the addresses.
const RETRY: Duration = Duration::from_millis(10);

/// What the handover question found.
#[derive(Debug)]
pub(super) struct Handover {
    /// The wait, as the timeline's `peer_release` step.
    pub(super) step: TimedStep,
    pub(super) connections: Vec<Connection>,
    /// A peer still held the addresses when the wait ran out.
    pub(super) refused: Option<String>,
}

/// One handover question, with everything it needs copied out of the router.
pub(super) struct HandoverQuestion {
    ag: String,
    /// The peers to ask, with since when their node has answered while their agent did not:
    /// a peer that answered moments ago that it does not hold the addresses is not asked, so
    /// that an unreachable third node does not cost the timeout.
    peers: Vec<AskedPeer>,
    token: Option<Bearer>,
    wait: Duration,
    timeout: Duration,
    /// The peers' kernel ownership lease; `None` (eBPF off): silent peers are gone at once.
    lease: Option<Duration>,
}

struct AskedPeer {
    name: String,
    url: Target,
    silent_since: Option<Instant>,
}

impl HandoverQuestion {
    pub(super) fn new(
        ag: &str,
        peers: &[PeerRuntime],
        token: Option<&Bearer>,
        poll: &PeerPollConfig,
        lease: Option<Duration>,
    ) -> HandoverQuestion {
        let peers = peers
            .iter()
            .filter(|p| {
                !p.holds
                    .get(ag)
                    .is_some_and(|(at, held)| !held && at.elapsed() <= HOLD_REPORT_FRESH)
            })
            .map(|p| AskedPeer {
                name: p.name.clone(),
                url: p.url.clone(),
                silent_since: p.silent_since,
            })
            .collect();
        HandoverQuestion {
            ag: ag.to_owned(),
            peers,
            token: token.cloned(),
            wait: Duration::from_millis(poll.release_wait_ms),
            timeout: Duration::from_millis(poll.handover_timeout_ms),
            lease,
        }
    }

    /// Asks until no peer holds the addresses or may still hold them, or the wait runs out:
    /// `release_wait_ms` for a peer that says it holds them; for a silent peer whose node
    /// answers, until its lease has run out.
    pub(super) async fn ask(mut self) -> Handover {
        let begin = Instant::now();
        let deadline = begin + self.wait;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let round = self.round().await;
            let now = Instant::now();
            let waiting_for_lease = round.lease_ends.iter().any(|(_, end)| *end > now);
            if (round.holders.is_empty() || now >= deadline) && !waiting_for_lease {
                return self.answer(round, rounds, begin, now);
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One question to every peer at once.
    async fn round(&mut self) -> Round {
        let mut asks = tokio::task::JoinSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let (url, token, timeout) = (peer.url.clone(), self.token.clone(), self.timeout);
            asks.spawn(async move { (i, fetch_status(&url, token.as_ref(), timeout).await) });
        }
        let mut round = Round::default();
        while let Some(joined) = asks.join_next().await {
            let Ok((i, answer)) = joined else { continue };
            let name = self.peers[i].name.clone();
            let node_answered = answer.as_ref().err().map(|u| u.node_answered);
            match answer.map_err(|u| u.text).and_then(|v| parse_status(&v)) {
                Ok(doc) => {
                    self.peers[i].silent_since = None;
                    if let Some(view) = doc.ags.get(&self.ag) {
                        round.connections.extend(view.connections.iter().copied());
                        if view.owned {
                            round.holders.push(name);
                        }
                    }
                }
                Err(e) => match (node_answered != Some(false))
                    .then_some(self.lease)
                    .flatten()
                {
                    Some(lease) => {
                        let since = *self.peers[i].silent_since.get_or_insert_with(Instant::now);
                        round
                            .lease_ends
                            .push((format!("{name}: {e}"), since + lease));
                    }
                    None => round.silent.push(format!("{name}: {e}")),
                },
            }
        }
        round
    }

    fn answer(&self, round: Round, rounds: u32, begin: Instant, now: Instant) -> Handover {
        let refused = (!round.holders.is_empty()).then(|| {
            format!(
                "peer {} still holds the addresses of {} after {} ms (its replica may still be PRIMARY): not acquiring",
                round.holders.join(", "),
                self.ag,
                self.wait.as_millis()
            )
        });
        let mut detail = format!(
            "{rounds} round(s), {} client(s) listed",
            round.connections.len()
        );
        if !round.silent.is_empty() {
            detail.push_str(&format!("; taken as gone: {}", round.silent.join("; ")));
        }
        if !round.lease_ends.is_empty() {
            let waited: Vec<&str> = round.lease_ends.iter().map(|(p, _)| p.as_str()).collect();
            detail.push_str(&format!(
                "; gone once their kernel lease ran out: {}",
                waited.join("; ")
            ));
        }
        if let Some(r) = &refused {
            detail.push_str(&format!("; {r}"));
        }
        Handover {
            step: TimedStep {
                name: "peer_release".to_owned(),
                start: begin,
                duration: now - begin,
                ok: refused.is_none(),
                detail,
            },
            connections: round.connections,
            refused,
        }
    }
}

#[derive(Default)]
struct Round {
    holders: Vec<String>,
    /// Peers whose node did not answer either: gone.
    silent: Vec<String>,
    /// Peers whose node answered but not their agent, with when their lease has run out.
    lease_ends: Vec<(String, Instant)>,
    connections: Vec<Connection>,
}
