//! Tickle ACKs, as Samba CTDB sends them after an IP takeover: for each client connection of
//! the previous owner, a bare ACK with sequence and acknowledgement number 0 from the overlay
//! address. The segment is out of window for the client, so its kernel answers with a
//! duplicate ACK carrying its real numbers; the new owner has no socket for that connection
//! and answers with an RST the client accepts, and the client reconnects at once instead of
//! waiting out retransmission timeouts against a node that will never answer.
//!
//! Linux rate-limits those duplicate ACKs per socket (`tcp_invalid_ratelimit`, 500 ms), so
//! repeats within half a second produce nothing: the first round is what counts, the repeats
//! only cover a lost frame.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::conn_track::Connection;

const TCP_HDR: usize = 20;
const TCP_ACK: u8 = 0x10;

/// Raw TCP sockets bound to the overlay addresses. `IP_FREEBIND` lets them bind before the
/// address is on the interface, so they are opened once, at start, in the agent's namespace.
pub struct Tickler {
    sockets: Vec<(IpAddr, Socket)>,
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TickleReport {
    pub sent: u32,
    /// Connections to an address this node does not serve, or with mixed families.
    pub skipped: u32,
    pub failed: u32,
}

impl Tickler {
    pub fn open(overlay: &[IpAddr]) -> io::Result<Self> {
        let mut sockets = Vec::with_capacity(overlay.len());
        for ip in overlay {
            let domain = if ip.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let socket = Socket::new(domain, Type::RAW, Some(Protocol::TCP))?;
            if ip.is_ipv4() {
                socket.set_freebind_v4(true)?;
            } else {
                socket.set_freebind_v6(true)?;
            }
            // The socket only sends; a raw TCP socket would otherwise get a copy of every
            // TCP segment the node receives.
            crate::announce::attach_drop_all_filter(socket.as_raw_fd())?;
            socket.set_nonblocking(true)?;
            // Room for a whole burst of tickles in flight.
            socket.set_send_buffer_size(1 << 20)?;
            socket.bind(&SockAddr::from(SocketAddr::new(*ip, 0)))?;
            sockets.push((*ip, socket));
        }
        Ok(Self { sockets })
    }

    /// Sends one tickle ACK to each connection's client, in `sendmmsg` batches: a takeover
    /// with thousands of clients should cost a few syscalls per batch, not one per client.
    pub fn tickle(&self, connections: &[Connection]) -> TickleReport {
        let mut report = TickleReport::default();
        let served = connections
            .iter()
            .filter(|c| self.sockets.iter().any(|(ip, _)| *ip == c.server.ip()))
            .count();
        report.skipped += (connections.len() - served) as u32;
        for (ip, socket) in &self.sockets {
            let mut segments = Vec::new();
            let mut destinations = Vec::new();
            for connection in connections.iter().filter(|c| c.server.ip() == *ip) {
                match tickle_segment(connection.server, connection.client) {
                    Some(segment) => {
                        segments.push(segment);
                        // Raw sockets take the destination without a port (IPv6 would read
                        // it as the protocol number).
                        destinations
                            .push(SockAddr::from(SocketAddr::new(connection.client.ip(), 0)));
                    }
                    None => report.skipped += 1,
                }
            }
            for (segments, destinations) in segments.chunks(BATCH).zip(destinations.chunks(BATCH)) {
                let (sent, failed) = send_batch(socket, segments, destinations);
                report.sent += sent;
                report.failed += failed;
            }
        }
        report
    }
}

/// Messages per `sendmmsg` call (the kernel caps one call at UIO_MAXIOV = 1024).
const BATCH: usize = 256;

/// Sends `segments[i]` to `destinations[i]`; returns (sent, failed).
fn send_batch(
    socket: &Socket,
    segments: &[[u8; TCP_HDR]],
    destinations: &[SockAddr],
) -> (u32, u32) {
    let mut iovecs: Vec<libc::iovec> = segments
        .iter()
        .map(|segment| libc::iovec {
            iov_base: segment.as_ptr().cast_mut().cast(),
            iov_len: segment.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .zip(destinations)
        .map(|(iovec, destination)| {
            // SAFETY: msghdr is plain data; zero is a valid empty header.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_name = destination.as_ptr().cast_mut().cast();
            header.msg_namelen = destination.len();
            header.msg_iov = iovec;
            header.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: header,
                msg_len: 0,
            }
        })
        .collect();
    let (mut sent, mut failed) = (0u32, 0u32);
    let mut offset = 0;
    while offset < messages.len() {
        let remaining = &mut messages[offset..];
        // SAFETY: every header points at a live iovec, segment and address from above, all
        // outliving the call.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                remaining.as_mut_ptr(),
                remaining.len() as u32,
                0,
            )
        };
        if rc > 0 {
            sent += rc as u32;
            offset += rc as usize;
        } else {
            // The error belongs to the first unsent message: count it and go on with the rest.
            failed += 1;
            offset += 1;
        }
    }
    (sent, failed)
}

/// The TCP header of a tickle ACK from `server` to `client`, checksum included. `None` when
/// the two are of different families.
pub fn tickle_segment(server: SocketAddr, client: SocketAddr) -> Option<[u8; TCP_HDR]> {
    let mut segment = [0u8; TCP_HDR];
    segment[0..2].copy_from_slice(&server.port().to_be_bytes());
    segment[2..4].copy_from_slice(&client.port().to_be_bytes());
    // seq (4..8) and ack (8..12) stay 0: out of window on purpose.
    segment[12] = 5 << 4; // data offset: 5 words, no options
    segment[13] = TCP_ACK;
    segment[14..16].copy_from_slice(&1024u16.to_be_bytes()); // window
    let mut sum = match (server.ip(), client.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            add_bytes(0, &src.octets()) + add_bytes(0, &dst.octets()) + 6 + TCP_HDR as u32
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            add_bytes(0, &src.octets()) + add_bytes(0, &dst.octets()) + 6 + TCP_HDR as u32
        }
        _ => return None,
    };
    sum = add_bytes(sum, &segment);
    let checksum = fold(sum);
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    Some(segment)
}

fn add_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = match pair {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            [hi] => u16::from_be_bytes([*hi, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use pnet_packet::tcp::{TcpFlags, TcpPacket, ipv4_checksum, ipv6_checksum};

    use super::*;

    #[test]
    fn v4_segment_is_a_zero_ack_with_a_valid_checksum() {
        let server: SocketAddr = "10.231.0.100:1433".parse().unwrap();
        let client: SocketAddr = "10.231.0.3:50123".parse().unwrap();
        let bytes = tickle_segment(server, client).unwrap();
        let tcp = TcpPacket::new(&bytes).unwrap();
        assert_eq!(tcp.get_source(), 1433);
        assert_eq!(tcp.get_destination(), 50123);
        assert_eq!(tcp.get_sequence(), 0);
        assert_eq!(tcp.get_acknowledgement(), 0);
        assert_eq!(tcp.get_flags(), TcpFlags::ACK);
        let (IpAddr::V4(s), IpAddr::V4(c)) = (server.ip(), client.ip()) else {
            unreachable!()
        };
        assert_eq!(ipv4_checksum(&tcp, &s, &c), tcp.get_checksum());
    }

    #[test]
    fn v6_segment_checksum_matches_pnet() {
        let server: SocketAddr = "[fd00:231::100]:1433".parse().unwrap();
        let client: SocketAddr = "[fd00:231::3]:40000".parse().unwrap();
        let bytes = tickle_segment(server, client).unwrap();
        let tcp = TcpPacket::new(&bytes).unwrap();
        let (IpAddr::V6(s), IpAddr::V6(c)) = (server.ip(), client.ip()) else {
            unreachable!()
        };
        assert_eq!(ipv6_checksum(&tcp, &s, &c), tcp.get_checksum());
    }

    #[test]
    fn mixed_families_are_refused() {
        let server: SocketAddr = "10.231.0.100:1433".parse().unwrap();
        let client: SocketAddr = "[fd00:231::3]:40000".parse().unwrap();
        assert!(tickle_segment(server, client).is_none());
    }
}
