//! One running lab: the topology, a `tds-sim` and an agent (tdsvip or keepalived) per node,
//! the client and the samplers, and the lab's own actions on them (kill, demote, promote,
//! partition), each stamped on the lab's clock.
//!
//! The sims form one replicated AG (every replica synchronous but node 3 in async-replica,
//! one synchronous secondary required to commit). The lab plays the HA manager
//! (`--promote lab`): role changes go through T-SQL with `external_cluster`, as Pacemaker's
//! agent sends them; faults (kill, hang, partition, stalled replication) through the control
//! API and the kernel. It never touches the agents except to kill and restart them in the
//! drills that say so. A writer commits a row every 10 ms through the overlay IP.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::client::{Client, ClientSettings};
use crate::clock::Clock;
use crate::config;
use crate::netns::{self, OVERLAY, Topology, in_ns, node_ip};
use crate::procs;
use crate::sampler::Samplers;
pub use crate::settings::{ENDPOINT_PORT, Encrypt, Impl, Promote, Settings};

pub struct Node {
    pub ns: String,
    pub ip: Ipv4Addr,
    /// `@@SERVERNAME` of its tds-sim.
    pub server: String,
    pub mac: String,
    pub sim: Option<Child>,
    pub agent: Option<Child>,
    /// A process started and killed with the agent: keepalived's track file watcher.
    pub helper: Option<Child>,
}

pub struct Lab {
    pub clock: Clock,
    pub settings: Settings,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub client: Option<Client>,
    pub writer: Option<crate::writer::Writer>,
    pub samplers: Option<Samplers>,
    /// Which sims would acknowledge a commit, every 10 ms.
    pub primaries: Option<crate::primaries::PrimarySampler>,
    /// The HA manager's write-lease renewals.
    pub lease: Option<crate::lease::LeaseRenewer>,
    pub cloud: Option<crate::cloud::Cloud>,
    /// `--promote agent`: one etcd member per node.
    pub etcd: Option<crate::etcd::EtcdCluster>,
    /// Killed children not reaped yet.
    killed: Vec<Child>,
    /// The lab's own actions: (time, node index, what).
    pub actions: Vec<(f64, usize, String)>,
    password: String,
    /// Bearer token of the agents' /status and /events.
    token: String,
    sim_bin: PathBuf,
    /// The lab CA and each node's certificate: every SQL login verifies one.
    pki: crate::pki::LabPki,
    /// How the lab's own T-SQL sessions reach the sims (TLS first when they run strict).
    transport: crate::tsql::Transport,
    tdsvip_bin: PathBuf,
    failed: bool,
    // Dropped last: the namespaces.
    pub(crate) topo: Topology,
}

/// Writes a file only its owner can read (the agents refuse a token others could read).
fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn random_password() -> String {
    let mut b = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Lab {
    pub fn start(settings: Settings) -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the lab creates network namespaces: run it as root".into());
        }
        if settings.encrypt == Encrypt::Strict && settings.implementation.is_keepalived() {
            // Its checks (`tdsvip probe`) are not given --encrypt yet.
            return Err("--encrypt strict runs with --impl tdsvip only".into());
        }
        let sim_bin = procs::find("tds-sim", "TDS_SIM_BIN")?;
        let tdsvip_bin = procs::find("tdsvip", "TDSVIP_BIN")?;
        netns::remove_stale_labs();
        crate::etcd::remove_stale_data(netns::lab_alive);
        let topo = Topology::create(settings.nodes)?;
        let root = settings
            .work_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let dir = root.join(&topo.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let token_file = dir.join("http-token");
        let nodes = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                Ok(Node {
                    ns: ns.clone(),
                    ip: node_ip(i),
                    server: format!("SQLNODE{}", i + 1),
                    mac: Topology::mac(ns)?,
                    sim: None,
                    agent: None,
                    helper: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let names: Vec<(String, std::net::Ipv4Addr)> = nodes
            .iter()
            .map(|n: &Node| (n.server.clone(), n.ip))
            .collect();
        let pki = crate::pki::LabPki::create(&dir, &names, OVERLAY)?;
        let transport = crate::tsql::Transport::new(settings.encrypt, &pki.ca_file)?;
        let mut lab = Lab {
            clock: Clock::new(),
            settings,
            dir,
            nodes,
            client: None,
            writer: None,
            samplers: None,
            primaries: None,
            lease: None,
            cloud: None,
            etcd: None,
            killed: Vec::new(),
            actions: Vec::new(),
            password: random_password(),
            token: random_password() + &random_password(),
            sim_bin,
            pki,
            transport,
            tdsvip_bin,
            failed: true,
            topo,
        };
        for i in 0..lab.nodes.len() {
            lab.start_sim(i, if i == 0 { "PRIMARY" } else { "SECONDARY" })?;
        }
        lab.start_ag_watch()?;
        write_secret(&token_file, &format!("{}\n", lab.token))?;
        // The agent refuses a token file every user can read.
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| format!("{}: {e}", token_file.display()))?;
        if let Some(tables) = lab.settings.cloud_tables {
            if lab.settings.implementation != Impl::Tdsvip {
                return Err(
                    "--cloud: only tdsvip claims route tables (keepalived has no cloud takeover)"
                        .into(),
                );
            }
            lab.cloud = Some(crate::cloud::Cloud::start(
                &lab.topo.hub,
                &lab.dir,
                lab.clock,
                lab.nodes.len(),
                tables,
            )?);
        }
        if lab.settings.fence_aws && (lab.cloud.is_none() || lab.settings.promote != Promote::Agent)
        {
            return Err("--fence-aws: needs --cloud and --promote agent (the new leader stops the old primary's instance in moto)".into());
        }
        if lab.settings.promote == Promote::Agent {
            lab.start_etcd()?;
        }
        for i in 0..lab.nodes.len() {
            lab.start_agent(i)?;
        }
        if lab.settings.promote == Promote::Agent {
            lab.hand_the_lease_to_the_agents()?;
        }
        let ns_names: Vec<String> = lab.nodes.iter().map(|n| n.ns.clone()).collect();
        lab.samplers = Some(Samplers::start(
            lab.clock,
            &ns_names,
            &lab.topo.client,
            OVERLAY,
            Duration::from_millis(lab.settings.sample_ms),
            Duration::from_millis(lab.settings.arp_every_ms),
        )?);
        lab.client = Some(Client::start(
            &lab.topo.client,
            lab.clock,
            ClientSettings {
                target: SocketAddr::from((OVERLAY, config::TDS_PORT)),
                user: config::USER.into(),
                password: lab.password.clone(),
                ag: config::AG.into(),
                databases: vec![config::DATABASE.into()],
                ca_file: lab.pki.ca_file.clone(),
                encrypt: lab.settings.encrypt,
                every: Duration::from_millis(lab.settings.client_every_ms),
                deadline: Duration::from_millis(lab.settings.client_deadline_ms),
            },
        )?);
        lab.writer = Some(crate::writer::Writer::start(
            &lab.topo.client,
            lab.clock,
            crate::writer::WriterSettings {
                transport: lab.tsql_transport(),
                target: SocketAddr::from((OVERLAY, config::TDS_PORT)),
                user: config::USER.into(),
                password: lab.password.clone(),
                every: Duration::from_millis(lab.settings.writer_every_ms),
                login_deadline: Duration::from_millis(lab.settings.client_deadline_ms),
                commit_deadline: Duration::from_millis(lab.settings.writer_deadline_ms),
            },
        )?);
        lab.wait_steady(0, Duration::from_secs(15))?;
        lab.failed = false;
        Ok(lab)
    }

    pub fn name(&self) -> &str {
        &self.topo.name
    }

    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("client runs while the lab lives")
    }

    pub fn samplers(&self) -> &Samplers {
        self.samplers
            .as_ref()
            .expect("samplers run while the lab lives")
    }

    /// Marks the run as failed: the work dir is kept and its path printed on Drop.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    pub fn log_hint(&self) -> String {
        format!("logs and configs in {}", self.dir.display())
    }

    pub(crate) fn record(&mut self, at: f64, node: usize, what: impl Into<String>) {
        self.actions.push((at, node, what.into()));
    }

    /// The lab's etcd cluster (`--promote agent`).
    pub(crate) fn etcd_mut(&mut self) -> Result<&mut crate::etcd::EtcdCluster, String> {
        self.etcd
            .as_mut()
            .ok_or_else(|| "this drill needs --promote agent (etcd)".to_string())
    }

    /// The lab CA, which every SQL client in the lab verifies server certificates against.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_file
    }

    /// How the lab's own T-SQL sessions (HA manager, writer) reach the sims.
    pub(crate) fn tsql_transport(&self) -> crate::tsql::Transport {
        self.transport.clone()
    }

    /// Starts node `i`'s tds-sim with `role` and waits for its listening line.
    pub fn start_sim(&mut self, i: usize, role: &str) -> Result<(), String> {
        let n = &self.nodes[i];
        let out = self.dir.join(format!("sim{}.out", i + 1));
        let log = self.dir.join(format!("sim{}.log", i + 1));
        let mut args: Vec<String> = [
            "--listen",
            &format!("0.0.0.0:{}", config::TDS_PORT),
            "--control",
            &format!("127.0.0.1:{}", config::CONTROL_PORT),
            "--server-name",
            &n.server,
            "--ag",
            config::AG,
            "--role",
            role,
            "--user",
            config::USER,
            "--password",
            &self.password,
            "--database",
            config::DATABASE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // mandatory: SQL Server's default (encryption off, a certificate for the login and
        // for clients that ask), the agents and the measuring client ask for encryption.
        // strict: TDS 8.0 only, every connection starts with TLS.
        let tls = &self.pki.servers[i];
        let encryption = match self.settings.encrypt {
            Encrypt::Mandatory => "off",
            Encrypt::Strict => "strict",
        };
        args.extend([
            "--tls-cert".to_owned(),
            tls.cert.display().to_string(),
            "--tls-key".to_owned(),
            tls.key.display().to_string(),
            "--encryption".to_owned(),
            encryption.to_owned(),
        ]);
        args.extend(self.ag_args(i));
        let child = procs::spawn_in(&n.ns, &self.sim_bin, &args, &[], &log, Some(&out))?;
        self.nodes[i].sim = Some(child);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("tds-sim listening") {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.nodes[i].sim.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "tds-sim of node {} exited ({st}): {}",
                    i + 1,
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if std::time::Instant::now() > end {
                return Err(format!(
                    "tds-sim of node {} did not start; see {}",
                    i + 1,
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `i`'s part of the AG: endpoint on its `eth0`, every partner, the commit rule,
    /// and a data dir that survives its restarts (so it comes back RESOLVING).
    fn ag_args(&self, i: usize) -> Vec<String> {
        let mut a = vec![
            "--endpoint".to_string(),
            format!("{}:{ENDPOINT_PORT}", self.nodes[i].ip),
            "--availability-mode".into(),
            self.settings.availability_mode(i).into(),
            "--session-timeout-ms".into(),
            self.settings.session_timeout_ms.to_string(),
            "--required-synchronized-secondaries-to-commit".into(),
            self.settings.required_synchronized.to_string(),
            "--write-lease-validity".into(),
            self.settings.write_lease_validity_s.to_string(),
            "--data-dir".into(),
            self.dir
                .join(format!("sim{}-data", i + 1))
                .display()
                .to_string(),
        ];
        for (j, other) in self.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            a.push("--replica".into());
            a.push(format!(
                "{}={}:{ENDPOINT_PORT},{}",
                other.server,
                other.ip,
                self.settings.availability_mode(j)
            ));
        }
        a
    }

    /// Runs T-SQL on node `i`'s tds-sim, from inside its namespace (loopback: reachable
    /// even while its `eth0` is partitioned).
    pub fn tsql(&self, i: usize, sql: &str) -> Result<crate::tsql::Answer, String> {
        let (user, pw, sql) = (
            config::USER.to_string(),
            self.password.clone(),
            sql.to_string(),
        );
        let transport = self.tsql_transport();
        in_ns(&self.nodes[i].ns, move || {
            crate::tsql::run(
                &transport,
                SocketAddr::from(([127, 0, 0, 1], config::TDS_PORT)),
                &user,
                &pw,
                &sql,
                Duration::from_secs(3),
            )
        })?
        .map_err(|e| format!("node {}: {e}", i + 1))
    }

    /// GET /state of node `i`'s tds-sim.
    pub fn sim_state(&self, i: usize) -> Result<serde_json::Value, String> {
        in_ns(&self.nodes[i].ns, move || {
            crate::http::request(
                SocketAddr::from(([127, 0, 0, 1], config::CONTROL_PORT)),
                "GET",
                "/state",
                "",
                None,
                Duration::from_secs(2),
            )
        })?
        .and_then(|(code, body)| {
            if code != 200 {
                return Err(format!("GET /state: {code} {body}"));
            }
            serde_json::from_str(&body).map_err(|e| format!("GET /state: {e}"))
        })
    }

    /// The HA manager's promotion: `external_cluster`, then `FAILOVER` (or
    /// `FORCE_FAILOVER_ALLOW_DATA_LOSS`). FAILOVER returns before the role changes, so the
    /// lab re-reads the replica until it is PRIMARY and returns that time.
    pub fn promote(&mut self, i: usize, forced: bool) -> Result<f64, String> {
        let verb = if forced {
            "FORCE_FAILOVER_ALLOW_DATA_LOSS"
        } else {
            "FAILOVER"
        };
        self.renew_lease_on(i);
        let sent = self.clock.now();
        self.tsql(
            i,
            &format!(
                "{} ALTER AVAILABILITY GROUP [{}] {verb}",
                crate::tsql::EXTERNAL_CLUSTER,
                config::AG
            ),
        )?;
        let end = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let s = self.sim_state(i)?;
            if s["role"] == "PRIMARY" {
                let t = self.clock.now();
                self.record(sent, i, format!("T-SQL {verb}"));
                self.record(t, i, "tds-sim role PRIMARY (seen)");
                return Ok(t);
            }
            if std::time::Instant::now() > end {
                return Err(format!(
                    "node {}: {verb} returned but the replica is {}",
                    i + 1,
                    s["role"]
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `ALTER AVAILABILITY GROUP .. SET (ROLE = SECONDARY)` (or `OFFLINE`); returns the
    /// time just before it was sent (it takes effect before the answer).
    pub fn demote(&mut self, i: usize, offline: bool) -> Result<f64, String> {
        let what = if offline {
            "OFFLINE"
        } else {
            "SET (ROLE = SECONDARY)"
        };
        self.stop_renewing(i, "demoted");
        let t = self.clock.now();
        self.tsql(
            i,
            &format!(
                "{} ALTER AVAILABILITY GROUP [{}] {what}",
                crate::tsql::EXTERNAL_CLUSTER,
                config::AG
            ),
        )?;
        self.record(t, i, format!("T-SQL {what}"));
        Ok(t)
    }

    pub fn writer(&self) -> &crate::writer::Writer {
        self.writer
            .as_ref()
            .expect("writer runs while the lab lives")
    }

    /// SIGKILLs node `i`'s tds-sim; returns the time.
    pub fn kill_sim(&mut self, i: usize) -> f64 {
        self.stop_renewing(i, "its SQL Server is down");
        let t = self.clock.now();
        if let Some(mut c) = self.nodes[i].sim.take() {
            procs::kill(&mut c);
        }
        self.record(t, i, "SIGKILL tds-sim");
        t
    }

    pub fn agent_log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("agent{}.log", i + 1))
    }

    /// Starts node `i`'s agent (tdsvip or keepalived).
    pub fn start_agent(&mut self, i: usize) -> Result<(), String> {
        match self.settings.implementation {
            Impl::Tdsvip => self.start_tdsvip(i),
            Impl::Keepalived | Impl::KeepalivedScript => crate::keepalived::start(self, i),
        }
    }

    /// Node `i`'s bpf filesystem, its agent's `[ebpf] pin_dir`, mounted at first use. The
    /// agent runs under `ip netns exec`, which remounts /sys for it, so /sys/fs/bpf is not
    /// there: each node gets a bpffs of its own, as a host has one, kept across its agent's
    /// restarts (what is pinned there is what a restarted agent takes over).
    fn node_bpffs(&self, i: usize) -> Result<PathBuf, String> {
        let dir = self.dir.join(format!("bpf-node{}", i + 1));
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            crate::netns::sh(&["mount", "-t", "bpf", "bpf", &dir.to_string_lossy()])?;
        }
        Ok(dir)
    }

    fn start_tdsvip(&mut self, i: usize) -> Result<(), String> {
        let pin_dir = self.node_bpffs(i)?;
        let cfg = self.dir.join(format!("node{}.toml", i + 1));
        let (sections, peer_lines) = self.agent_extras(i);
        std::fs::write(
            &cfg,
            config::agent_toml(
                i,
                self.nodes.len(),
                self.settings.agent,
                &self.dir.join("http-token"),
                config::SqlTls {
                    encrypt: self.settings.encrypt,
                    ca_file: &self.pki.ca_file,
                },
                &pin_dir,
                config::Extra {
                    sections: &sections,
                    peer_lines: &peer_lines,
                },
            ),
        )
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
        let log = self.agent_log(i);
        let args = vec![
            "run".to_owned(),
            "--config".into(),
            cfg.display().to_string(),
        ];
        let child = procs::spawn_in(
            &self.nodes[i].ns,
            &self.tdsvip_bin,
            &args,
            &[
                ("TDSVIP_PASSWORD", &self.password),
                ("RUST_LOG", "info"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            &log,
            None,
        )?;
        self.nodes[i].agent = Some(child);
        Ok(())
    }

    /// `[cloud]` (with `--cloud`), `[cluster]` (with `--promote agent`) and `[fence]` (with
    /// `--fence-aws`) of node `i`, and the lines of each node's `[[peer]]` table.
    fn agent_extras(&self, i: usize) -> (String, Vec<String>) {
        let mut extra = self
            .cloud
            .as_ref()
            .map(|c| c.agent_section(i))
            .unwrap_or_default();
        if let Some(etcd) = &self.etcd {
            extra.push_str(&config::cluster_section(
                etcd.endpoints(),
                self.settings.write_lease_validity_s,
            ));
        }
        let mut peer_lines = Vec::new();
        if let (true, Some(c)) = (self.settings.fence_aws, &self.cloud) {
            let (section, lines) = c.fence_lines();
            extra.push_str(&section);
            peer_lines = lines;
        }
        (extra, peer_lines)
    }

    pub fn spawn_agent_process(
        &mut self,
        i: usize,
        program: &std::path::Path,
        args: &[String],
    ) -> Result<(), String> {
        let log = self.agent_log(i);
        let child = procs::spawn_in(&self.nodes[i].ns, program, args, &[], &log, None)?;
        self.nodes[i].agent = Some(child);
        Ok(())
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn tdsvip_bin(&self) -> &std::path::Path {
        &self.tdsvip_bin
    }

    /// SIGKILLs node `i`'s agent and tds-sim together (a crash); they are reaped later
    /// ([`Lab::reap`]) so that the promotion does not wait for the kernel's cleanup.
    pub fn kill_node_processes(&mut self, i: usize) -> f64 {
        self.stop_renewing(i, "its node is down");
        let t = self.clock.now();
        let n = &mut self.nodes[i];
        let children: Vec<Child> = [n.agent.take(), n.helper.take(), n.sim.take()]
            .into_iter()
            .flatten()
            .collect();
        for c in &children {
            // SAFETY: kill(2) on our own children's pids, before reaping them.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        }
        self.killed.extend(children);
        if self.settings.implementation.is_keepalived() {
            crate::keepalived::cleanup_after_kill(self, i);
        }
        self.record(
            t,
            i,
            format!(
                "SIGKILL {} and tds-sim",
                self.settings.implementation.name()
            ),
        );
        t
    }

    /// Waits for processes killed without reaping.
    pub fn reap(&mut self) {
        for mut c in self.killed.drain(..) {
            let _ = c.wait();
        }
    }

    /// SIGKILLs node `i`'s agent; returns the time.
    pub fn kill_agent(&mut self, i: usize) -> f64 {
        let t = self.clock.now();
        let n = &mut self.nodes[i];
        for mut c in [n.agent.take(), n.helper.take()].into_iter().flatten() {
            procs::kill(&mut c);
        }
        if self.settings.implementation.is_keepalived() {
            crate::keepalived::cleanup_after_kill(self, i);
        }
        self.record(
            t,
            i,
            format!("SIGKILL {}", self.settings.implementation.name()),
        );
        t
    }

    /// SIGSTOPs node `i`'s agent (a stalled host, a debugger); returns the time.
    pub fn freeze_agent(&mut self, i: usize) -> Result<f64, String> {
        let pid = self.nodes[i]
            .agent
            .as_ref()
            .ok_or("no agent to freeze")?
            .id();
        let t = self.clock.now();
        // SAFETY: kill(2) of the agent process this lab started and still holds.
        if unsafe { libc::kill(pid as i32, libc::SIGSTOP) } != 0 {
            return Err(format!(
                "SIGSTOP {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        self.record(t, i, "SIGSTOP tdsvip");
        Ok(t)
    }

    /// SIGCONTs node `i`'s agent after [`Lab::freeze_agent`].
    pub fn thaw_agent(&mut self, i: usize) -> Result<(), String> {
        let pid = self.nodes[i].agent.as_ref().ok_or("no agent to thaw")?.id();
        let t = self.clock.now();
        // SAFETY: as in `freeze_agent`.
        if unsafe { libc::kill(pid as i32, libc::SIGCONT) } != 0 {
            return Err(format!(
                "SIGCONT {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        self.record(t, i, "SIGCONT tdsvip");
        Ok(())
    }

    /// Drops what node `i`'s agents pinned, as a reboot does (its bpffs is remounted empty
    /// at the next start).
    pub fn wipe_pins(&mut self, i: usize) -> Result<(), String> {
        let dir = self.dir.join(format!("bpf-node{}", i + 1));
        if dir.exists() {
            crate::netns::sh(&["umount", &dir.to_string_lossy()])?;
            std::fs::remove_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Restarts node `i`'s agent; returns the time it was started.
    pub fn restart_agent(&mut self, i: usize) -> Result<f64, String> {
        let t = self.clock.now();
        self.start_agent(i)?;
        self.record(
            t,
            i,
            format!("restart {}", self.settings.implementation.name()),
        );
        Ok(t)
    }

    /// PUT /state on node `i`'s tds-sim (from inside its namespace); returns the time just
    /// before the request was sent (the change is applied before the answer).
    pub fn sim_put(&mut self, i: usize, body: &str, label: &str) -> Result<f64, String> {
        let ns = self.nodes[i].ns.clone();
        let body_owned = body.to_owned();
        let clock = self.clock;
        let (t, res) = in_ns(&ns, move || {
            let t = clock.now();
            let r = crate::http::request(
                SocketAddr::from(([127, 0, 0, 1], config::CONTROL_PORT)),
                "PUT",
                "/state",
                &body_owned,
                None,
                Duration::from_secs(3),
            );
            (t, r)
        })?;
        let (code, resp) = res?;
        if code != 200 {
            return Err(format!(
                "tds-sim node {} PUT /state {body}: {code} {resp}",
                i + 1
            ));
        }
        self.record(t, i, label.to_owned());
        Ok(t)
    }

    pub fn set_role(&mut self, i: usize, role: &str) -> Result<f64, String> {
        self.sim_put(
            i,
            &format!(r#"{{"role":"{role}"}}"#),
            &format!("tds-sim role {role}"),
        )
    }

    /// GET from an agent's HTTP endpoint, from the hub namespace.
    pub fn agent_get(&self, i: usize, path: &str) -> Result<(u16, String), String> {
        let addr = SocketAddr::from((self.nodes[i].ip, config::AGENT_HTTP_PORT));
        let path = path.to_owned();
        let token = self.token.clone();
        in_ns(&self.topo.hub, move || {
            crate::http::request(addr, "GET", &path, "", Some(&token), Duration::from_secs(1))
        })?
    }

    /// Runs a command in node `i`'s namespace.
    pub fn node_cmd(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.nodes[i].ns];
        full.extend_from_slice(args);
        netns::sh(&full)
    }

    pub fn client_ns(&self) -> &str {
        &self.topo.client
    }

    pub fn hub_ns(&self) -> &str {
        &self.topo.hub
    }

    /// Which node owns the overlay IP now (the only one), if exactly one does.
    pub fn sole_owner(&self) -> Option<usize> {
        let s = self.samplers().latest()?;
        (s.count() == 1).then(|| s.owners.iter().position(|o| *o))?
    }

    /// Waits until node `i` alone owns the overlay IP and the client's latest attempts are
    /// answered by it as PRIMARY.
    pub fn wait_steady(&mut self, i: usize, limit: Duration) -> Result<(), String> {
        let end = std::time::Instant::now() + limit;
        let server = self.nodes[i].server.clone();
        loop {
            self.check_agents()?;
            let now = self.clock.now();
            let owner_ok = self.sole_owner() == Some(i);
            let recent = self.client().attempts_between(now - 200.0, now);
            let client_ok = recent.len() >= 3
                && recent
                    .iter()
                    .rev()
                    .take(3)
                    .all(|a| a.primary_answer_from(&server));
            if owner_ok && client_ok {
                return Ok(());
            }
            if std::time::Instant::now() > end {
                let last = recent.last().map(|a| format!("{a:?}")).unwrap_or_default();
                return Err(format!(
                    "node {} did not become the steady owner within {limit:?} (owners now: {:?}; last client attempt: {last}); {}",
                    i + 1,
                    self.samplers().latest().map(|s| s.owners),
                    self.log_hint()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An agent that exited on its own is an error, with the end of its log.
    pub fn check_agents(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if let Some(Ok(Some(st))) = self.nodes[i].agent.as_mut().map(|c| c.try_wait()) {
                self.nodes[i].agent = None;
                let log = std::fs::read_to_string(self.agent_log(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "the agent of node {} exited ({st}); {}:\n{}",
                    i + 1,
                    self.agent_log(i).display(),
                    tail.join("\n")
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        self.writer.take();
        self.client.take();
        self.samplers.take();
        self.primaries.take();
        self.lease.take();
        self.cloud.take();
        self.reap();
        // After the agents (below) would be kinder to them, but a member killed first only
        // makes their last etcd calls fail; its data dir goes with it.
        self.etcd.take();
        for n in &mut self.nodes {
            for mut c in [n.agent.take(), n.helper.take()].into_iter().flatten() {
                procs::terminate(&mut c, Duration::from_millis(500));
            }
            if let Some(mut c) = n.sim.take() {
                procs::kill(&mut c);
            }
        }
        // Unmounting drops what the agents pinned; the namespaces' interfaces go with them.
        for i in 0..self.nodes.len() {
            let pins = self.dir.join(format!("bpf-node{}", i + 1));
            if pins.exists() {
                let _ = crate::netns::sh(&["umount", &pins.to_string_lossy()]);
            }
        }
        if failed || self.settings.keep {
            eprintln!("tdsvip-lab: {}", self.log_hint());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
