//! Encoding answers: the PRELOGIN reply, the login token streams and a builder for
//! everything after login.
//!
//! The builder exists to get the DONE rules right in one place: every DONE, DONEPROC or
//! DONEINPROC except the last one of a response carries DONE_MORE and the last one does
//! not, whatever order the executor produced them in. Token layouts that changed in TDS 7.2
//! (DONE row count, INFO/ERROR line number, COLMETADATA UserType) follow the negotiated
//! version.

use tds_codec::token::done::{cur_cmd, status};
use tds_codec::token::envchange::EnvChange;
use tds_codec::token::loginack::INTERFACE_SQL_TSQL;
use tds_codec::token::{
    ColMetaData, Done, DoneKind, FeatureExtAck, LoginAck, Message, MessageKind, ReturnStatus, Row,
};
use tds_codec::types::Collation;
use tds_codec::{CodecError, Encryption, Prelogin, Version, tds_version};

use crate::query::ResultSet;
use crate::sql::SqlError;

/// The PRELOGIN answer: the product version, the negotiated ENCRYPTION byte
/// (`tls::negotiate`), the default instance, an empty THREADID (a non-zero one trips a
/// debug assertion in tiberius) and no MARS.
pub fn prelogin(product_version: Version, encryption: Encryption) -> Vec<u8> {
    Prelogin {
        version: Some(product_version),
        encryption: Some(encryption),
        instance: Some(vec![]),
        thread_id: Some(None),
        mars: Some(false),
        ..Default::default()
    }
    .encode()
}

pub struct Response {
    v72: bool,
    server: String,
    buf: Vec<u8>,
    /// Offsets of the status field of each DONE-family token written so far.
    dones: Vec<usize>,
}

impl Response {
    pub fn new(tds_version: u32, server: &str) -> Self {
        Response {
            v72: tds_version::is_72_plus(tds_version),
            server: server.to_string(),
            buf: Vec::new(),
            dones: Vec::new(),
        }
    }

    pub fn v72(&self) -> bool {
        self.v72
    }

    pub fn env(&mut self, e: EnvChange) {
        e.encode(&mut self.buf);
    }

    fn message(&mut self, kind: MessageKind, number: i32, state: u8, class: u8, text: &str) {
        Message {
            kind,
            number,
            state,
            class,
            text: text.to_string(),
            server: self.server.clone(),
            procedure: String::new(),
            line: 1,
        }
        .encode(&mut self.buf, self.v72);
    }

    pub fn info(&mut self, number: i32, text: &str) {
        self.message(MessageKind::Info, number, 1, 0, text);
    }

    /// The error, and the one SQL Server sends after it, if any.
    pub fn error(&mut self, e: &SqlError) {
        self.message(MessageKind::Error, e.number, e.state, e.class, &e.message);
        if let Some(next) = &e.then {
            self.error(next);
        }
    }

    pub fn result(&mut self, rs: &ResultSet) -> Result<(), CodecError> {
        let meta = ColMetaData {
            columns: rs.columns.clone(),
        };
        meta.encode(&mut self.buf, self.v72);
        for r in &rs.rows {
            Row { values: r.clone() }.encode(&meta, &mut self.buf)?;
        }
        Ok(())
    }

    pub fn done(&mut self, kind: DoneKind, st: u16, cmd: u16, rows: u64) {
        self.dones.push(self.buf.len() + 1);
        Done::new(kind, st, cmd, rows).encode(&mut self.buf, self.v72);
    }

    pub fn return_status(&mut self, v: i32) {
        ReturnStatus(v).encode(&mut self.buf);
    }

    pub fn raw(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.buf);
    }

    /// The payload, with DONE_MORE set on every DONE but the last and cleared on the last.
    pub fn finish(mut self) -> Vec<u8> {
        let n = self.dones.len();
        for (i, at) in self.dones.iter().enumerate() {
            let mut st = u16::from_le_bytes([self.buf[*at], self.buf[*at + 1]]);
            if i + 1 == n {
                st &= !status::MORE;
            } else {
                st |= status::MORE;
            }
            self.buf[*at..*at + 2].copy_from_slice(&st.to_le_bytes());
        }
        self.buf
    }
}

/// What the login answer needs to know.
pub struct LoginOk<'a> {
    pub tds_version: u32,
    pub server_name: &'a str,
    pub product_version: Version,
    pub database: &'a str,
    pub packet_size: usize,
    /// The client sent FeatureExt (TDS 7.4), so FEATUREEXTACK follows LOGINACK.
    pub feature_ack: bool,
}

/// The successful login stream, in SQL Server's order: database, collation, language,
/// LOGINACK, [FEATUREEXTACK], packet size, DONE.
pub fn login_ok(l: &LoginOk<'_>) -> Vec<u8> {
    let mut r = Response::new(l.tds_version, l.server_name);
    r.env(EnvChange::Database {
        new: l.database.to_string(),
        old: "master".into(),
    });
    r.info(
        5701,
        &format!("Changed database context to '{}'.", l.database),
    );
    r.env(EnvChange::SqlCollation {
        new: Collation::SQL_LATIN1_GENERAL_CP1_CI_AS.0.to_vec(),
        old: vec![],
    });
    r.env(EnvChange::Language {
        new: "us_english".into(),
        old: String::new(),
    });
    r.info(5703, "Changed language setting to us_english.");
    let ack = LoginAck {
        interface: INTERFACE_SQL_TSQL,
        tds_version: l.tds_version,
        prog_name: "Microsoft SQL Server".into(),
        major: l.product_version.major,
        minor: l.product_version.minor,
        build: l.product_version.build,
    };
    r.raw(|b| ack.encode(b));
    if l.feature_ack {
        r.raw(|b| FeatureExtAck::default().encode(b));
    }
    r.env(EnvChange::packet_size(
        l.packet_size,
        tds_codec::packet::DEFAULT_PACKET_LEN,
    ));
    r.done(DoneKind::Done, status::FINAL, cur_cmd::NONE, 0);
    r.finish()
}

/// A refused login: optional preceding errors (e.g. 4060 for a bad database), then 18456
/// class 14 state 1 and a DONE with the error bit.
pub fn login_failed(tds_version: u32, server: &str, user: &str, before: &[SqlError]) -> Vec<u8> {
    let mut r = Response::new(tds_version, server);
    for e in before {
        r.error(e);
    }
    r.error(&SqlError::new(
        18456,
        14,
        format!("Login failed for user '{user}'."),
    ));
    r.done(DoneKind::Done, status::ERROR, cur_cmd::NONE, 0);
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tds_codec::token::{Token, decode_stream};

    #[test]
    fn prelogin_answer_golden_bytes() {
        let v = Version {
            major: 16,
            minor: 0,
            build: 1000,
            sub_build: 0,
        };
        // VERSION 16.0.1000, ENCRYPTION NOT_SUP (0x02), INSTOPT "", THREADID empty, MARS 0.
        assert_eq!(
            prelogin(v, Encryption::NotSupported),
            [
                0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00,
                0x01, 0x03, 0x00, 0x22, 0x00, 0x00, 0x04, 0x00, 0x22, 0x00, 0x01, 0xFF, 0x10, 0x00,
                0x03, 0xE8, 0x00, 0x00, 0x02, 0x00, 0x00,
            ]
        );
    }

    fn ok(v: u32, feature_ack: bool) -> Vec<u8> {
        login_ok(&LoginOk {
            tds_version: v,
            server_name: "SQL1",
            product_version: Version {
                major: 16,
                minor: 0,
                build: 1000,
                sub_build: 0,
            },
            database: "master",
            packet_size: 8000,
            feature_ack,
        })
    }

    #[test]
    fn login_stream_golden_bytes() {
        let bytes = ok(tds_version::V7_4, false);
        // The tail: LOGINACK (7.4 big-endian, "Microsoft SQL Server", 16.0.0x03E8), ENVCHANGE
        // packet size "8000"/"4096", final DONE with an 8-byte count.
        let mut tail = vec![0xAD, 0x32, 0x00, 0x01, 0x74, 0x00, 0x00, 0x04, 20];
        for ch in "Microsoft SQL Server".encode_utf16() {
            tail.extend_from_slice(&ch.to_le_bytes());
        }
        tail.extend_from_slice(&[0x10, 0x00, 0x03, 0xE8]);
        tail.extend_from_slice(&[
            0xE3, 0x13, 0x00, 0x04, 0x04, 0x38, 0, 0x30, 0, 0x30, 0, 0x30, 0,
        ]);
        tail.extend_from_slice(&[0x04, 0x34, 0, 0x30, 0, 0x39, 0, 0x36, 0]);
        tail.extend_from_slice(&[0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(bytes.ends_with(&tail), "{bytes:02x?}");
        // The head: ENVCHANGE database "master" / "master".
        let mut head = vec![0xE3, 0x1B, 0x00, 0x01, 0x06];
        for ch in "master".encode_utf16() {
            head.extend_from_slice(&ch.to_le_bytes());
        }
        head.push(0x06);
        assert!(bytes.starts_with(&head), "{bytes:02x?}");

        let toks = decode_stream(&bytes, true).unwrap();
        let kinds: Vec<&str> = toks
            .iter()
            .map(|t| match t {
                Token::EnvChange(_) => "env",
                Token::Message(_) => "info",
                Token::LoginAck(_) => "ack",
                Token::Done(_) => "done",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["env", "info", "env", "env", "info", "ack", "env", "done"]
        );
    }

    #[test]
    fn seven_one_layouts_and_feature_ack() {
        let bytes = ok(tds_version::V7_1, false);
        let toks = decode_stream(&bytes, false).unwrap();
        assert!(matches!(toks.last(), Some(Token::Done(d)) if d.status == 0));
        assert!(
            toks.iter()
                .any(|t| matches!(t, Token::LoginAck(a) if a.tds_version == 0x7100_0001))
        );
        let bytes = ok(tds_version::V7_4, true);
        assert!(
            decode_stream(&bytes, true)
                .unwrap()
                .iter()
                .any(|t| matches!(t, Token::FeatureExtAck(_)))
        );
    }

    #[test]
    fn failed_login_stream() {
        let bytes = login_failed(tds_version::V7_4, "SQL1", "bob", &[]);
        let toks = decode_stream(&bytes, true).unwrap();
        assert_eq!(toks.len(), 2);
        let Token::Message(m) = &toks[0] else {
            panic!()
        };
        assert_eq!((m.number, m.class, m.state), (18456, 14, 1));
        assert_eq!(m.text, "Login failed for user 'bob'.");
        assert!(matches!(toks[1], Token::Done(d) if d.status == status::ERROR));
    }

    #[test]
    fn done_more_on_all_but_the_last() {
        let mut r = Response::new(tds_version::V7_4, "S");
        r.done(DoneKind::Done, status::COUNT, cur_cmd::SELECT, 1);
        r.done(
            DoneKind::DoneInProc,
            status::COUNT | status::MORE,
            cur_cmd::SELECT,
            1,
        );
        r.done(DoneKind::DoneProc, status::MORE, cur_cmd::EXECUTE, 0);
        let toks = decode_stream(&r.finish(), true).unwrap();
        let more: Vec<bool> = toks
            .iter()
            .map(|t| matches!(t, Token::Done(d) if d.is_more()))
            .collect();
        assert_eq!(more, [true, true, false]);
    }
}
