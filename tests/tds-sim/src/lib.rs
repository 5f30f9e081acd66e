//! `tds-sim`: a TDS server that plays one SQL Server Always On replica, for tests and the
//! failover lab.
//!
//! SQL Server cannot be installed on the project's machines, so every test that needs a
//! replica talks to this instead. It speaks TDS 7.1–7.4, in clear text or TLS as SQL Server
//! negotiates it (and TDS 8.0's TLS first), well enough for strict clients (FreeTDS,
//! python-tds, jTDS, tedious) as well as tiberius, answers the tdsvip health query from
//! a role, health and database states that can be changed at run time, and can misbehave
//! on purpose (refuse, hang, reset, slow down, send garbage, reject logins).
//!
//! With an [`AgConfig`] naming partners and a mirroring endpoint it also plays its part of
//! an availability group with `CLUSTER_TYPE = EXTERNAL`: it replicates committed
//! transactions (the `dbo.ledger` table) to its partners over TCP, acknowledges a commit
//! only under SQL Server's synchronous-commit rule, and answers the T-SQL an HA manager
//! uses (`FAILOVER`, `FORCE_FAILOVER_ALLOW_DATA_LOSS`, `OFFLINE`, the write lease, the
//! HADR DMVs).
//!
//! Layout: [`state`] holds the replica and counters, [`ag`] the AG model (its rules in
//! `ag::rules`), `repl` replication (wire codec, log, primary and secondary sides),
//! `server` the listener, `session` one connection, `sql` parses queries, `query` and
//! `catalog` evaluate them (`func` the built-in functions and CAST), `exec` runs requests,
//! `respond` encodes answers, [`perms`] holds the logins and their permissions and `access`
//! applies them, [`tls`] the encryption setting, certificate and TLS transport, `control`
//! is the HTTP API, `cli` the command line.
#![forbid(unsafe_code)]

mod access;
pub mod ag;
mod catalog;
pub mod cli;
mod control;
mod exec;
mod exec_ag;
mod exec_perms;
mod func;
pub mod perms;
mod query;
pub mod repl;
mod respond;
mod rpc;
mod server;
mod session;
pub mod sql;
pub mod state;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use ag::{AgConfig, AvailabilityMode, Partner};
use state::{Change, Replica, Shared};
pub use state::{DbState, Fault, Health, Role, Stats};

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// TDS address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// HTTP control address, or none.
    pub control: Option<SocketAddr>,
    pub server_name: String,
    pub ag: String,
    pub role: Role,
    /// The login every existing test uses: a member of `sysadmin`.
    pub user: String,
    pub password: String,
    /// More logins (name, password), with no permission until a GRANT gives them one.
    pub logins: Vec<(String, String)>,
    pub databases: Vec<(String, DbState)>,
    pub product_version: tds_codec::Version,
    pub health: Health,
    /// The availability group: partners, mirroring endpoint, commit rule, lease, data dir.
    /// The default is a replica alone, with no endpoint and its log in memory.
    pub ag_config: AgConfig,
    /// `--encryption`, `--tls-cert`, `--tls-key`; the default is SQL Server's (`off`, with
    /// a self-signed certificate).
    pub tls: tls::TlsSettings,
}

impl SimConfig {
    /// 127.0.0.1:0, no control API, user `tdsvip` with password `secret`, no databases,
    /// SQL Server 2022 RTM (16.0.1000), HEALTHY, encryption `off` with a self-signed
    /// certificate.
    pub fn new(server_name: &str, ag: &str, role: Role) -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: None,
            server_name: server_name.to_string(),
            ag: ag.to_string(),
            role,
            user: "tdsvip".into(),
            password: "secret".into(),
            logins: Vec::new(),
            databases: Vec::new(),
            product_version: tds_codec::Version {
                major: 16,
                minor: 0,
                build: 1000,
                sub_build: 0,
            },
            health: Health::Healthy,
            ag_config: AgConfig::default(),
            tls: tls::TlsSettings::default(),
        }
    }
}

/// A running simulator. Dropping it stops it too, without waiting.
pub struct SimHandle {
    shared: Arc<Shared>,
    tds_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    endpoint_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

fn context(what: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} on {addr}: {e}"))
}

/// Binds the TDS listener (and the control listener, if configured) and starts serving.
pub async fn start(cfg: SimConfig) -> io::Result<SimHandle> {
    let logins = perms::Logins::new((&cfg.user, &cfg.password), &cfg.logins)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("logins: {e}")))?;
    let tls = Arc::new(tls::Setup::new(&cfg.tls)?);
    let tds = server::bind(cfg.listen).map_err(|e| context("TDS listener", cfg.listen, e))?;
    let tds_addr = tds.local_addr()?;
    let control = match cfg.control {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| context("control listener", a, e))?,
        ),
        None => None,
    };
    let control_addr = match &control {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (log, seq, restarted) = match &cfg.ag_config.data_dir {
        Some(dir) => {
            let l = repl::log::Log::open(dir)?;
            (l.log, l.seq, l.restarted)
        }
        None => (repl::log::Log::memory(), 0, false),
    };
    // A replica of an EXTERNAL AG that restarts comes back RESOLVING: only the HA
    // manager's FAILOVER makes it primary again.
    let role = if restarted { Role::Resolving } else { cfg.role };
    let endpoint = match cfg.ag_config.endpoint {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| context("mirroring endpoint", a, e))?,
        ),
        None => None,
    };
    let partners = cfg.ag_config.partners.len();
    let ag = ag::Ag::new(cfg.ag_config, log, seq);
    let replica = Replica {
        server_name: cfg.server_name,
        ag: cfg.ag,
        role,
        health: cfg.health,
        databases: cfg.databases,
        fault: Fault::None,
        delay_ms: 0,
        changed_at_unix_ms: state::now_unix_ms(),
        kill_epoch: 0,
        shutting_down: false,
    };
    let shared = Arc::new(Shared::new(logins, cfg.product_version, replica, ag));
    if role == Role::Primary {
        // The first role of a new AG counts as a role change: sequence_number 1, a lease.
        shared.role_changed(Role::Resolving, Role::Primary);
    }
    shared.listening.send_replace(true);
    let mut tasks = vec![tokio::spawn(server::run(
        tds,
        tds_addr,
        shared.clone(),
        tls,
    ))];
    let endpoint_addr = match endpoint {
        Some(l) => {
            let a = l.local_addr()?;
            tasks.push(tokio::spawn(repl::secondary::run(l, shared.clone())));
            Some(a)
        }
        None => None,
    };
    for i in 0..partners {
        tasks.push(tokio::spawn(repl::primary::run(shared.clone(), i)));
    }
    tasks.push(tokio::spawn(shared.clone().watch_lease()));
    if let Some(l) = control {
        tasks.push(tokio::spawn(control::run(l, shared.clone())));
    }
    tracing::info!(tds = %tds_addr, control = ?control_addr, endpoint = ?endpoint_addr, restarted, %role, "tds-sim started");
    Ok(SimHandle {
        shared,
        tds_addr,
        control_addr,
        endpoint_addr,
        tasks,
    })
}

impl SimHandle {
    pub fn tds_addr(&self) -> SocketAddr {
        self.tds_addr
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The mirroring endpoint's bound address, if one is configured.
    pub fn endpoint_addr(&self) -> Option<SocketAddr> {
        self.endpoint_addr
    }

    pub fn set_role(&self, r: Role) {
        self.shared.apply(
            Change {
                role: Some(r),
                ..Default::default()
            },
            "library call",
        );
    }

    pub fn set_health(&self, h: Health) {
        self.shared.apply(
            Change {
                health: Some(h),
                ..Default::default()
            },
            "library call",
        );
    }

    /// Takes effect for new requests at once; for `refuse` the listener closes
    /// asynchronously — use [`SimHandle::wait_listening`] to wait for it.
    pub fn set_fault(&self, f: Fault) {
        self.shared.apply(
            Change {
                fault: Some(f),
                ..Default::default()
            },
            "library call",
        );
    }

    /// Sets (or adds) a database's state.
    pub fn set_database(&self, name: &str, s: DbState) {
        self.shared.apply(
            Change {
                databases: vec![(name.to_string(), Some(s))],
                ..Default::default()
            },
            "library call",
        );
    }

    pub fn remove_database(&self, name: &str) {
        self.shared.apply(
            Change {
                databases: vec![(name.to_string(), None)],
                ..Default::default()
            },
            "library call",
        );
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The state as `GET /state` shows it.
    pub fn state_json(&self) -> serde_json::Value {
        control::state_json(&self.shared)
    }

    /// Waits until the listener is open (`true`) or closed by `refuse` (`false`); false if
    /// that did not happen within `timeout`.
    pub async fn wait_listening(&self, listening: bool, timeout: Duration) -> bool {
        let mut rx = self.shared.listening.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|l| *l == listening))
            .await
            .is_ok()
    }

    /// Stops accepting, closes open sessions and waits (up to two seconds) for them to end.
    pub async fn shutdown(mut self) {
        self.shared.shut_down();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.shared.counters.snapshot().open_connections > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("tds-sim stopped");
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}
