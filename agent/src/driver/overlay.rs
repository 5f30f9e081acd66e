//! Logins through the overlay IP, the path a client takes. While another node holds the
//! address, this node's periodic login crosses the network to it (`eth0`, the eBPF guard,
//! ARP, the route tables): which server has been answering it and since when goes into
//! `/status` as `overlay_login`, and the new owner times its `first_client_login` from its
//! peers' entries (`peer_reports.rs`). An EC2 node has no second path through its own
//! `eth0`, so a peer's login is the only honest measure of "clients are served".
//!
//! While this node owns the address the same login takes the local route; its first success
//! after an acquire is the timeline's `first_local_login`, which says that the address
//! answers, not that clients reach it.

use std::time::Instant;

use tdsvip_cloud::CloudExecutor;
use tdsvip_node::NodeTakeover;
use tdsvip_probes::ProbeResult;

use super::router::EventRouter;
use crate::controller::Event;
use crate::status::OverlayRun;

/// The run after `result`: kept while the same server answers, started anew (at the
/// completion of this login) when another one does, ended by a failure or by an answer that
/// does not name its server.
pub(super) fn next_run(run: Option<OverlayRun>, result: &ProbeResult) -> Option<OverlayRun> {
    if !result.outcome.is_ok() {
        return None;
    }
    let server = result.server.server_name.as_deref()?;
    match run {
        Some(run) if run.server == server && run.target == result.target => Some(run),
        _ => Some(OverlayRun {
            target: result.target,
            server: server.to_owned(),
            since: result.started + result.latency,
        }),
    }
}

impl<N: NodeTakeover, C: CloudExecutor + 'static> EventRouter<N, C> {
    /// A result of AG `i`'s periodic login through the overlay IP.
    pub(super) async fn on_overlay_probe(&mut self, i: usize, result: ProbeResult) {
        let rt = &mut self.ags[i];
        let run = next_run(rt.overlay_run.take(), &result);
        rt.overlay_run = run.clone();
        let ag = rt.controller.ag().to_owned();
        self.status.update_ag(&ag, |a| {
            if a.overlay_login != run {
                a.overlay_login = run;
            }
        });
        if result.outcome.is_ok() {
            self.on_own_overlay_login(i, result.started).await;
        }
    }

    /// A successful login through the overlay IP from this node that started at `started`:
    /// the local route to this node's own replica once it owns the address. Logins that
    /// started before the acquire returned may have reached the old owner and do not count.
    pub(super) async fn on_own_overlay_login(&mut self, i: usize, started: Instant) {
        let rt = &self.ags[i];
        if rt.owned && rt.acquired_at.is_some_and(|at| started >= at) {
            self.process(i, Event::LocalOverlayLogin).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use tdsvip_probes::{Mode, Outcome, Phase, PhaseTimes, ServerInfo};

    use super::*;

    fn result(outcome: Outcome, server: Option<&str>, started: Instant) -> ProbeResult {
        ProbeResult {
            target: "10.9.0.10:1433".parse::<SocketAddr>().unwrap(),
            mode: Mode::Login,
            outcome,
            started_wall: SystemTime::now(),
            started,
            latency: Duration::from_millis(3),
            phases: PhaseTimes::default(),
            session_reused: None,
            server: ServerInfo {
                server_name: server.map(str::to_owned),
                ..ServerInfo::default()
            },
        }
    }

    #[test]
    fn a_run_lasts_while_one_server_answers_and_starts_when_the_first_login_completed() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let run = next_run(None, &result(Outcome::Ok, Some("SQL1"), at(0))).unwrap();
        assert_eq!((run.server.as_str(), run.since), ("SQL1", at(3)));
        let same = next_run(
            Some(run.clone()),
            &result(Outcome::Ok, Some("SQL1"), at(20)),
        );
        assert_eq!(same.as_ref(), Some(&run), "the same server keeps the run");
        let other = next_run(same, &result(Outcome::Ok, Some("SQL2"), at(40))).unwrap();
        assert_eq!((other.server.as_str(), other.since), ("SQL2", at(43)));
        let failed = Outcome::Timeout {
            phase: Phase::Login,
        };
        assert_eq!(next_run(Some(other), &result(failed, None, at(60))), None);
        let nameless = next_run(Some(run), &result(Outcome::Ok, None, at(80)));
        assert_eq!(nameless, None, "an answer without a name proves nothing");
    }
}
