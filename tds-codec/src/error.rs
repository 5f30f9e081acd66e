//! The one error type for malformed, truncated or hostile TDS bytes.
//!
//! Variants carry enough detail for a probe's `protocol_error` outcome to tell an operator
//! what the server sent wrong, without dumping the bytes.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("{what}: need {needed} bytes, have {available}")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("packet length {0} is below the 8-byte header")]
    PacketTooShort(u16),
    #[error("packet length {len} exceeds the maximum of {max}")]
    PacketTooLong { len: usize, max: usize },
    #[error("message exceeds the limit of {limit} bytes")]
    MessageTooLong { limit: usize },
    #[error("unknown packet type 0x{0:02x}")]
    UnknownPacketType(u8),
    #[error("expected packet type {expected:?}, got {got:?}")]
    UnexpectedPacketType {
        expected: PacketTypeName,
        got: PacketTypeName,
    },
    #[error("PRELOGIN option 0x{token:02x}: {reason}")]
    BadPreloginOption { token: u8, reason: &'static str },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// A packet type for error messages, known or not.
pub type PacketTypeName = &'static str;

impl CodecError {
    pub(crate) fn truncated(what: &'static str, needed: usize, available: usize) -> Self {
        CodecError::Truncated {
            what,
            needed,
            available,
        }
    }

    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        CodecError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
