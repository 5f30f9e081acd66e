//! Network namespaces of one lab: a hub namespace holding the bridge (the root namespace is
//! never touched), one namespace per SQL node and one for the client, all on one /24.
//!
//! Names carry a unique prefix (`tvl<pid>x<counter>`) so that labs of concurrent test
//! processes never collide, and a lab of a dead process is recognised by its pid and removed
//! (processes inside first) the next time a lab starts. Every namespace of a live lab is also
//! listed in a process-wide registry that the Ctrl-C handler tears down.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace a lab creates.
pub const PREFIX: &str = "tvl";
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Namespaces of live labs in this process, for the signal handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The lab's subnet: nodes are .11, .12, ..., the client .2, the hub's bridge .1.
pub const SUBNET: [u8; 3] = [10, 77, 0];
pub const OVERLAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Address of node `i` (0-based).
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 11 + i as u8)
}

/// Runs a command; `Err` carries the command and its output.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with `stdin` fed from a string (for `nft -f -`).
pub fn sh_stdin(args: &[&str], stdin: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("{}: writing stdin: {e}", args.join(" ")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}\ninput:\n{stdin}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// An open handle on a namespace, to enter it cheaply and repeatedly.
pub struct NsHandle(File);

impl NsHandle {
    pub fn open(ns: &str) -> std::io::Result<NsHandle> {
        File::open(format!("/var/run/netns/{ns}")).map(NsHandle)
    }

    /// Moves the calling thread into the namespace (only call on threads of our own).
    pub fn enter(&self) -> std::io::Result<()> {
        // SAFETY: setns with a valid namespace fd only changes the calling thread.
        let rc = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Runs `f` on a fresh thread inside `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let handle = NsHandle::open(ns).map_err(|e| format!("open netns {ns}: {e}"))?;
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        handle
            .enter()
            .map_err(|e| format!("setns {ns}: {e}"))
            .map(|()| f())
    })
    .join()
    .map_err(|_| "namespace thread panicked".to_owned())?
}

fn pids_in(ns: &str) -> Vec<i32> {
    sh(&["ip", "netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&p| p != std::process::id() as i32)
        .collect()
}

/// SIGKILLs every process in `ns` and deletes it; errors are ignored (best effort).
pub fn destroy(ns: &str) {
    for pid in pids_in(ns) {
        // SAFETY: plain kill(2) on a pid listed in the namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", ns])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Whether the process that made lab `name` (`tvl<pid>x<n>...`) still runs.
pub fn lab_alive(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
    !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces of labs whose process is gone.
pub fn remove_stale_labs() {
    for line in sh(&["ip", "netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(PREFIX) && !lab_alive(name) {
            destroy(name);
        }
    }
}

/// Tears down every live lab of this process (the signal handler's job).
pub fn destroy_all_live() {
    let names: Vec<String> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    // Nodes and client first (their processes), the hub (bridge) last.
    for ns in names.iter().rev() {
        destroy(ns);
    }
}

/// The namespaces and links of one lab; deleted on Drop.
#[derive(Debug)]
pub struct Topology {
    pub name: String,
    pub hub: String,
    pub nodes: Vec<String>,
    pub client: String,
}

impl Topology {
    /// A fresh, unique name for a lab of this process.
    pub fn fresh_name() -> String {
        format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Builds the hub with `br0` (HUB_IP/24), `n` node namespaces and the client, each with
    /// an `eth0` on a veth into the bridge.
    pub fn create(n: usize) -> Result<Topology, String> {
        let name = Self::fresh_name();
        let topo = Topology {
            hub: format!("{name}-hub"),
            nodes: (1..=n).map(|i| format!("{name}-n{i}")).collect(),
            client: format!("{name}-c"),
            name,
        };
        let all: Vec<String> = std::iter::once(topo.hub.clone())
            .chain(topo.nodes.iter().cloned())
            .chain(std::iter::once(topo.client.clone()))
            .collect();
        if let Ok(mut live) = LIVE.lock() {
            live.extend(all.iter().cloned());
        }
        for ns in &all {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let hub = topo.hub.as_str();
        sh(&["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])?;
        sh(&[
            "ip",
            "-n",
            hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "br0",
        ])?;
        sh(&["ip", "-n", hub, "link", "set", "br0", "up"])?;
        let mut legs: Vec<(String, String, Ipv4Addr)> = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), format!("n{}", i + 1), node_ip(i)))
            .collect();
        legs.push((topo.client.clone(), "c0".into(), CLIENT_IP));
        for (ns, port, ip) in &legs {
            sh(&[
                "ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            sh(&["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])?;
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(topo)
    }

    /// The MAC address of `eth0` in `ns`.
    pub fn mac(ns: &str) -> Result<String, String> {
        let out = sh(&["ip", "-n", ns, "-br", "link", "show", "dev", "eth0"])?;
        out.split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .ok_or_else(|| format!("no MAC in {out:?}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut all: Vec<&String> = self.nodes.iter().collect();
        all.push(&self.client);
        all.push(&self.hub);
        for ns in &all {
            destroy(ns);
        }
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|n| !all.contains(&n));
        }
    }
}
