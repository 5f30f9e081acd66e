//! Who owns the overlay IP, sampled from the nodes' own namespaces, and which MAC answers
//! ARP for it, seen from the client.
//!
//! Owner samples: one thread enters each node namespace in turn every `every` (10 ms) and
//! asks the kernel (`getifaddrs`, a netlink dump) whether the overlay address is on `eth0`
//! and whether `eth0` has its link (IFF_RUNNING: a node whose link is down cannot answer
//! for the address, whatever its address list says), then reads the eBPF guard's state for
//! the address ([`crate::guard`]: one netlink request for the XDP program id and one map
//! lookup). A node *owns* the address in a sample when it is present with the link up and
//! the guard does not fence it (OWNER, or no guard at all, as after the agent was killed).
//! One sample holds every node at the same tick, so two owners in one sample is a dual-owner
//! sample; a node holding the address while fenced is a *fenced holder*.
//!
//! ARP: every `arp_every`, `arping` from the client namespace sends one request for the
//! overlay IP and records every MAC that answered within 100 ms (it waits for a second
//! reply, `-C 2`, so that two nodes answering at once are both seen).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::guard::{GuardReader, GuardState};
use crate::netns::NsHandle;

/// One tick: for each node, whether it owned the overlay IP, whether the address was on its
/// up link, and its guard's state for the address.
#[derive(Debug, Clone)]
pub struct OwnerSample {
    pub at: f64,
    /// `present[i] && guard[i].passes()`.
    pub owners: Vec<bool>,
    pub present: Vec<bool>,
    pub guard: Vec<GuardState>,
}

impl OwnerSample {
    /// A sample from per-node (address present on an up link, guard state).
    pub fn new(at: f64, nodes: Vec<(bool, GuardState)>) -> OwnerSample {
        let owners = nodes.iter().map(|(p, g)| *p && g.passes()).collect();
        let (present, guard) = nodes.into_iter().unzip();
        OwnerSample {
            at,
            owners,
            present,
            guard,
        }
    }

    pub fn count(&self) -> usize {
        self.owners.iter().filter(|o| **o).count()
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

/// Whether `ip` is on `eth0` with the link running, in the calling thread's namespace.
fn owns(ip: Ipv4Addr) -> bool {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return false;
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
    found
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
        let mut threads = Vec::new();
        {
            let (stop, owners) = (stop.clone(), owners.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("lab-owners".into())
                    .spawn(move || {
                        // Each reader opens its netlink socket on its first read, made while
                        // this thread is in that node's namespace.
                        let mut guards: Vec<GuardReader> =
                            handles.iter().map(|_| GuardReader::new(overlay)).collect();
                        let mut next = std::time::Instant::now();
                        while !stop.load(Ordering::Relaxed) {
                            let at = clock.now();
                            let o: Vec<(bool, GuardState)> = handles
                                .iter()
                                .zip(guards.iter_mut())
                                .map(|(h, g)| {
                                    if h.enter().is_ok() {
                                        (owns(overlay), g.read())
                                    } else {
                                        (false, GuardState::Unknown)
                                    }
                                })
                                .collect();
                            if let Ok(mut v) = owners.lock() {
                                v.push(OwnerSample::new(at, o));
                            }
                            next += every;
                            let now = std::time::Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            } else {
                                next = now;
                            }
                        }
                    })
                    .map_err(|e| format!("sampler thread: {e}"))?,
            );
        }
        {
            let (stop, arp, client) = (stop.clone(), arp.clone(), client.to_owned());
            threads.push(
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
                    .map_err(|e| format!("arp thread: {e}"))?,
            );
        }
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
