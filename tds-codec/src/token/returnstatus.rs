//! RETURNSTATUS ([MS-TDS] 2.2.7.18): a procedure's return value, sent before DONEPROC.
//!
//! SQL Server sends it at the end of every RPC (`sp_executesql` returns 0), and drivers that
//! call procedures look for it, so the simulator's RPC answers include it too.

use super::ty;
use crate::CodecError;
use crate::cursor::Cursor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnStatus(pub i32);

impl ReturnStatus {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(ty::RETURNSTATUS);
        out.extend_from_slice(&self.0.to_le_bytes());
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Self, CodecError> {
        Ok(ReturnStatus(c.i32_le("RETURNSTATUS Value")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Token, decode_stream};

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        ReturnStatus(0).encode(&mut out);
        assert_eq!(out, [0x79, 0, 0, 0, 0]);
        out.clear();
        ReturnStatus(-6).encode(&mut out);
        assert_eq!(out, [0x79, 0xFA, 0xFF, 0xFF, 0xFF]);
        assert_eq!(
            decode_stream(&out, true).unwrap(),
            vec![Token::ReturnStatus(ReturnStatus(-6))]
        );
        assert!(decode_stream(&[0x79, 0, 0], true).is_err());
    }
}
