//! ALL_HEADERS ([MS-TDS] 2.2.5.3), the prefix of SQLBatch, RPC and transaction-manager
//! requests from TDS 7.2 on.
//!
//! Its transaction descriptor is how a 7.2+ client tells the server which transaction a
//! request belongs to (python-tds sends the one the server handed out in ENVCHANGE begin
//! transaction). Below 7.2 the structure does not exist, so callers decide by the negotiated
//! version whether to expect it; decoding it from a 7.1 request would eat the SQL text.

use crate::CodecError;
use crate::cursor::Cursor;

pub const TYPE_QUERY_NOTIFICATIONS: u16 = 1;
pub const TYPE_TRANSACTION_DESCRIPTOR: u16 = 2;
pub const TYPE_TRACE_ACTIVITY: u16 = 3;

/// The decoded headers. Query notification and trace activity headers are kept by type only:
/// the server side of this project has no use for their contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllHeaders {
    pub transaction_descriptor: Option<u64>,
    pub outstanding_requests: Option<u32>,
    pub other_types: Vec<u16>,
}

/// A real request carries one to three headers; more is hostile.
const MAX_HEADERS: usize = 16;

impl AllHeaders {
    /// Decodes the headers at the start of `payload` and returns them with the number of
    /// bytes they occupy.
    pub fn decode(payload: &[u8]) -> Result<(Self, usize), CodecError> {
        let mut c = Cursor::new(payload);
        let total = c.u32_le("ALL_HEADERS TotalLength")? as usize;
        if total < 4 || total > payload.len() {
            return Err(CodecError::invalid(
                "ALL_HEADERS TotalLength",
                format!("{total} with {} bytes present", payload.len()),
            ));
        }
        let mut c = Cursor::new(&payload[4..total]);
        let mut out = AllHeaders::default();
        let mut count = 0;
        while !c.is_empty() {
            count += 1;
            if count > MAX_HEADERS {
                return Err(CodecError::invalid("ALL_HEADERS", "more than 16 headers"));
            }
            let len = c.u32_le("ALL_HEADERS HeaderLength")? as usize;
            if len < 6 || len - 4 > c.remaining() {
                return Err(CodecError::invalid(
                    "ALL_HEADERS HeaderLength",
                    format!("{len} with {} bytes left", c.remaining() + 4),
                ));
            }
            let body = c.bytes("ALL_HEADERS header", len - 4)?;
            let mut h = Cursor::new(body);
            let ty = h.u16_le("ALL_HEADERS HeaderType")?;
            if ty == TYPE_TRANSACTION_DESCRIPTOR {
                out.transaction_descriptor = Some(h.u64_le("TransactionDescriptor")?);
                out.outstanding_requests = Some(h.u32_le("OutstandingRequestCount")?);
            } else {
                out.other_types.push(ty);
            }
        }
        Ok((out, total))
    }

    /// Encodes the transaction descriptor header, the only one a client must send.
    pub fn encode_transaction(descriptor: u64, outstanding_requests: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(22);
        out.extend_from_slice(&22u32.to_le_bytes());
        out.extend_from_slice(&18u32.to_le_bytes());
        out.extend_from_slice(&TYPE_TRANSACTION_DESCRIPTOR.to_le_bytes());
        out.extend_from_slice(&descriptor.to_le_bytes());
        out.extend_from_slice(&outstanding_requests.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_transaction_descriptor_header() {
        // [MS-TDS] 2.2.5.3.2: TotalLength 0x16, HeaderLength 0x12, HeaderType 2, descriptor,
        // outstanding request count — the exact prefix python-tds and tiberius send.
        let bytes = AllHeaders::encode_transaction(0x0102_0304_0506_0708, 1);
        assert_eq!(
            bytes,
            [
                0x16, 0, 0, 0, 0x12, 0, 0, 0, 0x02, 0, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02,
                0x01, 0x01, 0, 0, 0
            ]
        );
        let (h, used) = AllHeaders::decode(&bytes).unwrap();
        assert_eq!(used, 22);
        assert_eq!(h.transaction_descriptor, Some(0x0102_0304_0506_0708));
        assert_eq!(h.outstanding_requests, Some(1));
    }

    #[test]
    fn hostile_lengths_are_refused() {
        assert!(AllHeaders::decode(&[0xFF, 0xFF, 0, 0]).is_err());
        assert!(AllHeaders::decode(&[8, 0, 0, 0, 0xFF, 0, 0, 0]).is_err());
        assert!(AllHeaders::decode(&[8, 0, 0, 0, 2, 0, 0, 0]).is_err());
        assert!(AllHeaders::decode(&[]).is_err());
        // An empty header list is legal.
        assert_eq!(AllHeaders::decode(&[4, 0, 0, 0]).unwrap().1, 4);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = AllHeaders::decode(&bytes);
        }

        #[test]
        fn round_trip(d in any::<u64>(), n in any::<u32>()) {
            let (h, used) = AllHeaders::decode(&AllHeaders::encode_transaction(d, n)).unwrap();
            prop_assert_eq!(used, 22);
            prop_assert_eq!(h.transaction_descriptor, Some(d));
            prop_assert_eq!(h.outstanding_requests, Some(n));
        }
    }
}
