//! The capability check against a thread that really lost capabilities: capabilities are per
//! thread, so a test thread can drop some from its effective set with capset(2) and leave the
//! rest of the process untouched.

use std::thread;

use tdsvip_node::{
    NodeConfig, NodeExecutor, OverlayAddress,
    caps::{self, CAP_BPF, CAP_NET_RAW, CAP_SYS_ADMIN, Capability},
    executor::NodeError,
};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Clears `drop` from the calling thread's effective set.
fn drop_effective(drop: &[Capability]) {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as version 3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    for cap in drop {
        data[(cap.bit / 32) as usize].effective &= !(1 << (cap.bit % 32));
    }
    // SAFETY: as above; capset with pid 0 changes only the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn executor_refuses_to_start_and_names_the_missing_capabilities() {
    assert!(
        caps::check(caps::REQUIRED_WITH_EBPF).is_ok(),
        "the test must start with full capabilities (run as root)"
    );
    thread::spawn(|| {
        // CAP_SYS_ADMIN too: it would stand in for CAP_BPF.
        drop_effective(&[CAP_NET_RAW, CAP_BPF, CAP_SYS_ADMIN]);
        let config = NodeConfig::new(
            "lo",
            vec![OverlayAddress::host("10.231.99.100".parse().unwrap())],
        );
        let err = match NodeExecutor::new(config) {
            Err(err) => err,
            Ok(_) => panic!("executor started without CAP_NET_RAW and CAP_BPF"),
        };
        assert!(matches!(err, NodeError::Caps(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("CAP_NET_RAW"), "{message}");
        assert!(message.contains("CAP_BPF"), "{message}");
        assert!(!message.contains("CAP_NET_ADMIN"), "{message}");
        assert!(!message.contains("CAP_PERFMON"), "{message}");
    })
    .join()
    .expect("capability-dropping thread");
    // The other threads kept theirs.
    assert!(caps::check(caps::REQUIRED_WITH_EBPF).is_ok());
}

#[test]
fn ebpf_programs_are_built_when_ci_requires_them() {
    // TDSVIP_REQUIRE_EBPF=1 at build time fails the build instead; at test time it asserts the
    // binary under test really carries the programs.
    if std::env::var("TDSVIP_REQUIRE_EBPF").as_deref() == Ok("1") {
        assert!(tdsvip_node::ebpf::available(), "built without eBPF");
    }
    match tdsvip_node::ebpf::object_bytes() {
        Ok(bytes) => assert_eq!(&bytes[..4], b"\x7fELF"),
        Err(err) => assert!(err.to_string().starts_with("built without eBPF")),
    }
}
