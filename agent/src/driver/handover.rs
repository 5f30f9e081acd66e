//! The question asked to the peers before an acquire: "do you still hold this AG's
//! addresses?", asked of every peer at once and again every [`RETRY`] until none says yes
//! or `peer_poll.release_wait_ms` runs out. It runs as a task of its own (its answer comes
//! back as `Input::Handover`), so that other AGs' events flow while one AG waits; the
//! controller then re-checks its local verdict before deciding the node call.
//!
//! A peer that answers is a holder or not; a peer silent for `handover_timeout_ms` counts as
//! gone. The answers also list the clients the peers saw, for the new owner to tickle.

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
    /// The peers to ask: a peer that answered moments ago that it does not hold the
    /// addresses is not asked, so that an unreachable third node does not cost the timeout.
    peers: Vec<(String, Target)>,
    token: Option<Bearer>,
    wait: Duration,
    timeout: Duration,
}

impl HandoverQuestion {
    pub(super) fn new(
        ag: &str,
        peers: &[PeerRuntime],
        token: Option<&Bearer>,
        poll: &PeerPollConfig,
    ) -> HandoverQuestion {
        let peers = peers
            .iter()
            .filter(|p| {
                !p.holds
                    .get(ag)
                    .is_some_and(|(at, held)| !held && at.elapsed() <= HOLD_REPORT_FRESH)
            })
            .map(|p| (p.name.clone(), p.url.clone()))
            .collect();
        HandoverQuestion {
            ag: ag.to_owned(),
            peers,
            token: token.cloned(),
            wait: Duration::from_millis(poll.release_wait_ms),
            timeout: Duration::from_millis(poll.handover_timeout_ms),
        }
    }

    /// Asks until no peer holds the addresses or the wait runs out.
    pub(super) async fn ask(self) -> Handover {
        let begin = Instant::now();
        let deadline = begin + self.wait;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let round = self.round().await;
            let now = Instant::now();
            if round.holders.is_empty() || now >= deadline {
                return self.answer(round, rounds, begin, now);
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One question to every peer at once.
    async fn round(&self) -> Round {
        let mut asks = tokio::task::JoinSet::new();
        for (name, url) in &self.peers {
            let (name, url, token, timeout) =
                (name.clone(), url.clone(), self.token.clone(), self.timeout);
            asks.spawn(async move { (name, fetch_status(&url, token.as_ref(), timeout).await) });
        }
        let mut round = Round::default();
        while let Some(joined) = asks.join_next().await {
            let Ok((name, answer)) = joined else { continue };
            match answer.and_then(|v| parse_status(&v)) {
                Ok(doc) => {
                    if let Some(view) = doc.ags.get(&self.ag) {
                        round.connections.extend(view.connections.iter().copied());
                        if view.owned {
                            round.holders.push(name);
                        }
                    }
                }
                Err(e) => round.silent.push(format!("{name}: {e}")),
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
    silent: Vec<String>,
    connections: Vec<Connection>,
}
