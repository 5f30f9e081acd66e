//! The client: what users feel during a failover, measured from the client namespace.
//!
//! Every 10 ms a fresh TDS login + `SELECT @@SERVERNAME` + role query (the agent's own login
//! probe code, `tdsvip_probes::LoginProbe`, on a new connection each time) goes to the
//! overlay IP with a 50 ms deadline; each attempt is recorded with its outcome, the server
//! that answered and the role it reported. Attempts run concurrently, so a hung attempt
//! does not delay the next one.
//!
//! Idle sessions are logged in by hand (PRELOGIN + LOGIN7 with `tds-codec` on a plain
//! socket, or inside TLS when the sims run strict) and then left alone: the only thing that
//! can happen on them is the server side going away, so the time the socket sees EOF or a
//! reset is the time the session was reset.
//!
//! All of it runs on one thread that entered the client namespace (its sockets stay there)
//! with a current-thread tokio runtime.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tds_codec::packet::{PacketType, encode_message};
use tds_codec::token::{Token, decode_stream};
use tdsvip_probes::{LoginConfig, LoginProbe};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::clock::Clock;
use crate::netns::NsHandle;
use crate::settings::Encrypt;
use crate::tsql::{lab_login7, lab_prelogin};

/// One login + query through the overlay IP.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub start: f64,
    pub end: f64,
    /// `Outcome::name()`: ok, not_primary, refused, timeout, reset, ...
    pub outcome: &'static str,
    pub server: Option<String>,
    pub role: Option<String>,
}

impl Attempt {
    /// The server answered the query (whatever its role).
    pub fn answered(&self) -> bool {
        self.server.is_some()
    }

    /// Answered by `server` reporting PRIMARY.
    pub fn primary_answer_from(&self, server: &str) -> bool {
        self.server.as_deref() == Some(server)
            && self
                .role
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case("PRIMARY"))
    }
}

/// One idle, logged-in session.
#[derive(Debug, Clone)]
pub struct IdleSession {
    pub opened: f64,
    /// When the socket saw EOF or an error, and which.
    pub closed: Option<(f64, String)>,
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub target: SocketAddr,
    pub user: String,
    pub password: String,
    pub ag: String,
    pub databases: Vec<String>,
    /// The lab CA: the client verifies the server certificate.
    pub ca_file: std::path::PathBuf,
    /// The probes' `encrypt` (mandatory or strict); strict idle sessions start with TLS too.
    pub encrypt: Encrypt,
    pub every: Duration,
    pub deadline: Duration,
}

enum Cmd {
    OpenIdle(usize, std::sync::mpsc::Sender<Result<Vec<usize>, String>>),
    /// Closes every idle session still open (their records stay as they were).
    CloseIdle,
    Stop,
}

/// The running client; stops on Drop.
pub struct Client {
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
    pub attempts: Arc<Mutex<Vec<Attempt>>>,
    pub idle: Arc<Mutex<Vec<IdleSession>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    pub fn start(ns: &str, clock: Clock, settings: ClientSettings) -> Result<Client, String> {
        let handle = NsHandle::open(ns).map_err(|e| format!("open netns {ns}: {e}"))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let idle = Arc::new(Mutex::new(Vec::new()));
        let (a, i) = (attempts.clone(), idle.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("lab-client".into())
            .spawn(move || {
                if let Err(e) = handle.enter() {
                    let _ = ready_tx.send(Err(format!("setns client: {e}")));
                    return;
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("client runtime: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                rt.block_on(run(clock, settings, a, i, &mut rx));
            })
            .map_err(|e| format!("client thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "client thread died".to_owned())??;
        Ok(Client {
            cmds: tx,
            attempts,
            idle,
            thread: Some(thread),
        })
    }

    /// Opens `n` idle sessions to the overlay IP; returns their indexes in `idle`.
    pub fn open_idle(&self, n: usize) -> Result<Vec<usize>, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.cmds
            .send(Cmd::OpenIdle(n, tx))
            .map_err(|_| "client stopped".to_owned())?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "opening idle sessions timed out".to_owned())?
    }

    /// Closes the idle sessions still open (at the end of a trial).
    pub fn close_idle(&self) {
        let _ = self.cmds.send(Cmd::CloseIdle);
    }

    pub fn attempts_between(&self, from: f64, to: f64) -> Vec<Attempt> {
        crate::clock::between(&self.attempts, from, to)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    clock: Clock,
    settings: ClientSettings,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    idle: Arc<Mutex<Vec<IdleSession>>>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Cmd>,
) {
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut config = LoginConfig::new(settings.user.clone(), settings.password.clone());
    config.ag = Some(settings.ag.clone());
    config.databases = settings.databases.clone();
    config.timeout = settings.deadline;
    config.application_name = "tdsvip-lab".into();
    config.tls.ca_file = Some(settings.ca_file.clone());
    config.tls.encrypt = match settings.encrypt {
        Encrypt::Mandatory => tdsvip_probes::config::Encrypt::Mandatory,
        Encrypt::Strict => tdsvip_probes::config::Encrypt::Strict,
    };
    // TDS 8.0 idle sessions: the same configuration as the lab's own T-SQL. A CA that
    // cannot be read fails every idle login with the reason, as a refused login would.
    let idle_tls = match settings.encrypt {
        Encrypt::Mandatory => Ok(None),
        Encrypt::Strict => crate::tsql::strict_client_config(&settings.ca_file).map(Some),
    };
    let tasks = tokio::task::LocalSet::new();
    let mut watchers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    tasks
        .run_until(async {
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let (config, attempts, target) = (config.clone(), attempts.clone(), settings.target);
                        tokio::task::spawn_local(async move {
                            let start = clock.now();
                            let (outcome, server, role) = match LoginProbe::new(target, config) {
                                Ok(mut p) => {
                                    let r = p.probe().await;
                                    (r.outcome.name(), r.server.server_name, r.server.role)
                                }
                                Err(_) => ("config_error", None, None),
                            };
                            let end = clock.now();
                            if let Ok(mut a) = attempts.lock() {
                                a.push(Attempt { start, end, outcome, server, role });
                            }
                        });
                    }
                    cmd = rx.recv() => match cmd {
                        None | Some(Cmd::Stop) => return,
                        Some(Cmd::CloseIdle) => {
                            for w in watchers.drain(..) {
                                w.abort();
                            }
                        }
                        Some(Cmd::OpenIdle(n, reply)) => {
                            let mut opened = Vec::new();
                            let mut error = None;
                            for _ in 0..n {
                                match idle_login(&settings, &idle_tls).await {
                                    Ok(stream) => {
                                        let idx = {
                                            let Ok(mut v) = idle.lock() else { break };
                                            v.push(IdleSession { opened: clock.now(), closed: None });
                                            v.len() - 1
                                        };
                                        opened.push(idx);
                                        watchers.push(tokio::task::spawn_local(watch_idle(stream, idx, idle.clone(), clock)));
                                    }
                                    Err(e) => { error = Some(e); break; }
                                }
                            }
                            let _ = reply.send(match error { Some(e) => Err(e), None => Ok(opened) });
                        }
                    }
                }
            }
        })
        .await;
}

async fn send<S: AsyncWrite + Unpin>(
    s: &mut S,
    ty: PacketType,
    payload: &[u8],
) -> std::io::Result<()> {
    s.write_all(&encode_message(ty, payload, 4096, 0)).await?;
    s.flush().await
}

/// An idle session's socket: plain TDS 7.x, or TDS 8.0 inside TLS.
enum IdleStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects, with TLS first when `tls` is given (strict), and logs in by hand.
async fn idle_login(
    settings: &ClientSettings,
    tls: &Result<Option<Arc<rustls::ClientConfig>>, String>,
) -> Result<IdleStream, String> {
    let tls = tls.as_ref().map_err(|e| format!("idle session TLS: {e}"))?;
    let work = async {
        let s = TcpStream::connect(settings.target)
            .await
            .map_err(|e| format!("idle session connect: {e}"))?;
        s.set_nodelay(true).ok();
        match tls {
            None => {
                let mut s = s;
                login_by_hand(&mut s, settings).await?;
                Ok(IdleStream::Plain(s))
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(settings.target.ip().into());
                let mut s = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, s)
                    .await
                    .map_err(|e| format!("idle session TLS: {e}"))?;
                login_by_hand(&mut s, settings).await?;
                Ok(IdleStream::Tls(Box::new(s)))
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .map_err(|_| "idle session login timed out".to_owned())?
}

/// PRELOGIN + LOGIN7 by hand; the session is logged in when LOGINACK arrived.
async fn login_by_hand<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    settings: &ClientSettings,
) -> Result<(), String> {
    let p = lab_prelogin();
    send(s, PacketType::PreLogin, &p.encode())
        .await
        .map_err(|e| format!("idle session PRELOGIN: {e}"))?;
    tds_codec::io::read_message(s, Default::default())
        .await
        .map_err(|e| format!("idle session PRELOGIN answer: {e}"))?;
    let l = lab_login7(&settings.user, &settings.password, "tdsvip-lab idle");
    send(s, PacketType::Login7, &l.encode())
        .await
        .map_err(|e| format!("idle session LOGIN7: {e}"))?;
    let m = tds_codec::io::read_message(s, Default::default())
        .await
        .map_err(|e| format!("idle session login answer: {e}"))?;
    let toks = decode_stream(&m.payload, true).map_err(|e| format!("login answer: {e}"))?;
    if !toks.iter().any(|t| matches!(t, Token::LoginAck(_))) {
        return Err(format!("idle session login refused: {toks:?}"));
    }
    Ok(())
}

async fn watch_idle(s: IdleStream, idx: usize, idle: Arc<Mutex<Vec<IdleSession>>>, clock: Clock) {
    let how = match s {
        IdleStream::Plain(s) => closed_how(s).await,
        IdleStream::Tls(s) => closed_how(s).await,
    };
    let at = clock.now();
    if let Ok(mut v) = idle.lock()
        && let Some(x) = v.get_mut(idx)
    {
        x.closed = Some((at, how));
    }
}

/// Reads until the server side goes away: `eof` or `reset`, as the socket saw it (a TLS
/// session closed without close_notify, as a killed server closes it, is an EOF too).
async fn closed_how<S: AsyncRead + Unpin>(mut s: S) -> String {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break "eof".to_owned(),
            Ok(_) => continue,
            Err(e) => {
                break match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => "eof".to_owned(),
                    std::io::ErrorKind::ConnectionReset => "reset".to_owned(),
                    _ => e.to_string(),
                };
            }
        }
    }
}

impl crate::clock::Stamped for Attempt {
    fn stamp(&self) -> f64 {
        self.start
    }
}
