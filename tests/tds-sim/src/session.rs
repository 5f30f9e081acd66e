//! One client connection: PRELOGIN, LOGIN7, then requests until the client leaves, with the
//! configured fault applied at each step.
//!
//! The session reads the replica's state afresh before answering each message, so role,
//! database and fault changes reach open sessions at their next request. While waiting for
//! the client it also watches the state channel, so `reset`/`refuse` can RST an idle
//! session and shutdown can close it. A session that is told to hang keeps *reading* (and
//! discarding) until the client goes away, which is invisible to the client but lets the
//! task end instead of leaking. Malformed input closes the connection with the reason
//! logged.
//!
//! Encryption follows the PRELOGIN table in `tls::negotiate`; the TLS steps (the handshake
//! in PRELOGIN packets, login-only encryption, TDS 8.0's TLS-first) are in `encryption`.
//! The session keeps a duplicate of the socket's descriptor so that it can close or reset
//! the connection even while a TLS handshake owns the stream.

mod encryption;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tds_codec::io::{self, Limits, Message, ReadError};
use tds_codec::packet::{self, PacketType, status as packet_status};
use tds_codec::token::DoneKind;
use tds_codec::token::done::{cur_cmd, status};
use tds_codec::token::envchange::EnvChange;
use tds_codec::{Login7, RpcRequest, SqlBatch, TransactionManager, tds_version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::exec::{self, Exec, Session};
use crate::perms::Refused;
use crate::respond::{self, LoginOk, Response};
use crate::sql::SqlError;
use crate::state::{Counters, Fault, Replica, Shared};
use crate::tls::{Framing, Mode, Setup, Transport};

/// How a connection ends.
enum End {
    /// Close normally (FIN).
    Close(String),
    /// Abort with RST (SO_LINGER 0).
    Reset(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prelogin,
    Login,
    Request,
}

/// LOGIN7 OptionFlags2 fIntSecurity: Windows/SSPI authentication.
const F_INT_SECURITY: u8 = 0x80;

struct OpenGuard<'a>(&'a Counters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: Arc<Setup>,
    id: u64,
) {
    Counters::bump(&shared.counters.open_connections);
    let _open = OpenGuard(&shared.counters);
    let sock = match socket2::SockRef::from(&stream).try_clone() {
        Ok(s) => s,
        Err(e) => {
            warn!(conn = id, %peer, error = %e, "cannot duplicate the socket; closing");
            return;
        }
    };
    let rx = shared.state.subscribe();
    let epoch = rx.borrow().kill_epoch;
    let spid = shared.next_spid();
    info!(conn = id, %peer, spid, "connection accepted");
    let mut conn = Conn {
        stream: Transport::Clear(Framing::new(stream)),
        sock,
        tls,
        rx,
        epoch,
        shared: shared.clone(),
        id,
        spid,
        packet_size: packet::DEFAULT_PACKET_LEN,
    };
    let end = conn.run().await;
    match end {
        End::Close(why) => {
            info!(conn = id, %peer, reason = %why, "connection closed");
            conn.close().await;
        }
        End::Reset(why) => {
            info!(conn = id, %peer, reason = %why, "connection reset (RST)");
            rst(conn.stream, conn.sock);
        }
    }
}

/// Closes with RST instead of FIN: SO_LINGER with a zero timeout, then close (the socket
/// closes when its last descriptor, `sock`, does).
fn rst(stream: Transport, sock: socket2::Socket) {
    if let Err(e) = sock.set_linger(Some(Duration::ZERO)) {
        warn!(error = %e, "SO_LINGER 0 failed; closing normally");
    }
    drop(stream);
    drop(sock);
}

/// Resolves when the session must stop: shutdown, or a fault that resets open sessions.
async fn stop_signal(rx: &mut watch::Receiver<Replica>, epoch: u64) -> End {
    loop {
        {
            let r = rx.borrow_and_update();
            if r.shutting_down {
                return End::Close("simulator shutting down".into());
            }
            if r.kill_epoch != epoch {
                return End::Reset(format!("fault {} resets open sessions", r.fault.name()));
            }
        }
        if rx.changed().await.is_err() {
            return End::Close("simulator stopped".into());
        }
    }
}

/// Bytes that are no TDS answer: a well-framed packet (so that no client waits for more)
/// whose payload starts with token 0xDE, which exists in no TDS version.
fn garbage() -> Vec<u8> {
    packet::encode_message(
        PacketType::TabularResult,
        b"\xDE\xAD\xBE\xEF\x13\x37 tds-sim fault: garbage \xFF\xFE\x00",
        packet::DEFAULT_PACKET_LEN,
        0,
    )
}

struct Conn {
    stream: Transport,
    /// A duplicate descriptor of the TCP socket (see the module comment).
    sock: socket2::Socket,
    tls: Arc<Setup>,
    rx: watch::Receiver<Replica>,
    epoch: u64,
    shared: Arc<Shared>,
    id: u64,
    spid: u16,
    packet_size: usize,
}

impl Conn {
    async fn read(&mut self) -> Result<Message, End> {
        let limits = Limits {
            max_packet: packet::MAX_PACKET_LEN,
            max_message: 4 << 20,
        };
        tokio::select! {
            r = io::read_message(&mut self.stream, limits) => match r {
                Ok(m) => Ok(m),
                Err(ReadError::Closed) => Err(End::Close("client closed the connection".into())),
                Err(ReadError::Io(e)) => Err(End::Close(format!("read failed: {e}"))),
                Err(ReadError::Codec(e)) => Err(End::Close(format!("malformed packet: {e}"))),
            },
            end = stop_signal(&mut self.rx, self.epoch) => Err(end),
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), End> {
        let stream = &mut self.stream;
        // TLS buffers what it is given: the flush sends it.
        let send = async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        tokio::select! {
            r = send => r.map_err(|e| End::Close(format!("write failed: {e}"))),
            end = stop_signal(&mut self.rx, self.epoch) => Err(end),
        }
    }

    async fn write(&mut self, payload: &[u8]) -> Result<(), End> {
        let bytes = packet::encode_message(
            PacketType::TabularResult,
            payload,
            self.packet_size,
            self.spid,
        );
        self.write_raw(&bytes).await
    }

    /// Reads and discards until the client leaves: the session answers nothing more.
    async fn drain(&mut self, why: &str) -> End {
        info!(
            conn = self.id,
            fault = why,
            "hanging: reading and discarding until the client leaves"
        );
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                r = self.stream.read(&mut buf) => match r {
                    Ok(0) => return End::Close(format!("client left while hanging ({why})")),
                    Ok(_) => {}
                    Err(e) => return End::Close(format!("read failed while hanging ({why}): {e}")),
                },
                end = stop_signal(&mut self.rx, self.epoch) => return end,
            }
        }
    }

    /// Applies the current fault before answering in `phase`. `Ok(true)` means "refuse this
    /// login" (reject_login).
    async fn gate(&mut self, phase: Phase) -> Result<bool, End> {
        let fault = self.rx.borrow().fault();
        match fault {
            Fault::None => Ok(false),
            Fault::Refuse | Fault::Reset => Err(End::Reset(format!("fault {}", fault.name()))),
            Fault::HangAfterAccept => Err(self.drain(fault.name()).await),
            Fault::HangAfterPrelogin if phase != Phase::Prelogin => {
                Err(self.drain(fault.name()).await)
            }
            Fault::HangAfterLogin if phase == Phase::Request => Err(self.drain(fault.name()).await),
            Fault::Slow { delay_ms } => {
                debug!(conn = self.id, delay_ms, "fault slow: delaying the answer");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => Ok(false),
                    end = stop_signal(&mut self.rx, self.epoch) => Err(end),
                }
            }
            Fault::Garbage => {
                info!(
                    conn = self.id,
                    ?phase,
                    "fault garbage: sending malformed bytes"
                );
                self.write_raw(&garbage()).await?;
                Err(self.drain("garbage").await)
            }
            Fault::RejectLogin if phase == Phase::Login => Ok(true),
            _ => Ok(false),
        }
    }

    async fn run(&mut self) -> End {
        match self.session().await {
            Ok(()) => End::Close("session ended".into()),
            Err(end) => end,
        }
    }

    async fn session(&mut self) -> Result<(), End> {
        // Faults that act on the connection itself, before anything is read.
        let fault = self.rx.borrow().fault();
        match fault {
            Fault::Refuse | Fault::Reset => {
                return Err(End::Reset(format!("fault {}", fault.name())));
            }
            Fault::HangAfterAccept => return Err(self.drain(fault.name()).await),
            _ => {}
        }
        if self.tls.mode == Mode::Strict {
            self.strict_tls().await?;
        }
        let first = self.read().await?;
        let login_msg = match first.ty {
            PacketType::PreLogin => self.prelogin(&first.payload).await?,
            // A client may skip PRELOGIN (TDS 7.0 style) and send LOGIN7 at once, in clear
            // text: refused where encryption is forced.
            PacketType::Login7 if self.tls.mode == Mode::Force => {
                return Err(End::Close(
                    "LOGIN7 without PRELOGIN while encryption is forced".into(),
                ));
            }
            PacketType::Login7 => first,
            other => {
                return Err(End::Close(format!(
                    "expected PRELOGIN, got {}",
                    other.name()
                )));
            }
        };
        if login_msg.ty == PacketType::PreLogin {
            return Err(self.second_prelogin(&login_msg).await);
        }
        if login_msg.ty != PacketType::Login7 {
            return Err(End::Close(format!(
                "expected LOGIN7, got {}",
                login_msg.ty.name()
            )));
        }
        let mut session = self.login(&login_msg).await?;
        loop {
            let msg = self.read().await?;
            self.request(msg, &mut session).await?;
        }
    }

    async fn login(&mut self, msg: &Message) -> Result<Session, End> {
        let reject = self.gate(Phase::Login).await?;
        let l = Login7::decode(&msg.payload)
            .map_err(|e| End::Close(format!("malformed LOGIN7: {e}")))?;
        let replica = self.rx.borrow().clone();
        let Some(version) = tds_version::negotiate(self.asked_version(l.tds_version)) else {
            let mut r = Response::new(tds_version::V7_1, &replica.server_name);
            r.error(&SqlError::new(
                50000,
                16,
                format!(
                    "tds-sim speaks TDS 7.1 to 7.4; the client asked for 0x{:08x}.",
                    l.tds_version
                ),
            ));
            r.done(DoneKind::Done, status::ERROR, cur_cmd::NONE, 0);
            let _ = self.write(&r.finish()).await;
            Counters::bump(&self.shared.counters.failed_logins);
            return Err(End::Close(format!(
                "unsupported TDS version 0x{:08x}",
                l.tds_version
            )));
        };
        let mut before = Vec::new();
        let reason = if reject {
            Some("fault reject_login".to_string())
        } else if l.option_flags2 & F_INT_SECURITY != 0 || !l.sspi.is_empty() {
            Some("integrated (SSPI) authentication is not supported".to_string())
        } else if let Err(r) = self.shared.logins.authenticate(&l.username, &l.password) {
            Some(match r {
                Refused::UnknownUser => format!("unknown user '{}'", l.username),
                Refused::WrongPassword => "wrong password".to_string(),
            })
        } else if !l.database.is_empty()
            && let Some(e) = exec::database_error(&replica, &l.database)
        {
            before.push(SqlError::new(
                4060,
                11,
                format!(
                    "Cannot open database \"{}\" requested by the login. The login failed.",
                    l.database
                ),
            ));
            Some(format!("database '{}': {}", l.database, e.message))
        } else {
            None
        };
        if let Some(reason) = reason {
            Counters::bump(&self.shared.counters.failed_logins);
            warn!(conn = self.id, user = %l.username, tds = %tds_version::name(version), %reason, "login failed (18456)");
            let bytes = respond::login_failed(version, &replica.server_name, &l.username, &before);
            self.write(&bytes).await?;
            return Err(End::Close(format!("login failed: {reason}")));
        }
        let packet_size = match l.packet_size {
            0 => packet::DEFAULT_PACKET_LEN,
            n => (n as usize).clamp(512, packet::MAX_PACKET_LEN),
        };
        let database = if l.database.is_empty() {
            "master".to_string()
        } else {
            l.database.clone()
        };
        let bytes = respond::login_ok(&LoginOk {
            tds_version: version,
            server_name: &replica.server_name,
            product_version: self.shared.product_version,
            database: &database,
            packet_size,
            feature_ack: l.features.is_some(),
        });
        self.write(&bytes).await?;
        // The negotiated size applies to the packets after the login answer.
        self.packet_size = packet_size;
        Counters::bump(&self.shared.counters.logins);
        info!(
            conn = self.id,
            user = %l.username,
            app = %l.app_name,
            library = %l.library_name,
            tds = %tds_version::name(version),
            packet_size,
            %database,
            "login succeeded"
        );
        let login = self
            .shared
            .logins
            .canonical(&l.username)
            .unwrap_or(l.username);
        Ok(Session::new(self.spid, version, login, database))
    }

    /// Waits until the commit at `lsn` may be acknowledged. The client may give up first:
    /// an ATTENTION is answered with DONE_ATTN instead of the results (the transaction
    /// stays committed locally, unacknowledged) and `false` returned; anything else ends
    /// the session.
    async fn wait_durable(&mut self, lsn: u64, session: &Session) -> Result<bool, End> {
        let shared = self.shared.clone();
        tokio::select! {
            _ = shared.ag.wait_durable(lsn) => Ok(true),
            m = self.read() => {
                let m = m?;
                if m.ty != PacketType::Attention {
                    return Err(End::Close(format!("{} while a commit waited for its secondaries", m.ty.name())));
                }
                info!(conn = self.id, lsn, "ATTENTION while the commit waited for its secondaries");
                let mut r = Response::new(session.tds_version, "");
                r.done(DoneKind::Done, status::ATTN, cur_cmd::NONE, 0);
                self.write(&r.finish()).await?;
                Ok(false)
            }
        }
    }

    async fn request(&mut self, msg: Message, session: &mut Session) -> Result<(), End> {
        if msg.ty == PacketType::Attention {
            let fault = self.rx.borrow().fault();
            if matches!(
                fault,
                Fault::HangAfterAccept | Fault::HangAfterPrelogin | Fault::HangAfterLogin
            ) {
                return Err(self.drain(fault.name()).await);
            }
            info!(conn = self.id, "ATTENTION; acknowledging with DONE_ATTN");
            let mut r = Response::new(session.tds_version, "");
            r.done(DoneKind::Done, status::ATTN, cur_cmd::NONE, 0);
            return self.write(&r.finish()).await;
        }
        if !matches!(
            msg.ty,
            PacketType::SqlBatch | PacketType::Rpc | PacketType::TransactionManager
        ) {
            return Err(End::Close(format!(
                "unexpected {} message after login",
                msg.ty.name()
            )));
        }
        Counters::bump(&self.shared.counters.queries);
        self.gate(Phase::Request).await?;
        let v72 = tds_version::is_72_plus(session.tds_version);
        let replica = self.rx.borrow().clone();
        let mut r = Response::new(session.tds_version, &replica.server_name);
        if msg.status
            & (packet_status::RESET_CONNECTION | packet_status::RESET_CONNECTION_SKIP_TRAN)
            != 0
        {
            session.reset();
            r.env(EnvChange::ResetConnectionAck);
        }
        let mut exec = Exec {
            shared: &self.shared,
            replica: &replica,
            session,
        };
        let (kinds, error) = match msg.ty {
            PacketType::SqlBatch => {
                let b = SqlBatch::decode(&msg.payload, v72)
                    .map_err(|e| End::Close(format!("malformed SQLBatch: {e}")))?;
                debug!(conn = self.id, text = %b.text, "SQL batch");
                exec.batch(&b.text, &mut r)
            }
            PacketType::Rpc => {
                let req = RpcRequest::decode(&msg.payload, v72)
                    .map_err(|e| End::Close(format!("malformed RPC: {e}")))?;
                exec.rpc(&req, &mut r)
            }
            _ => {
                if !v72 {
                    return Err(End::Close(
                        "transaction manager request below TDS 7.2".into(),
                    ));
                }
                let tm = TransactionManager::decode(&msg.payload).map_err(|e| {
                    End::Close(format!("malformed transaction manager request: {e}"))
                })?;
                let (k, e) = exec.transaction(&tm, &mut r);
                (vec![k], e)
            }
        };
        if let Some(lsn) = session.commit_lsn.take() {
            // The commit rule: answer only once the commit is durable where it must be.
            if !self.wait_durable(lsn, session).await? {
                return Ok(());
            }
        }
        match &error {
            None => {
                info!(conn = self.id, request = msg.ty.name(), kinds = ?kinds, role = %replica.role, "query answered")
            }
            Some(e) => {
                info!(conn = self.id, request = msg.ty.name(), kinds = ?kinds, error = %e, "query answered with an error")
            }
        }
        self.write(&r.finish()).await
    }
}
