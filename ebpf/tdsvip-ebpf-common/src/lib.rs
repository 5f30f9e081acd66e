//! Map layouts shared by the kernel programs in `tdsvip-ebpf` and the loader in `tdsvip-node`.
//!
//! Both sides must agree on these bytes exactly, so every type is `#[repr(C)]`, has no implicit
//! padding and stores ports and addresses in one documented byte order. IPv4 addresses are kept
//! as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) so that one key type serves both families and
//! the kernel programs need a single map per purpose.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

/// Map from overlay address to [`VipEntry`]: read by `vip_guard` and `conn_track`.
pub const MAP_VIP_STATE: &str = "VIP_STATE";
/// Per-CPU map from overlay address to [`VipCounters`], written by `vip_guard`.
pub const MAP_VIP_COUNTERS: &str = "VIP_COUNTERS";
/// LRU map from [`ConnKey`] to [`ConnState`], written by `conn_track`.
pub const MAP_CONNECTIONS: &str = "CONNECTIONS";
/// Map from server port (host order) to 1: the ports whose connections `conn_track` keeps.
pub const MAP_TRACKED_PORTS: &str = "TRACKED_PORTS";

/// The layout of the maps above as pinned on bpffs (names, key and value types, capacities).
/// The loader pins under a directory named after it, so an agent whose maps differ never
/// adopts another build's: bump it with any change to a map's name, key or value.
pub const PIN_LAYOUT_VERSION: u32 = 1;

/// Names of the programs in the object file.
pub const PROG_VIP_GUARD: &str = "vip_guard";
pub const PROG_CONN_TRACK: &str = "conn_track";

/// Capacity of [`MAP_VIP_STATE`] and [`MAP_VIP_COUNTERS`]: an agent owns a handful of addresses.
pub const MAX_VIPS: u32 = 64;
/// Default capacity of [`MAP_CONNECTIONS`]; the loader may change it before loading.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 65_536;
/// Capacity of [`MAP_TRACKED_PORTS`].
pub const MAX_TRACKED_PORTS: u32 = 16;

/// Values of [`VipEntry::state`]. A `u32` rather than an enum because the kernel side reads raw
/// map memory that userspace may have written with any value; unknown values mean "drop".
pub struct VipState;

impl VipState {
    /// Not the owner: drop packets to the address and ARP / neighbour solicitations for it.
    pub const FENCED: u32 = 0;
    /// The owner: let everything through (and count it) until the lease runs out.
    pub const OWNER: u32 = 1;
}

/// Value of [`MAP_VIP_STATE`]: ownership, and until when it holds.
///
/// The lease is what keeps a frozen or dead agent from leaving an owner nobody guards: the
/// agent extends it from each PRIMARY verdict of its replica, and once
/// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) reaches `lease_expires_ns` the guard treats the
/// entry as fenced, by itself, in the kernel. [`VipEntry::NO_LEASE`] means ownership never
/// expires on its own (an agent configured without a lease).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipEntry {
    /// A [`VipState`] value.
    pub state: u32,
    /// Explicit padding, always 0, so the layout has no hidden bytes.
    pub reserved: u32,
    /// CLOCK_MONOTONIC nanoseconds at which ownership lapses.
    pub lease_expires_ns: u64,
}

impl VipEntry {
    pub const NO_LEASE: u64 = u64::MAX;

    pub const fn fenced() -> Self {
        Self {
            state: VipState::FENCED,
            reserved: 0,
            lease_expires_ns: 0,
        }
    }

    /// The owner until `lease_expires_ns` ([`VipEntry::NO_LEASE`]: for good).
    pub const fn owner_until(lease_expires_ns: u64) -> Self {
        Self {
            state: VipState::OWNER,
            reserved: 0,
            lease_expires_ns,
        }
    }

    /// Whether the guard lets traffic for the address through at `now_ns`.
    #[inline(always)]
    pub const fn passes(&self, now_ns: u64) -> bool {
        self.state == VipState::OWNER && now_ns < self.lease_expires_ns
    }
}

/// An overlay address: 16 bytes in network order, IPv4 as `::ffff:a.b.c.d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u8; 16],
}

impl VipKey {
    /// The IPv4-mapped key of an IPv4 address given as its four network-order bytes.
    #[inline(always)]
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        Self {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2],
                octets[3],
            ],
        }
    }

    #[inline(always)]
    pub const fn from_v6(octets: [u8; 16]) -> Self {
        Self { addr: octets }
    }
}

/// Per-address packet and byte counters, one copy per CPU (summed by userspace), so the XDP
/// program never needs atomics on its hot path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipCounters {
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

/// One TCP connection to an overlay address, seen from the server: ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConnKey {
    /// The overlay address (IPv4-mapped for IPv4).
    pub vip: [u8; 16],
    /// The client's address, in the same form as `vip`.
    pub client: [u8; 16],
    pub vip_port: u16,
    pub client_port: u16,
}

/// What `conn_track` last saw of a connection. Sequence numbers are the *next* sequence number
/// each side will send (`seq + payload length`), i.e. what the other side acknowledges.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnState {
    /// Next sequence number expected from the client.
    pub client_next_seq: u32,
    /// Last acknowledgement number sent by the client.
    pub client_ack: u32,
    /// Next sequence number expected from the server.
    pub server_next_seq: u32,
    /// Last acknowledgement number sent by the server.
    pub server_ack: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet in either direction.
    pub last_seen_ns: u64,
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock `bpf_ktime_get_ns` reads, against which
/// [`VipEntry::lease_expires_ns`] runs out. For userspace (the loader, and whoever reads the
/// map to tell whether an address passes).
#[cfg(feature = "user")]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail (and a zeroed timespec would only make a lease look expired).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all five types are `#[repr(C)]`, `Copy`, contain only integers and byte arrays,
    // and have no padding (asserted below), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnState {}

    const _: () = assert!(core::mem::size_of::<super::VipKey>() == 16);
    const _: () = assert!(core::mem::size_of::<super::VipEntry>() == 16);
    const _: () = assert!(core::mem::size_of::<super::VipCounters>() == 32);
    const _: () = assert!(core::mem::size_of::<super::ConnKey>() == 36);
    const _: () = assert!(core::mem::size_of::<super::ConnState>() == 24);
}
