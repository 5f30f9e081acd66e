//! DONE, DONEPROC and DONEINPROC ([MS-TDS] 2.2.7.6, 2.2.7.7, 2.2.7.8): the end of a
//! statement, a procedure, or a statement inside one.
//!
//! Every DONE but the last of a response carries DONE_MORE, or strict clients stop reading
//! early and then misread the next response. The row count is 4 bytes before TDS 7.2 and 8
//! from 7.2 on.

use super::ty;
use crate::CodecError;
use crate::cursor::Cursor;

pub mod status {
    pub const FINAL: u16 = 0x0000;
    pub const MORE: u16 = 0x0001;
    pub const ERROR: u16 = 0x0002;
    pub const INXACT: u16 = 0x0004;
    pub const COUNT: u16 = 0x0010;
    pub const ATTN: u16 = 0x0020;
    pub const SRVERROR: u16 = 0x0100;
}

/// CurCmd values SQL Server uses for what this project answers.
pub mod cur_cmd {
    pub const NONE: u16 = 0x00;
    pub const SELECT: u16 = 0xC1;
    pub const SET: u16 = 0xBF;
    pub const USE: u16 = 0xC3;
    pub const BEGIN_TRAN: u16 = 0xD4;
    pub const COMMIT: u16 = 0xD5;
    pub const ROLLBACK: u16 = 0xD2;
    pub const EXECUTE: u16 = 0xE0;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneKind {
    Done,
    DoneProc,
    DoneInProc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub kind: DoneKind,
    pub status: u16,
    pub cur_cmd: u16,
    pub row_count: u64,
}

impl Done {
    pub fn new(kind: DoneKind, status: u16, cur_cmd: u16, row_count: u64) -> Self {
        Done {
            kind,
            status,
            cur_cmd,
            row_count,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>, v72: bool) {
        out.push(match self.kind {
            DoneKind::Done => ty::DONE,
            DoneKind::DoneProc => ty::DONEPROC,
            DoneKind::DoneInProc => ty::DONEINPROC,
        });
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.cur_cmd.to_le_bytes());
        if v72 {
            out.extend_from_slice(&self.row_count.to_le_bytes());
        } else {
            out.extend_from_slice(&(self.row_count.min(u32::MAX as u64) as u32).to_le_bytes());
        }
    }

    pub(crate) fn decode(t: u8, c: &mut Cursor<'_>, v72: bool) -> Result<Self, CodecError> {
        Ok(Done {
            kind: match t {
                ty::DONEPROC => DoneKind::DoneProc,
                ty::DONEINPROC => DoneKind::DoneInProc,
                _ => DoneKind::Done,
            },
            status: c.u16_le("DONE Status")?,
            cur_cmd: c.u16_le("DONE CurCmd")?,
            row_count: if v72 {
                c.u64_le("DONE DoneRowCount")?
            } else {
                c.u32_le("DONE DoneRowCount")? as u64
            },
        })
    }

    pub fn is_more(&self) -> bool {
        self.status & status::MORE != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Token, decode_stream};
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        // The final DONE of a login answer, 7.2+: status 0, CurCmd 0, 8-byte count.
        let mut out = Vec::new();
        Done::new(DoneKind::Done, status::FINAL, 0, 0).encode(&mut out, true);
        assert_eq!(out, [0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // A SELECT's DONE with MORE|COUNT and one row, 7.1: 4-byte count.
        out.clear();
        Done::new(
            DoneKind::Done,
            status::MORE | status::COUNT,
            cur_cmd::SELECT,
            1,
        )
        .encode(&mut out, false);
        assert_eq!(out, [0xFD, 0x11, 0x00, 0xC1, 0x00, 0x01, 0x00, 0x00, 0x00]);
        // Attention acknowledgement.
        out.clear();
        Done::new(DoneKind::Done, status::ATTN, 0, 0).encode(&mut out, true);
        assert_eq!(&out[..3], [0xFD, 0x20, 0x00]);
    }

    proptest! {
        #[test]
        fn round_trip(st in any::<u16>(), cmd in any::<u16>(), n in any::<u32>(), v72 in any::<bool>(), k in 0..3u8) {
            let kind = [DoneKind::Done, DoneKind::DoneProc, DoneKind::DoneInProc][k as usize];
            let d = Done::new(kind, st, cmd, n as u64);
            let mut out = Vec::new();
            d.encode(&mut out, v72);
            prop_assert_eq!(decode_stream(&out, v72).unwrap(), vec![Token::Done(d)]);
        }
    }
}
