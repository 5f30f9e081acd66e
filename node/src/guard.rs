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
//! What happens when the agent dies: with a pin directory ([`PinDir`], what the agent always
//! uses) the XDP link and the maps are pinned on bpffs, so the program stays attached and the
//! lease keeps running after the process is gone, SIGKILL included: the node stops answering
//! for the address by itself when the lease runs out, and the next agent takes the same
//! link and maps over (`pins.rs`). Without one (a library user's choice, and some tests) the
//! link belongs to this process and the kernel detaches it when the last fd closes, lease and
//! all, leaving an address on the interface unguarded until an agent starts again. Either way
//! a new executor writes every configured address's entry before the controller decides
//! anything: FENCED, or OWNER for an address it adopts (its replica was just seen PRIMARY).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{
        Xdp, XdpMode,
        links::FdLink,
        xdp::{XdpLink, XdpLinkId},
    },
    util::KernelVersion,
};
use tdsvip_ebpf_common::{
    ConnKey, ConnState, MAP_CONNECTIONS, MAP_TRACKED_PORTS, MAP_VIP_COUNTERS, MAP_VIP_STATE,
    MAX_TRACKED_PORTS, MAX_VIPS, PROG_VIP_GUARD, VipCounters, VipEntry, VipKey, monotonic_ns,
};
use thiserror::Error;

use crate::ebpf::{self, BuiltWithoutEbpf};
use crate::pins::{LINK_XDP, MapLayout, PinDir};

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
    #[error("pinning the guard on bpffs: {0}")]
    Pin(String),
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
    /// With `pins`, the maps and the link are pinned there (or taken over from there).
    pub fn attach(
        ifindex: u32,
        mode: XdpAttachMode,
        max_connections: u32,
        pins: Option<&PinDir>,
    ) -> Result<Self, GuardError> {
        let bytes = ebpf::object_bytes()?;
        let max_connections = max_connections.max(1);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_CONNECTIONS, max_connections);
        if let Some(pins) = pins {
            pins.drop_if_mismatched(&pinned_layout(max_connections))?;
            for layout in pinned_layout(max_connections) {
                loader.map_pin_path(layout.name, pins.map_path(layout.name));
            }
        }
        let mut ebpf = loader.load(bytes)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROG_VIP_GUARD)
            .ok_or(GuardError::Missing(PROG_VIP_GUARD))?
            .try_into()
            .map_err(xdp_error)?;
        program.load().map_err(xdp_error)?;
        match pins {
            // The link stays in the program's keeping, detached when it is dropped.
            None => {
                attach_xdp(program, ifindex, mode)?;
            }
            Some(pins) => attach_pinned_xdp(program, ifindex, mode, pins)?,
        }
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

    /// Puts an address under the guard with the given entry. Its counters start at zero,
    /// unless a pinned map already counts for it (a previous agent's): they go on from there.
    pub fn register(&mut self, ip: IpAddr, entry: VipEntry) -> Result<(), GuardError> {
        let key = vip_key(ip);
        let counted = match self.counters.get(&key, 0) {
            Ok(_) => true,
            Err(aya::maps::MapError::KeyNotFound) => false,
            Err(source) => {
                return Err(GuardError::Map {
                    name: MAP_VIP_COUNTERS,
                    source,
                });
            }
        };
        if !counted {
            let zeros = PerCpuValues::try_from(vec![VipCounters::default(); self.cpus])
                .map_err(|err| GuardError::Cpus(format!("per-CPU counters: {err}")))?;
            self.counters
                .insert(key, zeros, 0)
                .map_err(|source| GuardError::Map {
                    name: MAP_VIP_COUNTERS,
                    source,
                })?;
        }
        self.set(ip, entry)
    }

    /// Takes every address but `keep` out from under the guard: a pinned map may hold a
    /// previous configuration's. The kernel then neither passes nor drops for them on the
    /// guard's account.
    pub fn unregister_others(&mut self, keep: &[IpAddr]) -> Result<Vec<IpAddr>, GuardError> {
        let keep: Vec<VipKey> = keep.iter().map(|ip| vip_key(*ip)).collect();
        let stale: Vec<VipKey> = self
            .states
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !keep.contains(key))
            .collect();
        let mut removed = Vec::new();
        for key in stale {
            let map_error = |name| move |source| GuardError::Map { name, source };
            self.states.remove(&key).map_err(map_error(MAP_VIP_STATE))?;
            let _ = self.counters.remove(&key);
            removed.push(crate::conn_track::ip_from_key(key.addr));
        }
        Ok(removed)
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

fn xdp_error(source: aya::programs::ProgramError) -> GuardError {
    GuardError::Program {
        name: PROG_VIP_GUARD,
        source,
    }
}

/// The maps as this build pins them, to compare with what is pinned.
fn pinned_layout(max_connections: u32) -> [MapLayout; 4] {
    const fn size<T>() -> u32 {
        std::mem::size_of::<T>() as u32
    }
    [
        MapLayout {
            name: MAP_VIP_STATE,
            key_size: size::<VipKey>(),
            value_size: size::<VipEntry>(),
            max_entries: MAX_VIPS,
        },
        MapLayout {
            name: MAP_VIP_COUNTERS,
            key_size: size::<VipKey>(),
            value_size: size::<VipCounters>(),
            max_entries: MAX_VIPS,
        },
        MapLayout {
            name: MAP_CONNECTIONS,
            key_size: size::<ConnKey>(),
            value_size: size::<ConnState>(),
            max_entries: max_connections,
        },
        MapLayout {
            name: MAP_TRACKED_PORTS,
            key_size: size::<u16>(),
            value_size: size::<u8>(),
            max_entries: MAX_TRACKED_PORTS,
        },
    ]
}

/// Attaches `program` to the interface's XDP hook. A link unpinned just before (another
/// layout's, a replaced one) is freed by the kernel a moment later (`bpf_link_put` defers it
/// to a workqueue), so the hook may still be busy: EBUSY is retried for up to
/// [`HOOK_FREE_WAIT`]. Another program's attachment stays busy and fails after that wait.
fn attach_xdp(
    program: &mut Xdp,
    ifindex: u32,
    mode: XdpAttachMode,
) -> Result<XdpLinkId, GuardError> {
    let deadline = Instant::now() + HOOK_FREE_WAIT;
    loop {
        match program.attach_to_if_index(ifindex, mode.to_aya()) {
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.map_err(xdp_error),
        }
    }
}

/// How long [`attach_xdp`] waits for a just-unpinned link to leave the hook.
const HOOK_FREE_WAIT: Duration = Duration::from_secs(1);
/// Swaps this program into the pinned link when there is one (atomically: the previous
/// agent's program guards until this one does), else attaches and pins a new link.
fn attach_pinned_xdp(
    program: &mut Xdp,
    ifindex: u32,
    mode: XdpAttachMode,
    pins: &PinDir,
) -> Result<(), GuardError> {
    if let Some(link) = pins.existing_link(LINK_XDP) {
        let swapped = XdpLink::try_from(link)
            .map_err(|err| err.to_string())
            .and_then(|link| program.attach_to_link(link).map_err(|err| err.to_string()));
        match swapped {
            Ok(_) => return Ok(()),
            Err(err) => {
                tracing::warn!(%err, "the pinned XDP link cannot take this program (its interface was replaced?): attaching a new one");
                pins.remove(LINK_XDP);
            }
        }
    }
    // bpf_link for XDP came with 5.9; before it aya falls back to netlink, which cannot be
    // pinned and would outlive the agent unguarded by any lease.
    if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(5, 9, 0)) {
        return Err(GuardError::Pin(
            "this kernel has no bpf_link for XDP (Linux 5.9): the guard could not outlive the agent".into(),
        ));
    }
    let id = attach_xdp(program, ifindex, mode)?;
    let link = program.take_link(id).map_err(xdp_error)?;
    let link = FdLink::try_from(link).map_err(|err| {
        GuardError::Pin(format!("the XDP attachment is not a bpf_link ({err}): it cannot be pinned; `ip link set dev <interface> xdp off` removes it"))
    })?;
    pins.pin_link(LINK_XDP, link)
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
