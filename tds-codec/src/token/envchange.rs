//! ENVCHANGE ([MS-TDS] 2.2.7.9): the server tells the client its session environment changed.
//!
//! A login answer carries the database, language, collation and packet size; `USE db` and
//! transactions send more. Packet size is a *decimal string* (python-tds parses it with
//! `int()`), collation is 5 raw bytes, transaction descriptors are 8 raw bytes that the
//! client quotes back in ALL_HEADERS.

use super::{body, finish, ty, with_len};
use crate::CodecError;
use crate::cursor::{Cursor, put_b_varbyte, put_b_varchar};

pub mod kind {
    pub const DATABASE: u8 = 1;
    pub const LANGUAGE: u8 = 2;
    pub const CHARSET: u8 = 3;
    pub const PACKET_SIZE: u8 = 4;
    pub const SQL_COLLATION: u8 = 7;
    pub const BEGIN_TRANSACTION: u8 = 8;
    pub const COMMIT_TRANSACTION: u8 = 9;
    pub const ROLLBACK_TRANSACTION: u8 = 10;
    pub const RESET_CONNECTION_ACK: u8 = 18;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    Database {
        new: String,
        old: String,
    },
    Language {
        new: String,
        old: String,
    },
    Charset {
        new: String,
        old: String,
    },
    /// Decimal strings, e.g. "4096".
    PacketSize {
        new: String,
        old: String,
    },
    SqlCollation {
        new: Vec<u8>,
        old: Vec<u8>,
    },
    BeginTransaction {
        descriptor: u64,
    },
    CommitTransaction {
        descriptor: u64,
    },
    RollbackTransaction {
        descriptor: u64,
    },
    ResetConnectionAck,
    /// Any other type, kept as its raw body after the type byte.
    Other {
        kind: u8,
        data: Vec<u8>,
    },
}

fn descriptor(bytes: &[u8], what: &'static str) -> Result<u64, CodecError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        CodecError::invalid(what, format!("descriptor of {} bytes, not 8", bytes.len()))
    })?;
    Ok(u64::from_le_bytes(arr))
}

impl EnvChange {
    pub fn packet_size(new: usize, old: usize) -> Self {
        EnvChange::PacketSize {
            new: new.to_string(),
            old: old.to_string(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        with_len(out, ty::ENVCHANGE, |out| match self {
            EnvChange::Database { new, old } => strings(out, kind::DATABASE, new, old),
            EnvChange::Language { new, old } => strings(out, kind::LANGUAGE, new, old),
            EnvChange::Charset { new, old } => strings(out, kind::CHARSET, new, old),
            EnvChange::PacketSize { new, old } => strings(out, kind::PACKET_SIZE, new, old),
            EnvChange::SqlCollation { new, old } => {
                out.push(kind::SQL_COLLATION);
                put_b_varbyte(out, new);
                put_b_varbyte(out, old);
            }
            EnvChange::BeginTransaction { descriptor } => {
                out.push(kind::BEGIN_TRANSACTION);
                put_b_varbyte(out, &descriptor.to_le_bytes());
                out.push(0);
            }
            EnvChange::CommitTransaction { descriptor } => {
                out.push(kind::COMMIT_TRANSACTION);
                out.push(0);
                put_b_varbyte(out, &descriptor.to_le_bytes());
            }
            EnvChange::RollbackTransaction { descriptor } => {
                out.push(kind::ROLLBACK_TRANSACTION);
                out.push(0);
                put_b_varbyte(out, &descriptor.to_le_bytes());
            }
            EnvChange::ResetConnectionAck => {
                out.extend_from_slice(&[kind::RESET_CONNECTION_ACK, 0, 0])
            }
            EnvChange::Other { kind, data } => {
                out.push(*kind);
                out.extend_from_slice(data);
            }
        });
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Self, CodecError> {
        let mut b = body(c, "ENVCHANGE")?;
        let k = b.u8("ENVCHANGE Type")?;
        let pair = |b: &mut Cursor<'_>| -> Result<(String, String), CodecError> {
            Ok((
                b.b_varchar("ENVCHANGE NewValue")?,
                b.b_varchar("ENVCHANGE OldValue")?,
            ))
        };
        let out = match k {
            kind::DATABASE => {
                let (new, old) = pair(&mut b)?;
                EnvChange::Database { new, old }
            }
            kind::LANGUAGE => {
                let (new, old) = pair(&mut b)?;
                EnvChange::Language { new, old }
            }
            kind::CHARSET => {
                let (new, old) = pair(&mut b)?;
                EnvChange::Charset { new, old }
            }
            kind::PACKET_SIZE => {
                let (new, old) = pair(&mut b)?;
                EnvChange::PacketSize { new, old }
            }
            kind::SQL_COLLATION => EnvChange::SqlCollation {
                new: b.b_varbyte("ENVCHANGE NewValue")?.to_vec(),
                old: b.b_varbyte("ENVCHANGE OldValue")?.to_vec(),
            },
            kind::BEGIN_TRANSACTION => {
                let d = descriptor(
                    b.b_varbyte("ENVCHANGE NewValue")?,
                    "ENVCHANGE begin transaction",
                )?;
                b.b_varbyte("ENVCHANGE OldValue")?;
                EnvChange::BeginTransaction { descriptor: d }
            }
            kind::COMMIT_TRANSACTION | kind::ROLLBACK_TRANSACTION => {
                b.b_varbyte("ENVCHANGE NewValue")?;
                let d = descriptor(
                    b.b_varbyte("ENVCHANGE OldValue")?,
                    "ENVCHANGE end transaction",
                )?;
                if k == kind::COMMIT_TRANSACTION {
                    EnvChange::CommitTransaction { descriptor: d }
                } else {
                    EnvChange::RollbackTransaction { descriptor: d }
                }
            }
            kind::RESET_CONNECTION_ACK => {
                b.b_varbyte("ENVCHANGE NewValue")?;
                b.b_varbyte("ENVCHANGE OldValue")?;
                EnvChange::ResetConnectionAck
            }
            other => {
                let data = b.rest().to_vec();
                b.bytes("ENVCHANGE data", data.len())?;
                EnvChange::Other { kind: other, data }
            }
        };
        finish(&b, "ENVCHANGE")?;
        Ok(out)
    }
}

fn strings(out: &mut Vec<u8>, k: u8, new: &str, old: &str) {
    out.push(k);
    put_b_varchar(out, new);
    put_b_varchar(out, old);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Token, decode_stream};
    use crate::types::Collation;
    use proptest::prelude::*;

    fn enc(e: &EnvChange) -> Vec<u8> {
        let mut out = Vec::new();
        e.encode(&mut out);
        out
    }

    #[test]
    fn golden_bytes() {
        // Database: type 1, new "master" (6 units), old "" — Length 1 + 13 + 1 = 15.
        assert_eq!(
            enc(&EnvChange::Database {
                new: "master".into(),
                old: String::new()
            }),
            [
                0xE3, 0x0F, 0x00, 0x01, 0x06, 0x6D, 0, 0x61, 0, 0x73, 0, 0x74, 0, 0x65, 0, 0x72, 0,
                0x00
            ]
        );
        // Packet size as a decimal string: "4096" new and old.
        assert_eq!(
            enc(&EnvChange::packet_size(4096, 4096)),
            [
                0xE3, 0x13, 0x00, 0x04, 0x04, 0x34, 0, 0x30, 0, 0x39, 0, 0x36, 0, 0x04, 0x34, 0,
                0x30, 0, 0x39, 0, 0x36, 0
            ]
        );
        // SQL collation: 5 bytes new, none old.
        assert_eq!(
            enc(&EnvChange::SqlCollation {
                new: Collation::SQL_LATIN1_GENERAL_CP1_CI_AS.0.to_vec(),
                old: vec![]
            }),
            [
                0xE3, 0x08, 0x00, 0x07, 0x05, 0x09, 0x04, 0xD0, 0x00, 0x34, 0x00
            ]
        );
        // Begin transaction: the 8-byte descriptor is the new value, old is empty.
        assert_eq!(
            enc(&EnvChange::BeginTransaction { descriptor: 1 }),
            [0xE3, 0x0B, 0x00, 0x08, 0x08, 1, 0, 0, 0, 0, 0, 0, 0, 0x00]
        );
        // Commit: new empty, old the descriptor.
        assert_eq!(
            enc(&EnvChange::CommitTransaction { descriptor: 1 }),
            [0xE3, 0x0B, 0x00, 0x09, 0x00, 0x08, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn wrong_descriptor_length_is_an_error() {
        let bytes = [0xE3, 0x05, 0x00, 0x08, 0x02, 1, 0, 0x00];
        assert!(decode_stream(&bytes, true).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(db in "[a-z0-9_]{0,20}", old in "[a-z]{0,10}", size in 512usize..32768, d in any::<u64>()) {
            for e in [
                EnvChange::Database { new: db.clone(), old: old.clone() },
                EnvChange::Language { new: old.clone(), old: db.clone() },
                EnvChange::packet_size(size, 4096),
                EnvChange::BeginTransaction { descriptor: d },
                EnvChange::RollbackTransaction { descriptor: d },
                EnvChange::ResetConnectionAck,
            ] {
                prop_assert_eq!(decode_stream(&enc(&e), true).unwrap(), vec![Token::EnvChange(e)]);
            }
        }
    }
}
