//! A small blocking T-SQL client on a plain socket (PRELOGIN, LOGIN7, SQL batches), built
//! from `tds-codec`: how the lab plays the HA manager (role changes through T-SQL with
//! `external_cluster`), how the writer commits its rows and how the lab reads back which
//! acknowledged rows survived.
//!
//! Every read and write is bounded by the session's timeout; an ERROR token is an `Err`
//! naming SQL Server's message number, so callers can tell 41142 from a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tds_codec::batch::SqlBatch;
use tds_codec::login7::Login7;
use tds_codec::packet::{PacketType, encode_message};
use tds_codec::prelogin::{Encryption, Prelogin, Version};
use tds_codec::token::{Token, decode_stream};
use tds_codec::types::Value;

/// Sets the session context an EXTERNAL AG requires before FAILOVER.
pub const EXTERNAL_CLUSTER: &str =
    "EXEC sp_set_session_context @key = N'external_cluster', @value = N'yes';";

pub struct Session {
    s: TcpStream,
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
    /// Connects and logs in within `timeout` (also each later read's limit).
    pub fn login(
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
        let mut me = Session { s };
        let p = Prelogin {
            version: Some(Version {
                major: 1,
                minor: 0,
                build: 0,
                sub_build: 0,
            }),
            encryption: Some(Encryption::NotSupported),
            ..Default::default()
        };
        me.send(PacketType::PreLogin, &p.encode())?;
        me.read()?;
        let l = Login7 {
            tds_version: tds_codec::tds_version::V7_4,
            packet_size: 4096,
            username: user.into(),
            password: password.into(),
            app_name: "tdsvip-lab".into(),
            ..Default::default()
        };
        me.send(PacketType::Login7, &l.encode())?;
        let toks = me.read()?;
        errors(&toks)?;
        if !toks.iter().any(|t| matches!(t, Token::LoginAck(_))) {
            return Err("login answer without LOGINACK".into());
        }
        Ok(me)
    }

    pub fn set_timeout(&self, t: Duration) {
        let _ = self.s.set_read_timeout(Some(t));
    }

    fn send(&mut self, ty: PacketType, payload: &[u8]) -> Result<(), String> {
        self.s
            .write_all(&encode_message(ty, payload, 4096, 0))
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
    addr: SocketAddr,
    user: &str,
    password: &str,
    sql: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    Session::login(addr, user, password, timeout)?.batch(sql)
}
