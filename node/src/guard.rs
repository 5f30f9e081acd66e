//! `vip_guard`: loads the eBPF object, attaches the XDP fence to the node's interface and
//! flips ownership of an overlay address with a single map write.
//!
//! Ownership carries a lease: the entry says until when (CLOCK_MONOTONIC, the clock
//! `bpf_ktime_get_ns` reads) the owner may pass, and the kernel fences the address by itself
//! once that moment has passed. The agent extends it from its replica's PRIMARY verdicts, so an
//! agent that is frozen (SIGSTOP, a stalled host) stops answering for the address within one
//! lease, while its programs stay attached. Without a lease ([`VipEntry::NO_LEASE`]) ownership
//! lasts until the next write, as before.
//!
//! What happens when the agent dies: the XDP program is attached through a bpf_link held by
//! this process (not pinned), so the kernel detaches it when the last fd closes — on a clean
//! drop and equally on SIGKILL — and the lease goes with it. The overlay address itself is plain
//! interface state and stays. So a killed agent still leaves an unguarded address behind until
//! it restarts (issue #13: pinning the link and the maps is what keeps the lease running after
//! the process is gone). The fence is re-established at the next start, because a new executor
//! attaches the guard with every configured address `FENCED` before the controller decides
//! anything, and an address that a dead agent left behind is removed by the `release` the
//! controller issues unless its replica is PRIMARY.

use std::net::IpAddr;
use std::time::Instant;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{Xdp, XdpMode},
};
use tdsvip_ebpf_common::{
    MAP_CONNECTIONS, MAP_VIP_COUNTERS, MAP_VIP_STATE, PROG_VIP_GUARD, VipCounters, VipEntry,
    VipKey, monotonic_ns,
};
use thiserror::Error;

use crate::ebpf::{self, BuiltWithoutEbpf};

#[derive(Debug, Error)]
pub enum GuardError {
    #[error(transparent)]
    Unavailable(#[from] BuiltWithoutEbpf),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("eBPF object lacks {0}")]
    Missing(&'static str),
    #[error("counting CPUs: {0}")]
    Cpus(String),
    #[error("{0}")]
    Config(String),
    #[error("{0} is not a guarded overlay address")]
    NotGuarded(IpAddr),
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum XdpAttachMode {
    /// Driver mode where the driver supports it, else generic (the kernel decides).
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, a little later in the receive path.
    Generic,
}

impl XdpAttachMode {
    const fn to_aya(self) -> XdpMode {
        match self {
            Self::Auto => XdpMode::Default,
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

/// The loaded object with `vip_guard` attached. Dropping it detaches both programs.
pub struct VipGuard {
    // Declared first so the maps' fds close before the object (and its programs) go.
    states: HashMap<MapData, VipKey, VipEntry>,
    counters: PerCpuHashMap<MapData, VipKey, VipCounters>,
    cpus: usize,
    pub(crate) ebpf: Ebpf,
}

/// Converts an address to the map key form (IPv4-mapped for IPv4).
pub fn vip_key(ip: IpAddr) -> VipKey {
    match ip {
        IpAddr::V4(v4) => VipKey::from_v4(v4.octets()),
        IpAddr::V6(v6) => VipKey::from_v6(v6.octets()),
    }
}

/// Packet and byte counters of one overlay address, summed over CPUs.
pub type Counters = VipCounters;

impl VipGuard {
    /// Loads the object (with room for `max_connections` tracked connections) and attaches
    /// `vip_guard` to `ifindex`. Interface index lookups happen in the caller's namespace.
    pub fn attach(
        ifindex: u32,
        mode: XdpAttachMode,
        max_connections: u32,
    ) -> Result<Self, GuardError> {
        let bytes = ebpf::object_bytes()?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_CONNECTIONS, max_connections.max(1))
            .load(bytes)?;
        let program_error = |source| GuardError::Program {
            name: PROG_VIP_GUARD,
            source,
        };
        let program: &mut Xdp = ebpf
            .program_mut(PROG_VIP_GUARD)
            .ok_or(GuardError::Missing(PROG_VIP_GUARD))?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        program
            .attach_to_if_index(ifindex, mode.to_aya())
            .map_err(program_error)?;
        let states = take_map(&mut ebpf, MAP_VIP_STATE)?;
        let counters = take_map(&mut ebpf, MAP_VIP_COUNTERS)?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, err)| GuardError::Cpus(format!("{what}: {err}")))?;
        Ok(Self {
            states,
            counters,
            cpus,
            ebpf,
        })
    }

    /// Puts an address under the guard with the given entry and zeroed counters.
    pub fn register(&mut self, ip: IpAddr, entry: VipEntry) -> Result<(), GuardError> {
        let key = vip_key(ip);
        let zeros = PerCpuValues::try_from(vec![VipCounters::default(); self.cpus])
            .map_err(|err| GuardError::Cpus(format!("per-CPU counters: {err}")))?;
        self.counters
            .insert(key, zeros, 0)
            .map_err(|source| GuardError::Map {
                name: MAP_VIP_COUNTERS,
                source,
            })?;
        self.set(ip, entry)
    }

    /// Flips ownership or moves its lease: one `bpf_map_update_elem`, effective for the next
    /// packet.
    pub fn set(&mut self, ip: IpAddr, entry: VipEntry) -> Result<(), GuardError> {
        self.states
            .insert(vip_key(ip), entry, 0)
            .map_err(|source| GuardError::Map {
                name: MAP_VIP_STATE,
                source,
            })
    }

    /// The entry of a guarded address (`None`: not guarded).
    pub fn entry(&self, ip: IpAddr) -> Result<Option<VipEntry>, GuardError> {
        match self.states.get(&vip_key(ip), 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(GuardError::Map {
                name: MAP_VIP_STATE,
                source,
            }),
        }
    }

    /// `Some(true)` when the guard passes the address now (owner, lease running),
    /// `Some(false)` when it drops it, `None` when not guarded.
    pub fn is_owner(&self, ip: IpAddr) -> Result<Option<bool>, GuardError> {
        let now = monotonic_ns();
        Ok(self.entry(ip)?.map(|entry| entry.passes(now)))
    }

    pub fn counters(&self, ip: IpAddr) -> Result<Counters, GuardError> {
        let per_cpu = match self.counters.get(&vip_key(ip), 0) {
            Ok(values) => values,
            Err(aya::maps::MapError::KeyNotFound) => return Err(GuardError::NotGuarded(ip)),
            Err(source) => {
                return Err(GuardError::Map {
                    name: MAP_VIP_COUNTERS,
                    source,
                });
            }
        };
        Ok(per_cpu
            .iter()
            .fold(VipCounters::default(), |sum, c| VipCounters {
                passed_packets: sum.passed_packets + c.passed_packets,
                passed_bytes: sum.passed_bytes + c.passed_bytes,
                dropped_packets: sum.dropped_packets + c.dropped_packets,
                dropped_bytes: sum.dropped_bytes + c.dropped_bytes,
            }))
    }
}

pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, GuardError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(GuardError::Missing(name))?;
    T::try_from(map).map_err(|source| GuardError::Map { name, source })
}

/// The CLOCK_MONOTONIC nanoseconds of `at` (an `Instant` in the past or the future).
pub fn monotonic_ns_at(at: Instant) -> u64 {
    let (now_ns, now) = (monotonic_ns(), Instant::now());
    if at >= now {
        let ahead = u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX);
        now_ns.saturating_add(ahead)
    } else {
        let behind = u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX);
        now_ns.saturating_sub(behind)
    }
}
