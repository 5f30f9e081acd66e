//! Killing this node's TCP sockets on the overlay address when it gives the address up, as
//! `ss -K src ADDR` does: a sock_diag dump finds them, and `SOCK_DESTROY` (kernel option
//! `CONFIG_INET_DIAG_DESTROY`) aborts each one, which makes the kernel send the client an RST.
//! Without it, clients of a demoted primary would keep talking to a socket whose replica no
//! longer accepts writes until their own timeouts fire.
//!
//! Listening sockets are left alone (a listener bound to the overlay address must survive a
//! release so it serves again on the next acquire), and so are TIME_WAIT entries, which have no
//! peer left to tell. IPv4 connections accepted by a dual-stack `[::]` listener are AF_INET6
//! sockets with an IPv4-mapped address; they are found too.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use thiserror::Error;

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDR: usize = 16;
const SOCKID_LEN: usize = 48;
const REQ_LEN: usize = 8 + SOCKID_LEN;
const DIAG_MSG_MIN: usize = 4 + SOCKID_LEN;

// TCP states (include/net/tcp_states.h) worth aborting: everything with a live peer.
const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_SENT: u32 = 2;
const TCP_SYN_RECV: u32 = 3;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_FIN_WAIT2: u32 = 5;
const TCP_CLOSE_WAIT: u32 = 8;
const TCP_LAST_ACK: u32 = 9;
const TCP_CLOSING: u32 = 11;
const STATES: u32 = (1 << TCP_ESTABLISHED)
    | (1 << TCP_SYN_SENT)
    | (1 << TCP_SYN_RECV)
    | (1 << TCP_FIN_WAIT1)
    | (1 << TCP_FIN_WAIT2)
    | (1 << TCP_CLOSE_WAIT)
    | (1 << TCP_LAST_ACK)
    | (1 << TCP_CLOSING);

#[derive(Debug, Error)]
pub enum SockDestroyError {
    #[error("sock_diag socket: {0}")]
    Io(#[from] io::Error),
    #[error("sock_diag dump failed: {0}")]
    Dump(io::Error),
    #[error("malformed sock_diag reply: {0}")]
    Malformed(&'static str),
}

/// What one release did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DestroyReport {
    pub found: u32,
    pub destroyed: u32,
    /// Sockets that were gone by the time of the destroy (ENOENT): closed meanwhile.
    pub vanished: u32,
    pub failed: u32,
}

/// A sock_diag netlink socket, opened in the calling thread's network namespace.
pub struct SockDestroyer {
    fd: OwnedFd,
    seq: u32,
}

/// One socket as sock_diag names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SocketId {
    family: u8,
    id: [u8; SOCKID_LEN],
}

impl SockDestroyer {
    pub fn open() -> Result<Self, SockDestroyError> {
        // SAFETY: plain socket(2), checked and owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: a fresh fd owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, seq: 0 })
    }

    /// Aborts every TCP socket whose local address is `ip` (and, for IPv4, its mapped form
    /// on IPv6 sockets).
    pub fn destroy_local(&mut self, ip: IpAddr) -> Result<DestroyReport, SockDestroyError> {
        let mut victims = Vec::new();
        match ip {
            IpAddr::V4(v4) => {
                let mut local = [0u8; 16];
                local[..4].copy_from_slice(&v4.octets());
                victims.extend(self.dump(libc::AF_INET as u8, &local)?);
                let mapped = v4.to_ipv6_mapped().octets();
                victims.extend(self.dump(libc::AF_INET6 as u8, &mapped)?);
            }
            IpAddr::V6(v6) => victims.extend(self.dump(libc::AF_INET6 as u8, &v6.octets())?),
        }
        let mut report = DestroyReport {
            found: victims.len() as u32,
            ..DestroyReport::default()
        };
        for victim in victims {
            match self.destroy(victim) {
                Ok(()) => report.destroyed += 1,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => report.vanished += 1,
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; zero (pid 0) addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid fd, buffer and address for the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        // SAFETY: valid fd and buffer of the given length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(&buf[..n as usize])
        }
    }

    fn dump(&mut self, family: u8, local: &[u8; 16]) -> Result<Vec<SocketId>, SockDestroyError> {
        let seq = self.next_seq();
        let request = encode_request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            STATES,
            &[0; SOCKID_LEN],
        );
        self.send(&request)?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let datagram = self.recv(&mut buf)?;
            for message in messages(datagram) {
                let (kind, msg_seq, payload) = message?;
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        let code = error_code(payload)?;
                        return Err(SockDestroyError::Dump(io::Error::from_raw_os_error(-code)));
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        if payload.len() < DIAG_MSG_MIN {
                            return Err(SockDestroyError::Malformed("short inet_diag_msg"));
                        }
                        let mut id = [0u8; SOCKID_LEN];
                        id.copy_from_slice(&payload[4..4 + SOCKID_LEN]);
                        let src = &id[4..20];
                        let matches = if family == libc::AF_INET as u8 {
                            src[..4] == local[..4]
                        } else {
                            src == local
                        };
                        if matches {
                            found.push(SocketId {
                                family: payload[0],
                                id,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn destroy(&mut self, victim: SocketId) -> io::Result<()> {
        let seq = self.next_seq();
        let request = encode_request(
            SOCK_DESTROY,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            victim.family,
            u32::MAX,
            &victim.id,
        );
        self.send(&request)?;
        let mut buf = [0u8; 512];
        loop {
            let datagram = self.recv(&mut buf)?;
            for message in messages(datagram) {
                let (kind, msg_seq, payload) =
                    message.map_err(|err| io::Error::other(err.to_string()))?;
                if msg_seq != seq || kind != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(payload).map_err(|err| io::Error::other(err.to_string()))?;
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
        }
    }
}

fn encode_request(
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    states: u32,
    id: &[u8; SOCKID_LEN],
) -> Vec<u8> {
    let len = NLMSG_HDR + REQ_LEN;
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(&(len as u32).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.push(family);
    message.push(libc::IPPROTO_TCP as u8);
    message.push(0); // idiag_ext: no extensions wanted
    message.push(0);
    message.extend_from_slice(&states.to_ne_bytes());
    message.extend_from_slice(id);
    message
}

type Message<'a> = Result<(u16, u32, &'a [u8]), SockDestroyError>;

/// Splits a datagram into netlink messages: (type, seq, payload).
fn messages(mut datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if datagram.len() < NLMSG_HDR {
            return None;
        }
        let field = |at: usize| {
            [
                datagram[at],
                datagram[at + 1],
                datagram[at + 2],
                datagram[at + 3],
            ]
        };
        let len = u32::from_ne_bytes(field(0)) as usize;
        if len < NLMSG_HDR || len > datagram.len() {
            datagram = &[];
            return Some(Err(SockDestroyError::Malformed("bad nlmsg_len")));
        }
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        let seq = u32::from_ne_bytes(field(8));
        let payload = &datagram[NLMSG_HDR..len];
        let aligned = (len + 3) & !3;
        datagram = datagram.get(aligned..).unwrap_or(&[]);
        Some(Ok((kind, seq, payload)))
    })
}

fn error_code(payload: &[u8]) -> Result<i32, SockDestroyError> {
    let bytes = payload
        .get(..4)
        .ok_or(SockDestroyError::Malformed("short nlmsgerr"))?;
    Ok(i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_inet_diag_req_v2() {
        let mut id = [0u8; SOCKID_LEN];
        id[0] = 0x05;
        id[1] = 0x99; // sport 1433
        let message = encode_request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 7, 2, STATES, &id);
        assert_eq!(message.len(), 72);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([message[4], message[5]]), SOCK_DESTROY);
        assert_eq!(message[16], 2);
        assert_eq!(message[17], 6);
        assert_eq!(&message[24..26], &[0x05, 0x99]);
        assert_eq!(STATES & (1 << 10), 0, "LISTEN must not be destroyed");
    }

    #[test]
    fn splits_messages_and_rejects_bad_lengths() {
        let mut datagram = Vec::new();
        for seq in [1u32, 2] {
            datagram.extend_from_slice(&20u32.to_ne_bytes());
            datagram.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            datagram.extend_from_slice(&0u16.to_ne_bytes());
            datagram.extend_from_slice(&seq.to_ne_bytes());
            datagram.extend_from_slice(&0u32.to_ne_bytes());
            datagram.extend_from_slice(&(-2i32).to_ne_bytes());
        }
        let parsed: Vec<_> = messages(&datagram).map(Result::unwrap).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].1, 2);
        assert_eq!(error_code(parsed[0].2).unwrap(), -2);
        let mut bad = datagram.clone();
        bad[0] = 200;
        assert!(messages(&bad).next().unwrap().is_err());
    }
}
