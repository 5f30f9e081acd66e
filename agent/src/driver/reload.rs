//! SIGHUP: which keys of a reloaded config can take effect while the agent runs, and how the
//! router applies them (the input tasks are restarted from the new config, the peers
//! replaced, the timers rebuilt); a file that does not parse is refused and the running
//! configuration stays.

use tdsvip_cloud::CloudExecutor;
use tdsvip_node::NodeTakeover;
use tdsvip_probes::Password;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inputs::{overlay_probe, spawn_inputs};
use super::peer_reports::PeerRuntime;
use super::router::EventRouter;
use super::{DriverError, Input};
use crate::config::AgentConfig;
use crate::http::client::Bearer;

/// The tasks that feed the router (probes, peer polls), started from one config; a reload
/// stops them and starts a new set.
pub(super) struct InputTasks {
    parent: CancellationToken,
    current: CancellationToken,
}

impl InputTasks {
    /// Starts the first set; `parent` stops every set.
    pub(super) fn start(
        parent: CancellationToken,
        config: &AgentConfig,
        password: &Password,
        peers: &[PeerRuntime],
        token: Option<&Bearer>,
        tx: &mpsc::Sender<Input>,
    ) -> Result<InputTasks, DriverError> {
        let current = parent.child_token();
        spawn_inputs(config, password, peers, token, tx, &current)?;
        Ok(InputTasks { parent, current })
    }

    /// Stops the current set and starts one from `config`.
    fn restart(
        &mut self,
        config: &AgentConfig,
        password: &Password,
        peers: &[PeerRuntime],
        token: Option<&Bearer>,
        tx: &mpsc::Sender<Input>,
    ) -> Result<(), DriverError> {
        self.current.cancel();
        self.current = self.parent.child_token();
        spawn_inputs(config, password, peers, token, tx, &self.current)
    }

    pub(super) fn stop(&self) {
        self.parent.cancel();
    }

    /// No tasks and no reloads: the router's tests feed its channel themselves.
    #[cfg(test)]
    pub(super) fn idle() -> InputTasks {
        let parent = CancellationToken::new();
        InputTasks {
            current: parent.child_token(),
            parent,
        }
    }
}

impl<N: NodeTakeover, C: CloudExecutor + 'static> EventRouter<N, C> {
    /// SIGHUP: reads the file again and applies what can change while running; `true` when
    /// it was applied (the timers follow the new config).
    pub(super) async fn reload(&mut self) -> bool {
        let Some(reloader) = &self.reloader else {
            tracing::warn!("SIGHUP ignored: the agent was not started from a config file");
            return false;
        };
        let (new, password) = match reloader() {
            Ok(read) => read,
            Err(issues) => {
                for issue in &issues {
                    tracing::error!(issue = %issue, "reload refused: the running configuration stays in force");
                }
                self.metrics.count_reload(false);
                return false;
            }
        };
        let (effective, restart) = live_part(&self.config, new);
        for key in &restart {
            tracing::warn!(
                key,
                "changed in the file: takes effect at the next restart (the running value stays)"
            );
        }
        match self.apply_reload(&effective, &password).await {
            Ok(()) => {
                self.config = effective;
                self.metrics.count_reload(true);
                tracing::info!(restart_needed = ?restart, "configuration reloaded: probes, peers, peer_poll, reconcile, sql and shutdown now follow the file");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused");
                self.metrics.count_reload(false);
                false
            }
        }
    }

    async fn apply_reload(
        &mut self,
        config: &AgentConfig,
        password: &Password,
    ) -> Result<(), DriverError> {
        let gone = self.reload_peers(config)?;
        self.forget_peers(gone).await;
        let (peers, token, tx) = (&self.peers, self.token.as_ref(), &self.tx);
        self.inputs.restart(config, password, peers, token, tx)?;
        for (rt, ag) in self.ags.iter_mut().zip(&config.ags) {
            rt.overlay_probe = overlay_probe(config, password, ag);
        }
        Ok(())
    }
}

/// Which keys of `new` can take effect without a restart: the running config with those
/// replaced, and the keys that changed but need a restart (AGs, interface, HTTP listener,
/// eBPF, cloud, cluster, rise/fall: the controllers, executors and listener are built from them).
pub(crate) fn live_part(
    running: &AgentConfig,
    new: AgentConfig,
) -> (AgentConfig, Vec<&'static str>) {
    let mut restart = Vec::new();
    if new.node != running.node {
        restart.push("node");
    }
    if new.interface != running.interface {
        restart.push("interface");
    }
    if new.ags != running.ags {
        restart.push("ag");
    }
    if new.http != running.http {
        restart.push("http");
    }
    if new.ebpf != running.ebpf {
        restart.push("ebpf");
    }
    if new.cloud != running.cloud {
        restart.push("cloud");
    }
    if new.cluster != running.cluster {
        restart.push("cluster");
    }
    // The fence's instance map is built at start, though the rest of [[peer]] is live.
    let instances = |c: &AgentConfig| -> Vec<(String, Option<String>)> {
        c.peers
            .iter()
            .map(|p| (p.name.clone(), p.instance_id.clone()))
            .collect()
    };
    if new.fence != running.fence || (new.fence.aws && instances(&new) != instances(running)) {
        restart.push("fence/peer[].instance_id");
    }
    if (new.probe.rise, new.probe.fall) != (running.probe.rise, running.probe.fall) {
        restart.push("probe.rise/probe.fall");
    }
    let mut effective = running.clone();
    effective.sql = new.sql;
    effective.probe.interval_ms = new.probe.interval_ms;
    effective.probe.timeout_ms = new.probe.timeout_ms;
    effective.probe.jitter_ms = new.probe.jitter_ms;
    effective.peers = new.peers;
    // The fence's map is the one from start (above): keep showing that one.
    for p in &mut effective.peers {
        p.instance_id = running
            .peers
            .iter()
            .find(|r| r.name == p.name)
            .and_then(|r| r.instance_id.clone());
    }
    effective.peer_poll = new.peer_poll;
    effective.reconcile = new.reconcile;
    effective.shutdown = new.shutdown;
    (effective, restart)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tdsvip_probes::{Mode, ProbeResult};

    use super::*;
    use crate::controller::ReplicaRole;
    use crate::driver::peer_reports::role_of;

    const BASE: &str = r#"
interface = "eth0"
[sql]
user = "tdsvip"
password_file = "/etc/tdsvip/sql-password"
[probe]
interval_ms = 20
[[ag]]
name = "AG1"
addresses = ["10.0.0.100"]
"#;

    fn parse(extra: &str) -> AgentConfig {
        AgentConfig::parse(&format!("{BASE}{extra}")).unwrap()
    }

    #[test]
    fn live_keys_apply_and_the_rest_waits_for_a_restart() {
        let running = parse("");
        let new = AgentConfig::parse(
            &BASE
                .replace("interval_ms = 20", "interval_ms = 50\nfall = 5")
                .replace("eth0", "eth1")
                .replace("10.0.0.100", "10.0.0.101"),
        )
        .unwrap();
        let new = AgentConfig {
            peers: vec![crate::config::PeerConfig {
                name: "n2".into(),
                status_url: "http://10.0.0.2:9477".into(),
                sql_endpoint: None,
                instance_id: None,
            }],
            ..new
        };
        let (effective, restart) = live_part(&running, new);
        assert_eq!(effective.probe.interval_ms, 50);
        assert_eq!(effective.peers.len(), 1);
        // Kept as running until a restart.
        assert_eq!(effective.interface, "eth0");
        assert_eq!(effective.ags, running.ags);
        assert_eq!(effective.probe.fall, running.probe.fall);
        assert_eq!(restart, ["interface", "ag", "probe.rise/probe.fall"]);
        let (same, none) = live_part(&running, running.clone());
        assert_eq!(same, running);
        assert!(none.is_empty());
    }

    #[test]
    fn the_fences_instances_wait_for_a_restart() {
        let mut running = parse("[[peer]]\nname = \"n2\"\nstatus_url = \"http://10.0.0.2:9477\"\n");
        running.fence.aws = true;
        let mut new = running.clone();
        new.peers[0].instance_id = Some("i-0bbbbbbbbbbbbbbbb".into());
        let (effective, restart) = live_part(&running, new);
        assert_eq!(restart, ["fence/peer[].instance_id"]);
        assert!(effective.fence.aws);
        assert_eq!(effective.peers[0].instance_id, None, "the map in use");
        // A second SIGHUP with the same file still says so.
        let mut again = running.clone();
        again.peers[0].instance_id = Some("i-0bbbbbbbbbbbbbbbb".into());
        assert_eq!(live_part(&effective, again).1, ["fence/peer[].instance_id"]);
        let mut new = running.clone();
        new.fence.aws = false;
        assert_eq!(live_part(&running, new).1, ["fence/peer[].instance_id"]);
    }

    #[test]
    fn roles_come_only_from_sql_server_answers() {
        let mut r = ProbeResult {
            target: "10.0.0.2:1433".parse().unwrap(),
            mode: Mode::Login,
            outcome: tdsvip_probes::Outcome::Ok,
            started_wall: std::time::SystemTime::now(),
            started: Instant::now(),
            latency: Duration::from_millis(1),
            phases: tdsvip_probes::PhaseTimes::default(),
            session_reused: None,
            server: tdsvip_probes::ServerInfo::default(),
        };
        assert_eq!(role_of(&r), Some(ReplicaRole::Primary));
        r.outcome = tdsvip_probes::Outcome::NotPrimary {
            role: Some("SECONDARY".into()),
            detail: "x".into(),
        };
        r.server.role = Some("SECONDARY".into());
        assert_eq!(role_of(&r), Some(ReplicaRole::Secondary));
        r.outcome = tdsvip_probes::Outcome::Refused;
        assert_eq!(role_of(&r), None);
    }
}
