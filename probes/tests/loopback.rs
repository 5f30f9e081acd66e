//! The three probes against real sockets on 127.0.0.1: hand-made servers that refuse, stall,
//! reset, send garbage or a valid PRELOGIN answer. Proves the classification of each case,
//! that every call ends by its deadline, and that SO_LINGER 0 leaves no TIME_WAIT behind.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use tdsvip_probes::prelogin::request;
use tdsvip_probes::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(timeout_ms: u64) -> ProbeConfig {
    ProbeConfig {
        timeout: ms(timeout_ms),
        ..Default::default()
    }
}

fn request_len() -> usize {
    request(false).len()
}

async fn prelogin(addr: SocketAddr, timeout_ms: u64) -> ProbeResult {
    PreloginProbe::new(addr, cfg(timeout_ms))
        .unwrap()
        .probe()
        .await
}

fn login_cfg(timeout_ms: u64) -> LoginConfig {
    let mut c = LoginConfig::new("tdsvip", "secret");
    c.timeout = ms(timeout_ms);
    // The scripted servers here answer ENCRYPT_NOT_SUP.
    c.tls = TlsConfig {
        encrypt: Encrypt::Off,
        allow_cleartext_login: true,
        ..TlsConfig::default()
    };
    c
}

/// A probe that fails must still end by its deadline (plus scheduling slack).
fn assert_within(r: &ProbeResult, timeout_ms: u64) {
    assert!(
        r.latency < ms(timeout_ms + 150),
        "took {:?} with a {timeout_ms} ms deadline: {}",
        r.latency,
        r.outcome
    );
}

#[tokio::test]
async fn tcp_ok_then_refused_after_the_listener_is_gone() {
    bounded(async {
        let server = serve(Script::Drain).await;
        let probe = TcpProbe::new(server.addr, cfg(200)).unwrap();
        let r = probe.probe().await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.mode, Mode::Tcp);
        assert!(r.phases.connect.is_some());
        assert!(r.started_wall <= std::time::SystemTime::now());
        let addr = server.addr;
        drop(server);
        tokio::time::sleep(ms(20)).await;
        let r = TcpProbe::new(addr, cfg(200)).unwrap().probe().await;
        assert_eq!(r.outcome, Outcome::Refused, "{r:?}");
    })
    .await
}

#[tokio::test]
async fn refused_for_every_probe() {
    bounded(async {
        let addr = closed_port();
        let r = TcpProbe::new(addr, cfg(200)).unwrap().probe().await;
        assert_eq!(r.outcome, Outcome::Refused);
        let r = prelogin(addr, 200).await;
        assert_eq!(r.outcome, Outcome::Refused);
        let mut p = LoginProbe::new(addr, login_cfg(200)).unwrap();
        let r = p.probe().await;
        assert_eq!(r.outcome, Outcome::Refused);
        assert_eq!(r.session_reused, Some(false));
        assert_eq!(p.logins(), 0);
    })
    .await
}

#[tokio::test]
async fn timeouts_below_10ms_are_refused() {
    let addr = closed_port();
    assert_eq!(TcpProbe::new(addr, cfg(9)).unwrap_err().key, "timeout");
    assert_eq!(PreloginProbe::new(addr, cfg(0)).unwrap_err().key, "timeout");
    assert_eq!(
        LoginProbe::new(addr, login_cfg(9)).unwrap_err().key,
        "timeout"
    );
    assert!(TcpProbe::new(addr, cfg(10)).is_ok());
}

/// Linux drops a SYN when the listener's accept queue is full (it does not answer it), so
/// a listener with backlog 0 and one unaccepted connection makes the next connect hang
/// like a SYN to a dead host.
#[tokio::test]
async fn connect_timeout_on_a_full_accept_queue() {
    bounded(async {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue: connections that complete are held (never accepted).
        let mut held = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(ms(100), tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                _ => break,
            }
        }
        assert!(!held.is_empty());
        for timeout in [10, 50] {
            let r = TcpProbe::new(addr, cfg(timeout)).unwrap().probe().await;
            assert_eq!(
                r.outcome,
                Outcome::Timeout {
                    phase: Phase::Connect
                },
                "{r:?}"
            );
            assert!(r.latency >= ms(timeout), "{:?}", r.latency);
            assert_within(&r, timeout);
        }
        let r = prelogin(addr, 30).await;
        assert_eq!(
            r.outcome,
            Outcome::Timeout {
                phase: Phase::Connect
            }
        );
    })
    .await
}

#[tokio::test]
async fn silent_server_is_a_prelogin_timeout() {
    bounded(async {
        let server = serve(Script::Silent).await;
        for timeout in [10, 100] {
            let r = prelogin(server.addr, timeout).await;
            assert_eq!(
                r.outcome,
                Outcome::Timeout {
                    phase: Phase::Prelogin
                },
                "{r:?}"
            );
            assert!(r.latency >= ms(timeout));
            assert_within(&r, timeout);
        }
        let mut p = LoginProbe::new(server.addr, login_cfg(100)).unwrap();
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Timeout {
                phase: Phase::Prelogin
            },
            "{r:?}"
        );
        assert_within(&r, 100);
        assert!(!p.has_session());
    })
    .await
}

#[tokio::test]
async fn reset_after_accept() {
    bounded(async {
        let server = serve(Script::Reset).await;
        let r = prelogin(server.addr, 200).await;
        assert_eq!(
            r.outcome,
            Outcome::Reset {
                phase: Phase::Prelogin
            },
            "{r:?}"
        );
        let mut p = LoginProbe::new(server.addr, login_cfg(200)).unwrap();
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Reset {
                phase: Phase::Prelogin
            },
            "{r:?}"
        );
    })
    .await
}

#[tokio::test]
async fn valid_answer_is_ok_with_version_and_encryption() {
    bounded(async {
        let answer = tabular(&sql2022_answer().encode());
        let server = serve(Script::answer(request_len(), answer.clone(), true)).await;
        let r = prelogin(server.addr, 200).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.server.version.as_deref(), Some("16.0.1000.6"));
        assert_eq!(r.server.encryption.as_deref(), Some("not_supported"));
        assert!(r.phases.connect.is_some() && r.phases.prelogin.is_some());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["mode"], "prelogin");
        assert_eq!(json["server"]["version"], "16.0.1000.6");

        // The same answer dribbled out in 1-byte writes and in two packets still parses.
        let dribble = Script::Answer {
            expect: request_len(),
            chunks: answer.iter().map(|b| vec![*b]).collect(),
            gap: Duration::ZERO,
            hold: true,
        };
        let server = serve(dribble).await;
        let r = prelogin(server.addr, 500).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let payload = sql2022_answer().encode();
        let two_packets = tds_codec::packet::encode_message(
            tds_codec::PacketType::TabularResult,
            &payload,
            8 + 20,
            0,
        );
        let server = serve(Script::answer(request_len(), two_packets, true)).await;
        let r = prelogin(server.addr, 200).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");

        // A server that demands encryption is still a live TDS server.
        let mut required = sql2022_answer();
        required.encryption = Some(tds_codec::Encryption::Required);
        let server = serve(Script::answer(
            request_len(),
            tabular(&required.encode()),
            true,
        ))
        .await;
        let r = prelogin(server.addr, 200).await;
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.server.encryption.as_deref(), Some("required"));
    })
    .await
}

/// Each case: the bytes the server sends, whether it keeps the connection open afterwards,
/// and the outcome the PRELOGIN probe must report.
#[tokio::test]
async fn garbage_and_truncated_answers() {
    bounded(async {
        let good = tabular(&sql2022_answer().encode());
        let mut no_eom = good.clone();
        no_eom[1] = 0; // status without EOM: the reader waits for a next packet
        let mut wrong_type = good.clone();
        wrong_type[0] = 0x12;
        let mut bad_table = good.clone();
        bad_table[8 + 1] = 0xFF; // VERSION offset points outside the payload
        let no_version = tabular(
            &tds_codec::Prelogin {
                version: None,
                ..sql2022_answer()
            }
            .encode(),
        );
        let protocol = |r: &ProbeResult| {
            matches!(
                r.outcome,
                Outcome::ProtocolError {
                    phase: Phase::Prelogin,
                    ..
                }
            )
        };
        let timeout = |r: &ProbeResult| {
            r.outcome
                == Outcome::Timeout {
                    phase: Phase::Prelogin,
                }
        };
        type Check = fn(&ProbeResult) -> bool;
        let cases: Vec<(&str, Vec<u8>, bool, Check)> = vec![
            (
                "http",
                b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
                true,
                protocol,
            ),
            (
                "short length",
                vec![0x04, 0x01, 0x00, 0x04, 0, 0, 1, 0],
                true,
                protocol,
            ),
            ("wrong packet type", wrong_type, true, protocol),
            ("bad option table", bad_table, true, protocol),
            ("no VERSION", no_version, true, protocol),
            (
                "truncated then closed",
                good[..good.len() - 5].to_vec(),
                false,
                protocol,
            ),
            (
                "half a header then closed",
                good[..3].to_vec(),
                false,
                protocol,
            ),
            ("closed without answer", vec![], false, protocol),
            (
                "truncated and held",
                good[..good.len() - 5].to_vec(),
                true,
                timeout,
            ),
            ("no EOM and held", no_eom, true, timeout),
        ];
        for (name, bytes, hold, check) in cases {
            let server = serve(Script::answer(request_len(), bytes, hold)).await;
            let r = prelogin(server.addr, 100).await;
            assert!(check(&r), "{name}: {}", r.outcome);
            assert_within(&r, 100);
        }
    })
    .await
}

/// A header claiming 65535 bytes (more than TDS allows) is refused from the header alone:
/// the probe answers long before its deadline although the server sends nothing more, so
/// it never waited for (nor allocated) the claimed payload. `no_large_alloc.rs` checks the
/// allocation itself.
#[tokio::test]
async fn header_claiming_65535_bytes_is_refused_at_once() {
    bounded(async {
        for claim in [[0xFF, 0xFF], [0x10, 0x01]] {
            // 65535 and 4097: above the TDS maximum, and just above our 4096 limit.
            let header = vec![0x04, 0x01, claim[0], claim[1], 0, 0, 1, 0];
            let server = serve(Script::answer(request_len(), header, true)).await;
            let started = Instant::now();
            let r = prelogin(server.addr, 1000).await;
            match &r.outcome {
                Outcome::ProtocolError { detail, .. } => {
                    assert!(detail.contains("exceeds the maximum"), "{detail}")
                }
                other => panic!("{other}"),
            }
            assert!(started.elapsed() < ms(500), "{:?}", started.elapsed());
        }
    })
    .await
}

#[tokio::test]
async fn login_probe_phases_against_fake_servers() {
    bounded(async {
        // A valid PRELOGIN answer, then silence: the stall is in the login phase.
        let answer = tabular(&sql2022_answer().encode());
        let server = serve(Script::answer(0, answer, true)).await;
        let mut p = LoginProbe::new(server.addr, login_cfg(150)).unwrap();
        let r = p.probe().await;
        assert_eq!(
            r.outcome,
            Outcome::Timeout {
                phase: Phase::Login
            },
            "{r:?}"
        );
        assert_within(&r, 150);
        assert!(r.phases.connect.is_some() && r.phases.login.is_some());
        // Garbage instead of a PRELOGIN answer is a failure in the PRELOGIN phase, whatever
        // form it takes. The PRELOGIN is ours (tds-codec), which refuses "HT" as a packet
        // type at once, held open or not; a server that says nothing ends in the deadline.
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        // A whole TABULAR_RESULT packet whose PRELOGIN table has no terminator.
        let bad_table = tabular(&[0x00, 0x00, 0x1A, 0x00]);
        let closed_early = |r: &ProbeResult| {
            matches!(
                r.outcome,
                Outcome::ProtocolError {
                    phase: Phase::Prelogin,
                    ..
                }
            )
        };
        let stalled = |r: &ProbeResult| {
            r.outcome
                == Outcome::Timeout {
                    phase: Phase::Prelogin,
                }
        };
        type Check = fn(&ProbeResult) -> bool;
        let cases: Vec<(Vec<u8>, bool, Check)> = vec![
            (http.clone(), false, closed_early),
            (http, true, closed_early),
            (Vec::new(), true, stalled),
            (bad_table, true, closed_early),
        ];
        for (bytes, hold, check) in cases {
            let server = serve(Script::answer(0, bytes, hold)).await;
            let mut p = LoginProbe::new(server.addr, login_cfg(150)).unwrap();
            let r = p.probe().await;
            assert!(check(&r), "hold {hold}: {}", r.outcome);
            assert_within(&r, 150);
            assert_eq!(p.logins(), 0);
        }
    })
    .await
}

/// 200 probes at about 20 a second's pace leave no TIME_WAIT: SO_LINGER 0 closes with RST.
/// The control at the end (a plain FIN close) shows the count does see TIME_WAIT sockets.
#[tokio::test]
async fn no_time_wait_after_many_probes() {
    bounded(async {
        let server = serve(Script::Drain).await;
        let port = server.addr.port();
        let tcp = TcpProbe::new(server.addr, cfg(200)).unwrap();
        for _ in 0..200 {
            assert_eq!(tcp.probe().await.outcome, Outcome::Ok);
        }
        let answer = tabular(&sql2022_answer().encode());
        let pserver = serve(Script::answer(request_len(), answer, true)).await;
        let pport = pserver.addr.port();
        let pre = PreloginProbe::new(pserver.addr, cfg(200)).unwrap();
        for _ in 0..200 {
            assert_eq!(pre.probe().await.outcome, Outcome::Ok);
        }
        tokio::time::sleep(ms(100)).await;
        assert_eq!(time_wait_count(port), 0, "TCP probe left TIME_WAIT sockets");
        assert_eq!(
            time_wait_count(pport),
            0,
            "PRELOGIN probe left TIME_WAIT sockets"
        );

        // Control: 20 ordinary connections closed with FIN by the client.
        for _ in 0..20 {
            let s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            drop(s);
        }
        let until = Instant::now() + Duration::from_secs(3);
        while time_wait_count(port) < 20 && Instant::now() < until {
            tokio::time::sleep(ms(20)).await;
        }
        assert!(time_wait_count(port) >= 20, "{}", time_wait_count(port));
    })
    .await
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Any bytes followed by a close: never a panic, never past the deadline, never `ok`
    /// unless the bytes really are a PRELOGIN answer.
    #[test]
    fn random_answers_never_panic_or_hang(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        hold in any::<bool>(),
        tabular_header in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if tabular_header && bytes.len() >= 8 {
            // Make the header plausible so the payload decoder gets exercised too.
            let len = bytes.len() as u16;
            bytes[0] = 0x04;
            bytes[1] = 0x01;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(bounded(async {
            let server = serve(Script::answer(request_len(), bytes.clone(), hold)).await;
            prelogin(server.addr, 60).await
        }));
        prop_assert!(r.latency < ms(250), "{:?}", r.latency);
        if r.outcome.is_ok() {
            let msg = tds_codec::Prelogin::decode(&bytes[8..]);
            prop_assert!(bytes[0] == 0x04 && msg.is_ok());
        } else {
            prop_assert!(
                matches!(
                    r.outcome,
                    Outcome::ProtocolError { .. } | Outcome::Timeout { .. } | Outcome::Reset { .. }
                ),
                "{}",
                r.outcome
            );
        }
    }
}
