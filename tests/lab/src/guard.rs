//! The eBPF guard's verdict on the overlay address, read from outside each node, so that the
//! ownership sampler can tell a node that holds the address but is fenced (its XDP `vip_guard`
//! drops packets and ARP for it) from one that can really answer for it.
//!
//! How, cheaply enough for every 10 ms sample: each node gets a `NETLINK_ROUTE` socket opened
//! once from inside its namespace (a netlink socket stays in the namespace it was created in),
//! and each read asks it for `eth0` (`RTM_GETLINK`) and takes the attached XDP program's id
//! from `IFLA_XDP`. No program means no guard: the kernel passes everything, as after the
//! agent was killed. Only when that id changes (agent start, restart, kill) is it resolved to
//! the program's `VIP_STATE` map (aya: program info → map ids → the map named
//! [`MAP_VIP_STATE`]), and the open map is cached. BPF map ids are global, so the map is read
//! without entering the namespace. A read therefore costs one netlink round trip and one map
//! lookup per node.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya::maps::{HashMap, Map, MapData};
use tdsvip_ebpf_common::{MAP_VIP_STATE, VipEntry, VipKey, monotonic_ns};

/// What the guard on a node's `eth0` does with the overlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardState {
    /// `VIP_STATE` says OWNER: packets and ARP for the address pass.
    Owner,
    /// `VIP_STATE` says FENCED (or any value but OWNER, which the program also drops).
    Fenced,
    /// No XDP program on `eth0`: nothing is fenced.
    NoGuard,
    /// A program is attached but the address is not in its map: the program passes it.
    Unlisted,
    /// A program is attached but its map could not be read (e.g. it went away mid-read).
    Unknown,
}

impl GuardState {
    /// Whether the guard lets the node answer for the address (everything but `Fenced`;
    /// `Unknown` counts as passing so that an unreadable map never hides a dual owner).
    pub fn passes(self) -> bool {
        self != GuardState::Fenced
    }

    /// Short label for timelines.
    pub fn label(self) -> &'static str {
        match self {
            GuardState::Owner => "owner",
            GuardState::Fenced => "fenced",
            GuardState::NoGuard => "no-guard",
            GuardState::Unlisted => "unlisted",
            GuardState::Unknown => "unknown",
        }
    }

    /// The state for a `VIP_STATE` lookup result at CLOCK_MONOTONIC `now_ns` (`None`: the key
    /// is absent). An owner whose lease has run out is fenced: the kernel drops its traffic.
    pub fn from_value(v: Option<VipEntry>, now_ns: u64) -> GuardState {
        match v {
            None => GuardState::Unlisted,
            Some(entry) if entry.passes(now_ns) => GuardState::Owner,
            Some(_) => GuardState::Fenced,
        }
    }
}

/// The `VIP_STATE` key of an IPv4 overlay address (as `node::guard::vip_key`).
pub fn vip_key(ip: Ipv4Addr) -> VipKey {
    VipKey::from_v4(ip.octets())
}

const IFLA_IFNAME: u16 = 3;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The `RTM_GETLINK` request for interface `name`.
pub fn getlink_request(name: &str, seq: u32) -> Vec<u8> {
    let attr_len = 4 + name.len() + 1;
    let len = NLMSG_HDR + IFINFOMSG + align4(attr_len);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    b.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family, pad, type, index, flags, change: all zero (look up by name).
    b.extend_from_slice(&[0u8; IFINFOMSG]);
    b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    b.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.resize(len, 0);
    b
}

/// Netlink attributes (type without flag bits, payload) in `b`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, payload))
    })
}

/// The answer to [`getlink_request`]: `Ok(Some(id))` with an XDP program attached, `Ok(None)`
/// without one, `Err` for a netlink error (e.g. no such interface) or a malformed reply.
pub fn parse_getlink_reply(b: &[u8]) -> Result<Option<u32>, String> {
    if b.len() < NLMSG_HDR {
        return Err(format!("short netlink reply ({} bytes)", b.len()));
    }
    let len = (u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).min(b.len());
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    if ty == libc::NLMSG_ERROR as u16 {
        let errno = b
            .get(NLMSG_HDR..NLMSG_HDR + 4)
            .map(|e| -i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
            .unwrap_or(0);
        return Err(format!("netlink error {errno}"));
    }
    if ty != libc::RTM_NEWLINK {
        return Err(format!("unexpected netlink message type {ty}"));
    }
    if len < NLMSG_HDR + IFINFOMSG {
        return Err("truncated RTM_NEWLINK".into());
    }
    let Some((_, xdp)) = attrs(&b[NLMSG_HDR + IFINFOMSG..len]).find(|(t, _)| *t == IFLA_XDP) else {
        return Ok(None);
    };
    let mut attached = None;
    let mut prog = None;
    for (t, p) in attrs(xdp) {
        match t {
            IFLA_XDP_ATTACHED if !p.is_empty() => attached = Some(p[0]),
            IFLA_XDP_PROG_ID if p.len() >= 4 => {
                prog = Some(u32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
            }
            _ => {}
        }
    }
    Ok(match (attached, prog) {
        (Some(0), _) | (_, None) | (_, Some(0)) => None,
        (_, Some(id)) => Some(id),
    })
}

/// A `NETLINK_ROUTE` socket in the calling thread's current namespace.
fn netlink_socket() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(format!(
            "netlink socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A lost reply must not stall the sampler: give up after 5 ms.
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 5_000,
    };
    // SAFETY: setsockopt with a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(fd)
}

/// An open `VIP_STATE` map.
type VipStateMap = HashMap<MapData, VipKey, VipEntry>;

/// The open `VIP_STATE` map of XDP program `prog`.
fn vip_state_map(prog: u32) -> Result<VipStateMap, String> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog)
        .ok_or_else(|| format!("program {prog} not loaded"))?;
    let ids = info
        .map_ids()
        .map_err(|e| format!("map ids of program {prog}: {e}"))?
        .unwrap_or_default();
    for id in ids {
        let Ok(data) = MapData::from_id(id) else {
            continue;
        };
        let named = data
            .info()
            .ok()
            .is_some_and(|i| i.name_as_str() == Some(MAP_VIP_STATE));
        if named {
            return HashMap::try_from(Map::HashMap(data))
                .map_err(|e| format!("{MAP_VIP_STATE} of program {prog}: {e}"));
        }
    }
    Err(format!("program {prog} has no {MAP_VIP_STATE} map"))
}

/// Reads one node's guard state for one address. Create and first use it from a thread that
/// is inside the node's namespace; later reads may happen from anywhere.
pub struct GuardReader {
    key: VipKey,
    nl: Option<OwnedFd>,
    seq: u32,
    buf: Vec<u8>,
    /// The XDP program last seen and its map (`None` while it could not be resolved).
    cached: Option<(u32, Option<VipStateMap>)>,
}

impl GuardReader {
    /// A reader whose netlink socket is opened on first [`read`](Self::read), in the
    /// namespace the calling thread is in then.
    pub fn new(overlay: Ipv4Addr) -> GuardReader {
        GuardReader {
            key: vip_key(overlay),
            nl: None,
            seq: 0,
            buf: vec![0; 32 * 1024],
            cached: None,
        }
    }

    /// The XDP program attached to `eth0` (`None` without one).
    fn xdp_prog(&mut self) -> Result<Option<u32>, String> {
        if self.nl.is_none() {
            self.nl = Some(netlink_socket()?);
        }
        let fd = self.nl.as_ref().map_or(-1, |f| f.as_raw_fd());
        self.seq = self.seq.wrapping_add(1);
        let req = getlink_request("eth0", self.seq);
        // SAFETY: send(2) of an initialized buffer; the kernel is the default destination.
        let n = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
        }
        loop {
            // SAFETY: recv(2) into our buffer, at most its length.
            let n = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 {
                return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
            }
            let reply = &self.buf[..n as usize];
            // Skip a late reply to an earlier, timed-out request.
            if reply.len() >= NLMSG_HDR
                && u32::from_ne_bytes([reply[8], reply[9], reply[10], reply[11]]) != self.seq
            {
                continue;
            }
            return parse_getlink_reply(reply);
        }
    }

    /// The guard's state for the address now.
    pub fn read(&mut self) -> GuardState {
        let prog = match self.xdp_prog() {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.cached = None;
                return GuardState::NoGuard;
            }
            Err(_) => return GuardState::Unknown,
        };
        if !matches!(&self.cached, Some((p, Some(_))) if *p == prog) {
            self.cached = Some((prog, vip_state_map(prog).ok()));
        }
        match &self.cached {
            Some((_, Some(map))) => match map.get(&self.key, 0) {
                Ok(v) => GuardState::from_value(Some(v), monotonic_ns()),
                Err(aya::maps::MapError::KeyNotFound) => GuardState::from_value(None, 0),
                Err(_) => GuardState::Unknown,
            },
            _ => GuardState::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn newlink(body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + IFINFOMSG + body.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&7u32.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&[0u8; IFINFOMSG]);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn request_names_the_interface() {
        let r = getlink_request("eth0", 9);
        assert_eq!(r.len(), 16 + 16 + 12);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 44);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), libc::RTM_GETLINK);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 9);
        assert_eq!(&r[32..], &attr(IFLA_IFNAME, b"eth0\0")[..]);
    }

    #[test]
    fn reply_with_an_xdp_program() {
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[1]);
        xdp.extend(attr(IFLA_XDP_PROG_ID, &412u32.to_ne_bytes()));
        let mut body = attr(IFLA_IFNAME, b"eth0\0");
        body.extend(attr(IFLA_XDP | 0x8000, &xdp)); // NLA_F_NESTED set, as the kernel does
        body.extend(attr(IFLA_XDP + 1, &[0; 8]));
        assert_eq!(parse_getlink_reply(&newlink(&body)), Ok(Some(412)));
    }

    #[test]
    fn reply_without_a_program() {
        let body = attr(IFLA_XDP, &attr(IFLA_XDP_ATTACHED, &[0]));
        assert_eq!(parse_getlink_reply(&newlink(&body)), Ok(None));
        let body = attr(IFLA_IFNAME, b"eth0\0");
        assert_eq!(parse_getlink_reply(&newlink(&body)), Ok(None));
    }

    #[test]
    fn error_and_garbage() {
        let mut e = vec![0u8; 36];
        e[0..4].copy_from_slice(&36u32.to_ne_bytes());
        e[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        e[16..20].copy_from_slice(&(-19i32).to_ne_bytes());
        assert_eq!(parse_getlink_reply(&e), Err("netlink error 19".into()));
        assert!(parse_getlink_reply(&[1, 2, 3]).is_err());
    }

    #[test]
    fn states() {
        let owner = |until| Some(VipEntry::owner_until(until));
        assert_eq!(
            GuardState::from_value(owner(VipEntry::NO_LEASE), 5),
            GuardState::Owner
        );
        assert_eq!(GuardState::from_value(owner(10), 5), GuardState::Owner);
        assert_eq!(GuardState::from_value(owner(10), 10), GuardState::Fenced);
        assert_eq!(
            GuardState::from_value(Some(VipEntry::fenced()), 5),
            GuardState::Fenced
        );
        let unknown = VipEntry {
            state: 7,
            ..VipEntry::owner_until(VipEntry::NO_LEASE)
        };
        assert_eq!(GuardState::from_value(Some(unknown), 5), GuardState::Fenced);
        assert_eq!(GuardState::from_value(None, 5), GuardState::Unlisted);
        assert!(!GuardState::Fenced.passes());
        assert!(GuardState::NoGuard.passes() && GuardState::Owner.passes());
        assert_eq!(
            vip_key("10.0.0.1".parse().unwrap()).addr[10..],
            [0xff, 0xff, 10, 0, 0, 1]
        );
    }
}
