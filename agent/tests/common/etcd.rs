//! A real etcd for the agent's tests (the pattern of etcd/tests/common, without TLS, which the
//! agent's tests do not need): Debian's `/usr/bin/etcd` as a one-member cluster on 127.0.0.1
//! with free ports (never 2379/2380), its data on tmpfs, fast elections; killed and its
//! directory removed when dropped, also when a test fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tdsvip_etcd::{Etcd, EtcdSettings};

const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer its first read (it elects itself in ~100 ms).
const START_WITHIN: Duration = Duration::from_secs(15);

static SERVERS: AtomicU32 = AtomicU32::new(0);

pub struct EtcdServer {
    child: Child,
    pub dir: PathBuf,
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub client_url: String,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let name = format!("tdsvip-agent-etcd-{}-{n}", std::process::id());
        let dir = PathBuf::from("/dev/shm").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client_port, peer_port) = two_free_ports();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let mut command = Command::new(ETCD);
        command
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("ETCD")) {
            command.env_remove(key);
        }
        let child = command
            .spawn()
            .expect("start /usr/bin/etcd (Debian etcd-server)");
        let mut server = EtcdServer {
            child,
            dir,
            name,
            client_url,
        };
        server.wait_ready().await;
        server
    }

    /// Settings that reach this server, with keys under `prefix`.
    pub fn settings(&self, prefix: &str) -> EtcdSettings {
        EtcdSettings {
            endpoints: vec![self.client_url.clone()],
            prefix: prefix.to_owned(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            user: None,
            tls: None,
        }
    }

    pub async fn connect(&self, prefix: &str) -> Etcd {
        Etcd::connect(&self.settings(prefix))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < START_WITHIN {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd {} exited: {status}\n{}", self.name, self.log_tail());
            }
            match Etcd::connect(&self.settings("/ready")).await {
                Ok(etcd) => match etcd.cluster_leader().await {
                    Ok(_) => return,
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "etcd {} not ready within {START_WITHIN:?}: {last_error}\n{}",
            self.name,
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        format!("--- etcd log (last lines) ---\n{}", tail.join("\n"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two distinct ports the kernel just handed out (both held until both are known).
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}
