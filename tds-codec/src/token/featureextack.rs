//! FEATUREEXTACK ([MS-TDS] 2.2.7.11): the server's answer to a 7.4 LOGIN7 FeatureExt.
//!
//! A server sends it after LOGINACK only when the client asked for features, acknowledging
//! the ones it supports. The simulator supports none of the optional features, so it sends
//! the token with just its terminator, which tells the client every request was declined.

use super::ty;
use crate::CodecError;
use crate::cursor::Cursor;

const TERMINATOR: u8 = 0xFF;
const MAX_FEATURES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeatureExtAck {
    pub features: Vec<(u8, Vec<u8>)>,
}

impl FeatureExtAck {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(ty::FEATUREEXTACK);
        for (id, data) in &self.features {
            out.push(*id);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.push(TERMINATOR);
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Self, CodecError> {
        let mut features = Vec::new();
        loop {
            let id = c.u8("FEATUREEXTACK FeatureId")?;
            if id == TERMINATOR {
                return Ok(FeatureExtAck { features });
            }
            if features.len() == MAX_FEATURES {
                return Err(CodecError::invalid(
                    "FEATUREEXTACK",
                    "more than 32 features",
                ));
            }
            let len = c.u32_le("FEATUREEXTACK FeatureAckDataLen")? as usize;
            features.push((id, c.bytes("FEATUREEXTACK FeatureAckData", len)?.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Token, decode_stream};

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        FeatureExtAck::default().encode(&mut out);
        assert_eq!(out, [0xAE, 0xFF]);
        out.clear();
        let ack = FeatureExtAck {
            features: vec![(0x0A, vec![1])],
        };
        ack.encode(&mut out);
        assert_eq!(out, [0xAE, 0x0A, 1, 0, 0, 0, 1, 0xFF]);
        assert_eq!(
            decode_stream(&out, true).unwrap(),
            vec![Token::FeatureExtAck(ack)]
        );
        assert!(decode_stream(&[0xAE, 0x0A, 0xFF, 0xFF, 0xFF, 0xFF], true).is_err());
    }
}
