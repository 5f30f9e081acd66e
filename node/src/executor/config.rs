//! What the node executor is told: the interface, the overlay addresses and the policies of
//! the steps (announcements, tickles, duplicate-address detection, eBPF).

use std::{path::PathBuf, time::Duration};

use crate::{address::OverlayAddress, announce::AnnouncePolicy, guard::XdpAttachMode};

/// Optional duplicate-address detection before the first acquire (IPv4, ARP probes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DadPolicy {
    pub probes: u32,
    /// Time between probes, and how long to listen after the last one.
    pub interval: Duration,
}

impl Default for DadPolicy {
    fn default() -> Self {
        Self {
            probes: 2,
            interval: Duration::from_millis(100),
        }
    }
}

/// How often the tickle ACKs go out after an acquire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicklePolicy {
    /// Rounds in all; the first is sent inline.
    pub rounds: u32,
    /// Between rounds. Clients answer at most one tickle per 500 ms (`tcp_invalid_ratelimit`),
    /// so repeats only matter when a round was lost.
    pub spacing: Duration,
}

impl Default for TicklePolicy {
    fn default() -> Self {
        Self {
            rounds: 3,
            spacing: Duration::from_millis(200),
        }
    }
}

/// Everything the node executor needs to know.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeConfig {
    pub interface: String,
    pub addresses: Vec<OverlayAddress>,
    /// Server ports whose connections `conn_track` keeps (the SQL Server port).
    pub tracked_ports: Vec<u16>,
    pub announce: AnnouncePolicy,
    pub tickle: TicklePolicy,
    pub dad: Option<DadPolicy>,
    /// Load `vip_guard` and `conn_track`. Off, the node still moves the address but cannot
    /// fence it or track connections (tickles then only go to peers' lists).
    pub ebpf: bool,
    pub xdp_mode: XdpAttachMode,
    pub max_tracked_connections: u32,
    /// At start, let the guard pass the overlay addresses that are already on the interface
    /// (a killed predecessor's) instead of fencing them. The caller sets it only when the
    /// local replica was just seen PRIMARY: the address then keeps serving across an agent
    /// restart, and the controller's first verdict still releases it if that changes.
    #[serde(default)]
    pub adopt_present: bool,
    /// How long ownership holds in the kernel after the PRIMARY verdict it was last extended
    /// from (`guard.rs`); `None`: until the next write. Needs `ebpf`.
    #[serde(default)]
    pub lease: Option<Duration>,
    /// A directory on bpffs under which the eBPF links and maps are pinned (`pins.rs`), so
    /// that the guard and its lease outlive the process; `None`: they die with it. Needs
    /// `ebpf`.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
}

impl NodeConfig {
    pub fn new(interface: &str, addresses: Vec<OverlayAddress>) -> Self {
        Self {
            interface: interface.to_owned(),
            addresses,
            tracked_ports: vec![1433],
            announce: AnnouncePolicy::default(),
            tickle: TicklePolicy::default(),
            dad: None,
            ebpf: true,
            xdp_mode: XdpAttachMode::default(),
            max_tracked_connections: tdsvip_ebpf_common::DEFAULT_MAX_CONNECTIONS,
            adopt_present: false,
            lease: None,
            pin_dir: None,
        }
    }
}
