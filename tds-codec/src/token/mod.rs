//! Tokens of the tabular result stream ([MS-TDS] 2.2.7) that a server writes.
//!
//! One module per token, each with an encoder (what `tds-sim` sends) and a decoder (used by
//! the golden-byte and round-trip tests, and by anything that wants to read a server's
//! answer without a full client). [`decode_stream`] reads a whole response, keeping the last
//! COLMETADATA so ROW tokens can be decoded, and refuses tokens it does not know rather than
//! guessing their length.

pub mod colmetadata;
pub mod done;
pub mod envchange;
pub mod featureextack;
pub mod loginack;
pub mod message;
pub mod returnstatus;
pub mod row;

pub use colmetadata::{ColMetaData, Column};
pub use done::{Done, DoneKind};
pub use envchange::EnvChange;
pub use featureextack::FeatureExtAck;
pub use loginack::LoginAck;
pub use message::{Message, MessageKind};
pub use returnstatus::ReturnStatus;
pub use row::Row;

use crate::CodecError;
use crate::cursor::Cursor;

/// Token type bytes.
pub mod ty {
    pub const COLMETADATA: u8 = 0x81;
    pub const ERROR: u8 = 0xAA;
    pub const INFO: u8 = 0xAB;
    pub const LOGINACK: u8 = 0xAD;
    pub const FEATUREEXTACK: u8 = 0xAE;
    pub const ROW: u8 = 0xD1;
    pub const ENVCHANGE: u8 = 0xE3;
    pub const RETURNSTATUS: u8 = 0x79;
    pub const DONE: u8 = 0xFD;
    pub const DONEPROC: u8 = 0xFE;
    pub const DONEINPROC: u8 = 0xFF;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    LoginAck(LoginAck),
    EnvChange(EnvChange),
    Message(Message),
    Done(Done),
    ColMetaData(ColMetaData),
    Row(Row),
    ReturnStatus(ReturnStatus),
    FeatureExtAck(FeatureExtAck),
}

/// Decodes a complete token stream; `v72` selects the 7.2+ layouts (8-byte DONE row counts,
/// 4-byte UserType and LineNumber).
pub fn decode_stream(bytes: &[u8], v72: bool) -> Result<Vec<Token>, CodecError> {
    let mut c = Cursor::new(bytes);
    let mut out = Vec::new();
    let mut meta: Option<ColMetaData> = None;
    while !c.is_empty() {
        let t = c.u8("token type")?;
        let tok = match t {
            ty::LOGINACK => Token::LoginAck(LoginAck::decode(&mut c)?),
            ty::ENVCHANGE => Token::EnvChange(EnvChange::decode(&mut c)?),
            ty::INFO | ty::ERROR => Token::Message(Message::decode(t, &mut c, v72)?),
            ty::DONE | ty::DONEPROC | ty::DONEINPROC => Token::Done(Done::decode(t, &mut c, v72)?),
            ty::COLMETADATA => {
                let m = ColMetaData::decode(&mut c, v72)?;
                meta = Some(m.clone());
                Token::ColMetaData(m)
            }
            ty::ROW => {
                let Some(m) = &meta else {
                    return Err(CodecError::invalid("ROW", "no COLMETADATA before it"));
                };
                Token::Row(Row::decode(&mut c, m)?)
            }
            ty::RETURNSTATUS => Token::ReturnStatus(ReturnStatus::decode(&mut c)?),
            ty::FEATUREEXTACK => Token::FeatureExtAck(FeatureExtAck::decode(&mut c)?),
            other => {
                return Err(CodecError::invalid(
                    "token stream",
                    format!("unknown token 0x{other:02x}"),
                ));
            }
        };
        out.push(tok);
    }
    Ok(out)
}

/// Reads a token's USHORT length and returns a cursor over exactly that body, so a token
/// whose fields disagree with its length is caught instead of desynchronising the stream.
pub(crate) fn body<'a>(c: &mut Cursor<'a>, what: &'static str) -> Result<Cursor<'a>, CodecError> {
    let len = c.u16_le(what)? as usize;
    Ok(Cursor::new(c.bytes(what, len)?))
}

pub(crate) fn finish(body: &Cursor<'_>, what: &'static str) -> Result<(), CodecError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(CodecError::invalid(
            what,
            format!("{} bytes left over after its fields", body.remaining()),
        ))
    }
}

/// Writes a USHORT length-prefixed token body built by `f`.
pub(crate) fn with_len(out: &mut Vec<u8>, token: u8, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(token);
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    f(out);
    let len = (out.len() - at - 2).min(u16::MAX as usize) as u16;
    out[at..at + 2].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_stream_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), v72 in any::<bool>()) {
            let _ = decode_stream(&bytes, v72);
        }

        #[test]
        fn decode_stream_never_panics_on_token_prefixes(
            t in prop_oneof![Just(0x81u8), Just(0xAA), Just(0xAB), Just(0xAD), Just(0xAE), Just(0xD1), Just(0xE3), Just(0x79), Just(0xFD)],
            rest in proptest::collection::vec(any::<u8>(), 0..100),
            v72 in any::<bool>(),
        ) {
            let mut bytes = vec![t];
            bytes.extend(rest);
            let _ = decode_stream(&bytes, v72);
        }
    }
}
