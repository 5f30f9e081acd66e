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
//!
//! A login sent into a failover's gap (the old owner's guard drops it, a neighbour entry
//! still points at the old MAC) is lost, and the kernel would not resend the SYN for a
//! second. So this login is made as an impatient client makes it ([`spawn_overlay_watch`]):
//! within 50 ms (doubled after each timeout past the connect, up to the probe's deadline,
//! for a server that logs in slower), and at once again when a connect timed out, instead
//! of at the next tick. Right after an acquire a quick re-login runs beside it (fresh logins
//! every 5 ms, same deadlines, for up to 5 s). A failure of a login that started before the
//! current run began says nothing about it and does not end it.

use std::time::{Duration, Instant};

use tdsvip_cloud::CloudExecutor;
use tdsvip_node::NodeTakeover;
use tdsvip_probes::{Outcome, Phase, ProbeResult};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inputs::OverlayProbe;
use super::router::EventRouter;
use super::{DriverError, Input};
use crate::controller::Event;
use crate::status::OverlayRun;

/// The run after `result`: kept while the same server answers, started anew (at the
/// completion of this login) when another one does, ended by a failure of a login sent
/// after it began, or by an answer that does not name its server.
pub(super) fn next_run(run: Option<OverlayRun>, result: &ProbeResult) -> Option<OverlayRun> {
    if !result.outcome.is_ok() {
        // Sent before the run's first answer: it says nothing of the run.
        return run.filter(|r| result.started < r.since);
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

/// Between two quick re-login attempts.
const RELOGIN_EVERY: Duration = Duration::from_millis(5);
/// The most a quick re-login attempt waits: what an impatient client would.
const RELOGIN_DEADLINE: Duration = Duration::from_millis(50);
/// How long a quick re-login keeps trying (the periodic login goes on after).
const RELOGIN_FOR: Duration = Duration::from_secs(5);

impl<N: NodeTakeover, C: CloudExecutor + 'static> EventRouter<N, C> {
    /// A result of AG `i`'s periodic login through the overlay IP.
    pub(super) async fn on_overlay_probe(&mut self, i: usize, result: ProbeResult) {
        let rt = &mut self.ags[i];
        let run = next_run(rt.overlay_run.clone(), &result);
        // Every 20 ms the run usually stays as it was: only a change is published.
        if run != rt.overlay_run {
            rt.overlay_run = run.clone();
            let ag = rt.controller.ag().to_owned();
            self.status.update_ag(&ag, |a| a.overlay_login = run);
        }
        if result.outcome.is_ok() {
            self.on_own_overlay_login(i, &result).await;
        }
    }

    /// A quick re-login ended (with its first success, or having given up).
    pub(super) async fn on_overlay_relogin(&mut self, i: usize, result: Option<Box<ProbeResult>>) {
        self.ags[i].relogin_running = false;
        if let Some(result) = result {
            self.on_overlay_probe(i, *result).await;
        }
    }

    /// Starts AG `i`'s quick re-login through the overlay IP unless one is running; its
    /// end comes back as `Input::OverlayRelogin`.
    pub(super) fn spawn_overlay_relogin(&mut self, i: usize) {
        let rt = &mut self.ags[i];
        let Some(parts) = rt.overlay_probe.clone() else {
            return;
        };
        if rt.relogin_running {
            return;
        }
        rt.relogin_running = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let found = relogin(parts).await;
            let _ = tx.send(Input::OverlayRelogin(i, found)).await;
        });
    }

    /// A successful login through the overlay IP from this node: the local route to this
    /// node's own replica once it owns the address. A login that started before the acquire
    /// returned may have reached the old owner, and counts only if this node's replica
    /// answered it.
    pub(super) async fn on_own_overlay_login(&mut self, i: usize, result: &ProbeResult) {
        let rt = &self.ags[i];
        let after_acquire = rt.acquired_at.is_some_and(|at| result.started >= at);
        let mine = rt.server_name.is_some() && result.server.server_name == rt.server_name;
        if rt.owned && (after_acquire || mine) {
            self.process(i, Event::LocalOverlayLogin).await;
        }
    }
}

/// Fresh logins every [`RELOGIN_EVERY`] until one succeeds or [`RELOGIN_FOR`] has passed,
/// with the deadlines of [`next_deadline`].
async fn relogin(mut parts: OverlayProbe) -> Option<Box<ProbeResult>> {
    let full = parts.config.timeout;
    parts.config.timeout = full.min(RELOGIN_DEADLINE);
    let mut probe = parts.build().ok()?;
    let give_up = Instant::now() + RELOGIN_FOR;
    while Instant::now() < give_up {
        let result = probe.probe().await;
        if result.outcome.is_ok() {
            return Some(Box::new(result));
        }
        let next = next_deadline(parts.config.timeout, full, &result.outcome);
        if next != parts.config.timeout {
            parts.config.timeout = next;
            probe = parts.build().ok()?;
        }
        tokio::time::sleep(RELOGIN_EVERY).await;
    }
    None
}

/// The deadline after a login that ended with `outcome`, from `current`, at most `full`
/// (the probe's own): doubled when the server connected and then answered too slowly; kept
/// otherwise (a connect that timed out lost its SYN in a gap, not to a slow server).
fn next_deadline(current: Duration, full: Duration, outcome: &Outcome) -> Duration {
    match outcome {
        Outcome::Timeout { phase } if *phase != Phase::Connect => (current * 2).min(full),
        _ => current,
    }
}

/// AG `i`'s periodic login through the overlay IP, every `every` until `cancel`, each result
/// sent as `Input::OverlayProbe`: within [`RELOGIN_DEADLINE`] (see [`next_deadline`]), and
/// again after [`RELOGIN_EVERY`] instead of the next tick when its connect timed out.
pub(super) fn spawn_overlay_watch(
    mut parts: OverlayProbe,
    every: Duration,
    i: usize,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
) -> Result<(), DriverError> {
    let full = parts.config.timeout;
    parts.config.timeout = full.min(RELOGIN_DEADLINE);
    let mut probe = parts.build()?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = probe.probe() => r,
                };
                let lost_syn = matches!(
                    result.outcome,
                    Outcome::Timeout {
                        phase: Phase::Connect
                    }
                );
                let next = next_deadline(parts.config.timeout, full, &result.outcome);
                if next != parts.config.timeout {
                    parts.config.timeout = next;
                    match parts.build() {
                        Ok(p) => probe = p,
                        Err(_) => return,
                    }
                }
                if tx
                    .send(Input::OverlayProbe(i, Box::new(result)))
                    .await
                    .is_err()
                    || !lost_syn
                {
                    break;
                }
                tokio::time::sleep(RELOGIN_EVERY).await;
            }
        }
    });
    Ok(())
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
    fn a_slow_server_doubles_the_deadline_and_a_lost_syn_does_not() {
        let ms = Duration::from_millis;
        let timeout = |phase| Outcome::Timeout { phase };
        assert_eq!(
            next_deadline(ms(50), ms(200), &timeout(Phase::Login)),
            ms(100)
        );
        assert_eq!(
            next_deadline(ms(150), ms(200), &timeout(Phase::Query)),
            ms(200)
        );
        assert_eq!(
            next_deadline(ms(50), ms(200), &timeout(Phase::Connect)),
            ms(50)
        );
        assert_eq!(next_deadline(ms(100), ms(200), &Outcome::Ok), ms(100));
        assert_eq!(
            next_deadline(ms(50), ms(30), &timeout(Phase::Login)),
            ms(30)
        );
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
        let failed = || Outcome::Timeout {
            phase: Phase::Login,
        };
        let stale = next_run(Some(other.clone()), &result(failed(), None, at(30)));
        assert_eq!(
            stale.as_ref(),
            Some(&other),
            "sent before the run began: no news"
        );
        assert_eq!(next_run(Some(other), &result(failed(), None, at(60))), None);
        let nameless = next_run(Some(run), &result(Outcome::Ok, None, at(80)));
        assert_eq!(nameless, None, "an answer without a name proves nothing");
    }
}
