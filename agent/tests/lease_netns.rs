//! The kernel ownership lease against a frozen agent (`[ebpf] lease_ms`): an agent that stops
//! (SIGSTOP, as a stalled host or a debugger would stop it) can no longer renew the lease, so
//! its node must stop answering for the overlay address by itself, in the kernel, while the
//! address is still on the interface; once the agent runs again, its next PRIMARY verdict
//! opens the address again. Before the lease, a frozen owner kept answering for good.
//!
//! "Answering" is seen from the client namespace: a connect to a port where nothing listens on
//! the overlay address gets a RST when the guard passes it, and no answer when it drops it.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::netns::{Lab, in_ns, within};

const PREFIX: &str = "tvf";
/// The lab's 10.232.NET.0/24; the overlay address is 10.232.45.100.
const NET: u8 = 45;
const LEASE: Duration = Duration::from_millis(500);

/// Whether the node answers for the overlay address: a RST to a SYN on port 9 (nothing
/// listens there) means the guard passed it; silence means it was dropped.
fn answers(lab: &Lab) -> bool {
    in_ns(&lab.client, || {
        let target = SocketAddr::from(([10, 232, NET, 100], 9));
        match TcpStream::connect_timeout(&target, Duration::from_millis(150)) {
            Err(e) => e.kind() == ErrorKind::ConnectionRefused,
            Ok(_) => panic!("something listens on {target}"),
        }
    })
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn a_frozen_agents_node_stops_answering_for_the_address_when_its_lease_runs_out() {
    let mut lab = Lab::new(PREFIX, NET);
    let sim = lab.start_sim();
    let config = lab.agent_config(
        &sim,
        "listen = \"127.0.0.1:19481\"",
        &format!("[ebpf]\nenabled = true\nlease_ms = {}", LEASE.as_millis()),
    );
    let pid = lab.start_agent(&config, &[]);
    assert!(
        within(Duration::from_secs(5), || lab.has_overlay()
            && answers(&lab)),
        "the agent never served the address:\n{}",
        lab.agent_log()
    );

    signal(pid, libc::SIGSTOP);
    let frozen = Instant::now();
    // The lease was renewed by the last PRIMARY verdict, at most a probe round ago.
    assert!(answers(&lab), "fenced at once, before the lease ran out");
    let fenced = within(LEASE + Duration::from_secs(1), || !answers(&lab));
    let after = frozen.elapsed();
    let still_there = lab.has_overlay();
    signal(pid, libc::SIGCONT);
    assert!(
        fenced,
        "the frozen agent's node still answers {after:?} after the freeze (lease {LEASE:?})"
    );
    eprintln!("frozen agent's node stopped answering {after:?} after SIGSTOP (lease {LEASE:?})");
    assert!(
        still_there,
        "the address left the interface: the fence must be the kernel's"
    );

    // Running again: the next PRIMARY verdict renews the lease and opens the address.
    assert!(
        within(Duration::from_secs(2), || answers(&lab)),
        "the address stayed fenced after SIGCONT:\n{}",
        lab.agent_log()
    );
}
