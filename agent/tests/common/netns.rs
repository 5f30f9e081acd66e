//! The network-namespace test bed shared by the tests that run `tdsvip run` as a real
//! process: a node namespace (`eth0` 10.232.NET.2/24) and a client namespace (`eth0`
//! 10.232.NET.1/24) on a veth pair, tds-sim in this process on a thread that entered the
//! node namespace (its sockets stay there, no binary to find), the agent started inside the
//! node namespace with its stderr in the lab's `agent.log`, and HTTP to the namespace's
//! loopback through short-lived threads that enter it too. The sim forces encryption with a
//! certificate from the lab's own CA, which the agent verifies (`ca_file`), as in production.
//!
//! Namespaces are named `<prefix><pid>x<n>-a` / `-c` and are removed on Drop, also when an
//! assertion fails; labs left by test processes that died (their pid is gone) are removed
//! first. Each test binary uses its own prefix.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::pki::SimPki;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command and returns its stdout; panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Enters `ns` for the rest of the calling thread's life (only used on threads of our own).
pub fn enter_netns(ns: &str) {
    let f = File::open(format!("/var/run/netns/{ns}")).expect("open netns");
    // SAFETY: setns with a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread inside `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .expect("netns thread")
}

/// A single-threaded tokio runtime for async helpers on a namespace thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Removes the namespaces of labs with `prefix` whose test process is gone.
fn remove_stale_labs(prefix: &str) {
    for line in sh(&["ip", "netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists() {
            // What that test started in the namespace (agent, prometheus, moto) outlived it:
            // end those processes, by pid, before the namespace goes.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                let text = String::from_utf8_lossy(&out.stdout);
                for p in text
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    if p > 1 {
                        // SAFETY: kill(2) of one process left in our own stale namespace.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
            if let Some(lab) = name.strip_suffix("-a").or_else(|| name.strip_suffix("-c")) {
                let dir = std::env::temp_dir().join(lab);
                let _ = Command::new("umount").arg(dir.join("bpf")).status();
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Polls `f` every 10 ms until it is true or `limit` passes; true if it became true.
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP/1.1 request from inside `ns`; returns (status, body).
pub fn http(
    ns: &str,
    method: &str,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (method, path, token, body) = (
        method.to_owned(),
        path.to_owned(),
        token.map(str::to_owned),
        body.to_owned(),
    );
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
}

/// tds-sim's listeners, as seen from inside the node namespace.
#[derive(Debug, Clone, Copy)]
pub struct Sim {
    /// TDS on the namespace's loopback (it listens on every address of the namespace).
    pub tds: SocketAddr,
    /// The HTTP control API (`PUT /state` with `{"role": ...}`), on loopback.
    pub control: SocketAddr,
}

pub struct Lab {
    pub node: String,
    pub client: String,
    /// Scratch directory for configs, tokens and logs; removed on Drop.
    pub dir: PathBuf,
    /// The third octet of the lab's 10.232.NET.0/24.
    net: u8,
    pub agent: Option<Child>,
    /// The CA the agent verifies against and the sim's certificate, in `dir`.
    pub pki: SimPki,
}

impl Lab {
    /// A new lab with namespaces `<prefix><pid>x<n>-a/-c` on 10.232.`net`.0/24.
    pub fn new(prefix: &str, net: u8) -> Lab {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test creates network namespaces: run as root"
        );
        remove_stale_labs(prefix);
        let name = format!(
            "{prefix}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bpf")).expect("temp dir");
        // Every address the agent reaches the sim at: loopback (the local probe), the node's
        // own address and the overlay IP (the overlay probe, once the agent holds it).
        let sans = [
            "nodea".to_owned(),
            "127.0.0.1".to_owned(),
            format!("10.232.{net}.2"),
            format!("10.232.{net}.100"),
        ];
        let lab = Lab {
            node: format!("{name}-a"),
            client: format!("{name}-c"),
            pki: SimPki::create(&dir, &sans),
            dir,
            net,
            agent: None,
        };
        // From here on Drop cleans up whatever was created.
        // The agent pins its eBPF links and maps on bpffs. `ip netns exec` remounts /sys for
        // the agent, so /sys/fs/bpf is not there: the lab gives it a bpffs of its own.
        sh(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            &lab.pin_dir().to_string_lossy(),
        ]);
        sh(&["ip", "netns", "add", &lab.node]);
        sh(&["ip", "netns", "add", &lab.client]);
        sh(&[
            "ip",
            "-n",
            &lab.node,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.client,
        ]);
        for (ns, host) in [(&lab.node, 2), (&lab.client, 1)] {
            let cidr = format!("10.232.{net}.{host}/24");
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// The lab's own bpf filesystem, the agent's `[ebpf] pin_dir`.
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// The lab's overlay address, 10.232.NET.100 (not configured on any interface).
    pub fn overlay(&self) -> String {
        format!("10.232.{}.100", self.net)
    }

    /// Whether the node's `eth0` carries `cidr`.
    pub fn has_address(&self, cidr: &str) -> bool {
        sh(&["ip", "-n", &self.node, "-4", "addr", "show", "dev", "eth0"]).contains(cidr)
    }

    /// Whether the node's `eth0` carries the overlay address as a /32.
    pub fn has_overlay(&self) -> bool {
        self.has_address(&format!("{}/32", self.overlay()))
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Starts tds-sim as PRIMARY of AG1 (database `sales` ONLINE) inside the node namespace,
    /// with Force Encryption and the lab's certificate.
    pub fn start_sim(&self) -> Sim {
        let ns = self.node.clone();
        let tls = tds_sim::tls::TlsSettings {
            mode: tds_sim::tls::Mode::Force,
            cert: Some(self.pki.cert.clone()),
            key: Some(self.pki.key.clone()),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter_netns(&ns);
            runtime().block_on(async move {
                let mut cfg = tds_sim::SimConfig::new("NODEA", "AG1", tds_sim::Role::Primary);
                // Every address, so that the overlay IP reaches it once the agent adds it.
                cfg.listen = SocketAddr::from(([0, 0, 0, 0], 0));
                cfg.control = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
                cfg.databases = vec![("sales".into(), tds_sim::DbState::Online)];
                cfg.tls = tls;
                let sim = tds_sim::start(cfg).await.expect("tds-sim start");
                let control = sim.control_addr().expect("control addr");
                let tds = SocketAddr::from(([127, 0, 0, 1], sim.tds_addr().port()));
                tx.send(Sim { tds, control }).unwrap();
                // Serve until the process ends (the namespace goes with the lab).
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("tds-sim did not start")
    }

    /// Sets the simulated replica's role through tds-sim's control API.
    pub fn set_role(&self, sim: &Sim, role: &str) {
        let (code, body) = http(
            &self.node,
            "PUT",
            sim.control,
            "/state",
            None,
            &format!(r#"{{"role":"{role}"}}"#),
        );
        assert_eq!(code, 200, "tds-sim PUT /state {role}: {body}");
    }

    /// One HTTP request from inside the node namespace.
    pub fn http(
        &self,
        method: &str,
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        http(&self.node, method, addr, path, token, "")
    }

    /// Whether something accepts TCP connections on `addr` inside the node namespace
    /// within `limit`.
    pub fn listening_within(&self, addr: SocketAddr, limit: Duration) -> bool {
        within(limit, || {
            in_ns(&self.node, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
        })
    }

    /// The config of the lab's usual agent: node `nodea` on `eth0`, logging in to `sim` as
    /// `tdsvip` with the password file `pw` (written here, "secret") over TLS verified against
    /// the lab's CA, 20 ms login probes
    /// (rise 2, fall 3), AG1 on the overlay address with database `sales`; then `http` as the
    /// body of `[http]` (e.g. `listen = "127.0.0.1:19477"`) and `rest` (more tables) verbatim,
    /// but for `[ebpf] pin_dir`, which is always the lab's bpffs (added to `rest`'s `[ebpf]`
    /// table, or as one of its own).
    pub fn agent_config(&self, sim: &Sim, http: &str, rest: &str) -> String {
        let pin_dir = format!("pin_dir = \"{}\"\n", self.pin_dir().display());
        let rest = match rest.split_once("[ebpf]\n") {
            Some((before, after)) => format!("{before}[ebpf]\n{pin_dir}{after}"),
            None => format!("{rest}\n[ebpf]\n{pin_dir}"),
        };
        let pw = self.dir.join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        format!(
            r#"node = "nodea"
interface = "eth0"

[sql]
endpoint = "{tds}"
user = "tdsvip"
password_file = "{pw}"
# Encrypted as by default, the certificate verified against the lab's CA (it names
# 127.0.0.1, so no host_name_in_certificate).
encrypt = "mandatory"
ca_file = "{ca}"

[probe]
interval_ms = 20
timeout_ms = 200
rise = 2
fall = 3

[[ag]]
name = "AG1"
addresses = ["{overlay}"]
port = {port}
databases = ["sales"]

[http]
{http}

{rest}
"#,
            tds = sim.tds,
            pw = pw.display(),
            ca = self.pki.ca_file.display(),
            overlay = self.overlay(),
            port = sim.tds.port(),
        )
    }

    /// Writes `config` as the lab's `tdsvip.toml` and returns its path.
    pub fn write_config(&self, config: &str) -> PathBuf {
        let file = self.dir.join("tdsvip.toml");
        std::fs::write(&file, config).unwrap();
        file
    }

    /// Writes `config` and starts `tdsvip run` inside the node namespace with `env` added
    /// (and no AWS profile); returns the agent's pid.
    pub fn start_agent(&mut self, config: &str, env: &[(&str, &str)]) -> u32 {
        let file = self.write_config(config);
        let argv: Vec<OsString> = vec![
            env!("CARGO_BIN_EXE_tdsvip").into(),
            "run".into(),
            "--config".into(),
            file.into(),
        ];
        self.spawn_in_node(&argv, env)
    }

    /// Starts `argv` inside the node namespace (`ip netns exec` execs it in place, so the
    /// pid returned is the program's), stdout discarded, stderr into the lab's `agent.log`.
    /// The child is the lab's agent: killed on Drop unless [`Lab::stop_agent`] ended it.
    pub fn spawn_in_node(&mut self, argv: &[OsString], env: &[(&str, &str)]) -> u32 {
        assert!(self.agent.is_none(), "the lab already runs an agent");
        let log = File::create(self.dir.join("agent.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node])
            .args(argv)
            .envs(env.iter().copied())
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        let pid = child.id();
        self.agent = Some(child);
        pid
    }

    /// Kills the agent with SIGKILL (no release, no clean-up of its own) and reaps it.
    pub fn kill_agent(&mut self) {
        let mut child = self.agent.take().expect("no agent running");
        child.kill().expect("SIGKILL the agent");
        child.wait().expect("reap the agent");
    }

    /// The agent's pid, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Sends SIGTERM to the agent and waits up to `limit` for it to exit: its exit status,
    /// or `None` if it was still running (it is killed then).
    pub fn stop_agent(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.agent.take().expect("no agent running");
        // SAFETY: signalling the child we started.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().expect("wait agent") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.node, &self.client] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        // Unmounting drops what is still pinned; the interfaces went with the namespaces.
        let _ = Command::new("umount").arg(self.pin_dir()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
