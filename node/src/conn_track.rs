//! `conn_track`: attaches the TC program to the interface's ingress and egress and reads the
//! established TCP connections to the overlay addresses it keeps in a bounded LRU map. The
//! list is what a new owner tickles after a takeover (and what a peer hands over); reading it
//! never stops the program from updating it.
//!
//! Like `vip_guard`, the TC links belong to this process (TCX links on kernel >= 6.6) and go
//! away with it, clean exit or kill.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use aya::{
    maps::{HashMap, MapData},
    programs::{SchedClassifier, TcAttachType, tc},
};
use tdsvip_ebpf_common::{
    ConnKey, ConnState, MAP_CONNECTIONS, MAP_TRACKED_PORTS, MAX_TRACKED_PORTS, PROG_CONN_TRACK,
};

use crate::guard::{GuardError, VipGuard, take_map};

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
    /// egress of `interface` and sets the server ports to track.
    pub fn attach(
        guard: &mut VipGuard,
        interface: &str,
        ports: &[u16],
    ) -> Result<Self, GuardError> {
        let ebpf = &mut guard.ebpf;
        if ports.len() > MAX_TRACKED_PORTS as usize {
            return Err(GuardError::Config(format!(
                "{} tracked ports configured, at most {MAX_TRACKED_PORTS} fit",
                ports.len()
            )));
        }
        let mut tracked: HashMap<MapData, u16, u8> = take_map(ebpf, MAP_TRACKED_PORTS)?;
        for port in ports {
            tracked
                .insert(*port, 1, 0)
                .map_err(|source| GuardError::Map {
                    name: MAP_TRACKED_PORTS,
                    source,
                })?;
        }
        let program_error = |source| GuardError::Program {
            name: PROG_CONN_TRACK,
            source,
        };
        // TCX needs no qdisc; older kernels use the clsact one, which may already be there.
        let _ = tc::qdisc_add_clsact(interface);
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROG_CONN_TRACK)
            .ok_or(GuardError::Missing(PROG_CONN_TRACK))?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        program
            .attach(interface, TcAttachType::Ingress)
            .map_err(program_error)?;
        program
            .attach(interface, TcAttachType::Egress)
            .map_err(program_error)?;
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
