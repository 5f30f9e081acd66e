//! Which replicas would acknowledge a commit, sampled from the sims' own state every 10 ms:
//! the lab's measure of "two writable primaries" (issue 11's `dual_primary_samples`).
//!
//! Why from the sims: a dual-owner sample says two nodes answered for the address; two
//! replicas that would both acknowledge a commit is the data-loss hazard itself, whoever
//! owns the address. tds-sim's `GET /state` says it (`ag_state.would_acknowledge_commit`:
//! PRIMARY, write lease valid, enough synchronized secondaries).
//!
//! One reader thread per node lives in that node's namespace; each tick the coordinator
//! wakes them all at once, so the reads of one sample start together (they take about a
//! millisecond on loopback), and waits for every answer up to [`DEADLINE`]. A node whose
//! control port refuses the connection has no sim running (killed, or not restarted yet)
//! and cannot acknowledge anything: it reads `Down`. Anything else that does not give an
//! answer (timeout, bad HTTP, bad JSON) reads `Unknown` and is never taken for "would not
//! acknowledge": a sample whose unknown nodes could make two acknowledgers is counted as
//! an unknown sample, next to the dual ones.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::netns::NsHandle;

/// How long one sample waits for every node's answer (also each read's socket timeout).
pub const DEADLINE: Duration = Duration::from_millis(200);

/// One node's answer in one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum Reading {
    /// `would_acknowledge_commit: true`.
    Acknowledging,
    NotAcknowledging,
    /// The control port refused the connection: no sim process is running.
    Down,
    /// No usable answer within the deadline.
    Unknown,
}

impl Reading {
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// One tick: every node's reading, taken together.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimarySample {
    pub at: f64,
    pub nodes: Vec<Reading>,
}

impl PrimarySample {
    fn count(&self, r: Reading) -> usize {
        self.nodes.iter().filter(|n| **n == r).count()
    }

    /// Two or more replicas would acknowledge a commit.
    pub fn dual(&self) -> bool {
        self.count(Reading::Acknowledging) >= 2
    }

    /// Not provably single: fewer than two acknowledge, but the unreadable nodes could
    /// make two.
    pub fn unknown(&self) -> bool {
        let ack = self.count(Reading::Acknowledging);
        ack < 2 && ack + self.count(Reading::Unknown) >= 2
    }
}

impl crate::clock::Stamped for PrimarySample {
    fn stamp(&self) -> f64 {
        self.at
    }
}

/// What a run of samples says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrimaryCount {
    pub samples: usize,
    pub dual: usize,
    pub unknown: usize,
    /// The longest stretch of the window without a sample (ms, rounded up): what a "no
    /// dual sample" is worth. A count alone is not: a loaded machine samples less often.
    pub max_gap_ms: u64,
}

/// Pure: counts dual and unknown samples of the window `start..end` (ms).
pub fn count(samples: &[PrimarySample], start: f64, end: f64) -> PrimaryCount {
    let stamps = std::iter::once(start)
        .chain(samples.iter().map(|s| s.at))
        .chain(std::iter::once(end));
    let mut max_gap: f64 = 0.0;
    let mut last = start;
    for t in stamps {
        max_gap = max_gap.max(t - last);
        last = t;
    }
    PrimaryCount {
        samples: samples.len(),
        dual: samples.iter().filter(|s| s.dual()).count(),
        unknown: samples.iter().filter(|s| s.unknown()).count(),
        max_gap_ms: max_gap.ceil() as u64,
    }
}

/// Where one node's sim answers: its control address, from inside `ns` (none: here).
pub struct SimTarget {
    pub ns: Option<NsHandle>,
    pub control: SocketAddr,
}

/// `GET /state` once; never longer than `timeout` per step.
pub fn read_one(addr: SocketAddr, timeout: Duration) -> Reading {
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Reading::Down,
        Err(_) => return Reading::Unknown,
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.set_nodelay(true);
    let req = format!("GET /state HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut resp = Vec::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_end(&mut resp).is_err() {
        return Reading::Unknown;
    }
    parse_state(&String::from_utf8_lossy(&resp))
}

/// The reading in an HTTP answer to `GET /state`.
pub fn parse_state(resp: &str) -> Reading {
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        return Reading::Unknown;
    };
    if head.split_whitespace().nth(1) != Some("200") {
        return Reading::Unknown;
    }
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return Reading::Unknown,
    };
    match v["ag_state"]["would_acknowledge_commit"].as_bool() {
        Some(true) => Reading::Acknowledging,
        Some(false) => Reading::NotAcknowledging,
        None => Reading::Unknown,
    }
}

pub struct PrimarySampler {
    stop: Arc<AtomicBool>,
    pub samples: Arc<Mutex<Vec<PrimarySample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Answer = (u64, usize, Reading);

fn spawn_reader(
    i: usize,
    t: SimTarget,
    ticks: Receiver<u64>,
    answers: Sender<Answer>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name(format!("lab-primaries-{}", i + 1))
        .spawn(move || {
            let entered = t.ns.as_ref().is_none_or(|h| h.enter().is_ok());
            while let Ok(mut k) = ticks.recv() {
                // A reader that fell behind answers only the newest tick.
                while let Ok(newer) = ticks.try_recv() {
                    k = newer;
                }
                let r = if entered {
                    read_one(t.control, DEADLINE)
                } else {
                    Reading::Unknown
                };
                if answers.send((k, i, r)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("sampler thread: {e}"))
}

/// One sample: wakes every reader with tick `k` and gathers their answers.
fn sample(k: u64, at: f64, ticks: &[Sender<u64>], answers: &Receiver<Answer>) -> PrimarySample {
    let mut nodes = vec![Reading::Unknown; ticks.len()];
    for t in ticks {
        let _ = t.send(k);
    }
    let end = Instant::now() + DEADLINE;
    let mut got = 0;
    while got < nodes.len() {
        let left = end.saturating_duration_since(Instant::now());
        match answers.recv_timeout(left) {
            Ok((tick, i, r)) if tick == k => {
                nodes[i] = r;
                got += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    PrimarySample { at, nodes }
}

impl PrimarySampler {
    /// Samples `targets` every `every` until dropped.
    pub fn start(
        clock: Clock,
        targets: Vec<SimTarget>,
        every: Duration,
    ) -> Result<PrimarySampler, String> {
        let (answer_tx, answers) = channel::<Answer>();
        let mut ticks = Vec::new();
        for (i, t) in targets.into_iter().enumerate() {
            let (tx, rx) = channel();
            spawn_reader(i, t, rx, answer_tx.clone())?;
            ticks.push(tx);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (st, out) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("lab-primaries".into())
            .spawn(move || {
                let mut next = Instant::now();
                let mut k = 0;
                while !st.load(Ordering::Relaxed) {
                    k += 1;
                    let s = sample(k, clock.now(), &ticks, &answers);
                    if let Ok(mut v) = out.lock() {
                        v.push(s);
                    }
                    next += every;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                // Dropping `ticks` ends the readers.
            })
            .map_err(|e| format!("sampler thread: {e}"))?;
        Ok(PrimarySampler {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    pub fn between(&self, from: f64, to: f64) -> Vec<PrimarySample> {
        crate::clock::between(&self.samples, from, to)
    }
}

impl Drop for PrimarySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reading::*;
    use super::*;

    fn s(nodes: &[Reading]) -> PrimarySample {
        PrimarySample {
            at: 0.0,
            nodes: nodes.to_vec(),
        }
    }

    #[test]
    fn counts_dual_and_unknown_samples() {
        let samples = [
            s(&[Acknowledging, NotAcknowledging, NotAcknowledging]),
            s(&[Acknowledging, Acknowledging, NotAcknowledging]),
            s(&[Acknowledging, Acknowledging, Acknowledging]),
            // One acknowledges, one cannot be read: it might have been two.
            s(&[Acknowledging, Unknown, NotAcknowledging]),
            // A sim that is not running acknowledges nothing.
            s(&[Acknowledging, Down, NotAcknowledging]),
            // Unreadable, but even if it acknowledged there would be one.
            s(&[Unknown, NotAcknowledging, Down]),
            s(&[Unknown, Unknown, NotAcknowledging]),
            // Two known acknowledgers are dual, whatever the unknown one did.
            s(&[Acknowledging, Acknowledging, Unknown]),
        ];
        assert_eq!(
            count(&samples, 0.0, 10.0),
            PrimaryCount {
                samples: 8,
                dual: 3,
                unknown: 2,
                max_gap_ms: 10,
            }
        );
        assert_eq!(
            count(&[], 5.0, 5.0),
            PrimaryCount::default(),
            "an empty window has no gap"
        );
        assert_eq!(count(&[], 0.0, 300.5).max_gap_ms, 301);
    }

    #[test]
    fn parses_the_control_api_answer() {
        let ok = |b: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{b}");
        assert_eq!(
            parse_state(&ok(r#"{"ag_state":{"would_acknowledge_commit":true}}"#)),
            Acknowledging
        );
        assert_eq!(
            parse_state(&ok(r#"{"ag_state":{"would_acknowledge_commit":false}}"#)),
            NotAcknowledging
        );
        assert_eq!(parse_state(&ok(r#"{"ag_state":{}}"#)), Unknown);
        assert_eq!(parse_state(&ok("{not json")), Unknown);
        assert_eq!(parse_state("HTTP/1.1 500 Oops\r\n\r\n{}"), Unknown);
        assert_eq!(parse_state(""), Unknown);
    }
}
