//! The two programs and their maps. Packet parsing reads fixed offsets of untagged Ethernet
//! frames (the overlay interface of a cloud VM or a veth carries no VLAN tags); IPv6 extension
//! headers are not walked, which only means such packets are judged by their destination
//! address alone.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::{TcContext, XdpContext},
};
use tdsvip_ebpf_common::{
    ConnKey, ConnState, DEFAULT_MAX_CONNECTIONS, MAX_TRACKED_PORTS, MAX_VIPS, VipCounters,
    VipEntry, VipKey,
};

#[map(name = "VIP_STATE")]
static VIP_STATE: HashMap<VipKey, VipEntry> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "VIP_COUNTERS")]
static VIP_COUNTERS: PerCpuHashMap<VipKey, VipCounters> =
    PerCpuHashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "CONNECTIONS")]
static CONNECTIONS: LruHashMap<ConnKey, ConnState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_CONNECTIONS, 0);

#[map(name = "TRACKED_PORTS")]
static TRACKED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_TRACKED_PORTS, 0);

const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const IPV6_HDR_LEN: usize = 40;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// TCX_NEXT / TC_ACT_UNSPEC: `conn_track` only watches, so it hands the packet on unchanged to
/// whatever else is attached instead of ending the chain with a verdict.
const TC_NEXT: i32 = -1;

/// A bounds-checked pointer into the XDP packet: the verifier insists on the check.
#[inline(always)]
fn xdp_ptr<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn xdp_read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: xdp_ptr checked that the whole T lies inside the packet; packet data has no
    // alignment guarantee, hence read_unaligned.
    xdp_ptr::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[xdp]
pub fn vip_guard(ctx: XdpContext) -> u32 {
    match guard_verdict(&ctx) {
        Some(action) => action,
        None => xdp_action::XDP_PASS,
    }
}

/// `None` when the frame is too short to judge or not about an overlay address: pass it.
#[inline(always)]
fn guard_verdict(ctx: &XdpContext) -> Option<u32> {
    let ethertype = u16::from_be(xdp_read::<u16>(ctx, 12)?);
    let key = match ethertype {
        ETH_P_ARP => {
            // htype(2) ptype(2) hlen(1) plen(1) op(2) sha(6) spa(4) tha(6) tpa(4)
            let ptype = u16::from_be(xdp_read::<u16>(ctx, ETH_HDR_LEN + 2)?);
            let plen = xdp_read::<u8>(ctx, ETH_HDR_LEN + 5)?;
            if ptype != ETH_P_IP || plen != 4 {
                return None;
            }
            // Sent *from* an overlay address: the owner announcing itself (gratuitous request
            // or reply). A fenced node must hear it, or its processes keep sending to the old
            // owner; its kernel never answers such a request (the sender is a local address,
            // a martian source), so passing it gives the fenced node no voice.
            let sender = VipKey::from_v4(xdp_read::<[u8; 4]>(ctx, ETH_HDR_LEN + 14)?);
            // SAFETY: a lookup only; nothing is read through the pointer.
            if unsafe { VIP_STATE.get(&sender) }.is_some() {
                return None;
            }
            VipKey::from_v4(xdp_read::<[u8; 4]>(ctx, ETH_HDR_LEN + 24)?)
        }
        ETH_P_IP => VipKey::from_v4(xdp_read::<[u8; 4]>(ctx, ETH_HDR_LEN + 16)?),
        ETH_P_IPV6 => {
            let dst = VipKey::from_v6(xdp_read::<[u8; 16]>(ctx, ETH_HDR_LEN + 24)?);
            // SAFETY: lookups only; the value is copied out at once.
            if unsafe { VIP_STATE.get(&dst) }.is_some() {
                dst
            } else {
                // A solicitation for the address goes to its solicited-node multicast group,
                // not to the address itself: look at the ICMPv6 target instead.
                let next_header = xdp_read::<u8>(ctx, ETH_HDR_LEN + 6)?;
                let icmp_type = xdp_read::<u8>(ctx, ETH_HDR_LEN + IPV6_HDR_LEN)?;
                if next_header != IPPROTO_ICMPV6 || icmp_type != ND_NEIGHBOR_SOLICIT {
                    return None;
                }
                VipKey::from_v6(xdp_read::<[u8; 16]>(ctx, ETH_HDR_LEN + IPV6_HDR_LEN + 8)?)
            }
        }
        _ => return None,
    };
    // SAFETY: the value is copied out at once. A concurrent userspace update may be seen half
    // done (one write's state with the other's lease): a fence writes lease 0, so any mix with
    // it drops, and a renewal keeps the state, so a mix only picks the old or the new expiry.
    let entry = *unsafe { VIP_STATE.get(&key) }?;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    // SAFETY: a helper without arguments; it reads CLOCK_MONOTONIC.
    let owner = entry.passes(unsafe { bpf_ktime_get_ns() });
    if let Some(counters) = VIP_COUNTERS.get_ptr_mut(&key) {
        // SAFETY: a per-CPU value, and XDP runs with migration disabled, so nothing else
        // writes this copy concurrently.
        let counters = unsafe { &mut *counters };
        if owner {
            counters.passed_packets += 1;
            counters.passed_bytes += bytes;
        } else {
            counters.dropped_packets += 1;
            counters.dropped_bytes += bytes;
        }
    }
    Some(if owner {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    })
}

#[classifier]
pub fn conn_track(ctx: TcContext) -> i32 {
    // Tracking is best effort: whatever happens, the packet goes on.
    let _ = track(&ctx);
    TC_NEXT
}

/// The TCP segment's addresses, ports and header fields, in the packet's own direction.
struct Segment {
    src: [u8; 16],
    dst: [u8; 16],
    l4_offset: usize,
    payload_len: u32,
}

#[inline(always)]
fn parse_ip(ctx: &TcContext) -> Option<Segment> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    match ethertype {
        ETH_P_IP => {
            let version_ihl = ctx.load::<u8>(ETH_HDR_LEN).ok()?;
            let ihl = ((version_ihl & 0x0f) as usize) * 4;
            let total_len = u16::from_be(ctx.load::<u16>(ETH_HDR_LEN + 2).ok()?) as u32;
            let proto = ctx.load::<u8>(ETH_HDR_LEN + 9).ok()?;
            // Fragments other than the first carry no TCP header.
            let frag = u16::from_be(ctx.load::<u16>(ETH_HDR_LEN + 6).ok()?);
            if proto != IPPROTO_TCP || ihl < 20 || frag & 0x1fff != 0 {
                return None;
            }
            let src = ctx.load::<[u8; 4]>(ETH_HDR_LEN + 12).ok()?;
            let dst = ctx.load::<[u8; 4]>(ETH_HDR_LEN + 16).ok()?;
            Some(Segment {
                src: VipKey::from_v4(src).addr,
                dst: VipKey::from_v4(dst).addr,
                l4_offset: ETH_HDR_LEN + ihl,
                payload_len: total_len.checked_sub(ihl as u32)?,
            })
        }
        ETH_P_IPV6 => {
            let next_header = ctx.load::<u8>(ETH_HDR_LEN + 6).ok()?;
            if next_header != IPPROTO_TCP {
                return None;
            }
            let payload_len = u16::from_be(ctx.load::<u16>(ETH_HDR_LEN + 4).ok()?) as u32;
            Some(Segment {
                src: ctx.load::<[u8; 16]>(ETH_HDR_LEN + 8).ok()?,
                dst: ctx.load::<[u8; 16]>(ETH_HDR_LEN + 24).ok()?,
                l4_offset: ETH_HDR_LEN + IPV6_HDR_LEN,
                payload_len,
            })
        }
        _ => None,
    }
}

#[inline(always)]
fn is_tracked(addr: &[u8; 16], port: u16) -> bool {
    // SAFETY: lookups only, values are not read.
    unsafe {
        VIP_STATE.get(&VipKey { addr: *addr }).is_some() && TRACKED_PORTS.get(&port).is_some()
    }
}

#[inline(always)]
fn track(ctx: &TcContext) -> Option<()> {
    let segment = parse_ip(ctx)?;
    let l4 = segment.l4_offset;
    let src_port = u16::from_be(ctx.load::<u16>(l4).ok()?);
    let dst_port = u16::from_be(ctx.load::<u16>(l4 + 2).ok()?);
    let seq = u32::from_be(ctx.load::<u32>(l4 + 4).ok()?);
    let ack = u32::from_be(ctx.load::<u32>(l4 + 8).ok()?);
    let data_offset = ((ctx.load::<u8>(l4 + 12).ok()? >> 4) as u32) * 4;
    let flags = ctx.load::<u8>(l4 + 13).ok()?;
    let data_len = segment.payload_len.checked_sub(data_offset)?;

    // The same program runs on ingress and egress; which side is the overlay address tells
    // the direction.
    let (key, from_client) = if is_tracked(&segment.dst, dst_port) {
        let key = ConnKey {
            vip: segment.dst,
            client: segment.src,
            vip_port: dst_port,
            client_port: src_port,
        };
        (key, true)
    } else if is_tracked(&segment.src, src_port) {
        let key = ConnKey {
            vip: segment.src,
            client: segment.dst,
            vip_port: src_port,
            client_port: dst_port,
        };
        (key, false)
    } else {
        return None;
    };

    if flags & (TCP_RST | TCP_FIN) != 0 {
        // The connection is ending: nothing left to reset later.
        let _ = CONNECTIONS.remove(&key);
        return Some(());
    }
    if flags & TCP_ACK == 0 || flags & TCP_SYN != 0 {
        // Not established yet: a SYN, or a SYN-ACK whose handshake may never complete.
        return Some(());
    }

    let next_seq = seq.wrapping_add(data_len);
    let now = unsafe { bpf_ktime_get_ns() };
    match CONNECTIONS.get_ptr_mut(&key) {
        Some(state) => {
            // SAFETY: a pointer to the map value; racing updates of the same connection from
            // two CPUs can at worst leave one side's numbers a packet old.
            let state = unsafe { &mut *state };
            record_side(state, from_client, next_seq, ack);
            state.last_seen_ns = now;
        }
        None => {
            let mut state = ConnState {
                last_seen_ns: now,
                ..ConnState::default()
            };
            record_side(&mut state, from_client, next_seq, ack);
            let _ = CONNECTIONS.insert(&key, &state, 0);
        }
    }
    Some(())
}

/// Stores the next sequence number and acknowledgement one side of a connection sent:
/// what a tickle needs to forge an ACK that side's peer accepts.
#[inline(always)]
fn record_side(state: &mut ConnState, from_client: bool, next_seq: u32, ack: u32) {
    if from_client {
        state.client_next_seq = next_seq;
        state.client_ack = ack;
    } else {
        state.server_next_seq = next_seq;
        state.server_ack = ack;
    }
}
