//! `vip_guard`: loads the eBPF object, attaches the XDP fence to the node's interface and
//! flips ownership of an overlay address with a single map write.
//!
//! What happens when the agent dies: the XDP program is attached through a bpf_link held by
//! this process (not pinned), so the kernel detaches it when the last fd closes — on a clean
//! drop and equally on SIGKILL. The overlay address itself is plain interface state and stays.
//! So a killed agent leaves an unguarded address behind; that is deliberate: the agent dying
//! must not take a healthy primary's address away (SQL Server, not the agent, decides who is
//! primary), and pinning would keep whatever state the guard last had, which is no safer. The
//! fence is re-established at the next start, because a new executor attaches the guard with
//! every configured address `FENCED` before the controller decides anything, and an address
//! that a dead agent left behind is removed by the `release` the controller issues unless its
//! replica is PRIMARY. (deploy/ may add an `ExecStopPost=` that removes it on unit stop.)

use std::net::IpAddr;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{Xdp, XdpMode},
};
use tdsvip_ebpf_common::{
    MAP_CONNECTIONS, MAP_VIP_COUNTERS, MAP_VIP_STATE, PROG_VIP_GUARD, VipCounters, VipKey, VipState,
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
    states: HashMap<MapData, VipKey, u32>,
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

    /// Puts an address under the guard with the given ownership and zeroed counters.
    pub fn register(&mut self, ip: IpAddr, owner: bool) -> Result<(), GuardError> {
        let key = vip_key(ip);
        let zeros = PerCpuValues::try_from(vec![VipCounters::default(); self.cpus])
            .map_err(|err| GuardError::Cpus(format!("per-CPU counters: {err}")))?;
        self.counters
            .insert(key, zeros, 0)
            .map_err(|source| GuardError::Map {
                name: MAP_VIP_COUNTERS,
                source,
            })?;
        self.set_owner(ip, owner)
    }

    /// Flips ownership: one `bpf_map_update_elem`, effective for the next packet.
    pub fn set_owner(&mut self, ip: IpAddr, owner: bool) -> Result<(), GuardError> {
        let state = if owner {
            VipState::OWNER
        } else {
            VipState::FENCED
        };
        self.states
            .insert(vip_key(ip), state, 0)
            .map_err(|source| GuardError::Map {
                name: MAP_VIP_STATE,
                source,
            })
    }

    /// `Some(true)` when owned, `Some(false)` when fenced, `None` when not guarded.
    pub fn is_owner(&self, ip: IpAddr) -> Result<Option<bool>, GuardError> {
        match self.states.get(&vip_key(ip), 0) {
            Ok(state) => Ok(Some(state == VipState::OWNER)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(GuardError::Map {
                name: MAP_VIP_STATE,
                source,
            }),
        }
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
