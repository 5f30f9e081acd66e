//! Reading whole TDS messages from an async stream, with limits.
//!
//! A message is a run of packets of one type ending with EOM. The reader refuses a packet
//! longer than the negotiated size and a message longer than the caller's limit *before*
//! reading it, so a peer cannot make either side allocate what it claims.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::CodecError;
use crate::packet::{HEADER_LEN, PacketHeader, PacketType};

/// A reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: PacketType,
    /// Status byte of the first packet (RESET_CONNECTION lives there).
    pub status: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection cleanly between messages.
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Codec(#[from] CodecError),
}

/// Limits for one reader: `max_packet` is the negotiated packet size, `max_message` bounds a
/// whole message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_packet: usize,
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: crate::packet::MAX_PACKET_LEN,
            max_message: 1 << 20,
        }
    }
}

/// Reads one message. EOF before the first byte is [`ReadError::Closed`]; EOF anywhere else
/// is an I/O error (`UnexpectedEof`). All packets of one message must share its type.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: Limits,
) -> Result<Message, ReadError> {
    let mut payload = Vec::new();
    let mut first: Option<PacketHeader> = None;
    loop {
        let mut hbuf = [0u8; HEADER_LEN];
        if first.is_none() {
            // Tell a clean close from a close in the middle of a header.
            let n = r.read(&mut hbuf[..1]).await?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            r.read_exact(&mut hbuf[1..]).await?;
        } else {
            r.read_exact(&mut hbuf).await?;
        }
        let h = PacketHeader::decode(&hbuf, limits.max_packet)?;
        if let Some(f) = first
            && f.ty != h.ty
        {
            return Err(CodecError::UnexpectedPacketType {
                expected: f.ty.name(),
                got: h.ty.name(),
            }
            .into());
        }
        if payload.len() + h.payload_len() > limits.max_message {
            return Err(CodecError::MessageTooLong {
                limit: limits.max_message,
            }
            .into());
        }
        let start = payload.len();
        payload.resize(start + h.payload_len(), 0);
        r.read_exact(&mut payload[start..]).await?;
        first.get_or_insert(h);
        if h.is_eom() {
            let f = first.unwrap_or(h);
            return Ok(Message {
                ty: f.ty,
                status: f.status,
                payload,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::encode_message;

    #[tokio::test]
    async fn reassembles_split_messages() {
        let payload: Vec<u8> = (0..100u8).collect();
        let bytes = encode_message(PacketType::SqlBatch, &payload, 40, 0);
        let msg = read_message(&mut bytes.as_slice(), Limits::default())
            .await
            .unwrap();
        assert_eq!(msg.ty, PacketType::SqlBatch);
        assert_eq!(msg.payload, payload);
    }

    #[tokio::test]
    async fn clean_close_and_truncation_are_told_apart() {
        let empty: &[u8] = &[];
        assert!(matches!(
            read_message(&mut &*empty, Limits::default()).await,
            Err(ReadError::Closed)
        ));
        let bytes = encode_message(PacketType::SqlBatch, &[1, 2, 3], 4096, 0);
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            read_message(&mut &*cut, Limits::default()).await,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
    }

    #[tokio::test]
    async fn limits_are_enforced_before_reading() {
        let bytes = encode_message(PacketType::SqlBatch, &[0u8; 100], 40, 0);
        let limits = Limits {
            max_packet: 4096,
            max_message: 50,
        };
        assert!(matches!(
            read_message(&mut bytes.as_slice(), limits).await,
            Err(ReadError::Codec(CodecError::MessageTooLong { limit: 50 }))
        ));
        // A header claiming 32 KiB on a reader limited to 4 KiB packets.
        let hostile = [0x01, 0x01, 0x7F, 0xFF, 0, 0, 1, 0];
        let limits = Limits {
            max_packet: 4096,
            max_message: 1 << 20,
        };
        assert!(matches!(
            read_message(&mut hostile.as_slice(), limits).await,
            Err(ReadError::Codec(CodecError::PacketTooLong { .. }))
        ));
    }

    #[tokio::test]
    async fn mixed_packet_types_are_refused() {
        let mut bytes = encode_message(PacketType::SqlBatch, &[0u8; 10], 12, 0);
        bytes[8 + 4] = PacketType::Rpc as u8; // second packet's type
        assert!(matches!(
            read_message(&mut bytes.as_slice(), Limits::default()).await,
            Err(ReadError::Codec(CodecError::UnexpectedPacketType { .. }))
        ));
    }
}
