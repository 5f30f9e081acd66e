//! UCS-2 / UTF-16LE text, the encoding of every string TDS 7.x puts on the wire.
//!
//! SQL Server stores NVARCHAR as UCS-2 but happily passes surrogate pairs through, so the
//! codec treats the text as UTF-16LE: it encodes any Rust string and refuses only what no
//! UTF-16 decoder could accept (an odd byte count, an unpaired surrogate), returning a
//! [`CodecError`] instead of replacing characters, so a corrupted login name is a protocol
//! error rather than a silently different user.

use crate::CodecError;

/// Encodes `s` as UTF-16LE.
pub fn encode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 2);
    for unit in s.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

/// Number of UTF-16 code units in `s`: TDS length prefixes count these, not bytes or chars.
pub fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Decodes UTF-16LE bytes; `what` names the field for the error.
pub fn decode(what: &'static str, bytes: &[u8]) -> Result<String, CodecError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(CodecError::invalid(
            what,
            format!("odd UTF-16 byte count {}", bytes.len()),
        ));
    }
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|e| CodecError::invalid(what, format!("invalid UTF-16: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        // "sa" as it appears in [MS-TDS] 4.2.
        assert_eq!(encode("sa"), [0x73, 0x00, 0x61, 0x00]);
        assert_eq!(decode("t", &[0x73, 0x00, 0x61, 0x00]).unwrap(), "sa");
        // A character outside the BMP takes a surrogate pair: two units, four bytes.
        assert_eq!(units("😀"), 2);
        assert_eq!(encode("😀"), [0x3D, 0xD8, 0x00, 0xDE]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(decode("t", &[0x41]).is_err());
        // A lone high surrogate.
        assert!(decode("t", &[0x3D, 0xD8]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode("t", &bytes);
        }

        #[test]
        fn round_trip(s in ".{0,40}") {
            prop_assert_eq!(decode("t", &encode(&s)).unwrap(), s);
        }
    }
}
