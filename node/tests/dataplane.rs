//! The node data plane for real: network namespaces, the kernel's ARP/ND and TCP, and the eBPF
//! programs loaded into the kernel. Needs root (CI runs as root); each test builds its own lab
//! (see `support`), removed when the test ends or fails.

mod support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use support::{Host, Lab, in_netns};
use tdsvip_node::{
    Connection, NodeConfig, NodeExecutor, NodeTakeover, OverlayAddress, StepKind,
    address::AddressPresence, executor::DadPolicy,
};

const PORT: u16 = 1433;

fn config(lab: &Lab, v6: bool) -> NodeConfig {
    NodeConfig::new("eth0", vec![OverlayAddress::host(lab.vip(v6))])
}

fn executor(host: &Host, config: NodeConfig) -> NodeExecutor {
    in_netns(&host.ns, || NodeExecutor::new(config)).expect("node executor")
}

/// A dual-stack listener on [::]:1433 in `host` that greets every connection with `name` and
/// keeps it open (idle) until the test ends. Dual-stack on purpose: IPv4 clients then arrive
/// on IPv6 sockets with mapped addresses, the case SOCK_DESTROY must also find.
fn serve(host: &Host, name: &'static str) {
    let listener = in_netns(&host.ns, || TcpListener::bind(("::", PORT))).expect("listen");
    thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(name.as_bytes());
            open.push(stream);
        }
    });
}

/// Connects from the client namespace and returns the stream and the server's greeting.
fn connect(lab: &Lab, ip: IpAddr) -> std::io::Result<(TcpStream, String)> {
    let mut stream = in_netns(&lab.client.ns, || {
        TcpStream::connect_timeout(&SocketAddr::new(ip, PORT), Duration::from_millis(500))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut greeting = [0u8; 1];
    stream.read_exact(&mut greeting)?;
    Ok((stream, String::from_utf8_lossy(&greeting).into_owned()))
}

/// Waits in a thread for the stream to end; the receiver gets how it ended and when.
fn watch(stream: TcpStream) -> mpsc::Receiver<(ErrorKind, Instant)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut stream = stream;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 16];
        let kind = match stream.read(&mut buf) {
            Ok(0) => ErrorKind::UnexpectedEof,
            Ok(_) => ErrorKind::InvalidData,
            Err(err) => err.kind(),
        };
        let _ = tx.send((kind, Instant::now()));
    });
    rx
}

/// Polls until the client's neighbour entry for `ip` is `mac`, up to `limit`.
async fn wait_for_neighbour(lab: &Lab, ip: IpAddr, mac: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if lab.client_neighbour(ip).as_deref() == Some(mac) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Acquire on A, move to B by announcements alone, new connections land on B, and A's guard
/// keeps A silent for the address even after it is re-added there by hand.
async fn move_between_nodes(subnet: u8, v6: bool) {
    let lab = Lab::new(subnet);
    let vip = lab.vip(v6);
    let mut a = executor(&lab.a, config(&lab, v6));
    let mut b = executor(&lab.b, config(&lab, v6));
    serve(&lab.a, "A");
    serve(&lab.b, "B");

    let timeline = a.acquire(&[]).await.expect("acquire on A");
    for kind in [
        StepKind::Ebpf,
        StepKind::Address,
        StepKind::Garp,
        StepKind::Tickle,
    ] {
        assert!(
            timeline.duration_of(kind).is_some(),
            "{kind:?} missing: {timeline:?}"
        );
    }
    assert!(a.verify().await.unwrap().owned);
    let (_first, greeting) = connect(&lab, vip).expect("client reaches A through the VIP");
    assert_eq!(greeting, "A");
    assert_eq!(
        lab.client_neighbour(vip).as_deref(),
        Some(lab.a.mac.as_str())
    );

    a.release().await.expect("release on A");
    let verification = a.verify().await.unwrap();
    assert!(!verification.owned);
    assert_eq!(verification.addresses[0].1, AddressPresence::Absent);
    assert_eq!(verification.guard[0].1, Some(false));

    b.acquire(&[]).await.expect("acquire on B");
    // The client sends nothing to the address meanwhile: only B's announcements can move the
    // entry. The default policy repeats past the 1 s ARP locktime, hence the 1.5 s bound.
    let moved = wait_for_neighbour(&lab, vip, &lab.b.mac, Duration::from_millis(1500)).await;
    assert!(
        moved.is_some(),
        "client's entry for {vip} still {:?}, B is {}",
        lab.client_neighbour(vip),
        lab.b.mac
    );
    eprintln!("neighbour entry moved to B {moved:?} after B's acquire returned");
    let (_second, greeting) = connect(&lab, vip).expect("client reaches B through the VIP");
    assert_eq!(greeting, "B");

    // Fence on A: re-add the address by hand, then try to reach A for it.
    let prefix = if v6 { "128" } else { "32" };
    let mut add = vec!["addr", "add"];
    let with_prefix = format!("{vip}/{prefix}");
    add.extend([with_prefix.as_str(), "dev", "eth0"]);
    if v6 {
        add.push("nodad");
    }
    lab.a.ip(&add);
    let before = a.counters(vip).unwrap();
    // Resolution by broadcast / multicast: only B may answer.
    lab.client.ip(&["neigh", "flush", "dev", "eth0"]);
    let (_third, greeting) = connect(&lab, vip).expect("client reaches B after a fresh resolution");
    assert_eq!(greeting, "B");
    assert_eq!(
        lab.client_neighbour(vip).as_deref(),
        Some(lab.b.mac.as_str())
    );
    if !v6 {
        let (_, out) = lab.client.exec(&[
            "arping",
            "-c",
            "3",
            "-w",
            "2",
            "-I",
            "eth0",
            &vip.to_string(),
        ]);
        assert!(
            out.to_lowercase().contains(&lab.b.mac),
            "B must answer: {out}"
        );
        assert!(
            !out.to_lowercase().contains(&lab.a.mac),
            "A answered ARP: {out}"
        );
    }
    // Straight at A's MAC: without the guard A would accept, since it has the address again.
    lab.client.ip(&[
        "neigh",
        "replace",
        &vip.to_string(),
        "lladdr",
        &lab.a.mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    assert!(
        connect(&lab, vip).is_err(),
        "A accepted a connection while fenced"
    );
    let after = a.counters(vip).unwrap();
    assert!(
        after.dropped_packets > before.dropped_packets,
        "drop counter did not move: {before:?} -> {after:?}"
    );
    assert!(after.dropped_bytes > before.dropped_bytes);
    eprintln!("A's guard counters for {vip}: {before:?} -> {after:?}");
}

/// A fenced node is still a client of the address: the new owner's gratuitous ARP must reach
/// it (its sender IP is the overlay address), while ARP *for* the address stays dropped there.
/// B keeps its guard on throughout and learns A's MAC for the address; when the address moves
/// to a third node, B's entry must follow that node's announcements alone.
#[tokio::test(flavor = "current_thread")]
async fn fenced_node_follows_the_new_owners_gratuitous_arp() {
    let lab = Lab::new(13);
    let vip = lab.vip(false);
    let mut a = executor(&lab.a, config(&lab, false));
    let mut b = executor(&lab.b, config(&lab, false));
    // The third node: the lab's client namespace, with an executor of its own.
    let mut c = executor(&lab.client, config(&lab, false));
    a.acquire(&[]).await.expect("acquire on A");
    assert_eq!(
        b.verify().await.unwrap().guard[0].1,
        Some(false),
        "B fenced"
    );
    serve(&lab.a, "A");
    in_netns(&lab.b.ns, || {
        TcpStream::connect_timeout(&SocketAddr::new(vip, PORT), Duration::from_millis(500))
    })
    .expect("B reaches A through the address");
    assert_eq!(lab.b.neighbour(vip).as_deref(), Some(lab.a.mac.as_str()));
    // Without this, B's kernel ignores announcements for an entry younger than ~1 s
    // (shared/TOOLCHAIN.md): the test asserts the change, not how fast it comes.
    lab.b
        .exec(&["sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0"]);

    a.release().await.expect("release on A");
    c.acquire(&[]).await.expect("acquire on the third node");
    let start = Instant::now();
    while lab.b.neighbour(vip).as_deref() != Some(lab.client.mac.as_str())
        && start.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        lab.b.neighbour(vip).as_deref(),
        Some(lab.client.mac.as_str()),
        "B's entry for {vip} did not follow the new owner's gratuitous ARP (A is {})",
        lab.a.mac
    );
    // ARP *for* the address still stops at B's guard: B has it on eth0 again, yet stays silent.
    lab.b
        .ip(&["addr", "add", &format!("{vip}/32"), "dev", "eth0"]);
    let (_, out) = lab.a.exec(&[
        "arping",
        "-c",
        "2",
        "-w",
        "2",
        "-I",
        "eth0",
        &vip.to_string(),
    ]);
    assert!(
        !out.to_lowercase().contains(&lab.b.mac),
        "fenced B answered ARP for the address: {out}"
    );
    assert!(
        out.to_lowercase().contains(&lab.client.mac),
        "the owner must answer: {out}"
    );
    // The announcements now pass B's guard while B holds the address: B's kernel must not
    // answer them (their sender is one of its own addresses).
    let (_, out) = lab.client.exec(&[
        "arping",
        "-U",
        "-S",
        &vip.to_string(),
        "-i",
        "eth0",
        "-c",
        "2",
        "-w",
        "2",
        &vip.to_string(),
    ]);
    assert!(out.contains("ARPING"), "arping did not run: {out}");
    assert!(
        !out.to_lowercase().contains(&lab.b.mac),
        "fenced B answered the owner's gratuitous ARP: {out}"
    );
    eprintln!("the owner's gratuitous ARP while fenced B holds the address: {out}");
}

/// The kernel lease: an owner whose agent stops renewing (frozen, or gone with its programs
/// still attached) stops answering for the address once the lease has run, with no userspace
/// action at all; a renewal from a fresh PRIMARY verdict opens it again, and a renewal from
/// an older verdict never shortens it.
#[tokio::test(flavor = "current_thread")]
async fn an_owner_that_stops_renewing_is_fenced_by_the_kernel_when_its_lease_runs_out() {
    const LEASE: Duration = Duration::from_millis(300);
    let lab = Lab::new(14);
    let vip = lab.vip(false);
    let mut cfg = config(&lab, false);
    cfg.lease = Some(LEASE);
    let mut a = executor(&lab.a, cfg);
    serve(&lab.a, "A");
    let acquired = Instant::now();
    a.acquire(&[]).await.expect("acquire on A");
    let (_served, greeting) = connect(&lab, vip).expect("client reaches A within the lease");
    assert_eq!(greeting, "A");
    assert_eq!(a.verify().await.unwrap().guard[0].1, Some(true));

    // No renewal: the lease runs out by itself.
    tokio::time::sleep(LEASE.saturating_sub(acquired.elapsed()) + Duration::from_millis(50)).await;
    assert_eq!(
        a.verify().await.unwrap().guard[0].1,
        Some(false),
        "lease still running"
    );
    let before = a.counters(vip).unwrap();
    assert!(
        connect(&lab, vip).is_err(),
        "A served the address after its lease ran out"
    );
    let after = a.counters(vip).unwrap();
    assert!(
        after.dropped_packets > before.dropped_packets,
        "the guard did not drop: {before:?} -> {after:?}"
    );

    // A verdict older than the lease cannot bring ownership back...
    a.renew_lease(acquired).expect("renew");
    assert!(
        connect(&lab, vip).is_err(),
        "a stale verdict renewed the lease"
    );
    // ...a fresh one does, without a new acquire.
    let fresh = Instant::now();
    a.renew_lease(fresh).expect("renew");
    let (_again, greeting) = connect(&lab, vip).expect("client reaches A after the renewal");
    assert_eq!(greeting, "A");
    // An older verdict reported late does not shorten the fresh lease.
    a.renew_lease(acquired).expect("renew");
    assert_eq!(a.verify().await.unwrap().guard[0].1, Some(true));
    assert!(fresh.elapsed() < LEASE, "the machine was too slow to tell");

    // Released: renewals no longer open anything.
    a.release().await.expect("release");
    a.renew_lease(Instant::now()).expect("renew");
    assert_eq!(a.verify().await.unwrap().guard[0].1, Some(false));
}

#[tokio::test(flavor = "current_thread")]
async fn ipv4_address_moves_by_garp_and_fenced_node_stays_silent() {
    move_between_nodes(11, false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ipv6_address_moves_by_unsolicited_na_and_fenced_node_stays_silent() {
    move_between_nodes(12, true).await;
}

/// Waits until A's `conn_track` lists the connection whose client end is `client`.
async fn tracked(node: &NodeExecutor, client: SocketAddr) -> Connection {
    let start = Instant::now();
    loop {
        let connections = node.tracked_connections().expect("tracker");
        if let Some(found) = connections.iter().find(|c| c.client == client) {
            return *found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{client} not tracked; tracker has {connections:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A dies with idle client connections; B takes over with A's tracked list and its tickle ACKs
/// reset the handed-over connection within 100 ms. A second connection that B is not told about
/// stays open: the reset is the tickle's doing, not a side effect of the move.
async fn tickles_reset_idle_clients(subnet: u8, v6: bool) {
    let lab = Lab::new(subnet);
    let vip = lab.vip(v6);
    let mut a = executor(&lab.a, config(&lab, v6));
    let mut b = executor(&lab.b, config(&lab, v6));
    serve(&lab.a, "A");
    serve(&lab.b, "B");
    a.acquire(&[]).await.expect("acquire on A");
    let (handed, greeting) = connect(&lab, vip).expect("first client connection");
    assert_eq!(greeting, "A");
    let (control, _) = connect(&lab, vip).expect("second client connection");

    let handed_over = tracked(&a, handed.local_addr().unwrap()).await;
    assert_eq!(handed_over.server, SocketAddr::new(vip, PORT));
    tracked(&a, control.local_addr().unwrap()).await;
    // The tracker saw both directions: the client acknowledged the 1-byte greeting, so its
    // last ACK is the server's next sequence number, and it has sent nothing itself.
    let states = a.tracked_connection_states().unwrap();
    let state = states
        .iter()
        .find(|t| t.connection == handed_over)
        .expect("tracked state")
        .state;
    assert_eq!(state.client_ack, state.server_next_seq, "{state:?}");
    assert_eq!(state.server_ack, state.client_next_seq, "{state:?}");
    assert_ne!(state.server_next_seq, 0);
    assert_ne!(state.last_seen_ns, 0);

    // A crashes: its link goes away without a word to the client.
    lab.a.ip(&["link", "set", "eth0", "down"]);
    let handed_end = watch(handed);
    let control_end = watch(control);
    let start = Instant::now();
    let timeline = b.acquire(&[handed_over]).await.expect("acquire on B");
    assert!(
        timeline
            .steps
            .iter()
            .any(|s| s.kind == StepKind::Tickle && s.detail.starts_with("1 sent")),
        "{timeline:?}"
    );
    let (kind, at) = handed_end
        .recv_timeout(Duration::from_secs(2))
        .expect("the handed-over connection was not reset");
    assert_eq!(kind, ErrorKind::ConnectionReset);
    let after = at.duration_since(start);
    eprintln!("tickled connection reset {after:?} after B's acquire started");
    assert!(after <= Duration::from_millis(100), "reset took {after:?}");
    assert!(
        control_end
            .recv_timeout(Duration::from_millis(600))
            .is_err(),
        "the connection B was not told about ended too"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ipv4_tickle_acks_reset_clients_of_a_dead_owner_within_100ms() {
    tickles_reset_idle_clients(13, false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ipv6_tickle_acks_reset_clients_of_a_dead_owner_within_100ms() {
    tickles_reset_idle_clients(14, true).await;
}

/// Releasing the address resets the owner's own client connections (SOCK_DESTROY), IPv4 on a
/// dual-stack socket and IPv6 alike, and leaves the listener serving.
#[tokio::test(flavor = "current_thread")]
async fn release_resets_connections_to_the_releasing_owner() {
    let lab = Lab::new(15);
    let both = vec![
        OverlayAddress::host(lab.vip(false)),
        OverlayAddress::host(lab.vip(true)),
    ];
    let mut a = executor(&lab.a, NodeConfig::new("eth0", both));
    serve(&lab.a, "A");
    a.acquire(&[]).await.expect("acquire on A");
    let (v4, _) = connect(&lab, lab.vip(false)).expect("IPv4 connection");
    let (v6, _) = connect(&lab, lab.vip(true)).expect("IPv6 connection");
    let ends = [watch(v4), watch(v6)];
    let start = Instant::now();
    let timeline = a.release().await.expect("release");
    let destroyed = timeline
        .steps
        .iter()
        .find(|s| s.kind == StepKind::SockDestroy)
        .expect("sock_destroy step");
    assert!(
        destroyed.detail.starts_with("2 found, 2 destroyed"),
        "{destroyed:?}"
    );
    for end in ends {
        let (kind, at) = end
            .recv_timeout(Duration::from_secs(2))
            .expect("connection not reset at release");
        assert_eq!(kind, ErrorKind::ConnectionReset);
        assert!(at.duration_since(start) <= Duration::from_millis(100));
    }
    // The listener was not among the victims: after a new acquire it serves again.
    a.acquire(&[]).await.expect("re-acquire");
    let (_again, greeting) = connect(&lab, lab.vip(false)).expect("listener survived release");
    assert_eq!(greeting, "A");
}

/// With duplicate-address detection, B refuses to take an address A still answers for, and
/// names A's MAC; once A has released, B takes it.
#[tokio::test(flavor = "current_thread")]
async fn duplicate_address_detection_refuses_an_address_in_use() {
    let lab = Lab::new(16);
    let mut a = executor(&lab.a, config(&lab, false));
    let mut with_dad = config(&lab, false);
    with_dad.dad = Some(DadPolicy::default());
    let mut b = executor(&lab.b, with_dad);
    a.acquire(&[]).await.expect("acquire on A");
    let failure = b
        .acquire(&[])
        .await
        .expect_err("B acquired an address in use");
    let message = failure.error.to_string();
    assert!(message.contains(&lab.a.mac), "{message}");
    assert_eq!(failure.timeline.steps.len(), 1);
    assert_eq!(failure.timeline.steps[0].kind, StepKind::Dad);
    assert!(!failure.timeline.steps[0].ok);
    assert!(!b.verify().await.unwrap().owned);

    a.release().await.expect("release on A");
    let timeline = b.acquire(&[]).await.expect("B acquires once A let go");
    assert!(timeline.steps[0].kind == StepKind::Dad && timeline.steps[0].ok);
    assert!(b.verify().await.unwrap().owned);
}

/// A link that went down and came back (a reboot, a cable, the lab's crash-node) leaves a
/// stale ENETDOWN on the announcer's packet socket: the next acquire must still work, and one
/// while the link is really down must fail saying so.
#[tokio::test(flavor = "current_thread")]
async fn acquire_works_after_the_link_flapped_and_fails_while_it_is_down() {
    let lab = Lab::new(18);
    let mut a = executor(&lab.a, config(&lab, false));
    lab.a.ip(&["link", "set", "eth0", "down"]);
    lab.a.ip(&["link", "set", "eth0", "up"]);
    let timeline = a
        .acquire(&[])
        .await
        .expect("acquire after the link came back");
    assert!(
        timeline
            .steps
            .iter()
            .any(|s| s.kind == StepKind::Garp && s.ok),
        "{timeline:?}"
    );
    assert!(a.verify().await.unwrap().owned);
    a.release().await.expect("release");
    lab.a.ip(&["link", "set", "eth0", "down"]);
    let down = a
        .acquire(&[])
        .await
        .expect_err("acquired with the link down");
    assert!(
        down.error.to_string().contains("Network is down"),
        "{}",
        down.error
    );
}

/// Two AGs on the same two nodes (issue 13: several AGs per instance is the common case):
/// each node attaches one guard to its interface, shared by both AGs' executors, and the AGs
/// move independently: fencing one AG's address never touches the other's.
#[tokio::test(flavor = "current_thread")]
async fn two_ags_share_one_guard_per_node_and_move_independently() {
    let lab = Lab::new(20);
    let IpAddr::V4(first) = lab.vip(false) else {
        unreachable!()
    };
    let [a, b, c, d] = first.octets();
    let vips = [IpAddr::V4(first), IpAddr::from([a, b, c, d + 1])];
    let config_of = |vip: IpAddr| NodeConfig::new("eth0", vec![OverlayAddress::host(vip)]);
    let shared_guard = |host: &Host| {
        let config = config_of(vips[0]);
        let mut spec = tdsvip_node::GuardSpec::of(&config);
        spec.addresses = vips.to_vec();
        in_netns(&host.ns, || tdsvip_node::SharedGuard::attach(&spec)).expect("guard")
    };
    let on = |host: &Host, guard: &tdsvip_node::SharedGuard, vip: IpAddr| {
        let config = config_of(vip);
        in_netns(&host.ns, || {
            NodeExecutor::with_guard(config, Some(guard.clone()))
        })
        .expect("executor")
    };
    let (guard_a, guard_b) = (shared_guard(&lab.a), shared_guard(&lab.b));
    let (mut ag1_a, mut ag2_a) = (on(&lab.a, &guard_a, vips[0]), on(&lab.a, &guard_a, vips[1]));
    let (mut ag1_b, mut ag2_b) = (on(&lab.b, &guard_b, vips[0]), on(&lab.b, &guard_b, vips[1]));
    serve(&lab.a, "A");
    serve(&lab.b, "B");
    let greeting = |vip| connect(&lab, vip).map(|(_, g)| g).ok();

    // AG1 on A, AG2 on B.
    ag1_a.acquire(&[]).await.expect("AG1 on A");
    ag2_b.acquire(&[]).await.expect("AG2 on B");
    assert_eq!(greeting(vips[0]).as_deref(), Some("A"));
    assert_eq!(greeting(vips[1]).as_deref(), Some("B"));
    for host in [&lab.a, &lab.b] {
        let links = host.ip(&["-d", "link", "show", "dev", "eth0"]);
        assert_eq!(links.matches("prog/xdp id").count(), 1, "{links}");
    }

    // AG1 moves to B; AG2 stays served by B throughout, and A's guard still fences AG2.
    ag1_a.release().await.expect("AG1 off A");
    ag1_b.acquire(&[]).await.expect("AG1 on B");
    assert_eq!(greeting(vips[0]).as_deref(), Some("B"));
    assert_eq!(greeting(vips[1]).as_deref(), Some("B"));
    assert_eq!(ag2_a.verify().await.unwrap().guard[0].1, Some(false));

    // AG2 moves to A; AG1 stays on B.
    ag2_b.release().await.expect("AG2 off B");
    ag2_a.acquire(&[]).await.expect("AG2 on A");
    assert_eq!(greeting(vips[1]).as_deref(), Some("A"));
    assert_eq!(greeting(vips[0]).as_deref(), Some("B"));
    assert_eq!(ag1_b.verify().await.unwrap().guard[0].1, Some(true));
    assert_eq!(ag1_a.verify().await.unwrap().guard[0].1, Some(false));
}
