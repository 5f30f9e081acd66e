//! tdsvip's kernel programs, built for `bpfel-unknown-none` by `node/build.rs` (aya-build).
//!
//! * `vip_guard` (XDP, ingress of the node's interface) is the fence that makes "this node does
//!   not own the overlay address" true in the kernel: while an address is `FENCED` in
//!   `VIP_STATE`, packets to it and ARP requests / neighbour solicitations for it are dropped
//!   before the IP stack sees them, so the node cannot answer for the address even when
//!   something re-adds it. ARP sent *from* an overlay address (the owner's gratuitous ARP)
//!   passes, so a fenced node's own processes follow the address. Userspace flips ownership
//!   with one map write.
//! * `conn_track` (TC, ingress and egress) keeps the established TCP connections to the
//!   overlay addresses' tracked ports in an LRU map, so that a new owner can tickle their
//!   clients (see `node/src/tickle.rs`).
//!
//! On the host (`cargo build --workspace`) this crate is an empty binary: the programs only
//! exist for the BPF target.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects programs that can reach a real panic, so this is never executed;
    // it only satisfies `no_std`.
    loop {}
}

// No GPL-only helper is used, so the kernel needs no GPL-compatible license string; this
// states the project's own license.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
