//! A small blocking T-SQL client on a plain socket (PRELOGIN, LOGIN7, SQL batches), built
//! from `tds-codec`: how the lab plays the HA manager (role changes through T-SQL with
//! `external_cluster`), how the writer commits its rows and how the lab reads back which
//! acknowledged rows survived.
//!
//! Every read and write is bounded by the session's timeout; an ERROR token is an `Err`
//! naming SQL Server's message number, so callers can tell 41142 from a timeout.
//!
//! With the lab's `--encrypt strict` the sims refuse anything but TDS 8.0, so a session
//! then starts with TLS (ALPN `tds/8.0`, the lab CA) and runs the same exchange inside it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use tds_codec::batch::SqlBatch;
use tds_codec::login7::Login7;
use tds_codec::packet::{PacketType, encode_message};
use tds_codec::prelogin::{Encryption, Prelogin, Version};
use tds_codec::token::{Token, decode_stream};
use tds_codec::types::Value;

use crate::settings::Encrypt;

/// Sets the session context an EXTERNAL AG requires before FAILOVER.
pub const EXTERNAL_CLUSTER: &str =
    "EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes';";

/// How a session reaches its server: TDS 7.x without TLS (what the sims allow in the lab's
/// `mandatory` runs, where only the agents and the measuring client encrypt) or TDS 8.0.
#[derive(Debug, Clone)]
pub enum Transport {
    Plain,
    /// TLS first, verified against the lab CA by the target's IP address.
    Strict(Arc<ClientConfig>),
}

impl Transport {
    /// The transport the lab's own sessions need when the sims run with `encrypt`.
    pub fn new(encrypt: Encrypt, ca_file: &Path) -> Result<Transport, String> {
        match encrypt {
            Encrypt::Mandatory => Ok(Transport::Plain),
            Encrypt::Strict => strict_client_config(ca_file).map(Transport::Strict),
        }
    }
}

/// A TDS 8.0 client configuration: TLS 1.3 or 1.2, ALPN `tds/8.0`, the CA in `ca_file`,
/// ring as everywhere else in tdsvip.
pub fn strict_client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", ca_file.display());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let mut c = ClientConfig::builder_with_provider(tdsvip_probes::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![tdsvip_probes::tls::TDS8_ALPN.to_vec()];
    Ok(Arc::new(c))
}

/// The socket a session runs on, plain or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn open(addr: SocketAddr, transport: &Transport, tcp: TcpStream) -> Result<Stream, String> {
        match transport {
            Transport::Plain => Ok(Stream::Plain(tcp)),
            Transport::Strict(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let conn =
                    ClientConnection::new(config.clone(), name).map_err(|e| format!("TLS: {e}"))?;
                let mut tls = StreamOwned::new(conn, tcp);
                // The handshake now, so that a refused certificate says so at login.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| io("TLS handshake", e))?;
                }
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

pub struct Session {
    s: Stream,
}

/// What a batch returned: result sets of rows, and the last DONE row count.
#[derive(Debug, Default)]
pub struct Answer {
    pub sets: Vec<Vec<Vec<Value>>>,
    pub row_count: u64,
}

fn io(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

impl Session {
    /// Connects over `transport` and logs in within `timeout` (also each later read's
    /// limit).
    pub fn login(
        transport: &Transport,
        addr: SocketAddr,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Session, String> {
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| io("connect", e))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| io("socket", e))?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| io("socket", e))?;
        let _ = s.set_nodelay(true);
        let mut me = Session {
            s: Stream::open(addr, transport, s)?,
        };
        me.send(PacketType::PreLogin, &lab_prelogin().encode())?;
        me.read()?;
        let l = lab_login7(user, password, "tdsvip-lab");
        me.send(PacketType::Login7, &l.encode())?;
        let toks = me.read()?;
        errors(&toks)?;
        if !toks.iter().any(|t| matches!(t, Token::LoginAck(_))) {
            return Err("login answer without LOGINACK".into());
        }
        Ok(me)
    }

    pub fn set_timeout(&self, t: Duration) {
        let _ = self.s.tcp().set_read_timeout(Some(t));
    }

    fn send(&mut self, ty: PacketType, payload: &[u8]) -> Result<(), String> {
        // flush: inside TLS, what rustls still holds goes out now, and its errors show.
        self.s
            .write_all(&encode_message(ty, payload, 4096, 0))
            .and_then(|()| self.s.flush())
            .map_err(|e| io("send", e))
    }

    fn read(&mut self) -> Result<Vec<Token>, String> {
        let mut payload = Vec::new();
        loop {
            let mut h = [0u8; 8];
            self.s.read_exact(&mut h).map_err(|e| io("read", e))?;
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(8)];
            self.s.read_exact(&mut body).map_err(|e| io("read", e))?;
            payload.extend_from_slice(&body);
            if h[1] & 1 == 1 {
                break;
            }
        }
        if payload.first() == Some(&0) {
            // A PRELOGIN answer, not a token stream.
            return Ok(Vec::new());
        }
        decode_stream(&payload, true).map_err(|e| format!("answer: {e}"))
    }

    /// Runs a batch; an ERROR token fails it.
    pub fn batch(&mut self, sql: &str) -> Result<Answer, String> {
        let b = SqlBatch {
            headers: Some(Default::default()),
            text: sql.to_string(),
        };
        self.send(PacketType::SqlBatch, &b.encode())?;
        let toks = self.read()?;
        errors(&toks)?;
        let mut a = Answer::default();
        for t in toks {
            match t {
                Token::ColMetaData(_) => a.sets.push(Vec::new()),
                Token::Row(r) => {
                    if let Some(set) = a.sets.last_mut() {
                        set.push(r.values);
                    }
                }
                Token::Done(d) => a.row_count = d.row_count,
                _ => {}
            }
        }
        Ok(a)
    }
}

fn errors(toks: &[Token]) -> Result<(), String> {
    for t in toks {
        if let Token::Message(m) = t
            && m.class > 10
        {
            return Err(format!("Msg {}: {}", m.number, m.text));
        }
    }
    Ok(())
}

/// One batch on a fresh session.
pub fn run(
    transport: &Transport,
    addr: SocketAddr,
    user: &str,
    password: &str,
    sql: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    Session::login(transport, addr, user, password, timeout)?.batch(sql)
}

/// The PRELOGIN every lab connection sends: no encryption of its own (TLS, when asked, runs
/// around the whole TDS stream, TDS 8 style, or not at all).
pub(crate) fn lab_prelogin() -> Prelogin {
    Prelogin {
        version: Some(Version {
            major: 1,
            minor: 0,
            build: 0,
            sub_build: 0,
        }),
        encryption: Some(Encryption::NotSupported),
        ..Default::default()
    }
}

/// The LOGIN7 every lab connection sends (TDS 7.4, 4 KiB packets), named `app`.
pub(crate) fn lab_login7(user: &str, password: &str, app: &str) -> Login7 {
    Login7 {
        tds_version: tds_codec::tds_version::V7_4,
        packet_size: 4096,
        username: user.into(),
        password: password.into(),
        app_name: app.into(),
        ..Default::default()
    }
}
