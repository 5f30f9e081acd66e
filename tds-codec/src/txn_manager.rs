//! Transaction manager request ([MS-TDS] 2.2.6.9).
//!
//! With autocommit off, python-tds (TDS 7.2+) does not send `BEGIN TRANSACTION` as SQL: it
//! sends TM_BEGIN_XACT, TM_COMMIT_XACT and TM_ROLLBACK_XACT requests and expects ENVCHANGE
//! begin/commit/rollback tokens carrying an 8-byte transaction descriptor back, which it then
//! quotes in every later ALL_HEADERS. The simulator decodes these requests to answer them.

use crate::CodecError;
use crate::all_headers::AllHeaders;
use crate::cursor::{Cursor, put_b_varchar};

pub const TM_GET_DTC_ADDRESS: u16 = 0;
pub const TM_PROPAGATE_XACT: u16 = 1;
pub const TM_BEGIN_XACT: u16 = 5;
pub const TM_PROMOTE_XACT: u16 = 6;
pub const TM_COMMIT_XACT: u16 = 7;
pub const TM_ROLLBACK_XACT: u16 = 8;
pub const TM_SAVE_XACT: u16 = 9;
/// fBeginXact in commit/rollback flags: start a new transaction right after.
const F_BEGIN_XACT: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmRequest {
    Begin {
        isolation_level: u8,
        name: String,
    },
    /// `then_begin` is fBeginXact with the new transaction's isolation level and name.
    Commit {
        name: String,
        then_begin: Option<(u8, String)>,
    },
    Rollback {
        name: String,
        then_begin: Option<(u8, String)>,
    },
    Save {
        name: String,
    },
    /// A request type the simulator does not act on (DTC, promote, propagate).
    Other {
        request_type: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionManager {
    pub headers: AllHeaders,
    pub request: TmRequest,
}

fn then_begin(c: &mut Cursor<'_>) -> Result<Option<(u8, String)>, CodecError> {
    let flags = c.u8("TM Flags")?;
    if flags & F_BEGIN_XACT == 0 {
        return Ok(None);
    }
    let iso = c.u8("TM IsolationLevel")?;
    let name = c.b_varchar("TM NewTransactionName")?;
    Ok(Some((iso, name)))
}

impl TransactionManager {
    /// TM requests exist from TDS 7.2 on and always carry ALL_HEADERS.
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        let (headers, used) = AllHeaders::decode(payload)?;
        let mut c = Cursor::new(&payload[used..]);
        let request_type = c.u16_le("TM RequestType")?;
        let request = match request_type {
            TM_BEGIN_XACT => TmRequest::Begin {
                isolation_level: c.u8("TM IsolationLevel")?,
                name: c.b_varchar("TM Name")?,
            },
            TM_COMMIT_XACT => {
                let name = c.b_varchar("TM Name")?;
                TmRequest::Commit {
                    name,
                    then_begin: then_begin(&mut c)?,
                }
            }
            TM_ROLLBACK_XACT => {
                let name = c.b_varchar("TM Name")?;
                TmRequest::Rollback {
                    name,
                    then_begin: then_begin(&mut c)?,
                }
            }
            TM_SAVE_XACT => TmRequest::Save {
                name: c.b_varchar("TM Name")?,
            },
            other => TmRequest::Other {
                request_type: other,
            },
        };
        Ok(TransactionManager { headers, request })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = AllHeaders::encode_transaction(
            self.headers.transaction_descriptor.unwrap_or(0),
            self.headers.outstanding_requests.unwrap_or(1),
        );
        let tail = |out: &mut Vec<u8>, tb: &Option<(u8, String)>| match tb {
            None => out.push(0),
            Some((iso, name)) => {
                out.push(F_BEGIN_XACT);
                out.push(*iso);
                put_b_varchar(out, name);
            }
        };
        match &self.request {
            TmRequest::Begin {
                isolation_level,
                name,
            } => {
                out.extend_from_slice(&TM_BEGIN_XACT.to_le_bytes());
                out.push(*isolation_level);
                put_b_varchar(&mut out, name);
            }
            TmRequest::Commit { name, then_begin } => {
                out.extend_from_slice(&TM_COMMIT_XACT.to_le_bytes());
                put_b_varchar(&mut out, name);
                tail(&mut out, then_begin);
            }
            TmRequest::Rollback { name, then_begin } => {
                out.extend_from_slice(&TM_ROLLBACK_XACT.to_le_bytes());
                put_b_varchar(&mut out, name);
                tail(&mut out, then_begin);
            }
            TmRequest::Save { name } => {
                out.extend_from_slice(&TM_SAVE_XACT.to_le_bytes());
                put_b_varchar(&mut out, name);
            }
            TmRequest::Other { request_type } => out.extend_from_slice(&request_type.to_le_bytes()),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(d: u64) -> AllHeaders {
        AllHeaders {
            transaction_descriptor: Some(d),
            outstanding_requests: Some(1),
            other_types: vec![],
        }
    }

    #[test]
    fn golden_python_tds_requests() {
        // python-tds: struct.pack("<HBB", 5, isolation_level, 0) after ALL_HEADERS.
        let mut begin = AllHeaders::encode_transaction(0, 1);
        begin.extend_from_slice(&[0x05, 0x00, 0x00, 0x00]);
        assert_eq!(
            TransactionManager::decode(&begin).unwrap(),
            TransactionManager {
                headers: headers(0),
                request: TmRequest::Begin {
                    isolation_level: 0,
                    name: String::new()
                }
            }
        );
        // Commit with fBeginXact (python-tds's commit(cont=True)): <HBB 7,0,1> then <BB iso,0>.
        let mut commit = AllHeaders::encode_transaction(5, 1);
        commit.extend_from_slice(&[0x07, 0x00, 0x00, 0x01, 0x02, 0x00]);
        let tm = TransactionManager::decode(&commit).unwrap();
        assert_eq!(
            tm.request,
            TmRequest::Commit {
                name: String::new(),
                then_begin: Some((2, String::new()))
            }
        );
        assert_eq!(tm.encode(), commit);
        let mut rollback = AllHeaders::encode_transaction(5, 1);
        rollback.extend_from_slice(&[0x08, 0x00, 0x00, 0x00]);
        assert_eq!(
            TransactionManager::decode(&rollback).unwrap().request,
            TmRequest::Rollback {
                name: String::new(),
                then_begin: None
            }
        );
    }

    #[test]
    fn truncated_requests_are_errors() {
        let mut b = AllHeaders::encode_transaction(0, 1);
        assert!(TransactionManager::decode(&b).is_err());
        b.extend_from_slice(&[0x07, 0x00, 0x05]);
        assert!(TransactionManager::decode(&b).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
            let _ = TransactionManager::decode(&bytes);
        }

        #[test]
        fn round_trip(d in any::<u64>(), iso in any::<u8>(), name in "[a-z]{0,10}", kind in 0..4u8, cont in any::<bool>()) {
            let tb = cont.then(|| (iso, name.clone()));
            let request = match kind {
                0 => TmRequest::Begin { isolation_level: iso, name },
                1 => TmRequest::Commit { name, then_begin: tb },
                2 => TmRequest::Rollback { name, then_begin: tb },
                _ => TmRequest::Save { name },
            };
            let tm = TransactionManager { headers: headers(d), request };
            prop_assert_eq!(TransactionManager::decode(&tm.encode()).unwrap(), tm);
        }
    }
}
