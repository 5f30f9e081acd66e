//! The kernel ownership lease against a frozen or killed agent (`[ebpf] lease_ms`): an agent
//! that stops (SIGSTOP, as a stalled host or a debugger would stop it) or dies (SIGKILL) can
//! no longer renew the lease, so its node must stop answering for the overlay address by
//! itself, in the kernel, while the address is still on the interface; an agent running
//! again (the same after SIGCONT, a new one after the kill: it takes the pinned guard over)
//! opens the address again at its next PRIMARY verdict. Before the lease, a frozen owner kept
//! answering for good; before the guard was pinned, so did a killed one (its XDP link died
//! with it), and a restart within the lease would have no pinned state to take over.
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

/// A PRIMARY sim and an agent with `lease` serving the address; the agent's pid and config.
fn start_serving(lab: &mut Lab, lease: Duration) -> (u32, String) {
    let sim = lab.start_sim();
    let config = lab.agent_config(
        &sim,
        "listen = \"127.0.0.1:19481\"",
        &format!("[ebpf]\nenabled = true\nlease_ms = {}", lease.as_millis()),
    );
    let pid = lab.start_agent(&config, &[]);
    assert!(
        within(Duration::from_secs(5), || lab.has_overlay() && answers(lab)),
        "the agent never served the address:\n{}",
        lab.agent_log()
    );
    (pid, config)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn a_frozen_agents_node_stops_answering_for_the_address_when_its_lease_runs_out() {
    let mut lab = Lab::new(PREFIX, NET);
    let (pid, _) = start_serving(&mut lab, LEASE);

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

#[test]
fn a_killed_agents_node_stops_answering_when_its_lease_runs_out_and_a_new_agent_reopens_it() {
    let mut lab = Lab::new(PREFIX, NET);
    let (_, config) = start_serving(&mut lab, LEASE);

    lab.kill_agent();
    let killed = Instant::now();
    // The pinned guard outlived the process, with the lease the last verdict gave it.
    assert!(answers(&lab), "fenced at once, before the lease ran out");
    let fenced = within(LEASE + Duration::from_secs(1), || !answers(&lab));
    let after = killed.elapsed();
    assert!(
        fenced,
        "the killed agent's node still answers {after:?} after SIGKILL (lease {LEASE:?})"
    );
    eprintln!("killed agent's node stopped answering {after:?} after SIGKILL (lease {LEASE:?})");
    assert!(
        lab.has_overlay(),
        "the address left the interface: the fence must be the kernel's"
    );

    // A new agent takes the pinned guard over and opens the address at its first verdicts.
    lab.start_agent(&config, &[]);
    assert!(
        within(Duration::from_secs(3), || answers(&lab)),
        "the restarted agent did not open the address again:\n{}",
        lab.agent_log()
    );
}

/// The unit restarts a dead agent after `RestartSec=500ms`; with the default lease (2 s) the
/// pinned guard keeps the address answering across the gap, and the new agent adopts it: the
/// client sees no moment without an answer.
#[test]
fn an_agent_restarted_within_the_lease_takes_over_without_a_gap() {
    const DEFAULT_LEASE: Duration = Duration::from_millis(2000);
    const RESTART_SEC: Duration = Duration::from_millis(500);
    let mut lab = Lab::new(PREFIX, NET);
    let (_, config) = start_serving(&mut lab, DEFAULT_LEASE);

    lab.kill_agent();
    let killed = Instant::now();
    let mut restarted = false;
    let mut silent = Vec::new();
    // Watch from the kill until 2 s after the new agent started (longer than the lease).
    while killed.elapsed() < RESTART_SEC + DEFAULT_LEASE + Duration::from_millis(500) {
        if !restarted && killed.elapsed() >= RESTART_SEC {
            lab.start_agent(&config, &[]);
            restarted = true;
        }
        if !answers(&lab) {
            silent.push(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        silent.is_empty(),
        "no answer at {silent:?} after the kill:\n{}",
        lab.agent_log()
    );
}
