//! One availability group as the router holds it: its controller, its node executor, its
//! cloud executor (with `[cloud]`), and what the router tracks around them. Generic over the
//! executor traits so that the router can be tested with fakes that record the calls.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tdsvip_node::{Connection, NodeTakeover};

use super::inputs::OverlayProbe;
use super::steps::{log_steps, node_call};
use crate::controller::{AgController, NodeCall};
use crate::status::OverlayRun;

pub(super) struct AgRuntime<N, C> {
    pub(super) controller: AgController,
    pub(super) node: N,
    pub(super) addresses: Vec<IpAddr>,
    pub(super) owned: bool,
    /// When the last successful acquire returned (overlay logins before it do not count).
    pub(super) acquired_at: Option<Instant>,
    pub(super) cloud: Option<Arc<C>>,
    /// Whether a local probe result has arrived (READY=1 waits for every AG's first).
    pub(super) probed: bool,
    /// The login through the overlay IP, run at once after an acquire.
    pub(super) overlay_probe: Option<OverlayProbe>,
    /// Who has been answering the periodic login through the overlay IP (`overlay.rs`).
    pub(super) overlay_run: Option<OverlayRun>,
    /// Whether a quick re-login through the overlay IP is running (`overlay.rs`).
    pub(super) relogin_running: bool,
    /// The local replica's name as its health query says (`@@SERVERNAME`): a peer's login
    /// through the overlay IP answered by this name reached this node.
    pub(super) server_name: Option<String>,
    /// The clients the peers listed in the latest handover answer, for the acquire to tickle.
    pub(super) handover_clients: Vec<Connection>,
}

impl<N: NodeTakeover, C> AgRuntime<N, C> {
    pub(super) fn new(
        controller: AgController,
        node: N,
        addresses: Vec<IpAddr>,
        cloud: Option<Arc<C>>,
    ) -> AgRuntime<N, C> {
        AgRuntime {
            controller,
            node,
            addresses,
            owned: false,
            acquired_at: None,
            cloud,
            probed: false,
            overlay_probe: None,
            overlay_run: None,
            relogin_running: false,
            server_name: None,
            handover_clients: Vec::new(),
        }
    }

    /// The node executor's acquire, tickling `clients`; `owned` follows its result.
    pub(super) async fn acquire(&mut self, clients: &[Connection]) -> NodeCall {
        let started = Instant::now();
        let result = self.node.acquire(clients).await;
        let call = node_call(started, &result);
        log_steps(self.controller.ag(), "acquire", &call);
        if call.error.is_none() {
            self.owned = true;
        }
        call
    }

    /// The node executor's release; `owned` follows its result.
    pub(super) async fn release(&mut self) -> NodeCall {
        let started = Instant::now();
        let result = self.node.release().await;
        let call = node_call(started, &result);
        log_steps(self.controller.ag(), "release", &call);
        if call.error.is_none() {
            self.owned = false;
        }
        call
    }

    /// The overlay addresses this node holds now.
    pub(super) fn owned_addresses(&self) -> Vec<IpAddr> {
        if self.owned {
            self.addresses.clone()
        } else {
            Vec::new()
        }
    }
}
