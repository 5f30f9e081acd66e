//! The node-level takeover as the controller sees it: one small trait, [`NodeTakeover`]
//! (`acquire`, `release`, `verify`, `announce`), whose calls return a [`CallSteps`] of the steps
//! they took and how long each lasted, so the controller can export per-step timings and can
//! be tested against a fake without root. [`NodeExecutor`] is the real implementation.
//!
//! Order of the steps, and why:
//! * acquire: (optional DAD, first acquire only) → guard to owner → address add → first
//!   announcement round → first tickle round. The guard opens before the address exists so
//!   that the first ARP request after the add is answered; announcing before tickling makes
//!   the clients' neighbour entries point here before their duplicate ACKs are sent, so those
//!   reach this node and meet its RST. Later announcement and tickle rounds run in background
//!   tasks so `acquire` returns after the first round.
//! * release: stop background rounds → guard to fenced → destroy local sockets (their RSTs
//!   still leave: XDP sees only ingress) → address remove.
//!
//! A failed step stops the call; the error carries the timeline so far. The controller is
//! expected to `release` after a failed `acquire`: every step is idempotent.
//!
//! On agent exit: dropping the executor stops the background rounds. With a pin directory
//! ([`NodeConfig::pin_dir`]) the eBPF programs stay attached, and the lease keeps running, after
//! the process is gone, clean exit or kill; without one they are detached. The address is
//! interface state and stays until removed; a clean stop that must not leave it calls
//! `release` first. See `guard.rs` and `pins.rs`.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tdsvip_ebpf_common::VipEntry;

use tokio::task::JoinHandle;

use crate::{
    address::{AddressError, AddressManager, AddressPresence},
    announce::{self, Announcer, ArpListener, lock},
    caps,
    conn_track::{Connection, TrackedConnection},
    guard::{Counters, GuardError},
    interface_guard::{GuardSpec, SharedGuard},
    sock_destroy::{SockDestroyError, SockDestroyer},
    tickle::Tickler,
};

mod call_steps;
mod config;
mod lease;
mod takeover;

pub use call_steps::{Action, CallSteps, Step, StepKind};
pub use config::{DadPolicy, NodeConfig, TicklePolicy};
use lease::owner_entry;
use takeover::fail;
pub use takeover::{NodeError, NodeTakeover, TakeoverFailure, Verification};

/// The overlay addresses to leave passing at start: those already on the interface, when
/// the caller says the replica was just seen PRIMARY ([`NodeConfig::adopt_present`]).
fn adoptable(config: &NodeConfig, ips: &[IpAddr]) -> Result<Vec<IpAddr>, NodeError> {
    if !config.adopt_present {
        return Ok(Vec::new());
    }
    let present =
        crate::address::addresses_on(&config.interface).map_err(|source| NodeError::Io {
            what: "list the interface's addresses",
            source,
        })?;
    Ok(ips
        .iter()
        .copied()
        .filter(|ip| present.contains(ip))
        .collect())
}

/// How long `acquire` waits for an added address to become local before it fails.
const LOCAL_WAIT_LIMIT: Duration = Duration::from_millis(500);

/// The real executor: netlink, pnet, eBPF and raw sockets on one interface. All its sockets
/// and programs bind to the network namespace of the thread that calls [`NodeExecutor::new`].
pub struct NodeExecutor {
    config: NodeConfig,
    ips: Vec<IpAddr>,
    addresses: AddressManager,
    announcer: Arc<Mutex<Announcer>>,
    arp_listener: Option<ArpListener>,
    tickler: Arc<Tickler>,
    destroyer: SockDestroyer,
    /// The interface's eBPF programs, shared with the other AGs' executors on it.
    guard: Option<SharedGuard>,
    background: Vec<JoinHandle<()>>,
    dad_done: bool,
    adopted: Vec<IpAddr>,
    /// While the guard passes the addresses (acquired or adopted, not released since): the
    /// lease expiry last written for them. This executor is the map's only writer, so a
    /// renewal compares with this instead of reading the map on every probe.
    owned_until: Option<u64>,
}

impl Drop for NodeExecutor {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl NodeExecutor {
    /// Checks capabilities, opens every socket, loads and attaches the eBPF programs with
    /// every address fenced. Must run inside a tokio runtime.
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        Self::with_guard(config, None)
    }

    /// As [`NodeExecutor::new`], on the interface guard `shared` when given (several AGs on
    /// one interface share one, `interface_guard.rs`); else one of its own is attached.
    /// Only this executor's addresses' entries are written.
    pub fn with_guard(config: NodeConfig, shared: Option<SharedGuard>) -> Result<Self, NodeError> {
        let needed = if config.ebpf {
            caps::REQUIRED_WITH_EBPF
        } else {
            caps::REQUIRED_WITHOUT_EBPF
        };
        caps::check(needed)?;
        if config.addresses.is_empty() {
            return Err(NodeError::Config("no overlay address configured".into()));
        }
        for address in &config.addresses {
            address.validate(&config.interface)?;
        }
        let interface = announce::find_interface(&config.interface)?;
        let ifindex = interface.index;
        let ips: Vec<IpAddr> = config.addresses.iter().map(|a| a.ip).collect();
        let addresses = AddressManager::new(&config.interface, ifindex)?;
        let announcer = Arc::new(Mutex::new(Announcer::open(&interface)?));
        let arp_listener = match &config.dad {
            Some(_) => Some(ArpListener::open(ifindex).map_err(|source| NodeError::Io {
                what: "ARP listener for duplicate-address detection",
                source,
            })?),
            None => None,
        };
        let tickler = Arc::new(Tickler::open(&ips).map_err(|source| NodeError::Io {
            what: "raw sockets for tickle ACKs",
            source,
        })?);
        let destroyer = SockDestroyer::open()?;
        let adopted = adoptable(&config, &ips)?;
        // An adopted address passes on the verdict that decided the adoption, just made.
        let adopted_at = Instant::now();
        let guard = if config.ebpf {
            let shared = match shared {
                Some(shared) => shared,
                None => SharedGuard::attach(&GuardSpec::of(&config))?,
            };
            let adopted_entry = owner_entry(config.lease, adopted_at);
            let mut programs = shared.lock();
            for ip in &ips {
                let entry = if adopted.contains(ip) {
                    adopted_entry
                } else {
                    VipEntry::fenced()
                };
                programs.guard.register(*ip, entry)?;
            }
            drop(programs);
            Some(shared)
        } else {
            None
        };
        let owned_until =
            (!adopted.is_empty()).then(|| owner_entry(config.lease, adopted_at).lease_expires_ns);
        Ok(Self {
            owned_until,
            config,
            ips,
            addresses,
            announcer,
            arp_listener,
            tickler,
            destroyer,
            guard,
            background: Vec::new(),
            dad_done: false,
            adopted,
        })
    }

    /// The overlay addresses found on the interface and left passing at start
    /// ([`NodeConfig::adopt_present`]); empty when nothing was adopted.
    pub fn adopted(&self) -> &[IpAddr] {
        &self.adopted
    }

    pub const fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// `vip_guard`'s counters for one address.
    pub fn counters(&self, ip: IpAddr) -> Result<Counters, NodeError> {
        let guard = self.guard.as_ref().ok_or(NodeError::EbpfDisabled)?;
        Ok(guard.lock().guard.counters(ip)?)
    }

    /// The connections `conn_track` currently knows (what a peer would be handed).
    pub fn tracked_connections(&self) -> Result<Vec<Connection>, NodeError> {
        let guard = self.guard.as_ref().ok_or(NodeError::EbpfDisabled)?;
        Ok(guard.lock().tracker.connection_keys())
    }

    /// The tracked connections with the sequence and acknowledgement numbers last seen.
    pub fn tracked_connection_states(&self) -> Result<Vec<TrackedConnection>, NodeError> {
        let guard = self.guard.as_ref().ok_or(NodeError::EbpfDisabled)?;
        Ok(guard.lock().tracker.connections())
    }

    fn stop_background(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
    }

    fn set_guard(&mut self, owner: bool) -> Result<(Option<()>, String), GuardError> {
        // The acquire follows the PRIMARY verdict that decided it within milliseconds.
        let entry = if owner {
            owner_entry(self.config.lease, Instant::now())
        } else {
            VipEntry::fenced()
        };
        self.owned_until = owner.then_some(entry.lease_expires_ns);
        match &self.guard {
            None => Ok((None, "eBPF disabled".into())),
            Some(shared) => {
                let mut programs = shared.lock();
                for ip in &self.ips {
                    programs.guard.set(*ip, entry)?;
                }
                let state = if owner { "owner" } else { "fenced" };
                Ok((Some(()), format!("{} address(es) {state}", self.ips.len())))
            }
        }
    }

    /// The connections to tickle: the tracker's and the peers', for our addresses, once each.
    fn tickle_targets(&self, peer_connections: &[Connection]) -> Vec<Connection> {
        let mut targets: Vec<Connection> = self
            .guard
            .as_ref()
            .map(|shared| {
                // Keys only: they hold addresses and ports, and skip a lookup per entry.
                shared.lock().tracker.connection_keys()
            })
            .unwrap_or_default();
        targets.extend_from_slice(peer_connections);
        targets.retain(|c| self.ips.contains(&c.server.ip()));
        targets.sort();
        targets.dedup();
        targets
    }

    async fn detect_duplicates(&mut self) -> Result<String, NodeError> {
        let (Some(policy), Some(listener)) = (&self.config.dad, &self.arp_listener) else {
            return Ok("not configured".into());
        };
        let mut checked = 0;
        for address in &self.config.addresses {
            let IpAddr::V4(ip) = address.ip else { continue };
            // Our own leftover address (agent restart) would answer our probe: skip it.
            if self.addresses.presence(address).await? != AddressPresence::Absent {
                continue;
            }
            listener
                .detect(&self.announcer, ip, policy.probes, policy.interval)
                .await?;
            checked += 1;
        }
        Ok(format!("{checked} IPv4 address(es) probed, no duplicate"))
    }

    fn spawn_later_rounds(&mut self, tickle_targets: Vec<Connection>) {
        let policy = self.config.announce.clone();
        let later = policy.later_rounds();
        let announcer = Arc::clone(&self.announcer);
        let ips = self.ips.clone();
        let start = tokio::time::Instant::now();
        if !later.is_empty() || policy.refresh_interval.is_some() {
            self.background.push(tokio::spawn(async move {
                for offset in later {
                    tokio::time::sleep_until(start + offset).await;
                    if let Err(err) = lock(&announcer).announce(&ips) {
                        tracing::warn!(%err, "announcement round failed");
                    }
                }
                if let Some(every) = policy.refresh_interval {
                    let mut ticker = tokio::time::interval_at(start + every, every);
                    loop {
                        ticker.tick().await;
                        if let Err(err) = lock(&announcer).announce(&ips) {
                            tracing::warn!(%err, "announcement refresh failed");
                        }
                    }
                }
            }));
        }
        let rounds = self.config.tickle.rounds;
        let spacing = self.config.tickle.spacing;
        if rounds > 1 && !tickle_targets.is_empty() {
            let tickler = Arc::clone(&self.tickler);
            self.background.push(tokio::spawn(async move {
                for round in 1..rounds {
                    tokio::time::sleep_until(start + spacing * round).await;
                    let report = tickler.tickle(&tickle_targets);
                    if report.failed > 0 {
                        tracing::warn!(?report, "tickle round had failures");
                    }
                }
            }));
        }
    }
}

impl NodeTakeover for NodeExecutor {
    fn counters(&self, ip: IpAddr) -> Result<Counters, NodeError> {
        NodeExecutor::counters(self, ip)
    }

    fn tracked_connections(&self) -> Result<Vec<Connection>, NodeError> {
        NodeExecutor::tracked_connections(self)
    }

    async fn acquire(
        &mut self,
        peer_connections: &[Connection],
    ) -> Result<CallSteps, TakeoverFailure> {
        let mut timeline = CallSteps::new(Action::Acquire);
        self.stop_background();
        if self.config.dad.is_some() && !self.dad_done {
            let dad = timeline
                .step_async(StepKind::Dad, async {
                    self.detect_duplicates().await.map(|detail| ((), detail))
                })
                .await;
            if let Err(err) = dad {
                return Err(fail(timeline, err));
            }
            self.dad_done = true;
        }
        if let Err(err) = timeline.step(StepKind::Ebpf, || self.set_guard(true)) {
            return Err(fail(timeline, err));
        }
        let added = timeline
            .step_async(StepKind::Address, async {
                for address in &self.config.addresses {
                    self.addresses.add(address).await?;
                }
                // Announcing an address the kernel does not serve yet would send clients to
                // a node that drops their packets (IPv6; see wait_until_local).
                for ip in &self.ips {
                    self.addresses
                        .wait_until_local(*ip, LOCAL_WAIT_LIMIT)
                        .await?;
                }
                Ok::<_, AddressError>(((), format!("{} address(es) added", self.ips.len())))
            })
            .await;
        if let Err(err) = added {
            return Err(fail(timeline, err));
        }
        let announced = timeline.step(StepKind::Garp, || {
            lock(&self.announcer).announce(&self.ips).map(|report| {
                let detail = format!("{} ARP, {} NA frames", report.arp_frames, report.na_frames);
                ((), detail)
            })
        });
        if let Err(err) = announced {
            return Err(fail(timeline, err));
        }
        let mut targets = Vec::new();
        let tickled = timeline.step(StepKind::Tickle, || {
            // Reading the tracker is part of the step: with many connections it is a good
            // share of it.
            targets = self.tickle_targets(peer_connections);
            let report = self.tickler.tickle(&targets);
            let detail = format!(
                "{} sent, {} skipped, {} failed",
                report.sent, report.skipped, report.failed
            );
            Ok::<_, NodeError>(((), detail))
        });
        if let Err(err) = tickled {
            return Err(fail(timeline, err));
        }
        self.spawn_later_rounds(targets);
        Ok(timeline)
    }

    async fn release(&mut self) -> Result<CallSteps, TakeoverFailure> {
        let mut timeline = CallSteps::new(Action::Release);
        self.stop_background();
        if let Err(err) = timeline.step(StepKind::Ebpf, || self.set_guard(false)) {
            return Err(fail(timeline, err));
        }
        let destroyed = timeline.step(StepKind::SockDestroy, || {
            let mut total = crate::sock_destroy::DestroyReport::default();
            for ip in &self.ips {
                let report = self.destroyer.destroy_local(*ip)?;
                total.found += report.found;
                total.destroyed += report.destroyed;
                total.vanished += report.vanished;
                total.failed += report.failed;
            }
            let detail = format!(
                "{} found, {} destroyed, {} gone, {} failed",
                total.found, total.destroyed, total.vanished, total.failed
            );
            Ok::<_, SockDestroyError>(((), detail))
        });
        if let Err(err) = destroyed {
            return Err(fail(timeline, err));
        }
        let removed = timeline
            .step_async(StepKind::Address, async {
                for address in &self.config.addresses {
                    self.addresses.remove(address).await?;
                }
                Ok::<_, AddressError>(((), format!("{} address(es) removed", self.ips.len())))
            })
            .await;
        if let Err(err) = removed {
            return Err(fail(timeline, err));
        }
        if let Some(shared) = &self.guard {
            let mut programs = shared.lock();
            for ip in &self.ips {
                programs.tracker.forget(*ip);
            }
        }
        Ok(timeline)
    }

    async fn verify(&mut self) -> Result<Verification, TakeoverFailure> {
        let mut timeline = CallSteps::new(Action::Verify);
        let mut addresses = Vec::new();
        let checked = timeline
            .step_async(StepKind::Address, async {
                for address in &self.config.addresses {
                    addresses.push((address.ip, self.addresses.presence(address).await?));
                }
                Ok::<_, AddressError>(((), format!("{} address(es) checked", addresses.len())))
            })
            .await;
        if let Err(err) = checked {
            return Err(fail(timeline, err));
        }
        let mut guard_states = Vec::new();
        let guard_checked = timeline.step(StepKind::Ebpf, || {
            for ip in &self.ips {
                let state = match &self.guard {
                    Some(shared) => shared.lock().guard.is_owner(*ip)?,
                    None => None,
                };
                guard_states.push((*ip, state));
            }
            Ok::<_, GuardError>(((), format!("{guard_states:?}")))
        });
        if let Err(err) = guard_checked {
            return Err(fail(timeline, err));
        }
        let owned = addresses
            .iter()
            .all(|(_, presence)| *presence == AddressPresence::AsConfigured)
            && guard_states
                .iter()
                .all(|(_, state)| self.guard.is_none() || *state == Some(true));
        Ok(Verification {
            owned,
            addresses,
            guard: guard_states,
            timeline,
        })
    }

    fn renew_lease(&mut self, primary_seen_at: Instant) -> Result<(), NodeError> {
        self.renew_owned_lease(primary_seen_at)
    }

    async fn announce(&mut self) -> Result<CallSteps, TakeoverFailure> {
        let mut timeline = CallSteps::new(Action::Announce);
        let announced = timeline.step(StepKind::Garp, || {
            lock(&self.announcer).announce(&self.ips).map(|report| {
                let detail = format!("{} ARP, {} NA frames", report.arp_frames, report.na_frames);
                ((), detail)
            })
        });
        match announced {
            Ok(()) => Ok(timeline),
            Err(err) => Err(fail(timeline, err)),
        }
    }
}
