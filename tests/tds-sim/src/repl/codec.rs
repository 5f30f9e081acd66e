//! The wire format of tds-sim's replication stream between mirroring endpoints (and of its
//! log file, which stores `Log` frames back to back).
//!
//! Our own format, not SQL Server's (which is undocumented): a frame is a type byte, a
//! big-endian u32 body length and the body. Strings are a u16 length and UTF-8. Every
//! length is checked against what is left and a maximum before anything is allocated, so a
//! hostile or torn peer gets an error, never a panic or a huge allocation; the fuzz target
//! `repl_frame` holds the decoder to that.

use std::fmt;

/// The first frame of every connection says it is ours and which version.
pub const MAGIC: &[u8; 8] = b"TDSSIMAG";
pub const VERSION: u8 = 1;
/// A frame body larger than this is refused.
pub const MAX_BODY: usize = 1 << 20;
const MAX_STR: usize = 512;
const HEADER: usize = 5;

/// One ledger row: `(id, at)`.
pub type Row = (i64, i64);

/// One committed transaction as the primary ships it and a secondary hardens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    /// The `sequence_number` of the primary that committed it.
    pub epoch: u64,
    pub commit_unix_ms: u64,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Primary → secondary, first: who it is and its `sequence_number`.
    Hello {
        primary: String,
        ag: String,
        seq: u64,
    },
    /// Secondary → primary: its name, the highest `sequence_number` it saw, its history as
    /// epoch spans `(epoch, first_lsn, last_lsn)`.
    Welcome {
        replica: String,
        seq: u64,
        spans: Vec<(u64, u64, u64)>,
    },
    /// Either side: why the connection is refused; the sender closes after it.
    Refuse {
        reason: String,
    },
    /// Primary → secondary: drop every record after `match_lsn`, then log follows.
    Start {
        match_lsn: u64,
    },
    Log(Record),
    /// Primary → secondary: still here; what it committed; whether it counts the
    /// secondary as SYNCHRONIZED.
    Heartbeat {
        seq: u64,
        last_lsn: u64,
        synchronized: bool,
    },
    /// Secondary → primary: hardened up to `lsn` (also its heartbeat).
    Ack {
        hardened_lsn: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not enough bytes yet for a whole frame.
    Incomplete,
    Malformed(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("incomplete frame"),
            DecodeError::Malformed(m) => write!(f, "malformed replication frame: {m}"),
        }
    }
}

fn bad(m: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(m.into())
}

mod ty {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REFUSE: u8 = 3;
    pub const START: u8 = 4;
    pub const LOG: u8 = 5;
    pub const HEARTBEAT: u8 = 6;
    pub const ACK: u8 = 7;
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let b = &b[..b.len().min(MAX_STR)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let t = match self {
            Frame::Hello { primary, ag, seq } => {
                body.extend_from_slice(MAGIC);
                body.push(VERSION);
                put_str(&mut body, primary);
                put_str(&mut body, ag);
                body.extend_from_slice(&seq.to_be_bytes());
                ty::HELLO
            }
            Frame::Welcome {
                replica,
                seq,
                spans,
            } => {
                put_str(&mut body, replica);
                body.extend_from_slice(&seq.to_be_bytes());
                body.extend_from_slice(&(spans.len() as u16).to_be_bytes());
                for (e, f, l) in spans {
                    for v in [e, f, l] {
                        body.extend_from_slice(&v.to_be_bytes());
                    }
                }
                ty::WELCOME
            }
            Frame::Refuse { reason } => {
                put_str(&mut body, reason);
                ty::REFUSE
            }
            Frame::Start { match_lsn } => {
                body.extend_from_slice(&match_lsn.to_be_bytes());
                ty::START
            }
            Frame::Log(r) => {
                for v in [r.lsn, r.epoch, r.commit_unix_ms] {
                    body.extend_from_slice(&v.to_be_bytes());
                }
                body.extend_from_slice(&(r.rows.len() as u32).to_be_bytes());
                for (id, at) in &r.rows {
                    body.extend_from_slice(&id.to_be_bytes());
                    body.extend_from_slice(&at.to_be_bytes());
                }
                ty::LOG
            }
            Frame::Heartbeat {
                seq,
                last_lsn,
                synchronized,
            } => {
                body.extend_from_slice(&seq.to_be_bytes());
                body.extend_from_slice(&last_lsn.to_be_bytes());
                body.push(*synchronized as u8);
                ty::HEARTBEAT
            }
            Frame::Ack { hardened_lsn } => {
                body.extend_from_slice(&hardened_lsn.to_be_bytes());
                ty::ACK
            }
        };
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.push(t);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one frame from the front of `buf`: the frame and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
        if buf.len() < HEADER {
            return Err(DecodeError::Incomplete);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_BODY {
            return Err(bad(format!("body of {len} bytes exceeds {MAX_BODY}")));
        }
        if buf.len() < HEADER + len {
            return Err(DecodeError::Incomplete);
        }
        let mut r = Reader {
            b: &buf[HEADER..HEADER + len],
        };
        let f = match buf[0] {
            ty::HELLO => {
                if r.take(8)? != MAGIC {
                    return Err(bad("not a tds-sim mirroring endpoint (bad magic)"));
                }
                let v = r.u8()?;
                if v != VERSION {
                    return Err(bad(format!("protocol version {v}, expected {VERSION}")));
                }
                Frame::Hello {
                    primary: r.str()?,
                    ag: r.str()?,
                    seq: r.u64()?,
                }
            }
            ty::WELCOME => {
                let replica = r.str()?;
                let seq = r.u64()?;
                let n = r.u16()? as usize;
                let mut spans = Vec::with_capacity(n.min(r.b.len() / 24));
                for _ in 0..n {
                    spans.push((r.u64()?, r.u64()?, r.u64()?));
                }
                Frame::Welcome {
                    replica,
                    seq,
                    spans,
                }
            }
            ty::REFUSE => Frame::Refuse { reason: r.str()? },
            ty::START => Frame::Start {
                match_lsn: r.u64()?,
            },
            ty::LOG => Frame::Log(Record::decode_body(&mut r)?),
            ty::HEARTBEAT => Frame::Heartbeat {
                seq: r.u64()?,
                last_lsn: r.u64()?,
                synchronized: match r.u8()? {
                    0 => false,
                    1 => true,
                    x => return Err(bad(format!("synchronized flag {x}"))),
                },
            },
            ty::ACK => Frame::Ack {
                hardened_lsn: r.u64()?,
            },
            t => return Err(bad(format!("unknown frame type {t}"))),
        };
        if !r.b.is_empty() {
            return Err(bad(format!("{} trailing bytes in the frame", r.b.len())));
        }
        Ok((f, HEADER + len))
    }
}

impl Record {
    fn decode_body(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
        let (lsn, epoch, commit_unix_ms) = (r.u64()?, r.u64()?, r.u64()?);
        let n = r.u32()? as usize;
        if n.checked_mul(16) != Some(r.b.len()) {
            return Err(bad(format!("{n} rows do not fill {} bytes", r.b.len())));
        }
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            rows.push((r.u64()? as i64, r.u64()? as i64));
        }
        if lsn == 0 {
            return Err(bad("LSN 0"));
        }
        Ok(Record {
            lsn,
            epoch,
            commit_unix_ms,
            rows,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(bad(format!("needs {n} more bytes, {} left", self.b.len())));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        if n > MAX_STR {
            return Err(bad(format!("string of {n} bytes exceeds {MAX_STR}")));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let log = Frame::Log(Record {
            lsn: 7,
            epoch: 2,
            commit_unix_ms: 0x0102,
            rows: vec![(1, -1)],
        });
        let mut want = vec![5, 0, 0, 0, 44];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0xFF; 8]);
        assert_eq!(log.encode(), want);
        let hello = Frame::Hello {
            primary: "A".into(),
            ag: "g".into(),
            seq: 3,
        };
        let mut want = vec![1, 0, 0, 0, 23];
        want.extend_from_slice(b"TDSSIMAG");
        want.extend_from_slice(&[1, 0, 1, b'A', 0, 1, b'g', 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(hello.encode(), want);
        assert_eq!(
            Frame::Ack { hardened_lsn: 258 }.encode(),
            [7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            Frame::Heartbeat {
                seq: 1,
                last_lsn: 2,
                synchronized: true
            }
            .encode(),
            [
                6, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1
            ]
        );
    }

    #[test]
    fn round_trips_and_refuses_bad_bytes() {
        let frames = [
            Frame::Welcome {
                replica: "SQL2".into(),
                seq: 9,
                spans: vec![(1, 1, 5), (3, 6, 6)],
            },
            Frame::Refuse {
                reason: "no".into(),
            },
            Frame::Start { match_lsn: 4 },
        ];
        for f in frames {
            let b = f.encode();
            assert_eq!(Frame::decode(&b).unwrap(), (f.clone(), b.len()));
            assert_eq!(
                Frame::decode(&b[..b.len() - 1]),
                Err(DecodeError::Incomplete)
            );
        }
        assert!(matches!(
            Frame::decode(&[9, 0, 0, 0, 0]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Frame::decode(&[5, 0xFF, 0, 0, 0]),
            Err(DecodeError::Malformed(_))
        ));
        // A row count that does not match the body.
        let mut b = Frame::Log(Record {
            lsn: 1,
            epoch: 1,
            commit_unix_ms: 0,
            rows: vec![(1, 1)],
        })
        .encode();
        b[32] = 2;
        assert!(matches!(Frame::decode(&b), Err(DecodeError::Malformed(_))));
        let mut h = Frame::Hello {
            primary: "A".into(),
            ag: "g".into(),
            seq: 3,
        }
        .encode();
        h[5] = b'X';
        assert!(matches!(Frame::decode(&h), Err(DecodeError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Frame::decode(&bytes);
        }
    }
}
