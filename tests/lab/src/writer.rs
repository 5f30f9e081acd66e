//! The writer: an application committing one `dbo.ledger` row every 10 ms through the
//! overlay IP, from the client namespace, on a kept connection (a new one after any
//! failure). Each commit is recorded with its id, when it was sent and when (if ever) it
//! was acknowledged; after a trial the lab asks the new primary which acknowledged ids
//! exist, and any that do not are lost commits.
//!
//! A commit that is not acknowledged within the deadline (the primary waits for a
//! synchronous secondary that is gone) counts as not acknowledged: the client cannot know
//! whether it happened, so it is never counted lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::netns::NsHandle;
use crate::tsql::{Session, Transport};

#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub id: i64,
    pub sent: f64,
    /// When the acknowledgement arrived; none: failed or timed out.
    pub acked: Option<f64>,
}

impl Commit {
    /// For [`crate::clock::between`].
    pub fn at(&self) -> f64 {
        self.sent
    }
}

/// A failed login or commit: when it started, how long it took, what failed.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteFailure {
    pub at: f64,
    pub took_ms: f64,
    pub what: String,
}

impl crate::clock::Stamped for WriteFailure {
    fn stamp(&self) -> f64 {
        self.at
    }
}

#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// TLS first when the sims run strict.
    pub transport: Transport,
    pub target: SocketAddr,
    pub user: String,
    pub password: String,
    pub every: Duration,
    /// Connect/login deadline and commit deadline.
    pub login_deadline: Duration,
    pub commit_deadline: Duration,
}

pub struct Writer {
    pub commits: Arc<Mutex<Vec<Commit>>>,
    /// Why writes were not acknowledged: the write outage's anatomy.
    pub failures: Arc<Mutex<Vec<WriteFailure>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(ns: &str, clock: Clock, s: WriterSettings) -> Result<Writer, String> {
        let handle = NsHandle::open(ns).map_err(|e| format!("open netns {ns}: {e}"))?;
        let commits = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, f, st) = (commits.clone(), failures.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("lab-writer".into())
            .spawn(move || {
                if let Err(e) = handle.enter() {
                    let _ = ready_tx.send(Err(format!("setns writer: {e}")));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                run(
                    clock,
                    s,
                    Log {
                        commits: c,
                        failures: f,
                    },
                    st,
                );
            })
            .map_err(|e| format!("writer thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "writer thread died".to_owned())??;
        Ok(Writer {
            commits,
            failures,
            stop,
            thread: Some(thread),
        })
    }

    pub fn between(&self, from: f64, to: f64) -> Vec<Commit> {
        self.commits
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|c| c.sent >= from && c.sent < to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the writer thread records.
struct Log {
    commits: Arc<Mutex<Vec<Commit>>>,
    failures: Arc<Mutex<Vec<WriteFailure>>>,
}

impl Log {
    fn failed(&self, clock: Clock, at: f64, what: String) {
        if let Ok(mut v) = self.failures.lock() {
            v.push(WriteFailure {
                at,
                took_ms: clock.now() - at,
                what,
            });
        }
    }
}

fn run(clock: Clock, s: WriterSettings, log: Log, stop: Arc<AtomicBool>) {
    // Ids start from the wall clock so that a restarted lab never reuses one.
    let mut id = base_id();
    let mut session: Option<Session> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        if session.is_none() {
            let at = clock.now();
            match Session::login(
                &s.transport,
                s.target,
                &s.user,
                &s.password,
                s.login_deadline,
            ) {
                Ok(se) => {
                    se.set_timeout(s.commit_deadline);
                    session = Some(se);
                }
                Err(e) => log.failed(clock, at, format!("login: {e}")),
            }
        }
        if let Some(se) = session.as_mut() {
            id += 1;
            let sent = clock.now();
            let sql = format!(
                "INSERT INTO dbo.ledger (id, at) VALUES ({id}, {})",
                sent as i64
            );
            let acked = match se.batch(&sql) {
                Ok(a) if a.row_count == 1 => Some(clock.now()),
                Ok(a) => {
                    log.failed(clock, sent, format!("commit: row count {}", a.row_count));
                    None
                }
                Err(e) => {
                    log.failed(clock, sent, format!("commit: {e}"));
                    None
                }
            };
            if acked.is_none() {
                session = None;
            }
            if let Ok(mut v) = log.commits.lock() {
                v.push(Commit { id, sent, acked });
            }
        }
        let spent = started.elapsed();
        if spent < s.every {
            std::thread::sleep(s.every - spent);
        }
    }
}

/// Milliseconds since the epoch times 1000: ids of one lab run never collide with an
/// earlier run's on a reused data dir.
pub fn base_id() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64 * 1000)
        .unwrap_or(1)
}

/// What one trial's commits say, given which acknowledged ids the new primary still has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitResult {
    pub acked: usize,
    pub lost: Vec<i64>,
    /// The longest gap between consecutive acknowledged writes, from the last one before
    /// the fault on (ms): last write before the outage → first write after it.
    pub write_outage_ms: Option<f64>,
}

/// Pure: counts acknowledged commits, lost ones (acknowledged, absent in `present`), and
/// the write outage around `fault`.
pub fn analyze(
    commits: &[Commit],
    present: &std::collections::BTreeSet<i64>,
    fault: f64,
) -> CommitResult {
    let acked: Vec<&Commit> = commits.iter().filter(|c| c.acked.is_some()).collect();
    let lost = acked
        .iter()
        .filter(|c| !present.contains(&c.id))
        .map(|c| c.id)
        .collect();
    let mut acks: Vec<f64> = acked.iter().filter_map(|c| c.acked).collect();
    acks.sort_by(f64::total_cmp);
    // The longest wait between two acknowledgements from the last one before the fault
    // on: an acknowledgement that was already on its way when the fault was stamped must
    // not end the outage.
    let outage = acks.iter().rposition(|t| *t <= fault).and_then(|from| {
        acks[from..]
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))))
    });
    CommitResult {
        acked: acked.len(),
        lost,
        write_outage_ms: outage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_commits_and_the_write_outage() {
        let c = |id, sent, acked| Commit { id, sent, acked };
        let commits = [
            c(1, 0.0, Some(1.0)),
            c(2, 10.0, Some(11.0)),
            c(3, 20.0, None),
            c(4, 300.0, Some(305.0)),
        ];
        let present: std::collections::BTreeSet<i64> = [1, 4].into_iter().collect();
        let r = analyze(&commits, &present, 15.0);
        assert_eq!(r.acked, 3);
        assert_eq!(r.lost, vec![2]);
        assert_eq!(r.write_outage_ms, Some(294.0));
        // Not acknowledged and absent is not lost.
        let all: std::collections::BTreeSet<i64> = [1, 2, 4].into_iter().collect();
        assert!(analyze(&commits, &all, 15.0).lost.is_empty());
        assert_eq!(analyze(&[], &all, 0.0).write_outage_ms, None);
        // An acknowledgement already on its way at the fault does not end the outage.
        let late = [
            c(1, 0.0, Some(1.0)),
            c(2, 10.0, Some(11.0)),
            c(3, 14.0, Some(17.0)),
            c(4, 290.0, Some(300.0)),
        ];
        assert_eq!(analyze(&late, &all, 15.0).write_outage_ms, Some(283.0));
    }
}
