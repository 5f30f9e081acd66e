//! SQLBatch ([MS-TDS] 2.2.6.7): a request carrying T-SQL text, preceded from TDS 7.2 on by
//! ALL_HEADERS (2.2.5.3).
//!
//! The server learns whether to expect ALL_HEADERS from the version it negotiated in
//! LOGINACK, not from the bytes, because a 7.1 batch's first four bytes are just text.

use crate::all_headers::AllHeaders;
use crate::{CodecError, ucs2};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBatch {
    /// Present exactly when the negotiated TDS version is 7.2 or later.
    pub headers: Option<AllHeaders>,
    pub text: String,
}

impl SqlBatch {
    pub fn decode(payload: &[u8], all_headers: bool) -> Result<Self, CodecError> {
        let (headers, used) = if all_headers {
            let (h, used) = AllHeaders::decode(payload)?;
            (Some(h), used)
        } else {
            (None, 0)
        };
        Ok(SqlBatch {
            headers,
            text: ucs2::decode("SQLBatch text", &payload[used..])?,
        })
    }

    /// Encodes with a transaction-descriptor header when `headers` is present.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = match &self.headers {
            Some(h) => AllHeaders::encode_transaction(
                h.transaction_descriptor.unwrap_or(0),
                h.outstanding_requests.unwrap_or(1),
            ),
            None => Vec::new(),
        };
        out.extend_from_slice(&ucs2::encode(&self.text));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{self, PacketHeader, PacketType};
    use proptest::prelude::*;

    /// [MS-TDS] 4.6, "SQL Batch Client Request", byte for byte.
    const SPEC_4_6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x5C, 0x00, 0x00, 0x01, 0x00, 0x16, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x0A, 0x00, 0x73, 0x00, 0x65, 0x00, 0x6C, 0x00, 0x65, 0x00, 0x63, 0x00, 0x74, 0x00, 0x20,
        0x00, 0x27, 0x00, 0x66, 0x00, 0x6F, 0x00, 0x6F, 0x00, 0x27, 0x00, 0x20, 0x00, 0x61, 0x00,
        0x73, 0x00, 0x20, 0x00, 0x27, 0x00, 0x62, 0x00, 0x61, 0x00, 0x72, 0x00, 0x27, 0x00, 0x0A,
        0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00,
        0x20, 0x00,
    ];

    fn spec_4_6() -> SqlBatch {
        SqlBatch {
            headers: Some(AllHeaders {
                transaction_descriptor: Some(0x0100_0000_0000_0000),
                outstanding_requests: Some(0),
                other_types: vec![],
            }),
            text: "\nselect 'foo' as 'bar'\n        ".into(),
        }
    }

    #[test]
    fn decodes_the_spec_example() {
        let h = PacketHeader::decode(&SPEC_4_6[..8], packet::MAX_PACKET_LEN).unwrap();
        assert_eq!(h.ty, PacketType::SqlBatch);
        assert_eq!(SqlBatch::decode(&SPEC_4_6[8..], true).unwrap(), spec_4_6());
    }

    #[test]
    fn encodes_the_spec_example_byte_for_byte() {
        let bytes = packet::encode_message(PacketType::SqlBatch, &spec_4_6().encode(), 4096, 0);
        assert_eq!(bytes, SPEC_4_6);
    }

    #[test]
    fn seven_one_batches_are_bare_text() {
        let b = SqlBatch::decode(&ucs2::encode("SELECT 1"), false).unwrap();
        assert_eq!(
            b,
            SqlBatch {
                headers: None,
                text: "SELECT 1".into()
            }
        );
        // The same text read as 7.2 is a malformed ALL_HEADERS.
        assert!(SqlBatch::decode(&ucs2::encode("SELECT 1"), true).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100), h in any::<bool>()) {
            let _ = SqlBatch::decode(&bytes, h);
        }

        #[test]
        fn round_trip(text in ".{0,50}", d in proptest::option::of(any::<u64>())) {
            let b = SqlBatch {
                headers: d.map(|d| AllHeaders { transaction_descriptor: Some(d), outstanding_requests: Some(1), other_types: vec![] }),
                text,
            };
            prop_assert_eq!(SqlBatch::decode(&b.encode(), b.headers.is_some()).unwrap(), b);
        }
    }
}
