//! The runner end to end with real probes on loopback: an observation for every probe, in
//! order and unfiltered (the agent's controller counts rise and fall), skipped ticks while
//! probes are slow, and both ways of stopping it.

mod common;

use std::time::Duration;

use common::*;
use tdsvip_probes::*;
use tokio_util::sync::CancellationToken;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn tcp(addr: std::net::SocketAddr) -> AnyProbe {
    TcpProbe::new(
        addr,
        ProbeConfig {
            timeout: ms(100),
            ..Default::default()
        },
    )
    .unwrap()
    .into()
}

#[tokio::test]
async fn reports_every_result_and_stops_on_cancel() {
    bounded(async {
        let server = serve(Script::Drain).await;
        let addr = server.addr;
        let runner = ProbeRunner::new(
            tcp(addr),
            ScheduleConfig {
                interval: ms(10),
                jitter: Duration::ZERO,
            },
        )
        .unwrap();
        let cancel = CancellationToken::new();
        let (handle, mut rx) = runner.spawn(16, cancel.clone());

        let first = rx.recv().await.unwrap();
        assert_eq!(first.result.outcome, Outcome::Ok);
        assert_eq!(first.tick.seq, 0);
        let second = rx.recv().await.unwrap();
        assert_eq!(second.result.outcome, Outcome::Ok);
        assert!(second.tick.seq > first.tick.seq);

        // Take the listener away: every refusal is reported, none filtered.
        drop(server);
        let mut refused_in_a_row = 0;
        while refused_in_a_row < 3 {
            let o = rx.recv().await.unwrap();
            if o.result.outcome == Outcome::Refused {
                refused_in_a_row += 1;
            } else {
                assert_eq!(
                    refused_in_a_row, 0,
                    "a refusal, then {:?}",
                    o.result.outcome
                );
            }
        }

        cancel.cancel();
        let summary = handle.await.unwrap();
        assert_eq!(summary.reason, StopReason::Cancelled);
        assert!(summary.probes >= 5);
    })
    .await
}

#[tokio::test]
async fn stops_when_the_receiver_is_dropped() {
    bounded(async {
        let runner = ProbeRunner::new(
            tcp(closed_port()),
            ScheduleConfig {
                interval: ms(5),
                jitter: ms(2),
            },
        )
        .unwrap()
        .with_jitter_seed(1);
        let (handle, mut rx) = runner.spawn(1, CancellationToken::new());
        for _ in 0..3 {
            let o = rx.recv().await.unwrap();
            assert_eq!(o.result.outcome, Outcome::Refused);
        }
        drop(rx);
        let summary = handle.await.unwrap();
        assert_eq!(summary.reason, StopReason::ReceiverDropped);
    })
    .await
}

/// Probes that take 5 intervals make the schedule skip ticks, one probe at a time,
/// instead of firing the missed ones in a burst.
#[tokio::test]
async fn slow_probes_skip_ticks_instead_of_bursting() {
    bounded(async {
        let server = serve(Script::Silent).await;
        let probe = PreloginProbe::new(
            server.addr,
            ProbeConfig {
                timeout: ms(50),
                ..Default::default()
            },
        )
        .unwrap();
        let runner = ProbeRunner::new(
            probe.into(),
            ScheduleConfig {
                interval: ms(10),
                jitter: Duration::ZERO,
            },
        )
        .unwrap();
        let cancel = CancellationToken::new();
        let (handle, mut rx) = runner.spawn(16, cancel.clone());
        let mut previous: Option<Observation> = None;
        for _ in 0..5 {
            let o = rx.recv().await.unwrap();
            assert_eq!(
                o.result.outcome,
                Outcome::Timeout {
                    phase: Phase::Prelogin
                }
            );
            if let Some(p) = &previous {
                assert!(o.tick.missed >= 3, "{:?}", o.tick);
                assert_eq!(o.tick.seq, p.tick.seq + o.tick.missed + 1);
                // Each probe starts only after the previous one ended.
                assert!(o.result.started >= p.result.started + p.result.latency);
            }
            previous = Some(o);
        }
        cancel.cancel();
        let summary = handle.await.unwrap();
        assert!(summary.missed_ticks >= 12, "{summary:?}");
    })
    .await
}
