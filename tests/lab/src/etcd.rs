//! The lab's etcd cluster for `--promote agent`: one member per SQL node, in that node's
//! namespace on its `eth0` address, so that cutting a node off the network also cuts its
//! member off the quorum (as on real hosts). Data dirs live on tmpfs (`/dev/shm`): three
//! members, three sims, three agents and the client share two cores, and an fsync on a busy
//! disk would show as an etcd election, not as tdsvip's time.
//!
//! Timing as measured in shared/TOOLCHAIN.md: `--heartbeat-interval 10 --election-timeout
//! 100`. The lab reads etcd's leader through the HTTP gateway (`/v3/maintenance/status`)
//! from the hub namespace, to record per trial whether etcd itself changed leaders.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::config;
use crate::lab::{Impl, Lab};
use crate::netns::sh;
use crate::procs;

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// Where every lab's etcd data lives: `/dev/shm/{lab}-etcd{n}`.
pub const DATA_ROOT: &str = "/dev/shm";

pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    data: Vec<PathBuf>,
    endpoints: Vec<String>,
    hub: String,
    /// What a member is (re)started from: the binary, each member's namespace and address,
    /// `--initial-cluster`, the cluster token (the lab's name) and where logs go.
    etcd: PathBuf,
    nodes: Vec<(String, Ipv4Addr)>,
    initial: String,
    token: String,
    log_dir: PathBuf,
    /// How many times each member was started (restarts log to `etcd{n}.{k}.log`).
    starts: Vec<usize>,
}

/// A client URL of the member on `ip`.
pub fn client_url(ip: Ipv4Addr) -> String {
    format!("http://{ip}:{CLIENT_PORT}")
}

impl EtcdCluster {
    /// Starts one member per `(namespace, address)` and waits until the cluster has a leader.
    pub fn start(
        lab: &str,
        nodes: &[(String, Ipv4Addr)],
        hub: &str,
        log_dir: &Path,
    ) -> Result<EtcdCluster, String> {
        let etcd = procs::which("etcd")
            .ok_or("etcd is not installed (Debian etcd-server; deploy/setup.sh lab installs it)")?;
        let initial: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, (_, ip))| format!("n{}=http://{ip}:{PEER_PORT}", i + 1))
            .collect();
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            data: Vec::new(),
            endpoints: nodes.iter().map(|(_, ip)| client_url(*ip)).collect(),
            hub: hub.to_owned(),
            etcd,
            nodes: nodes.to_vec(),
            initial: initial.join(","),
            token: lab.to_owned(),
            log_dir: log_dir.to_owned(),
            starts: vec![0; nodes.len()],
        };
        for i in 0..nodes.len() {
            let data = PathBuf::from(DATA_ROOT).join(format!("{lab}-etcd{}", i + 1));
            let _ = std::fs::remove_dir_all(&data);
            cluster.data.push(data);
            let child = cluster.spawn(i)?;
            cluster.members.push(Some(child));
        }
        cluster.wait_leader(Duration::from_secs(20))?;
        Ok(cluster)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The JSON answer of the first member whose HTTP gateway answers `POST path` with
    /// `body` (from the hub namespace, which reaches every node; 300 ms each).
    fn gateway(&self, path: &str, body: &str) -> Option<serde_json::Value> {
        self.endpoints.iter().find_map(|url| {
            let target = format!("{url}{path}");
            let args = [
                "curl", "-sf", "-m", "0.3", "-X", "POST", &target, "-d", body,
            ];
            let mut cmd = vec!["ip", "netns", "exec", self.hub.as_str()];
            cmd.extend(args);
            serde_json::from_str(&sh(&cmd).ok()?).ok()
        })
    }

    /// The leader's member id, as the first member that answers says; `None` when none
    /// answers or none knows a leader.
    pub fn leader(&self) -> Option<u64> {
        let v = self.gateway("/v3/maintenance/status", "{}")?;
        // The gateway renders uint64 as a JSON string.
        v["leader"]
            .as_str()?
            .parse()
            .ok()
            .filter(|&id: &u64| id != 0)
    }

    /// The value of `key` (the agents' leader key names its holder); `None` when it does
    /// not exist or no member answers.
    pub fn get(&self, key: &str) -> Option<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!("{{\"key\":\"{}\"}}", b64.encode(key));
        let v = self.gateway("/v3/kv/range", &body)?;
        let value = v["kvs"].get(0)?["value"].as_str()?;
        String::from_utf8(b64.decode(value).ok()?).ok()
    }

    fn wait_leader(&mut self, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.leader().is_some() {
                return Ok(());
            }
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = m.as_mut().map(Child::try_wait) {
                    return Err(format!(
                        "etcd member n{} exited ({status}) at start: see etcd{}.log",
                        i + 1,
                        i + 1
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the lab's etcd cluster elected no leader within {limit:?} (etcd*.log)"
        ))
    }

    /// SIGKILLs member `i` (the `etcd-leader-kill` drill, a crashed node).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members.get_mut(i).and_then(Option::take) {
            procs::kill(&mut c);
        }
    }

    /// Starts member `i` again on its data dir (a restart after [`EtcdCluster::kill`]: it
    /// rejoins with its own log, the `--initial-*` flags being ignored for a member that
    /// has data).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].is_none() {
            let child = self.spawn(i)?;
            self.members[i] = Some(child);
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<Child, String> {
        let (ns, ip) = &self.nodes[i];
        let args = member_args(i, *ip, &self.data[i], &self.initial, &self.token);
        let log = match self.starts[i] {
            0 => format!("etcd{}.log", i + 1),
            k => format!("etcd{}.{k}.log", i + 1),
        };
        self.starts[i] += 1;
        procs::spawn_in(ns, &self.etcd, &args, &[], &self.log_dir.join(log), None)
    }

    /// The index (0-based node) of the member with raft id `id`, from the member list
    /// (`n1`, `n2`, … are the nodes in order).
    pub fn index_of(&self, id: u64) -> Option<usize> {
        let v = self.gateway("/v3/cluster/member/list", "{}")?;
        let m = v["members"]
            .as_array()?
            .iter()
            .find(|m| m["ID"].as_str().and_then(|s| s.parse::<u64>().ok()) == Some(id))?;
        let n: usize = m["name"].as_str()?.strip_prefix('n')?.parse().ok()?;
        n.checked_sub(1)
    }
}

fn member_args(i: usize, ip: Ipv4Addr, data: &Path, initial: &str, lab: &str) -> Vec<String> {
    let client = client_url(ip);
    let peer = format!("http://{ip}:{PEER_PORT}");
    [
        "--name",
        &format!("n{}", i + 1),
        "--data-dir",
        &data.display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        initial,
        "--initial-cluster-token",
        lab,
        "--initial-cluster-state",
        "new",
        "--heartbeat-interval",
        "10",
        "--election-timeout",
        "100",
        // A member cut off by a partition campaigns in vain and raises its term; without
        // the pre-vote phase (etcd 3.4's default), its return makes the leader step down and
        // etcd has no leader for about a second (seen in partition-primary: the new primary's
        // heartbeats failed and it went OFFLINE). etcd 3.5 turns it on by default.
        "--pre-vote",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().filter_map(Option::as_mut) {
            procs::kill(m);
        }
        for d in &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Lab {
    /// The AG was created before the agents ran, so the lab renewed its write lease until
    /// node 1's agent holds the leader key (and renews it itself); then the lab stops.
    pub(crate) fn hand_the_lease_to_the_agents(&mut self) -> Result<(), String> {
        let key = format!("{}/{}/leader", config::ETCD_PREFIX, config::AG);
        let holder = config::agent_name(0);
        let end = std::time::Instant::now() + Duration::from_secs(20);
        let etcd = self.etcd.as_ref().ok_or("no etcd")?;
        while etcd.get(&key).as_deref() != Some(holder.as_str()) {
            if std::time::Instant::now() > end {
                return Err(format!(
                    "node 1's agent did not take the leader key {key} within 20 s ({})",
                    self.log_hint()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_renewing(0, "node 1's agent holds the leader key and renews");
        Ok(())
    }

    pub(crate) fn start_etcd(&mut self) -> Result<(), String> {
        if self.settings.implementation != Impl::Tdsvip {
            return Err("--promote agent: only tdsvip's agents promote".into());
        }
        let nodes: Vec<(String, Ipv4Addr)> =
            self.nodes.iter().map(|n| (n.ns.clone(), n.ip)).collect();
        self.etcd = Some(crate::etcd::EtcdCluster::start(
            &self.topo.name,
            &nodes,
            &self.topo.hub,
            &self.dir,
        )?);
        Ok(())
    }
}

/// Removes etcd data dirs that `lab_alive` says belong to no live lab.
pub fn remove_stale_data(lab_alive: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(DATA_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((lab, _)) = name.split_once("-etcd")
            && lab.starts_with(crate::netns::PREFIX)
            && !lab_alive(lab)
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
