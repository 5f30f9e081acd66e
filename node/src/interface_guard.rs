//! One interface's eBPF data plane, `vip_guard` and `conn_track` with their maps, shared by
//! every AG's executor on that interface.
//!
//! Why shared: an interface has one XDP hook (one bpf_link), and the pins are per interface,
//! so a second guard could not attach beside the first; yet several AGs per SQL Server
//! instance, all on one node interface, is the common case. So the agent attaches one guard
//! per interface with every AG's addresses and ports, and each AG's executor writes only the
//! entries of its own addresses: ownership of AG1 moves without touching AG2's. Entries of
//! addresses that no AG configures any more (an earlier configuration's, in pinned maps) are
//! removed at attach; the others stay until their executor registers them.
//!
//! A plain mutex is enough: every use is a few map syscalls, never held across an await.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::conn_track::ConnTracker;
use crate::executor::{NodeConfig, NodeError};
use crate::guard::{VipGuard, XdpAttachMode};
use crate::pins::PinDir;
use crate::{announce, caps};

/// What one interface's guard is attached with.
#[derive(Debug, Clone)]
pub struct GuardSpec<'a> {
    pub interface: &'a str,
    pub xdp_mode: XdpAttachMode,
    pub max_tracked_connections: u32,
    /// Pin the links and maps here (`pins.rs`); `None`: they die with the process.
    pub pin_dir: Option<&'a Path>,
    /// Every overlay address guarded on this interface, all AGs'.
    pub addresses: Vec<IpAddr>,
    /// Every AG's server port, for `conn_track`.
    pub tracked_ports: Vec<u16>,
}

impl<'a> GuardSpec<'a> {
    /// The spec of a guard for `config`'s addresses alone (one executor, one AG).
    pub fn of(config: &'a NodeConfig) -> GuardSpec<'a> {
        GuardSpec {
            interface: &config.interface,
            xdp_mode: config.xdp_mode,
            max_tracked_connections: config.max_tracked_connections,
            pin_dir: config.pin_dir.as_deref(),
            addresses: config.addresses.iter().map(|a| a.ip).collect(),
            tracked_ports: config.tracked_ports.clone(),
        }
    }
}

/// The attached programs of one interface.
pub struct InterfaceGuard {
    // Declared first: the tracker's maps come from the guard's object.
    pub(crate) tracker: ConnTracker,
    pub(crate) guard: VipGuard,
}

/// An [`InterfaceGuard`] shared by the executors of one interface.
#[derive(Clone)]
pub struct SharedGuard(Arc<Mutex<InterfaceGuard>>);

impl SharedGuard {
    /// Loads and attaches both programs on `spec.interface` (in the caller's network
    /// namespace), pinned when `spec.pin_dir` says so. Addresses are registered by the
    /// executors; entries of addresses not in `spec.addresses` are removed.
    pub fn attach(spec: &GuardSpec<'_>) -> Result<SharedGuard, NodeError> {
        caps::check(caps::REQUIRED_WITH_EBPF)?;
        let interface = announce::find_interface(spec.interface)?;
        let pins = match spec.pin_dir {
            Some(root) => Some(PinDir::open(root, spec.interface)?),
            None => None,
        };
        let mut guard = VipGuard::attach(
            interface.index,
            spec.xdp_mode,
            spec.max_tracked_connections,
            pins.as_ref(),
        )?;
        let removed = guard.unregister_others(&spec.addresses)?;
        if !removed.is_empty() {
            tracing::info!(
                ?removed,
                "pinned guard entries of addresses no longer configured removed"
            );
        }
        let mut ports = spec.tracked_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let tracker = ConnTracker::attach(&mut guard, spec.interface, &ports, pins.as_ref())?;
        Ok(SharedGuard(Arc::new(Mutex::new(InterfaceGuard {
            tracker,
            guard,
        }))))
    }

    /// The programs, for a few map operations. A holder that panicked left the maps as
    /// they were (each write is one syscall), so a poisoned lock is used as it is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, InterfaceGuard> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
