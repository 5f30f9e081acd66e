//! `conn_track`: attaches the TC program to the interface's ingress and egress and reads the
//! established TCP connections to the overlay addresses it keeps in a bounded LRU map. The
//! list is what a new owner tickles after a takeover (and what a peer hands over); reading it
//! never stops the program from updating it.
//!
//! Like `vip_guard`'s, the TC links are pinned when the guard is (`pins.rs`) and taken over by
//! the next agent, so the connection list survives an agent restart. That needs TCX links
//! (kernel >= 6.6); an older kernel gets netlink filters, which cannot be pinned: there they
//! belong to this process, and a killed agent's filter stays behind, harmlessly writing the
//! same pinned map as its successor's.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use aya::{
    maps::{HashMap, MapData},
    programs::{
        SchedClassifier, TcAttachType,
        links::FdLink,
        tc::{self, SchedClassifierLink},
    },
    util::KernelVersion,
};
use tdsvip_ebpf_common::{
    ConnKey, ConnState, MAP_CONNECTIONS, MAP_TRACKED_PORTS, MAX_TRACKED_PORTS, PROG_CONN_TRACK,
};

use crate::guard::{GuardError, VipGuard, take_map};
use crate::pins::{LINK_TC_EGRESS, LINK_TC_INGRESS, PinDir};

/// One TCP connection between a client and an overlay address.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Connection {
    /// The overlay address and port the client connected to.
    pub server: SocketAddr,
    pub client: SocketAddr,
}

/// A connection as the tracker last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedConnection {
    pub connection: Connection,
    pub state: ConnState,
}

/// Reads back a map address: IPv4-mapped addresses become IPv4 again.
pub fn ip_from_key(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The TC programs' handle on the connection map.
pub struct ConnTracker {
    connections: HashMap<MapData, ConnKey, ConnState>,
}

impl ConnTracker {
    /// Attaches `conn_track` from the guard's object (they share `VIP_STATE`) on ingress and
    /// egress of `interface` and sets the server ports to track. With `pins`, the links are
    /// pinned there or taken over from there (TCX only, see above).
    pub fn attach(
        guard: &mut VipGuard,
        interface: &str,
        ports: &[u16],
        pins: Option<&PinDir>,
    ) -> Result<Self, GuardError> {
        let ebpf = &mut guard.ebpf;
        // Held until the program is loaded: the load refers to the map by this fd.
        let mut tracked = take_map(ebpf, MAP_TRACKED_PORTS)?;
        set_tracked_ports(&mut tracked, ports)?;
        // TCX needs no qdisc; older kernels use the clsact one, which may already be there.
        let _ = tc::qdisc_add_clsact(interface);
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROG_CONN_TRACK)
            .ok_or(GuardError::Missing(PROG_CONN_TRACK))?
            .try_into()
            .map_err(tc_error)?;
        program.load().map_err(tc_error)?;
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        for (side, pin) in [
            (TcAttachType::Ingress, LINK_TC_INGRESS),
            (TcAttachType::Egress, LINK_TC_EGRESS),
        ] {
            match pins {
                Some(pins) if tcx => attach_pinned(program, interface, side, pins, pin)?,
                // The link stays in the program's keeping, detached when it is dropped.
                _ => {
                    program.attach(interface, side).map_err(tc_error)?;
                }
            }
        }
        drop(tracked);
        let connections = take_map(ebpf, MAP_CONNECTIONS)?;
        Ok(Self { connections })
    }

    /// Every connection in the map now. Entries deleted while iterating are skipped.
    pub fn connections(&self) -> Vec<TrackedConnection> {
        self.connections
            .iter()
            .filter_map(Result::ok)
            .map(|(key, state)| TrackedConnection {
                connection: Connection {
                    server: SocketAddr::new(ip_from_key(key.vip), key.vip_port),
                    client: SocketAddr::new(ip_from_key(key.client), key.client_port),
                },
                state,
            })
            .collect()
    }

    /// The connections without their sequence state: one syscall per entry instead of two,
    /// which is what tickling needs.
    pub fn connection_keys(&self) -> Vec<Connection> {
        self.connections
            .keys()
            .filter_map(Result::ok)
            .map(|key| Connection {
                server: SocketAddr::new(ip_from_key(key.vip), key.vip_port),
                client: SocketAddr::new(ip_from_key(key.client), key.client_port),
            })
            .collect()
    }

    /// Forgets the connections to `ip`, e.g. after they were reset on release.
    pub fn forget(&mut self, ip: IpAddr) {
        let keys: Vec<ConnKey> = self
            .connections
            .keys()
            .filter_map(Result::ok)
            .filter(|key| ip_from_key(key.vip) == ip)
            .collect();
        for key in keys {
            let _ = self.connections.remove(&key);
        }
    }
}

fn tc_error(source: aya::programs::ProgramError) -> GuardError {
    GuardError::Program {
        name: PROG_CONN_TRACK,
        source,
    }
}

/// Makes `ports` the tracked ports, removing any a pinned map kept from an earlier
/// configuration.
fn set_tracked_ports(
    tracked: &mut HashMap<MapData, u16, u8>,
    ports: &[u16],
) -> Result<(), GuardError> {
    if ports.len() > MAX_TRACKED_PORTS as usize {
        return Err(GuardError::Config(format!(
            "{} tracked ports configured, at most {MAX_TRACKED_PORTS} fit",
            ports.len()
        )));
    }
    let map_error = |source| GuardError::Map {
        name: MAP_TRACKED_PORTS,
        source,
    };
    let stale: Vec<u16> = tracked
        .keys()
        .filter_map(Result::ok)
        .filter(|port| !ports.contains(port))
        .collect();
    for port in stale {
        tracked.remove(&port).map_err(map_error)?;
    }
    for port in ports {
        tracked.insert(*port, 1, 0).map_err(map_error)?;
    }
    Ok(())
}

/// Swaps the program into the pinned TCX link of `side`, or attaches and pins a new one.
fn attach_pinned(
    program: &mut SchedClassifier,
    interface: &str,
    side: TcAttachType,
    pins: &PinDir,
    pin: &str,
) -> Result<(), GuardError> {
    if let Some(link) = pins.existing_link(pin) {
        let swapped = SchedClassifierLink::try_from(link)
            .map_err(|err| err.to_string())
            .and_then(|link| program.attach_to_link(link).map_err(|err| err.to_string()));
        match swapped {
            Ok(_) => return Ok(()),
            Err(err) => {
                tracing::warn!(%err, pin, "the pinned TC link cannot take this program: attaching a new one");
                pins.remove(pin);
            }
        }
    }
    let id = program.attach(interface, side).map_err(tc_error)?;
    let link = program.take_link(id).map_err(tc_error)?;
    let link = FdLink::try_from(link)
        .map_err(|err| GuardError::Pin(format!("the TC attachment is not a TCX link: {err}")))?;
    pins.pin_link(pin, link)
}
