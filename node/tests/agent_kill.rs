//! What a killed agent leaves behind, as documented in `guard.rs`, `pins.rs` and the README: a
//! child process (this test binary, running the ignored `agent_child` test) acquires the
//! address on node A and is killed with SIGKILL.
//! - Without a pin directory, its XDP and TC programs must be gone (they were held by its
//!   bpf_links), the address must still be there and serving, and a new executor must fence
//!   it again before anyone decides anything, unless it was told to adopt it (its replica is
//!   still PRIMARY), in which case the address must keep serving from the first packet.
//! - With one (what the agent uses), the guard stays attached with its lease: the address
//!   keeps serving until the lease runs out and is fenced by the kernel after it; the next
//!   executor swaps its own program into the same link (one XDP attachment, the old program
//!   gone) and carries on with the same maps; one built with another map size starts afresh.

mod support;

use std::{
    io::{BufRead, BufReader, Read},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{Lab, in_netns, sh_status};
use tdsvip_node::{NodeConfig, NodeExecutor, NodeTakeover, OverlayAddress};

const PORT: u16 = 1433;

/// Run only as the child of `killed_agent_leaves_address_unguarded_until_restart`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "helper process for killed_agent_leaves_address_unguarded_until_restart"]
async fn agent_child() {
    let ns = std::env::var("TDSVIP_CHILD_NS").expect("TDSVIP_CHILD_NS");
    let vip = std::env::var("TDSVIP_CHILD_VIP").expect("TDSVIP_CHILD_VIP");
    let mut config = NodeConfig::new("eth0", vec![OverlayAddress::host(vip.parse().unwrap())]);
    config.pin_dir = std::env::var_os("TDSVIP_CHILD_PINS").map(PathBuf::from);
    config.lease = std::env::var("TDSVIP_CHILD_LEASE_MS")
        .ok()
        .map(|ms| Duration::from_millis(ms.parse().unwrap()));
    let mut node = in_netns(&ns, || NodeExecutor::new(config)).expect("executor");
    node.acquire(&[]).await.expect("acquire");
    println!("acquired");
    // Wait to be killed.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

fn xdp_attached(lab: &Lab) -> bool {
    lab.a
        .ip(&["link", "show", "dev", "eth0"])
        .contains("prog/xdp")
}

/// The ids of the child's two programs: `vip_guard` from A's link, `conn_track` as the
/// classifier sharing its maps (program names are global, lab namespaces are not).
fn program_ids(lab: &Lab) -> (u64, u64) {
    let link = lab.a.ip(&["-d", "link", "show", "dev", "eth0"]);
    let xdp: u64 = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .expect("xdp program id on A's eth0");
    let programs: serde_json::Value =
        serde_json::from_str(&sh_status(&["bpftool", "-j", "prog", "show"]).1).unwrap();
    let programs = programs.as_array().unwrap();
    let maps_of = |id: u64| -> Vec<u64> {
        programs
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["map_ids"].as_array())
            .map(|ids| ids.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default()
    };
    let guard_maps = maps_of(xdp);
    let tc = programs
        .iter()
        .filter(|p| p["name"] == "conn_track")
        .filter_map(|p| p["id"].as_u64())
        .find(|id| maps_of(*id).iter().any(|m| guard_maps.contains(m)))
        .expect("conn_track sharing vip_guard's maps");
    (xdp, tc)
}

fn loaded(id: u64) -> bool {
    sh_status(&["bpftool", "prog", "show", "id", &id.to_string()]).0
}

fn reaches_a(lab: &Lab, target: SocketAddr) -> bool {
    in_netns(&lab.client.ns, || {
        TcpStream::connect_timeout(&target, Duration::from_millis(300))
    })
    .and_then(|mut stream| {
        let mut greeting = [0u8; 1];
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.read_exact(&mut greeting)
    })
    .is_ok()
}

/// Starts the agent child on A with `env` added; returns once it acquired the address.
fn spawn_agent_child(lab: &Lab, vip: IpAddr, env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "agent_child", "--nocapture"])
        .env("TDSVIP_CHILD_NS", &lab.a.ns)
        .env("TDSVIP_CHILD_VIP", vip.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the agent child");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let acquired = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line == "acquired");
    // Keep draining so the child never dies of a broken pipe instead of the SIGKILL.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(acquired, "child never acquired");
    child
}

#[tokio::test(flavor = "current_thread")]
async fn killed_agent_leaves_address_unguarded_until_restart() {
    let lab = Lab::new(17);
    let vip = lab.vip(false);
    let target = SocketAddr::new(vip, PORT);
    let listener = in_netns(&lab.a.ns, || TcpListener::bind(("::", PORT))).expect("listen");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"A");
        }
    });

    let mut child = spawn_agent_child(&lab, vip, &[]);
    assert!(xdp_attached(&lab));
    let (guard_id, tracker_id) = program_ids(&lab);
    assert!(loaded(guard_id) && loaded(tracker_id));
    assert!(reaches_a(&lab, target));

    child.kill().expect("SIGKILL the agent");
    child.wait().expect("reap the agent");
    // The kernel detaches link-held programs when the last fd closes and frees them when
    // nothing refers to them; both happen in the exit path, but allow them a moment.
    let mut gone = false;
    for _ in 0..100 {
        if !xdp_attached(&lab) && !loaded(guard_id) && !loaded(tracker_id) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gone,
        "programs outlived the agent: xdp attached {}, loaded {} {}",
        xdp_attached(&lab),
        loaded(guard_id),
        loaded(tracker_id)
    );
    let addresses = lab.a.ip(&["addr", "show", "dev", "eth0"]);
    assert!(addresses.contains(&format!("{vip}/32")), "{addresses}");
    assert!(
        reaches_a(&lab, target),
        "the left address should still serve"
    );

    // A restarted agent told that its replica is still PRIMARY adopts the address: the guard
    // passes it from the first packet, so clients never see the restart...
    let mut adopting = NodeConfig::new("eth0", vec![OverlayAddress::host(vip)]);
    adopting.adopt_present = true;
    let adopted = in_netns(&lab.a.ns, || NodeExecutor::new(adopting)).expect("executor");
    assert_eq!(adopted.adopted(), [vip]);
    assert!(xdp_attached(&lab));
    assert!(
        reaches_a(&lab, target),
        "an adopted address must keep serving"
    );
    assert_eq!(adopted.counters(vip).unwrap().dropped_packets, 0);
    drop(adopted);

    // ...and one that is not told so fences the leftover address at once...
    let config = NodeConfig::new("eth0", vec![OverlayAddress::host(vip)]);
    let mut restarted = in_netns(&lab.a.ns, || NodeExecutor::new(config)).expect("executor");
    assert!(xdp_attached(&lab));
    assert!(
        !reaches_a(&lab, target),
        "a restarted agent must fence before deciding"
    );
    assert!(restarted.counters(vip).unwrap().dropped_packets > 0);
    // ...and its release removes it.
    restarted.release().await.expect("release");
    assert!(
        !lab.a
            .ip(&["addr", "show", "dev", "eth0"])
            .contains(&format!("{vip}/32"))
    );
}

/// A bpf filesystem of the test's own, unmounted (dropping what is pinned) when dropped.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(name: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("tdsvip-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        support::sh(&["mount", "-t", "bpf", "bpf", &dir.to_string_lossy()]);
        Bpffs(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The id of the XDP program on A's `eth0`, if one is attached.
fn xdp_program(lab: &Lab) -> Option<u64> {
    let link = lab.a.ip(&["-d", "link", "show", "dev", "eth0"]);
    link.split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
}

#[tokio::test(flavor = "current_thread")]
async fn a_killed_agents_pinned_guard_keeps_its_lease_and_the_next_agent_takes_it_over() {
    const LEASE: Duration = Duration::from_millis(800);
    let lab = Lab::new(19);
    let pins = Bpffs::mount("pins");
    let vip = lab.vip(false);
    let target = SocketAddr::new(vip, PORT);
    let listener = in_netns(&lab.a.ns, || TcpListener::bind(("::", PORT))).expect("listen");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"A");
        }
    });
    // A stale pin directory of another map layout, which the agent must clear away, and
    // someone else's that merely starts with a `v`, which it must leave.
    let stale = pins.path().join("v0").join("eth0");
    std::fs::create_dir_all(&stale).unwrap();
    let foreign = pins.path().join("vendor").join("eth0");
    std::fs::create_dir_all(&foreign).unwrap();

    let lease_ms = LEASE.as_millis().to_string();
    let pin_dir = pins.path().to_string_lossy().into_owned();
    let env = [
        ("TDSVIP_CHILD_PINS", pin_dir.as_str()),
        ("TDSVIP_CHILD_LEASE_MS", lease_ms.as_str()),
    ];
    let mut child = spawn_agent_child(&lab, vip, &env);
    let acquired = Instant::now();
    assert!(!stale.exists(), "another layout's pins were left");
    assert!(
        foreign.exists(),
        "a directory that is not a layout's was removed"
    );
    let pinned = pins.path().join("v1").join("eth0");
    assert!(pinned.join("link_xdp_vip_guard").exists());
    assert!(pinned.join("VIP_STATE").exists());
    let (guard_id, tracker_id) = program_ids(&lab);

    child.kill().expect("SIGKILL the agent");
    child.wait().expect("reap the agent");
    // Pinned: the programs stay attached and the lease keeps running after the process died.
    assert_eq!(xdp_program(&lab), Some(guard_id));
    assert!(loaded(guard_id) && loaded(tracker_id));
    assert!(
        acquired.elapsed() < LEASE,
        "the machine was too slow to tell"
    );
    assert!(reaches_a(&lab, target), "fenced before the lease ran out");
    tokio::time::sleep(LEASE.saturating_sub(acquired.elapsed()) + Duration::from_millis(50)).await;
    assert!(
        !reaches_a(&lab, target),
        "the dead agent's node still serves after its lease ran out"
    );
    assert_eq!(xdp_program(&lab), Some(guard_id));

    // The next agent (replica still PRIMARY) swaps its program into the same link and opens.
    let mut adopting = NodeConfig::new("eth0", vec![OverlayAddress::host(vip)]);
    adopting.adopt_present = true;
    adopting.lease = Some(Duration::from_secs(30));
    adopting.pin_dir = Some(pins.path().to_owned());
    let adopted = in_netns(&lab.a.ns, || NodeExecutor::new(adopting.clone())).expect("executor");
    let swapped = xdp_program(&lab).expect("still attached");
    assert_ne!(swapped, guard_id, "the new agent's program runs");
    assert!(
        !loaded(guard_id),
        "the dead agent's program was not replaced"
    );
    assert!(reaches_a(&lab, target), "the adopted address must serve");
    assert!(
        adopted.counters(vip).unwrap().dropped_packets > 0,
        "the counters did not carry on in the pinned map"
    );
    drop(adopted);
    // Dropping an executor (a clean exit) leaves the pinned guard attached, lease running.
    assert_eq!(xdp_program(&lab), Some(swapped));
    assert!(reaches_a(&lab, target));

    // Another connection-table size: the pinned maps are not taken over, the guard starts
    // afresh, still one attachment.
    let mut resized = adopting;
    resized.max_tracked_connections = 1024;
    let fresh = in_netns(&lab.a.ns, || NodeExecutor::new(resized)).expect("executor");
    assert!(xdp_program(&lab).is_some_and(|id| id != swapped));
    assert_eq!(fresh.counters(vip).unwrap().dropped_packets, 0);
    assert!(reaches_a(&lab, target));
}
