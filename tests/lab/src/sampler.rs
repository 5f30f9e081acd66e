//! Who owns the overlay IP, sampled from the nodes' own namespaces, and which MAC answers
//! ARP for it, seen from the client.
//!
//! Owner samples: one reader thread per node enters that node's namespace once and stays
//! there (a thread that cannot enter reads *unknown* forever; it never reads another
//! namespace). Every reader wakes on the same absolute tick (`start + k · every`, 10 ms),
//! asks the kernel (`getifaddrs`, a netlink dump) whether the overlay address is on `eth0`
//! and whether `eth0` has its link (IFF_RUNNING: a node whose link is down cannot answer for
//! the address, whatever its address list says), then reads the eBPF guard's state for the
//! address ([`crate::guard`]: one netlink request for the XDP program id and one map
//! lookup), and stamps the read with its own lab-clock start and end. A collector puts the
//! reads of tick `k` together into one [`OwnerSample`].
//!
//! Per node, a read says *owner* (address present on the up link and the guard does not
//! fence it: OWNER, unlisted, or no guard at all, as after the agent was killed), *not
//! owner* (address absent or link down; or present but fenced: a *fenced holder*), or
//! *unknown*: the namespace could not be entered, `getifaddrs` failed, the address is present
//! but the guard's map could not be read, or the reader did not deliver tick `k` within
//! [`DEADLINE`]. Unknown is never taken for either answer: it is not an owner (so it cannot
//! make a dual-owner sample) and not a non-owner (so a sample with an unknown node is
//! counted in `unknown_samples`, and a trial with any fails: a zero dual-owner count means
//! nothing if the lab could not look).
//!
//! The sampling error bound: a sample does not see every node at one instant but within
//! its *spread*, from the first node's read start to the last node's read end (reported
//! per run as `owner_sample_spread_ms` p50/p99/max). Two owners in one sample were each an
//! owner at instants at most that far apart; and an ownership change, or a dual-owner
//! interval, shorter than the period (10 ms) plus the spread can fall between two samples.
//!
//! ARP: every `arp_every`, `arping` from the client namespace sends one request for the
//! overlay IP and records every MAC that answered within 100 ms (it waits for a second
//! reply, `-C 2`, so that two nodes answering at once are both seen).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::guard::{GuardReader, GuardState};
use crate::netns::NsHandle;

/// How long the collector waits for a node's read of one tick before it records that node
/// as unknown in that sample.
pub const DEADLINE: Duration = Duration::from_millis(500);

/// One node's read in one tick: when it ran (lab ms), whether the address was on its up
/// `eth0` (`None`: could not be read), and its guard's state for the address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeRead {
    pub from: f64,
    pub to: f64,
    pub present: Option<bool>,
    pub guard: GuardState,
}

impl NodeRead {
    /// `Some(owner?)`, or `None` when this read cannot tell (see the module doc).
    pub fn owner(&self) -> Option<bool> {
        match (self.present?, self.guard) {
            (false, _) => Some(false),
            (true, GuardState::Fenced) => Some(false),
            (true, GuardState::Unknown) => None,
            (true, _) => Some(true),
        }
    }
}

/// One tick: for each node, whether it owned the overlay IP (only known owners), whether
/// its read could not tell, whether the address was on its up link, and its guard's state.
#[derive(Debug, Clone)]
pub struct OwnerSample {
    /// The first node's read start (the tick's time when no node was read).
    pub at: f64,
    /// Known owners: `present[i] && guard[i]` not fenced, and the read could tell.
    pub owners: Vec<bool>,
    /// Nodes whose read could not tell (neither owner nor non-owner).
    pub unknown: Vec<bool>,
    pub present: Vec<bool>,
    pub guard: Vec<GuardState>,
    /// From the first read's start to the last read's end, ms (0 with fewer than one read).
    pub spread: f64,
    /// Per node, (start, end) of its read; `None` when it did not deliver one.
    pub reads: Vec<Option<(f64, f64)>>,
}

impl OwnerSample {
    /// A sample from per-node (address present on an up link, guard state), all read at
    /// `at` (for tests and callers that read every node together).
    pub fn new(at: f64, nodes: Vec<(bool, GuardState)>) -> OwnerSample {
        let reads = nodes
            .into_iter()
            .map(|(p, guard)| {
                Some(NodeRead {
                    from: at,
                    to: at,
                    present: Some(p),
                    guard,
                })
            })
            .collect();
        OwnerSample::from_reads(at, reads)
    }

    /// A sample from each node's read in one tick (`None`: no read delivered).
    pub fn from_reads(tick: f64, reads: Vec<Option<NodeRead>>) -> OwnerSample {
        let known = |r: &Option<NodeRead>| r.as_ref().and_then(NodeRead::owner);
        let starts = reads.iter().flatten().map(|r| r.from);
        let first = starts.clone().reduce(f64::min);
        let last = reads.iter().flatten().map(|r| r.to).reduce(f64::max);
        OwnerSample {
            at: first.unwrap_or(tick),
            owners: reads.iter().map(|r| known(r) == Some(true)).collect(),
            unknown: reads.iter().map(|r| known(r).is_none()).collect(),
            present: reads
                .iter()
                .map(|r| r.and_then(|r| r.present).unwrap_or(false))
                .collect(),
            guard: reads
                .iter()
                .map(|r| r.map_or(GuardState::Unknown, |r| r.guard))
                .collect(),
            spread: match (first, last) {
                (Some(a), Some(b)) => (b - a).max(0.0),
                _ => 0.0,
            },
            reads: reads.iter().map(|r| r.map(|r| (r.from, r.to))).collect(),
        }
    }

    /// Known owners.
    pub fn count(&self) -> usize {
        self.owners.iter().filter(|o| **o).count()
    }

    /// Whether any node's read could not tell.
    pub fn has_unknown(&self) -> bool {
        self.unknown.iter().any(|u| *u)
    }

    /// Nodes holding the address on an up link while their guard fences it.
    pub fn fenced_holders(&self) -> usize {
        self.present
            .iter()
            .zip(&self.guard)
            .filter(|(p, g)| **p && **g == GuardState::Fenced)
            .count()
    }
}

#[derive(Debug, Clone)]
pub struct ArpSample {
    pub at: f64,
    pub macs: Vec<String>,
}

pub struct Samplers {
    stop: Arc<AtomicBool>,
    pub owners: Arc<Mutex<Vec<OwnerSample>>>,
    pub arp: Arc<Mutex<Vec<ArpSample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Whether `ip` is on `eth0` with the link running, in the calling thread's namespace;
/// `None` when the kernel could not be asked.
fn owns(ip: Ipv4Addr) -> Option<bool> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = false;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned; each node is valid until freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != b"eth0" {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        if family != libc::AF_INET {
            continue;
        }
        // SAFETY: AF_INET means sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let running = ifa.ifa_flags & (libc::IFF_RUNNING as u32) != 0;
        if addr == ip && running {
            found = true;
        }
    }
    // SAFETY: frees the list returned by getifaddrs above.
    unsafe { libc::freeifaddrs(head) };
    Some(found)
}

/// The common schedule: tick `k` is due at `start + k · every`.
#[derive(Clone, Copy)]
struct Ticks {
    start: Instant,
    every: Duration,
}

impl Ticks {
    fn at(&self, k: u64) -> Instant {
        self.start + self.every * k as u32
    }

    /// The latest tick due at `now`.
    fn current(&self, now: Instant) -> u64 {
        let e = self.every.as_nanos().max(1);
        (now.saturating_duration_since(self.start).as_nanos() / e) as u64
    }
}

type Delivery = (u64, usize, NodeRead);

/// Node `i`'s reader: enters `ns` once, then reads every tick until `stop`. A reader that
/// falls more than [`DEADLINE`] behind jumps to the current tick (the collector has recorded
/// the missed ones as unknown).
fn spawn_reader(
    i: usize,
    ns: NsHandle,
    overlay: Ipv4Addr,
    clock: Clock,
    ticks: Ticks,
    stop: Arc<AtomicBool>,
    out: Sender<Delivery>,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(format!("lab-owner-{}", i + 1))
        .spawn(move || {
            let entered = ns.enter().is_ok();
            // Opened on its first read, from inside this namespace.
            let mut guard = GuardReader::new(overlay);
            let mut k = 1;
            while !stop.load(Ordering::Relaxed) {
                let due = ticks.at(k);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                } else if now - due > DEADLINE {
                    k = ticks.current(now);
                    continue;
                }
                let from = clock.now();
                let (present, g) = if entered {
                    let p = owns(overlay);
                    (p, guard.read())
                } else {
                    (None, GuardState::Unknown)
                };
                let read = NodeRead {
                    from,
                    to: clock.now(),
                    present,
                    guard: g,
                };
                if out.send((k, i, read)).is_err() {
                    return;
                }
                k += 1;
            }
        })
        .map_err(|e| format!("owner reader thread: {e}"))
}

/// Puts the reads of each tick together, in tick order: a sample is recorded once every
/// node delivered its read, or [`DEADLINE`] after its tick with the missing ones unknown.
fn collect(
    n: usize,
    clock: Clock,
    ticks: Ticks,
    stop: &AtomicBool,
    reads: &Receiver<Delivery>,
    out: &Mutex<Vec<OwnerSample>>,
) {
    let mut pending: BTreeMap<u64, Vec<Option<NodeRead>>> = BTreeMap::new();
    let mut next = 1;
    while !stop.load(Ordering::Relaxed) {
        match reads.recv_timeout(ticks.every) {
            Ok((k, i, r)) if k >= next => {
                pending.entry(k).or_insert_with(|| vec![None; n])[i] = Some(r);
            }
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        loop {
            let complete = pending
                .get(&next)
                .is_some_and(|v| v.iter().all(Option::is_some));
            if !complete && ticks.at(next) + DEADLINE > now {
                break;
            }
            let got = pending.remove(&next).unwrap_or_else(|| vec![None; n]);
            let sample = OwnerSample::from_reads(clock.ms(ticks.at(next)), got);
            if let Ok(mut v) = out.lock() {
                v.push(sample);
            }
            next += 1;
        }
    }
}

impl Samplers {
    pub fn start(
        clock: Clock,
        nodes: &[String],
        client: &str,
        overlay: Ipv4Addr,
        every: Duration,
        arp_every: Duration,
    ) -> Result<Samplers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let owners = Arc::new(Mutex::new(Vec::new()));
        let arp = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<NsHandle> = nodes
            .iter()
            .map(|ns| NsHandle::open(ns).map_err(|e| format!("open netns {ns}: {e}")))
            .collect::<Result<_, _>>()?;
        let ticks = Ticks {
            start: Instant::now(),
            every,
        };
        let mut threads = Vec::new();
        let (tx, rx) = channel();
        let n = handles.len();
        for (i, h) in handles.into_iter().enumerate() {
            let t = spawn_reader(i, h, overlay, clock, ticks, stop.clone(), tx.clone())?;
            threads.push(t);
        }
        drop(tx);
        {
            let (stop, owners) = (stop.clone(), owners.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("lab-owners".into())
                    .spawn(move || collect(n, clock, ticks, &stop, &rx, &owners))
                    .map_err(|e| format!("sampler thread: {e}"))?,
            );
        }
        threads.push(spawn_arp(
            clock,
            client.to_owned(),
            overlay,
            arp_every,
            stop.clone(),
            arp.clone(),
        )?);
        Ok(Samplers {
            stop,
            owners,
            arp,
            threads,
        })
    }

    pub fn owners_between(&self, from: f64, to: f64) -> Vec<OwnerSample> {
        crate::clock::between(&self.owners, from, to)
    }

    pub fn arp_between(&self, from: f64, to: f64) -> Vec<ArpSample> {
        crate::clock::between(&self.arp, from, to)
    }

    /// The latest owner sample.
    pub fn latest(&self) -> Option<OwnerSample> {
        self.owners.lock().ok().and_then(|v| v.last().cloned())
    }
}

fn spawn_arp(
    clock: Clock,
    client: String,
    overlay: Ipv4Addr,
    arp_every: Duration,
    stop: Arc<AtomicBool>,
    arp: Arc<Mutex<Vec<ArpSample>>>,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("lab-arp".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let at = clock.now();
                let out = Command::new("ip")
                    .args(["netns", "exec", &client, "arping", "-i", "eth0"])
                    .args(["-c", "1", "-C", "2", "-w", "0.1", &overlay.to_string()])
                    .output();
                let macs = out
                    .map(|o| parse_arping(&String::from_utf8_lossy(&o.stdout)))
                    .unwrap_or_default();
                if let Ok(mut v) = arp.lock() {
                    v.push(ArpSample { at, macs });
                }
                std::thread::sleep(arp_every);
            }
        })
        .map_err(|e| format!("arp thread: {e}"))
}

/// MACs in arping's "... from IP (MAC): ..." or "[MAC]" reply lines.
pub fn parse_arping(out: &str) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for line in out.lines() {
        for word in line.split_whitespace() {
            let w = word.trim_matches(|c: char| "()[],".contains(c));
            let is_mac = w.len() == 17
                && w.split(':').count() == 6
                && w.split(':')
                    .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
            if is_mac && !macs.iter().any(|m| m.eq_ignore_ascii_case(w)) {
                macs.push(w.to_ascii_lowercase());
            }
        }
    }
    macs
}

impl Drop for Samplers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl crate::clock::Stamped for OwnerSample {
    fn stamp(&self) -> f64 {
        self.at
    }
}

impl crate::clock::Stamped for ArpSample {
    fn stamp(&self) -> f64 {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::parse_arping;

    #[test]
    fn arping_reply_lines() {
        let out = "ARPING 10.77.0.100\n60 bytes from 5a:1b:2c:3d:4e:5f (10.77.0.100): index=0 time=20.1 usec\n60 bytes from AA:BB:CC:DD:EE:FF (10.77.0.100): index=1 time=1 usec\n\n--- 10.77.0.100 statistics ---\n";
        assert_eq!(
            parse_arping(out),
            vec!["5a:1b:2c:3d:4e:5f".to_owned(), "aa:bb:cc:dd:ee:ff".into()]
        );
        assert!(parse_arping("Timeout\n").is_empty());
    }
}
