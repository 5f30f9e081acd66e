//! The session's TLS steps, apart from the request loop they precede: answering PRELOGIN
//! by the negotiation table, the TDS 7.x handshake inside PRELOGIN packets, going back to
//! clear text after a login-only encryption, and TDS 8.0's TLS before any TDS byte.
//!
//! Every failure here is the client's (or the network's) and ends the connection with the
//! reason logged: a handshake error, a clear-text PRELOGIN on a strict server, a client
//! without TLS on a forced one.

use std::time::Duration;

use tds_codec::Prelogin;
use tds_codec::io::Message;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use tds_codec::tds_version;
use tds_codec::token::DoneKind;
use tds_codec::token::done::{cur_cmd, status};

use super::{Conn, End, Phase, stop_signal};
use crate::respond::{self, Response};
use crate::sql::SqlError;
use crate::state::Counters;
use crate::tls::{self, Mode, Outcome, Transport};

/// The first byte of a TDS PRELOGIN packet.
const TDS_PRELOGIN: u8 = 0x12;
/// A TLS record carrying a handshake starts with content type 22.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a closing session waits to send TLS's close_notify to a client that does not
/// read any more.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Conn {
    /// Answers the client's PRELOGIN and does what the table says; returns the next
    /// message (LOGIN7, read through TLS when the login is encrypted).
    pub(super) async fn prelogin(&mut self, payload: &[u8]) -> Result<Message, End> {
        let p = Prelogin::decode(payload)
            .map_err(|e| End::Close(format!("malformed PRELOGIN: {e}")))?;
        let n = tls::negotiate(self.tls.mode, p.encryption);
        info!(
            conn = self.id,
            client_version = %p.version.map(|v| v.to_string()).unwrap_or_default(),
            encryption = p.encryption.map(|e| e.name()).unwrap_or("absent"),
            answer = n.answer.name(),
            outcome = ?n.outcome,
            setting = self.tls.mode.name(),
            "PRELOGIN"
        );
        self.gate(Phase::Prelogin).await?;
        self.write(&respond::prelogin(self.shared.product_version, n.answer))
            .await?;
        match n.outcome {
            Outcome::Refuse => {
                return Err(End::Close(format!(
                    "client sent ENCRYPTION {} but encryption is forced (answered ENCRYPT_REQ)",
                    p.encryption.map(|e| e.name()).unwrap_or("absent")
                )));
            }
            Outcome::LoginOnly | Outcome::Full => self.start_tls(true).await?,
            Outcome::Clear | Outcome::AlreadyTls => {}
        }
        let next = self.read().await?;
        if n.outcome == Outcome::LoginOnly {
            self.leave_tls()?;
        }
        Ok(next)
    }

    /// LOGIN7's TDS version as the version negotiation sees it: TDS 8.0 is TDS 7.4 inside
    /// TLS, and SQL Server answers it with 7.4 on a strict connection.
    pub(super) fn asked_version(&self, v: u32) -> u32 {
        if self.tls.mode == Mode::Strict && v == tds_version::V8_0 {
            tds_version::V7_4
        } else {
            v
        }
    }

    /// A PRELOGIN where LOGIN7 should be. A TLS handshake there means the client ignored
    /// ENCRYPT_NOT_SUP: it is told so, then the connection closes.
    pub(super) async fn second_prelogin(&mut self, msg: &Message) -> End {
        if msg.payload.first() != Some(&TLS_HANDSHAKE) {
            return End::Close("a second PRELOGIN that is not a TLS handshake".into());
        }
        let mut r = Response::new(tds_version::V7_1, &self.rx.borrow().server_name);
        r.error(&SqlError::new(
            50000,
            20,
            "tds-sim does not use encryption on this connection (PRELOGIN answered ENCRYPT_NOT_SUP); TLS handshake refused.",
        ));
        r.done(DoneKind::Done, status::ERROR, cur_cmd::NONE, 0);
        let _ = self.write(&r.finish()).await;
        End::Close("client started a TLS handshake; encryption is not supported".into())
    }

    /// TDS 8.0: the client's first bytes must be a TLS ClientHello on the raw stream.
    pub(super) async fn strict_tls(&mut self) -> Result<(), End> {
        let Transport::Clear(f) = &self.stream else {
            return Err(End::Close(
                "strict TLS on a stream that is not clear".into(),
            ));
        };
        let mut first = [0u8; 1];
        let n = tokio::select! {
            r = f.get_ref().peek(&mut first) => r.map_err(|e| End::Close(format!("read failed: {e}")))?,
            end = stop_signal(&mut self.rx, self.epoch) => return Err(end),
        };
        match (n, first[0]) {
            (0, _) => Err(End::Close("client closed the connection".into())),
            (_, TDS_PRELOGIN) => Err(End::Close(
                "clear-text PRELOGIN on a strict (TDS 8.0) server: TLS must come first".into(),
            )),
            (_, TLS_HANDSHAKE) => self.start_tls(false).await,
            (_, b) => Err(End::Close(format!(
                "expected a TLS handshake on a strict (TDS 8.0) server, got byte 0x{b:02x}"
            ))),
        }
    }

    /// Runs the server side of the TLS handshake, in PRELOGIN packets when `wrapped`
    /// (TDS 7.x) or raw (TDS 8.0); the session then reads and writes through TLS.
    async fn start_tls(&mut self, wrapped: bool) -> Result<(), End> {
        let Some(config) = self.tls.config.clone() else {
            return Err(End::Close("TLS negotiated without a certificate".into()));
        };
        let Transport::Clear(mut io) = std::mem::replace(&mut self.stream, Transport::Detached)
        else {
            return Err(End::Close("a second TLS handshake".into()));
        };
        io.set_wrapping(wrapped);
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(io);
        let mut tls = tokio::select! {
            r = accept => r.map_err(|e| End::Close(format!("TLS handshake failed: {e}")))?,
            end = stop_signal(&mut self.rx, self.epoch) => return Err(end),
        };
        let (io, c) = tls.get_mut();
        io.set_wrapping(false);
        let alpn = c
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned());
        info!(
            conn = self.id,
            version = ?c.protocol_version(),
            suite = ?c.negotiated_cipher_suite().map(|s| s.suite()),
            alpn = alpn.as_deref().unwrap_or("none"),
            in_prelogin_packets = wrapped,
            "TLS handshake done"
        );
        self.stream = Transport::Tls(Box::new(tls));
        Counters::bump(&self.shared.counters.tls_handshakes);
        Ok(())
    }

    /// After a login-only encryption: LOGIN7 came through TLS, everything after it
    /// (starting with the login answer) is clear text on the same TCP stream.
    fn leave_tls(&mut self) -> Result<(), End> {
        let Transport::Tls(tls) = std::mem::replace(&mut self.stream, Transport::Detached) else {
            return Err(End::Close("login-only encryption without TLS".into()));
        };
        let (io, mut c) = (*tls).into_inner();
        // The client waits for the login answer: nothing else may have come through TLS.
        match c.process_new_packets() {
            Ok(st) if st.plaintext_bytes_to_read() == 0 => {}
            Ok(st) => {
                return Err(End::Close(format!(
                    "{} bytes after LOGIN7 inside TLS on a login-only connection",
                    st.plaintext_bytes_to_read()
                )));
            }
            Err(e) => return Err(End::Close(format!("TLS error after LOGIN7: {e}"))),
        }
        info!(
            conn = self.id,
            "login-only encryption: LOGIN7 came through TLS; clear text from here on"
        );
        self.stream = Transport::Clear(io);
        Counters::bump(&self.shared.counters.login_only_encryptions);
        Ok(())
    }

    /// Ends the connection with FIN: TLS's close_notify first when the stream is TLS.
    pub(super) async fn close(&mut self) {
        if matches!(self.stream, Transport::Detached) {
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            return;
        }
        match tokio::time::timeout(CLOSE_GRACE, self.stream.shutdown()).await {
            Ok(_) => {}
            Err(_) => {
                warn!(
                    conn = self.id,
                    "the client does not read; closing without close_notify"
                );
                let _ = self.sock.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}
