//! Telling the segment who owns the overlay address: gratuitous ARP (IPv4) and unsolicited
//! neighbour advertisements (IPv6), sent as raw Ethernet frames through a pnet datalink
//! channel, plus the ARP probe used for optional duplicate-address detection.
//!
//! Both GARP forms are sent because receivers differ: some honour only requests, some only
//! replies. The reply form sets the target hardware address to the sender's, which is what
//! Linux's `arp_is_garp()` requires to treat a reply as gratuitous and update a neighbour entry
//! even inside its 1 s `locktime`. Receivers that do not (older kernels, other systems) ignore
//! an update inside the locktime, which is why the default policy repeats the announcement
//! once just after it ([`AnnouncePolicy::default`]).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd},
    time::Duration,
};

use pnet_datalink::{Channel, Config, DataLinkSender, MacAddr, NetworkInterface};
use pnet_packet::{
    MutablePacket, Packet,
    arp::{ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket},
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
    icmpv6::{
        Icmpv6Code, Icmpv6Packet, Icmpv6Types,
        ndp::{MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags},
    },
    ip::IpNextHeaderProtocols,
    ipv6::MutableIpv6Packet,
};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

const ETH_HDR: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HDR: usize = 40;
/// NA header (24) + one target link-layer address option (8).
const NA_LEN: usize = 32;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// When and how often to announce after an acquire (keepalived's `garp_master_*` settings).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnnouncePolicy {
    /// Rounds sent at acquire; the first goes out inline, before `acquire` returns.
    pub burst_count: u32,
    /// Time between the rounds of the burst: a lost frame should not take its repeat with it.
    pub burst_spacing: Duration,
    /// One more round this long after acquire: set just past the receivers' ARP `locktime`
    /// (1 s by default) so that a receiver that ignored the burst because its entry was fresh
    /// takes this one.
    pub repeat_after: Option<Duration>,
    /// A round every this often while owning (keepalived `garp_master_refresh`); off by
    /// default: switches and peers keep entries long enough on their own.
    pub refresh_interval: Option<Duration>,
}

impl Default for AnnouncePolicy {
    fn default() -> Self {
        Self {
            burst_count: 3,
            burst_spacing: Duration::from_millis(20),
            repeat_after: Some(Duration::from_millis(1100)),
            refresh_interval: None,
        }
    }
}

impl AnnouncePolicy {
    /// Offsets from acquire of the rounds after the first one (which is sent inline).
    pub fn later_rounds(&self) -> Vec<Duration> {
        let mut offsets: Vec<Duration> = (1..self.burst_count.max(1))
            .map(|i| self.burst_spacing * i)
            .collect();
        if let Some(repeat) = self.repeat_after {
            offsets.push(repeat);
        }
        offsets.sort();
        offsets
    }
}

#[derive(Debug, Error)]
pub enum AnnounceError {
    #[error("interface {0:?} not found")]
    NoInterface(String),
    #[error("interface {0:?} has no MAC address")]
    NoMac(String),
    #[error("cannot open a packet socket on {interface}: {source}")]
    Open {
        interface: String,
        source: io::Error,
    },
    #[error("sending on {interface}: {source}")]
    Send {
        interface: String,
        source: io::Error,
    },
    #[error("duplicate address {ip}: {mac} answers for it")]
    Duplicate { ip: Ipv4Addr, mac: MacAddr },
}

/// Looks the interface up in the calling thread's network namespace.
pub fn find_interface(name: &str) -> Result<NetworkInterface, AnnounceError> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|iface| iface.name == name)
        .ok_or_else(|| AnnounceError::NoInterface(name.to_owned()))
}

/// A classic BPF program of one instruction, `ret #0`: the socket keeps nothing it receives.
pub(crate) fn attach_drop_all_filter(fd: i32) -> io::Result<()> {
    let mut filter = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: a valid fd and a sock_fprog that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const program).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends announcements for the overlay addresses on one interface.
pub struct Announcer {
    tx: Box<dyn DataLinkSender>,
    mac: MacAddr,
    interface: String,
}

/// How many frames one round sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnnounceReport {
    pub arp_frames: u32,
    pub na_frames: u32,
}

impl Announcer {
    /// Opens the channel in the calling thread's network namespace.
    pub fn open(interface: &NetworkInterface) -> Result<Self, AnnounceError> {
        let mac = interface
            .mac
            .filter(|mac| !mac.is_zero())
            .ok_or_else(|| AnnounceError::NoMac(interface.name.clone()))?;
        let open_error = |source| AnnounceError::Open {
            interface: interface.name.clone(),
            source,
        };
        // pnet binds its socket to ETH_P_ALL, which would queue a copy of every frame on the
        // interface for a socket that only sends; a drop-all filter, attached before pnet
        // binds, keeps the receive side empty.
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(open_error(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_drop_all_filter(fd.as_raw_fd()).map_err(open_error)?;
        let config = Config {
            promiscuous: false,
            socket_fd: Some(fd.into_raw_fd()),
            ..Config::default()
        };
        match pnet_datalink::channel(interface, config) {
            Ok(Channel::Ethernet(tx, _rx)) => Ok(Self {
                tx,
                mac,
                interface: interface.name.clone(),
            }),
            Ok(_) => Err(open_error(io::Error::other("not an Ethernet channel"))),
            Err(source) => Err(open_error(source)),
        }
    }

    pub const fn mac(&self) -> MacAddr {
        self.mac
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), AnnounceError> {
        let mut result = self.send_once(frame);
        // When the link goes down the kernel leaves ENETDOWN pending on every packet socket
        // bound to it, and the next send reports it even if the link is up again by then
        // (an agent started while its link was down failed its first acquire this way). The
        // error is cleared by reporting it: one retry tells a stale error from a link that
        // is really down.
        if let Err(e) = &result
            && e.raw_os_error() == Some(libc::ENETDOWN)
        {
            result = self.send_once(frame);
        }
        result.map_err(|source| AnnounceError::Send {
            interface: self.interface.clone(),
            source,
        })
    }

    fn send_once(&mut self, frame: &[u8]) -> io::Result<()> {
        self.tx
            .send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("frame larger than the write buffer")))
    }

    /// One round: for each IPv4 address a GARP request and a GARP reply, for each IPv6
    /// address an unsolicited NA with the override flag.
    pub fn announce(&mut self, ips: &[IpAddr]) -> Result<AnnounceReport, AnnounceError> {
        let mut report = AnnounceReport::default();
        for ip in ips {
            match ip {
                IpAddr::V4(ip) => {
                    for op in [ArpOperations::Request, ArpOperations::Reply] {
                        let frame = gratuitous_arp(self.mac, *ip, op);
                        self.send(&frame)?;
                        report.arp_frames += 1;
                    }
                }
                IpAddr::V6(ip) => {
                    let frame = unsolicited_na(self.mac, *ip);
                    self.send(&frame)?;
                    report.na_frames += 1;
                }
            }
        }
        Ok(report)
    }

    /// Sends one ARP probe (RFC 5227: sender address 0.0.0.0) for `ip`.
    pub fn send_probe(&mut self, ip: Ipv4Addr) -> Result<(), AnnounceError> {
        let frame = arp_probe(self.mac, ip);
        self.send(&frame)
    }
}

fn arp_frame(
    eth_dst: MacAddr,
    op: ArpOperation,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> [u8; ETH_HDR + ARP_LEN] {
    let mut buf = [0u8; ETH_HDR + ARP_LEN];
    if let Some(mut eth) = MutableEthernetPacket::new(&mut buf) {
        eth.set_destination(eth_dst);
        eth.set_source(sha);
        eth.set_ethertype(EtherTypes::Arp);
        if let Some(mut arp) = MutableArpPacket::new(eth.payload_mut()) {
            arp.set_hardware_type(ArpHardwareTypes::Ethernet);
            arp.set_protocol_type(EtherTypes::Ipv4);
            arp.set_hw_addr_len(6);
            arp.set_proto_addr_len(4);
            arp.set_operation(op);
            arp.set_sender_hw_addr(sha);
            arp.set_sender_proto_addr(spa);
            arp.set_target_hw_addr(tha);
            arp.set_target_proto_addr(tpa);
        }
    }
    buf
}

/// A gratuitous ARP, broadcast: sender and target protocol address are both `ip`. The request
/// form has a zero target hardware address (RFC 5227 announcement); the reply form repeats the
/// sender's, as Linux requires of a gratuitous reply.
pub fn gratuitous_arp(mac: MacAddr, ip: Ipv4Addr, op: ArpOperation) -> [u8; ETH_HDR + ARP_LEN] {
    let tha = if op == ArpOperations::Reply {
        mac
    } else {
        MacAddr::zero()
    };
    arp_frame(MacAddr::broadcast(), op, mac, ip, tha, ip)
}

/// An ARP probe: "who has `ip`", from 0.0.0.0 so that no receiver learns anything from it.
pub fn arp_probe(mac: MacAddr, ip: Ipv4Addr) -> [u8; ETH_HDR + ARP_LEN] {
    arp_frame(
        MacAddr::broadcast(),
        ArpOperations::Request,
        mac,
        Ipv4Addr::UNSPECIFIED,
        MacAddr::zero(),
        ip,
    )
}

/// An unsolicited neighbour advertisement to all nodes with the override flag, so receivers
/// replace the link-layer address they have for `ip` (RFC 4861 §7.2.6).
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> [u8; ETH_HDR + IPV6_HDR + NA_LEN] {
    let mut buf = [0u8; ETH_HDR + IPV6_HDR + NA_LEN];
    if let Some(mut eth) = MutableEthernetPacket::new(&mut buf) {
        eth.set_destination(MacAddr::new(0x33, 0x33, 0, 0, 0, 1));
        eth.set_source(mac);
        eth.set_ethertype(EtherTypes::Ipv6);
        if let Some(mut ip6) = MutableIpv6Packet::new(eth.payload_mut()) {
            ip6.set_version(6);
            ip6.set_payload_length(NA_LEN as u16);
            ip6.set_next_header(IpNextHeaderProtocols::Icmpv6);
            // Receivers discard neighbour discovery that may have crossed a router.
            ip6.set_hop_limit(255);
            ip6.set_source(ip);
            ip6.set_destination(ALL_NODES);
            if let Some(mut na) = MutableNeighborAdvertPacket::new(ip6.payload_mut()) {
                na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
                na.set_icmpv6_code(Icmpv6Code(0));
                na.set_flags(NeighborAdvertFlags::Override);
                na.set_target_addr(ip);
                na.set_options(&[NdpOption {
                    option_type: NdpOptionTypes::TargetLLAddr,
                    length: 1,
                    data: mac.octets().to_vec(),
                }]);
                let checksum = Icmpv6Packet::new(na.packet())
                    .map(|icmp| pnet_packet::icmpv6::checksum(&icmp, &ip, &ALL_NODES));
                if let Some(checksum) = checksum {
                    na.set_checksum(checksum);
                }
            }
        }
    }
    buf
}

/// Listens for ARP on one interface while duplicate-address detection runs. A separate
/// socket bound to ETH_P_ARP only, non-blocking and driven by tokio, so waiting for answers
/// does not block the runtime.
pub struct ArpListener {
    fd: AsyncFd<OwnedFd>,
}

impl ArpListener {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let proto = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2), checked and owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: OwnedFd always returns the fd it owns, and the AsyncFd owns the OwnedFd
        // for its whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Self { fd })
    }

    /// Throws away what queued up since the last detection.
    fn drain(&self) {
        let mut buf = [0u8; 128];
        // SAFETY: reading into a local buffer of the given size.
        while unsafe {
            libc::recv(
                self.fd.get_ref().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        } > 0
        {}
    }

    /// Sends `probes` ARP probes for `ip`, `interval` apart, and listens until `interval`
    /// after the last one. Another host that answers, announces `ip` or probes for it at the
    /// same time is a duplicate (RFC 5227 §2.1.1).
    pub async fn detect(
        &self,
        announcer: &std::sync::Mutex<Announcer>,
        ip: Ipv4Addr,
        probes: u32,
        interval: Duration,
    ) -> Result<(), AnnounceError> {
        self.drain();
        let own_mac = lock(announcer).mac();
        for _ in 0..probes.max(1) {
            lock(announcer).send_probe(ip)?;
            let deadline = tokio::time::Instant::now() + interval;
            loop {
                let ready = tokio::time::timeout_at(deadline, self.fd.readable()).await;
                let Ok(ready) = ready else { break };
                let mut guard = ready.map_err(|source| AnnounceError::Send {
                    interface: String::from("arp listener"),
                    source,
                })?;
                let mut buf = [0u8; 128];
                // SAFETY: reading into a local buffer of the given size.
                let n = unsafe {
                    libc::recv(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    guard.clear_ready();
                    continue;
                }
                if let Some(mac) = conflicting_sender(&buf[..n as usize], ip, own_mac) {
                    return Err(AnnounceError::Duplicate { ip, mac });
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while sending leaves nothing half-written in the announcer worth refusing.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sender of `frame` when it is another host claiming or probing for `ip`.
pub fn conflicting_sender(frame: &[u8], ip: Ipv4Addr, own_mac: MacAddr) -> Option<MacAddr> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(eth.payload())?;
    let sender = arp.get_sender_hw_addr();
    if sender == own_mac {
        return None;
    }
    let claims = arp.get_sender_proto_addr() == ip;
    let probes = arp.get_operation() == ArpOperations::Request
        && arp.get_sender_proto_addr() == Ipv4Addr::UNSPECIFIED
        && arp.get_target_proto_addr() == ip;
    (claims || probes).then_some(sender)
}

#[cfg(test)]
mod tests {
    use pnet_packet::{icmpv6::ndp::NeighborAdvertPacket, ipv6::Ipv6Packet};

    use super::*;

    const MAC: MacAddr = MacAddr(2, 0, 0, 0, 0, 0xaa);

    #[test]
    fn garp_reply_repeats_sender_hw_as_target() {
        let ip = Ipv4Addr::new(10, 231, 0, 100);
        let frame = gratuitous_arp(MAC, ip, ArpOperations::Reply);
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination(), MacAddr::broadcast());
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Reply);
        assert_eq!(arp.get_sender_proto_addr(), ip);
        assert_eq!(arp.get_target_proto_addr(), ip);
        assert_eq!(arp.get_target_hw_addr(), MAC);
        let request = gratuitous_arp(MAC, ip, ArpOperations::Request);
        let arp = ArpPacket::new(&request[ETH_HDR..]).unwrap();
        assert_eq!(arp.get_target_hw_addr(), MacAddr::zero());
    }

    #[test]
    fn na_has_override_target_option_and_valid_checksum() {
        let ip: Ipv6Addr = "fd00:231::100".parse().unwrap();
        let frame = unsolicited_na(MAC, ip);
        let ip6 = Ipv6Packet::new(&frame[ETH_HDR..]).unwrap();
        assert_eq!(ip6.get_hop_limit(), 255);
        assert_eq!(ip6.get_destination(), ALL_NODES);
        let na = NeighborAdvertPacket::new(ip6.payload()).unwrap();
        assert_eq!(na.get_flags(), NeighborAdvertFlags::Override);
        assert_eq!(na.get_target_addr(), ip);
        let options = na.get_options();
        assert_eq!(options[0].option_type, NdpOptionTypes::TargetLLAddr);
        assert_eq!(options[0].data, MAC.octets().to_vec());
        let icmp = Icmpv6Packet::new(ip6.payload()).unwrap();
        assert_eq!(
            pnet_packet::icmpv6::checksum(&icmp, &ip, &ALL_NODES),
            na.get_checksum()
        );
        assert_ne!(na.get_checksum(), 0);
    }

    #[test]
    fn probe_is_recognised_as_conflict_only_from_others() {
        let ip = Ipv4Addr::new(10, 231, 0, 100);
        let probe = arp_probe(MAC, ip);
        assert_eq!(conflicting_sender(&probe, ip, MAC), None);
        let other = MacAddr(2, 0, 0, 0, 0, 0xbb);
        assert_eq!(conflicting_sender(&probe, ip, other), Some(MAC));
        let garp = gratuitous_arp(MAC, Ipv4Addr::new(10, 231, 0, 7), ArpOperations::Request);
        assert_eq!(conflicting_sender(&garp, ip, other), None);
    }

    #[test]
    fn default_policy_repeats_past_the_locktime() {
        let policy = AnnouncePolicy::default();
        let rounds = policy.later_rounds();
        assert_eq!(
            rounds,
            vec![
                Duration::from_millis(20),
                Duration::from_millis(40),
                Duration::from_millis(1100)
            ]
        );
        assert!(*rounds.last().unwrap() > Duration::from_secs(1));
    }
}
