//! The would-acknowledge sampler counts what it must (a counter that cannot fail is
//! worthless): two real tds-sim processes on loopback, no namespaces, no root. One starts
//! PRIMARY, one SECONDARY; the sampler sees one acknowledger. The second is then made
//! PRIMARY through the control API (the test backdoor a split brain would look like): both
//! would acknowledge (no commit rule to meet: REQUIRED_SYNCHRONIZED_SECONDARIES_TO_COMMIT
//! is 0, no lease), and the sampler must count dual-primary samples. A node that accepts
//! connections but never answers reads unknown and makes unknown samples, never "would not
//! acknowledge"; a node with nothing listening reads down.

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tdsvip_lab::clock::Clock;
use tdsvip_lab::primaries::{PrimaryCount, PrimarySampler, Reading, SimTarget, count, read_one};

/// A tds-sim child, killed on drop (also when an assertion fails).
struct Sim {
    child: Child,
    control: SocketAddr,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn sim(name: &str, role: &str) -> Sim {
    let bin = tdsvip_lab::procs::find("tds-sim", "TDS_SIM_BIN").unwrap();
    let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--control", &control.to_string()])
        .args(["--server-name", name, "--ag", "ag1", "--role", role])
        .args(["--user", "lab", "--password", "pw", "--database", "db1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert!(line.contains("tds-sim listening"), "{line}");
    Sim { child, control }
}

fn target(control: SocketAddr) -> SimTarget {
    SimTarget { ns: None, control }
}

/// Samples `targets` for `ms` and counts.
fn sample_for(targets: Vec<SimTarget>, ms: u64) -> PrimaryCount {
    let clock = Clock::new();
    let s = PrimarySampler::start(clock, targets, Duration::from_millis(10)).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    let end = clock.now();
    let samples = s.between(0.0, end);
    drop(s);
    count(&samples, 0.0, end)
}

fn put_role(control: SocketAddr, role: &str) {
    let (code, body) = tdsvip_lab::http::request(
        control,
        "PUT",
        "/state",
        &format!(r#"{{"role":"{role}"}}"#),
        None,
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
}

#[test]
fn the_sampler_counts_two_primaries_and_never_hides_an_unreadable_sim() {
    let a = sim("A", "PRIMARY");
    let b = sim("B", "SECONDARY");
    assert_eq!(
        read_one(a.control, Duration::from_secs(1)),
        Reading::Acknowledging
    );
    assert_eq!(
        read_one(b.control, Duration::from_secs(1)),
        Reading::NotAcknowledging
    );

    let one = sample_for(vec![target(a.control), target(b.control)], 300);
    assert!(one.samples >= 10, "{one:?}");
    assert_eq!((one.dual, one.unknown), (0, 0), "{one:?}");

    // Split brain: B made PRIMARY behind the AG's back.
    put_role(b.control, "PRIMARY");
    let two = sample_for(vec![target(a.control), target(b.control)], 300);
    assert!(two.samples >= 10, "{two:?}");
    assert_eq!(two.dual, two.samples, "every sample has two: {two:?}");

    // A node that accepts but never answers: unknown, and with A acknowledging the sample
    // could have been dual, so it counts as unknown.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let with_mute = sample_for(vec![target(a.control), target(mute_addr)], 800);
    assert!(with_mute.samples >= 2, "{with_mute:?}");
    assert_eq!(with_mute.dual, 0, "{with_mute:?}");
    assert_eq!(with_mute.unknown, with_mute.samples, "{with_mute:?}");

    // Nothing listening: the sim is down and acknowledges nothing.
    let gone = SocketAddr::from(([127, 0, 0, 1], free_port()));
    assert_eq!(read_one(gone, Duration::from_secs(1)), Reading::Down);
    let with_down = sample_for(vec![target(a.control), target(gone)], 300);
    assert_eq!((with_down.dual, with_down.unknown), (0, 0), "{with_down:?}");
    drop(mute);
}
