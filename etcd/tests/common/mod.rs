//! A real etcd for the tests: Debian's `/usr/bin/etcd` started here as a one-member cluster on
//! 127.0.0.1 with free ports (never 2379/2380), its data on tmpfs, fast elections; killed and
//! its directory removed when dropped, also when a test fails. Optionally with TLS (a CA, a
//! server certificate for 127.0.0.1 and a client certificate, made with rcgen) and client
//! certificate authentication.

#![allow(dead_code)] // each test binary uses a part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tdsvip_etcd::{Etcd, EtcdSettings, EtcdTls};

const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer its first read (it elects itself in ~100 ms).
const START_WITHIN: Duration = Duration::from_secs(15);

static SERVERS: AtomicU32 = AtomicU32::new(0);

/// The files of a test PKI, in the server's directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it must fail.
    pub other_ca: PathBuf,
}

pub struct EtcdServer {
    child: Child,
    pub dir: PathBuf,
    pub name: String,
    /// `http://127.0.0.1:PORT` or `https://…` with TLS.
    pub client_url: String,
    pub pki: Option<Pki>,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        EtcdServer::start_with(false).await
    }

    /// With TLS on the client port and client certificates required.
    pub async fn start_tls() -> EtcdServer {
        EtcdServer::start_with(true).await
    }

    async fn start_with(tls: bool) -> EtcdServer {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let name = format!("tdsvip-etcd-test-{}-{n}", std::process::id());
        let dir = PathBuf::from("/dev/shm").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = tls.then(|| make_pki(&dir));
        let (client_port, peer_port) = two_free_ports();
        let scheme = if tls { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
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
        if let Some(pki) = &pki {
            command
                .arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .spawn()
            .expect("start /usr/bin/etcd (Debian etcd-server)");
        let mut server = EtcdServer {
            child,
            dir,
            name,
            client_url,
            pki,
        };
        server.wait_ready().await;
        server
    }

    /// Settings that reach this server (with the client certificate when it has TLS).
    pub fn settings(&self) -> EtcdSettings {
        self.settings_under("/tdsvip-test")
    }

    /// [`Self::settings`] with keys under `prefix` (the agent's tests use its own).
    pub fn settings_under(&self, prefix: &str) -> EtcdSettings {
        EtcdSettings {
            endpoints: vec![self.client_url.clone()],
            prefix: prefix.to_owned(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            user: None,
            tls: self.pki.as_ref().map(|pki| EtcdTls {
                ca: pki.ca.clone(),
                cert: Some(pki.client_cert.clone()),
                key: Some(pki.client_key.clone()),
            }),
        }
    }

    pub async fn connect(&self) -> Etcd {
        self.connect_under("/tdsvip-test").await
    }

    pub async fn connect_under(&self, prefix: &str) -> Etcd {
        Etcd::connect(&self.settings_under(prefix))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// An etcd-client client for what the crate does not offer (auth setup, compaction).
    pub async fn raw_client(&self) -> etcd_client::Client {
        let mut options = etcd_client::ConnectOptions::new();
        if let Some(pki) = &self.pki {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&pki.ca)))
                .identity(etcd_client::Identity::from_pem(
                    read(&pki.client_cert),
                    read(&pki.client_key),
                ))
                .assume_http2(true);
            options = options.with_tls(tls);
        }
        etcd_client::Client::connect([&self.client_url], Some(options))
            .await
            .unwrap()
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < START_WITHIN {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd {} exited: {status}\n{}", self.name, self.log_tail());
            }
            match Etcd::connect(&self.settings()).await {
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

    /// Stops etcd (SIGSTOP) without closing its sockets: a member that hangs. Returns once
    /// every thread is stopped: `kill` returns when the signal is sent, and a thread running
    /// on the other core answered a request in that gap (seen once in `./run-tests`).
    pub fn freeze(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.child.id());
        let stopped = |stat: String| {
            // The state follows the parenthesised command name: "pid (comm) T ...".
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let all = std::fs::read_dir(&tasks).unwrap().all(|t| {
                let path = t.unwrap().path().join("stat");
                std::fs::read_to_string(path).map_or(true, stopped)
            });
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a frozen etcd run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.child.id());
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

/// A port nothing listens on: bound, then released.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn make_ca(common_name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, common_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = ca.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(ca, key))
}

fn make_leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, sans[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn make_pki(dir: &Path) -> Pki {
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let (ca_pem, issuer) = make_ca("tdsvip etcd test CA");
    let (other_ca_pem, _) = make_ca("tdsvip unrelated CA");
    let server = make_leaf(
        &issuer,
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = make_leaf(
        &issuer,
        &["tdsvip-agent"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let pki = Pki {
        ca: pki_dir.join("ca.pem"),
        server_cert: pki_dir.join("server.pem"),
        server_key: pki_dir.join("server.key"),
        client_cert: pki_dir.join("client.pem"),
        client_key: pki_dir.join("client.key"),
        other_ca: pki_dir.join("other-ca.pem"),
    };
    for (path, content) in [
        (&pki.ca, ca_pem),
        (&pki.server_cert, server.0),
        (&pki.server_key, server.1),
        (&pki.client_cert, client.0),
        (&pki.client_key, client.1),
        (&pki.other_ca, other_ca_pem),
    ] {
        std::fs::write(path, content).unwrap();
    }
    pki
}

/// Runs `future` for at most `within`, failing the test with `what` otherwise.
pub async fn within<T>(
    within: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(within, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {within:?}"))
}
