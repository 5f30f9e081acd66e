//! The compiled kernel programs, embedded at build time by `build.rs`, or the reason they are
//! missing. Everything that loads eBPF goes through [`object_bytes`] so that a build without the
//! eBPF toolchain fails at run time with one clear error instead of at build time.

use thiserror::Error;

/// The eBPF object could not be had.
#[derive(Debug, Error)]
#[error("built without eBPF: {reason}")]
pub struct BuiltWithoutEbpf {
    pub reason: &'static str,
}

/// Whether this build carries the kernel programs.
pub const fn available() -> bool {
    cfg!(tdsvip_ebpf)
}

/// The ELF object holding `vip_guard` and `conn_track`, 8-byte aligned as aya's loader wants.
#[cfg(tdsvip_ebpf)]
pub fn object_bytes() -> Result<&'static [u8], BuiltWithoutEbpf> {
    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tdsvip-ebpf"));
    Ok(OBJECT)
}

#[cfg(not(tdsvip_ebpf))]
pub fn object_bytes() -> Result<&'static [u8], BuiltWithoutEbpf> {
    Err(BuiltWithoutEbpf {
        reason: match option_env!("TDSVIP_EBPF_BUILD_ERROR") {
            Some(reason) => reason,
            None => "the eBPF toolchain was missing when tdsvip-node was built",
        },
    })
}
