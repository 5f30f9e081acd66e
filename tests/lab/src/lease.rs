//! The write lease, renewed as an HA manager renews it (`--promote lab`): the AG is created
//! with `WRITE_LEASE_VALIDITY = s` and, every `lease_renew_every_ms`, the lab runs
//! `ALTER AVAILABILITY GROUP [ag] SET (WRITE_LEASE_VALIDITY = s)` on the replica it holds for
//! the primary — as Microsoft's Pacemaker agent does from its monitor action (and once on
//! the promotion target just before `FAILOVER`).
//!
//! One thread per node, inside that node's namespace, on a kept session to the local sim
//! (loopback: a partition of `eth0` does not stop it; the lab stops renewing on purpose,
//! as a manager whose majority lost the node would). The renewer only ever renews the node
//! the lab names; a node it stops renewing loses its lease `s` seconds after the last
//! renewal and goes RESOLVING. Failed renewals are recorded, never hidden: a healthy run
//! has none, and a lease lost by a slow renewal would show as a failed drill anyway.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::config;
use crate::lab::Lab;
use crate::netns::NsHandle;
use crate::tsql::{EXTERNAL_CLUSTER, Session, Transport};

/// No node holds the lease (the renewers idle).
const NOBODY: usize = usize::MAX;

#[derive(Debug, Clone)]
pub struct RenewFailure {
    pub at: f64,
    pub node: usize,
    pub error: String,
}

/// A renewal that succeeded: when its answer came, on which node, how long it took.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub at: f64,
    pub node: usize,
    pub took_ms: f64,
}

pub struct LeaseRenewer {
    holder: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    pub failures: Arc<Mutex<Vec<RenewFailure>>>,
    pub renewals: Arc<Mutex<Vec<Renewal>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What every renewer thread needs.
#[derive(Clone)]
pub struct RenewSettings {
    /// TLS first when the sims run strict.
    pub transport: Transport,
    pub user: String,
    pub password: String,
    pub validity_s: u64,
    pub every: Duration,
}

struct Shared {
    holder: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<RenewFailure>>>,
    renewals: Arc<Mutex<Vec<Renewal>>>,
    clock: Clock,
}

fn renew_once(session: &mut Option<Session>, s: &RenewSettings) -> Result<(), String> {
    if session.is_none() {
        let addr = SocketAddr::from(([127, 0, 0, 1], config::TDS_PORT));
        let se = Session::login(
            &s.transport,
            addr,
            &s.user,
            &s.password,
            Duration::from_millis(500),
        )?;
        *session = Some(se);
    }
    let sql = format!(
        "{EXTERNAL_CLUSTER} ALTER AVAILABILITY GROUP [{}] SET (WRITE_LEASE_VALIDITY = {})",
        config::AG,
        s.validity_s
    );
    let r = session.as_mut().map(|se| se.batch(&sql));
    match r {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => {
            *session = None;
            Err(e)
        }
        None => Err("no session".into()),
    }
}

fn run(i: usize, ns: NsHandle, s: RenewSettings, sh: Shared) {
    if let Err(e) = ns.enter() {
        if let Ok(mut f) = sh.failures.lock() {
            f.push(RenewFailure {
                at: sh.clock.now(),
                node: i,
                error: format!("setns: {e}"),
            });
        }
        return;
    }
    let mut session: Option<Session> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        if sh.holder.load(Ordering::Relaxed) != i {
            session = None;
        } else {
            let sent = sh.clock.now();
            match renew_once(&mut session, &s) {
                Ok(()) => {
                    let at = sh.clock.now();
                    if let Ok(mut v) = sh.renewals.lock() {
                        v.push(Renewal {
                            at,
                            node: i,
                            took_ms: at - sent,
                        });
                    }
                }
                // A renewal still in flight when the lab stopped renewing this node (it hung,
                // was killed or demoted) is expected to fail: only a failure on the node the
                // lab still renews is one.
                Err(error) if sh.holder.load(Ordering::Relaxed) == i => {
                    if let Ok(mut f) = sh.failures.lock() {
                        f.push(RenewFailure {
                            at: sh.clock.now(),
                            node: i,
                            error,
                        });
                    }
                }
                Err(_) => {}
            }
        }
        std::thread::sleep(s.every);
    }
}

impl LeaseRenewer {
    /// One renewer per namespace in `nodes`; `holder` is renewed from the start.
    pub fn start(
        clock: Clock,
        nodes: &[String],
        holder: usize,
        s: RenewSettings,
    ) -> Result<LeaseRenewer, String> {
        let holder = Arc::new(AtomicUsize::new(holder));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let renewals = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (i, ns) in nodes.iter().enumerate() {
            let h = NsHandle::open(ns).map_err(|e| format!("open netns {ns}: {e}"))?;
            let sh = Shared {
                holder: holder.clone(),
                stop: stop.clone(),
                failures: failures.clone(),
                renewals: renewals.clone(),
                clock,
            };
            let s = s.clone();
            let t = std::thread::Builder::new()
                .name(format!("lab-lease-{}", i + 1))
                .spawn(move || run(i, h, s, sh))
                .map_err(|e| format!("lease thread: {e}"))?;
            threads.push(t);
        }
        Ok(LeaseRenewer {
            holder,
            stop,
            failures,
            renewals,
            threads,
        })
    }

    /// The node renewed now, if any.
    pub fn holder(&self) -> Option<usize> {
        Some(self.holder.load(Ordering::Relaxed)).filter(|h| *h != NOBODY)
    }

    /// Renew node `i` from now on (none: nobody).
    pub fn set_holder(&self, i: Option<usize>) {
        self.holder.store(i.unwrap_or(NOBODY), Ordering::Relaxed);
    }

    pub fn renewals_between(&self, from: f64, to: f64) -> Vec<Renewal> {
        crate::clock::between(&self.renewals, from, to)
    }

    /// When node `i`'s last renewal was answered.
    pub fn last_renewed(&self, i: usize) -> Option<f64> {
        let v = self.renewals.lock().ok()?;
        v.iter().rev().find(|r| r.node == i).map(|r| r.at)
    }

    pub fn failures_between(&self, from: f64, to: f64) -> Vec<RenewFailure> {
        crate::clock::between(&self.failures, from, to)
    }
}

impl crate::clock::Stamped for Renewal {
    fn stamp(&self) -> f64 {
        self.at
    }
}

impl crate::clock::Stamped for RenewFailure {
    fn stamp(&self) -> f64 {
        self.at
    }
}

impl Drop for LeaseRenewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Lab {
    /// Starts the lease renewer (node 1 holds the lease) and the sampler of which sims
    /// would acknowledge a commit; both stop when the lab is dropped.
    pub(crate) fn start_ag_watch(&mut self) -> Result<(), String> {
        let ns: Vec<String> = self.nodes.iter().map(|n| n.ns.clone()).collect();
        self.lease = Some(LeaseRenewer::start(
            self.clock,
            &ns,
            0,
            RenewSettings {
                transport: self.tsql_transport(),
                user: config::USER.into(),
                password: self.password().to_owned(),
                validity_s: self.settings.write_lease_validity_s,
                every: Duration::from_millis(self.settings.lease_renew_every_ms),
            },
        )?);
        let targets = ns
            .iter()
            .map(|n| {
                Ok(crate::primaries::SimTarget {
                    ns: Some(NsHandle::open(n).map_err(|e| format!("open netns {n}: {e}"))?),
                    control: SocketAddr::from(([127, 0, 0, 1], config::CONTROL_PORT)),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.primaries = Some(crate::primaries::PrimarySampler::start(
            self.clock,
            targets,
            Duration::from_millis(self.settings.sample_ms),
        )?);
        Ok(())
    }

    /// The lab (as HA manager) renews node `i`'s lease from now on: the promotion target,
    /// just before its `FAILOVER`.
    pub fn renew_lease_on(&mut self, i: usize) {
        if let Some(l) = &self.lease {
            l.set_holder(Some(i));
        }
    }

    /// The lab stops renewing node `i`'s lease (demoted, killed, partitioned, hung); it
    /// expires `write_lease_validity_s` after the last renewal. Records the action.
    pub fn stop_renewing(&mut self, i: usize, why: &str) {
        let Some(l) = &self.lease else { return };
        if l.holder() == Some(i) {
            l.set_holder(None);
            let t = self.clock.now();
            self.record(t, i, format!("lease renewal stops ({why})"));
        }
    }
}

impl Lab {
    /// Waits until node `i`'s write lease has certainly expired — the HA manager's only
    /// safe move when the old primary can neither be demoted nor reached: the lease was
    /// renewed to at most `validity` after the last renewal's answer, and tds-sim's watcher
    /// acts within 10 ms. Then checks (through the control API) that it left PRIMARY.
    /// Returns when the lease had expired.
    pub fn wait_lease_expired(&mut self, i: usize) -> Result<f64, String> {
        let validity_ms = self.settings.write_lease_validity_s as f64 * 1000.0;
        let last = self.lease.as_ref().and_then(|l| l.last_renewed(i));
        let expired = last.map_or(self.clock.now(), |t| t + validity_ms + 20.0);
        let wait = expired - self.clock.now();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait / 1000.0));
        }
        let end = std::time::Instant::now() + Duration::from_secs(1);
        while self.sim_state(i)?["role"] == "PRIMARY" {
            if std::time::Instant::now() > end {
                return Err(format!(
                    "node {}: still PRIMARY 1 s after its write lease expired",
                    i + 1
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.record(
            expired,
            i,
            format!(
                "write lease expired ({} s after the last renewal); replica left PRIMARY",
                self.settings.write_lease_validity_s
            ),
        );
        Ok(expired)
    }
}
