//! A throw-away network lab for the node tests and the benchmark: one "switch" namespace
//! holding a bridge, and client / node namespaces each wired to it by a veth pair whose inner
//! end is `eth0`. Every interface lives inside a lab namespace, so nothing is created in the
//! host's own namespace and interface names never collide; only namespace names must be
//! unique, and they carry the prefix `tvn<pid>x<n>`. [`Lab`]'s Drop deletes them even when a
//! test panics, and [`Lab::new`] first deletes labs left by processes that no longer exist.
//!
//! Code runs inside a namespace with [`in_netns`]: network namespaces are per thread, so the
//! calling thread enters the namespace for the closure and returns afterwards. Sockets,
//! netlink handles and eBPF attachments made inside stay bound to that namespace, which lets
//! one single-threaded tokio test drive client and nodes at once.
#![allow(dead_code)]

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

const PREFIX: &str = "tvn";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `f` with the calling thread inside network namespace `ns`, then returns to the
/// namespace it came from, also when `f` panics.
pub fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    struct Back(File);
    impl Drop for Back {
        fn drop(&mut self) {
            // SAFETY: setns with a namespace fd we opened; restoring the original namespace.
            let rc = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "cannot return to the original network namespace");
        }
    }
    let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
    let target = File::open(format!("/var/run/netns/{ns}")).expect("open lab netns");
    // SAFETY: setns with a valid namespace fd affects only this thread.
    let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
    let _back = Back(original);
    f()
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command and returns (success, stdout).
pub fn sh_status(args: &[&str]) -> (bool, String) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// One namespace of the lab and its addresses on `eth0`.
pub struct Host {
    pub ns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: String,
}

impl Host {
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["ip", "netns", "exec", &self.ns];
        full.extend_from_slice(args);
        sh_status(&full)
    }

    /// The MAC this host's neighbour table has for `ip`, if any (any state but FAILED).
    pub fn neighbour(&self, ip: IpAddr) -> Option<String> {
        let out = self.ip(&["neigh", "show", &ip.to_string(), "dev", "eth0"]);
        out.split("lladdr ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    }
}

pub struct Lab {
    pub name: String,
    switch: String,
    pub client: Host,
    pub a: Host,
    pub b: Host,
    pub vip4: Ipv4Addr,
    pub vip6: Ipv6Addr,
}

fn remove_stale_labs() {
    let list = sh(&["ip", "netns", "list"]);
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = sh_status(&["ip", "netns", "delete", name]);
        }
    }
}

impl Lab {
    /// Builds switch, client, node A and node B; `subnet` picks 10.231.<subnet>.0/24 and
    /// fd00:231:<subnet>::/64 (inside the lab only). The overlay address is .100 / ::100.
    pub fn new(subnet: u8) -> Self {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the node data-plane tests create network namespaces and load eBPF: run as root"
        );
        remove_stale_labs();
        let name = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{name}-sw");
        let host = |role: &str, last: u8| Host {
            ns: format!("{name}-{role}"),
            v4: Ipv4Addr::new(10, 231, subnet, last),
            v6: Ipv6Addr::new(
                0xfd00,
                0x231,
                u16::from(subnet),
                0,
                0,
                0,
                0,
                u16::from(last),
            ),
            mac: String::new(),
        };
        let mut lab = Self {
            switch: switch.clone(),
            client: host("c", 1),
            a: host("a", 2),
            b: host("b", 3),
            vip4: Ipv4Addr::new(10, 231, subnet, 100),
            vip6: Ipv6Addr::new(0xfd00, 0x231, u16::from(subnet), 0, 0, 0, 0, 0x100),
            name,
        };
        // From here on Drop cleans up whatever was created.
        sh(&["ip", "netns", "add", &switch]);
        // No MLD snooping: the lab has no querier, and a snooping bridge would forward solicited-node
        // multicast by what it last learned instead of flooding it like a plain segment.
        sh(&[
            "ip",
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        sh(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        for (port, host) in [
            ("pc", &mut lab.client),
            ("pa", &mut lab.a),
            ("pb", &mut lab.b),
        ] {
            sh(&["ip", "netns", "add", &host.ns]);
            sh(&[
                "ip", "-n", &switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", &host.ns,
            ]);
            sh(&[
                "ip", "-n", &switch, "link", "set", port, "master", "br0", "up",
            ]);
            // Fast, predictable IPv6: no DAD on the lab's own addresses. eth0 already exists, so
            // its own setting matters, and it must be off before the link comes up: with a
            // tentative link-local address, the first neighbour solicitations of a fresh
            // interface went unanswered (a real node's link-local settled long ago).
            for sysctl in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.eth0.accept_dad=0",
            ] {
                host.exec(&["sysctl", "-qw", sysctl]);
            }
            host.ip(&["link", "set", "lo", "up"]);
            host.ip(&["link", "set", "eth0", "up"]);
            host.ip(&["addr", "add", &format!("{}/24", host.v4), "dev", "eth0"]);
            host.ip(&[
                "addr",
                "add",
                &format!("{}/64", host.v6),
                "dev",
                "eth0",
                "nodad",
            ]);
            let link = host.ip(&["-o", "link", "show", "eth0"]);
            host.mac = link
                .split("link/ether ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("eth0 MAC")
                .to_owned();
        }
        lab
    }

    pub fn vip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.vip6)
        } else {
            IpAddr::V4(self.vip4)
        }
    }

    /// The MAC the client's neighbour table has for `ip`, if any (any state but FAILED).
    pub fn client_neighbour(&self, ip: IpAddr) -> Option<String> {
        self.client.neighbour(ip)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.client.ns, &self.a.ns, &self.b.ns, &self.switch] {
            let _ = sh_status(&["ip", "netns", "delete", ns]);
        }
    }
}
