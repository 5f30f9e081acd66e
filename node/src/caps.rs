//! Capability check at start: the data plane needs CAP_NET_ADMIN (addresses, XDP/TC attach),
//! CAP_NET_RAW (ARP/NA frames, tickle ACKs), CAP_BPF (maps and programs) and CAP_PERFMON (the
//! verifier allows pointer arithmetic on packets only with it). Root normally has all four;
//! a root whose capabilities were dropped (systemd `CapabilityBoundingSet=`, a container) does
//! not, so the check reads the effective set rather than the uid and names what is missing,
//! instead of letting the first netlink or bpf() call fail with a bare EPERM.

use std::fmt;

use thiserror::Error;

/// One Linux capability the data plane needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    pub bit: u32,
    pub why: &'static str,
}

pub const CAP_NET_ADMIN: Capability = Capability {
    name: "CAP_NET_ADMIN",
    bit: 12,
    why: "add/remove the overlay address, attach XDP and TC programs",
};
pub const CAP_NET_RAW: Capability = Capability {
    name: "CAP_NET_RAW",
    bit: 13,
    why: "send gratuitous ARP / neighbour advertisements and tickle ACKs",
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    name: "CAP_SYS_ADMIN",
    bit: 21,
    why: "stands in for CAP_BPF and CAP_PERFMON on kernels without them",
};
pub const CAP_PERFMON: Capability = Capability {
    name: "CAP_PERFMON",
    bit: 38,
    why: "let the verifier accept the packet-parsing programs",
};
pub const CAP_BPF: Capability = Capability {
    name: "CAP_BPF",
    bit: 39,
    why: "load eBPF programs and maps",
};

/// What the node executor needs with eBPF enabled.
pub const REQUIRED_WITH_EBPF: &[Capability] = &[CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON];
/// What it needs with eBPF disabled in the configuration.
pub const REQUIRED_WITHOUT_EBPF: &[Capability] = &[CAP_NET_ADMIN, CAP_NET_RAW];

#[derive(Debug, Error)]
pub enum CapsError {
    #[error("cannot read capabilities from {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("no valid CapEff line in {path}")]
    Parse { path: &'static str },
    #[error("{0}")]
    Missing(MissingCaps),
}

/// The capabilities that were needed and not in the effective set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingCaps {
    pub missing: Vec<Capability>,
}

impl fmt::Display for MissingCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing capabilities: ")?;
        for (i, cap) in self.missing.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{} (to {})", cap.name, cap.why)?;
        }
        write!(
            f,
            "; run as root with full capabilities or grant them (e.g. systemd AmbientCapabilities=)"
        )
    }
}

/// Parses the `CapEff:` line of a `/proc/<pid>/status` text into the capability bit mask.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The needed capabilities missing from `effective`. CAP_SYS_ADMIN covers CAP_BPF and
/// CAP_PERFMON, as the kernel itself accepts it in their place.
pub fn missing_from(effective: u64, needed: &[Capability]) -> Vec<Capability> {
    let has = |cap: &Capability| effective & (1u64 << cap.bit) != 0;
    needed
        .iter()
        .filter(|cap| {
            let covered_by_sys_admin =
                (**cap == CAP_BPF || **cap == CAP_PERFMON) && has(&CAP_SYS_ADMIN);
            !has(cap) && !covered_by_sys_admin
        })
        .copied()
        .collect()
}

/// Checks the calling thread's effective capabilities (capabilities are per thread).
pub fn check(needed: &[Capability]) -> Result<(), CapsError> {
    // thread-self: the set that applies to the calling thread, which is what the following
    // syscalls will be checked against.
    const PATH: &str = "/proc/thread-self/status";
    let status =
        std::fs::read_to_string(PATH).map_err(|source| CapsError::Read { path: PATH, source })?;
    let effective = parse_cap_eff(&status).ok_or(CapsError::Parse { path: PATH })?;
    let missing = missing_from(effective, needed);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapsError::Missing(MissingCaps { missing }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_root_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        let eff = parse_cap_eff(status).unwrap();
        assert_eq!(eff, 0x1ff_ffff_ffff);
        assert!(missing_from(eff, REQUIRED_WITH_EBPF).is_empty());
    }

    #[test]
    fn names_each_missing_capability() {
        let eff = 1u64 << CAP_NET_ADMIN.bit;
        let missing = missing_from(eff, REQUIRED_WITH_EBPF);
        assert_eq!(missing, vec![CAP_NET_RAW, CAP_BPF, CAP_PERFMON]);
        let text = MissingCaps { missing }.to_string();
        for name in ["CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"] {
            assert!(text.contains(name), "{text}");
        }
        assert!(!text.contains("CAP_NET_ADMIN"), "{text}");
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let eff = (1u64 << CAP_NET_ADMIN.bit) | (1 << CAP_NET_RAW.bit) | (1 << CAP_SYS_ADMIN.bit);
        assert!(missing_from(eff, REQUIRED_WITH_EBPF).is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("CapPrm:\t0\n"), None);
    }
}
