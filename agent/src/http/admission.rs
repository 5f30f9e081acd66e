//! Which connections the HTTP listener keeps when it has too many: the admission table.
//!
//! Why this policy (issue 13, "HTTP that cannot be starved"). The questions that matter —
//! a peer's authenticated `GET /status` before a handover (deadline 50 ms by default), a load
//! balancer's `GET /primary` — come on a fresh connection whose request head follows the
//! TCP handshake at once, and are answered synchronously from memory (`routes.rs` does no
//! I/O). So the only capacity a client can hold is a connection *waiting for its head*, and
//! that is exactly where nobody can tell a peer from an attacker: the path and the token are
//! in the head. A reserved pool of slots cannot be assigned before the head is read, and a
//! pool for "heads already read" would protect nothing, because nothing waits there.
//!
//! So nothing is reserved by identity; instead a newcomer is **always admitted** (within
//! its address's cap, below), and when
//! the table is full the connection that has waited longest for its head is closed to make
//! room (oldest first, not at random, so that a newcomer gets the most time). A flood
//! therefore cannot keep anyone out; it can only shorten how long a silent connection may
//! live, to the time the flood takes to open [`Admission::new`]'s `max_total` new
//! connections. A peer or a load balancer, whose head arrives within microseconds of the
//! handshake, is answered long before that. Refusing newcomers instead (the earlier
//! semaphore, and the kernel's accept backlog behind it) is what let 257 idle
//! connections silence `/healthz` for as long as the header timeout.
//!
//! One address may hold at most `max_per_source` connections (an IPv6 client counts by its
//! /64, which one host usually owns whole); beyond that its newcomer is **refused** (closed
//! at once by the accept loop, before any task or HTTP state exists for it). So one source
//! cannot churn the shared table at all: a flood needs `max_total / max_per_source`
//! addresses before it can close other clients' connections. Refusing rather than
//! displacing that source's oldest, because a flood from one address reconnects thousands
//! of times a second: a legitimate client behind the same address would be displaced again
//! within a millisecond either way, and a refusal is the cheapest thing the listener can do
//! with a connection, so the kernel's accept queue drains fastest, and that queue is what
//! every other client waits in during a flood.
//!
//! Pure bookkeeping here (no I/O, no clock); `mod.rs` closes what this table sheds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Why the listener closed a connection its client had not finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// A newcomer refused: its address already held `max_per_source` connections.
    PerSource,
    /// The oldest connection, closed to make room: the listener held `max_total`.
    Full,
}

/// What [`Admission::admit`] decided for a newcomer.
#[derive(Debug)]
pub(crate) enum Admit<H> {
    /// Its address is at its cap: close it at once.
    Refused,
    /// In the table under `id`; `evicted` (if any) was closed to make room.
    Admitted {
        id: u64,
        evicted: Option<Evicted<H>>,
    },
}

/// A connection closed to make room: why, whose, and the handle to close it with.
#[derive(Debug)]
pub(crate) struct Evicted<H> {
    pub(crate) reason: Shed,
    pub(crate) source: IpAddr,
    pub(crate) handle: H,
}

/// The address connections are counted by: IPv4 (also when mapped into IPv6) as it is,
/// IPv6 by its /64.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The open connections, oldest first, with a handle `H` that closes each one.
#[derive(Debug)]
pub(crate) struct Admission<H> {
    max_total: usize,
    max_per_source: usize,
    next_id: u64,
    /// By id; ids grow with every admission, so the first entry is the oldest.
    conns: BTreeMap<u64, (IpAddr, H)>,
    per_source: HashMap<IpAddr, BTreeSet<u64>>,
}

impl<H> Admission<H> {
    /// Both limits are at least 1; `max_per_source` at most `max_total`.
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> Admission<H> {
        let max_total = max_total.max(1);
        Admission {
            max_total,
            max_per_source: max_per_source.clamp(1, max_total),
            next_id: 0,
            conns: BTreeMap::new(),
            per_source: HashMap::new(),
        }
    }

    /// Admits a connection from `peer`, with the handle `make` creates, unless its address
    /// is at its cap; a full table makes room by evicting its oldest connection among those
    /// `had_its_chance` says were already given a chance to present their request (the
    /// oldest of all if none was: a newcomer is never turned away for lack of room).
    pub(crate) fn admit(
        &mut self,
        peer: IpAddr,
        make: impl FnOnce() -> H,
        had_its_chance: impl Fn(&H) -> bool,
    ) -> Admit<H> {
        let source = source_key(peer);
        if self.per_source.get(&source).map_or(0, BTreeSet::len) >= self.max_per_source {
            return Admit::Refused;
        }
        let oldest = if self.conns.len() >= self.max_total {
            self.conns
                .iter()
                .find(|(_, (_, h))| had_its_chance(h))
                .or_else(|| self.conns.iter().next())
                .map(|(&id, _)| id)
        } else {
            None
        };
        let evicted = oldest.and_then(|id| {
            self.remove(id).map(|(source, handle)| Evicted {
                reason: Shed::Full,
                source,
                handle,
            })
        });
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(id, (source, make()));
        self.per_source.entry(source).or_default().insert(id);
        Admit::Admitted { id, evicted }
    }

    /// Forgets a connection that ended (a no-op for one already shed).
    pub(crate) fn release(&mut self, id: u64) {
        self.remove(id);
    }

    fn remove(&mut self, id: u64) -> Option<(IpAddr, H)> {
        let (source, handle) = self.conns.remove(&id)?;
        if let Some(ids) = self.per_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.per_source.remove(&source);
            }
        }
        Some((source, handle))
    }

    /// Connections held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Connections held now from `peer`'s source.
    #[cfg(test)]
    pub(crate) fn held_by(&self, peer: IpAddr) -> usize {
        self.per_source
            .get(&source_key(peer))
            .map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Admits and returns the id and what was evicted; panics on a refusal.
    fn admitted<H>(a: &mut Admission<H>, who: &str, h: H) -> (u64, Option<Evicted<H>>) {
        match a.admit(ip(who), || h, |_| true) {
            Admit::Admitted { id, evicted } => (id, evicted),
            Admit::Refused => panic!("{who} refused"),
        }
    }

    #[test]
    fn a_source_at_its_cap_is_refused_and_others_are_not() {
        let mut a = Admission::new(100, 3);
        let ids: Vec<u64> = (0..3).map(|i| admitted(&mut a, "192.0.2.7", i).0).collect();
        let other = admitted(&mut a, "192.0.2.8", 99).0;
        assert!(matches!(
            a.admit(ip("192.0.2.7"), || 3, |_| true),
            Admit::Refused
        ));
        assert_eq!(a.held_by(ip("192.0.2.7")), 3);
        // One of its connections ended: the next is admitted again.
        a.release(ids[1]);
        assert!(admitted(&mut a, "192.0.2.7", 4).1.is_none());
        a.release(other);
        a.release(other); // twice: a no-op
        assert_eq!(a.held_by(ip("192.0.2.8")), 0);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn a_full_table_admits_the_newcomer_and_evicts_the_oldest_of_anyone() {
        let mut a = Admission::new(4, 2);
        for (i, who) in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .into_iter()
            .enumerate()
        {
            assert!(admitted(&mut a, who, i).1.is_none());
        }
        let shed = admitted(&mut a, "10.0.0.9", 9).1.unwrap();
        assert_eq!((shed.reason, shed.handle), (Shed::Full, 0));
        assert_eq!(shed.source, ip("10.0.0.1"));
        assert_eq!(a.len(), 4);
        let shed = admitted(&mut a, "10.0.0.9", 10).1.unwrap();
        assert_eq!(shed.source, ip("10.0.0.2"));
        // At its cap, the newcomer's address is refused even though others could be evicted.
        assert!(matches!(
            a.admit(ip("10.0.0.9"), || 11, |_| true),
            Admit::Refused
        ));
        assert_eq!(a.held_by(ip("10.0.0.3")), 1);
        assert_eq!(a.held_by(ip("10.0.0.9")), 2);
    }

    #[test]
    fn a_flood_from_one_address_never_takes_more_than_its_share() {
        let mut a = Admission::new(256, 8);
        let (peer_id, _) = admitted(&mut a, "10.0.1.12", u32::MAX);
        let mut refused = 0;
        for i in 0..2_000u32 {
            match a.admit(ip("10.0.1.66"), || i, |_| true) {
                Admit::Refused => refused += 1,
                Admit::Admitted { evicted, .. } => assert!(evicted.is_none()),
            }
        }
        assert_eq!(refused, 2_000 - 8);
        assert_eq!(a.held_by(ip("10.0.1.66")), 8);
        assert_eq!(a.len(), 9);
        // The peer's connection, older than all of them, is still there.
        a.release(peer_id);
        assert_eq!(a.held_by(ip("10.0.1.12")), 0);
    }

    #[test]
    fn a_flood_from_many_addresses_cycles_through_the_oldest() {
        let mut a = Admission::new(256, 8);
        let mut evicted = Vec::new();
        for i in 0..2_000u32 {
            let who = format!("10.1.{}.{}", i / 8 / 250, i / 8 % 250);
            if let Some(e) = admitted(&mut a, &who, i).1 {
                evicted.push(e.handle);
            }
        }
        assert_eq!(a.len(), 256);
        // Oldest first: exactly the first 1744 are gone, in order.
        assert_eq!(evicted, (0..2_000 - 256).collect::<Vec<u32>>());
    }

    #[test]
    fn limits_are_at_least_one_and_per_source_at_most_the_total() {
        let mut a = Admission::new(0, 0);
        assert!(admitted(&mut a, "10.0.0.1", 1).1.is_none());
        assert_eq!(
            admitted(&mut a, "10.0.0.2", 2).1.unwrap().reason,
            Shed::Full
        );
        let mut a = Admission::new(2, 50);
        admitted(&mut a, "10.0.0.1", 1);
        admitted(&mut a, "10.0.0.1", 2);
        assert!(matches!(
            a.admit(ip("10.0.0.1"), || 3, |_| true),
            Admit::Refused
        ));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2:ffff:1:2:3")),
            source_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:3::1")),
            source_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(source_key(ip("::ffff:10.0.0.5")), ip("10.0.0.5"));
        assert_eq!(source_key(ip("10.0.0.5")), ip("10.0.0.5"));
        let mut a = Admission::new(10, 2);
        admitted(&mut a, "2001:db8::1", 1);
        admitted(&mut a, "2001:db8::2", 2);
        assert!(matches!(
            a.admit(ip("2001:db8::ffff:3"), || 3, |_| true),
            Admit::Refused
        ));
        assert!(admitted(&mut a, "2001:db8:0:1::1", 4).1.is_none());
    }

    #[test]
    fn a_connection_not_yet_given_its_chance_is_evicted_last() {
        // Handles are (number, had its chance).
        let mut a = Admission::new(3, 3);
        admitted(&mut a, "10.0.0.1", (0, false));
        admitted(&mut a, "10.0.0.2", (1, true));
        admitted(&mut a, "10.0.0.3", (2, false));
        let chance = |h: &(u32, bool)| h.1;
        let Admit::Admitted { evicted, .. } = a.admit(ip("10.0.0.4"), || (3, false), chance) else {
            panic!("refused")
        };
        assert_eq!(evicted.unwrap().handle.0, 1);
        // None had its chance: the oldest goes, the newcomer is still admitted.
        let Admit::Admitted { evicted, .. } = a.admit(ip("10.0.0.5"), || (4, false), chance) else {
            panic!("refused")
        };
        assert_eq!(evicted.unwrap().handle.0, 0);
    }
}
