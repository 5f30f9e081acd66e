//! The 8-byte TDS packet header ([MS-TDS] 2.2.3.1) and splitting a message into packets.
//!
//! Length and SPID are big-endian (unlike almost everything else in TDS). A message ends
//! with the packet whose status has the EOM bit; a client waits for it, so forgetting it
//! hangs the peer until its own timeout.

use crate::CodecError;

pub const HEADER_LEN: usize = 8;
/// The largest packet size a server can negotiate ([MS-TDS] 2.2.7.9, ENVCHANGE packet size).
pub const MAX_PACKET_LEN: usize = 32767;
/// The packet size both sides use until LOGIN7 negotiates another ([MS-TDS] 2.2.6.4).
pub const DEFAULT_PACKET_LEN: usize = 4096;

pub mod status {
    /// End of message: the last packet of a request or response.
    pub const EOM: u8 = 0x01;
    /// The client asks the server to ignore this message (used with ATTENTION races).
    pub const IGNORE: u8 = 0x02;
    /// Reset the session state before running this request.
    pub const RESET_CONNECTION: u8 = 0x08;
    pub const RESET_CONNECTION_SKIP_TRAN: u8 = 0x10;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    SqlBatch = 0x01,
    PreTds7Login = 0x02,
    Rpc = 0x03,
    TabularResult = 0x04,
    Attention = 0x06,
    BulkLoad = 0x07,
    FedAuthToken = 0x08,
    TransactionManager = 0x0E,
    Login7 = 0x10,
    Sspi = 0x11,
    PreLogin = 0x12,
}

impl PacketType {
    pub fn from_u8(b: u8) -> Result<Self, CodecError> {
        Ok(match b {
            0x01 => PacketType::SqlBatch,
            0x02 => PacketType::PreTds7Login,
            0x03 => PacketType::Rpc,
            0x04 => PacketType::TabularResult,
            0x06 => PacketType::Attention,
            0x07 => PacketType::BulkLoad,
            0x08 => PacketType::FedAuthToken,
            0x0E => PacketType::TransactionManager,
            0x10 => PacketType::Login7,
            0x11 => PacketType::Sspi,
            0x12 => PacketType::PreLogin,
            other => return Err(CodecError::UnknownPacketType(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PacketType::SqlBatch => "SQL_BATCH",
            PacketType::PreTds7Login => "PRE_TDS7_LOGIN",
            PacketType::Rpc => "RPC",
            PacketType::TabularResult => "TABULAR_RESULT",
            PacketType::Attention => "ATTENTION",
            PacketType::BulkLoad => "BULK_LOAD",
            PacketType::FedAuthToken => "FEDAUTH_TOKEN",
            PacketType::TransactionManager => "TRANSACTION_MANAGER",
            PacketType::Login7 => "LOGIN7",
            PacketType::Sspi => "SSPI",
            PacketType::PreLogin => "PRELOGIN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub ty: PacketType,
    pub status: u8,
    /// Whole packet length, header included.
    pub length: u16,
    pub spid: u16,
    pub packet_id: u8,
    pub window: u8,
}

impl PacketHeader {
    /// Decodes and validates a header; `max_len` is the largest packet the reader accepts
    /// (at most [`MAX_PACKET_LEN`]), so a hostile length is refused before any allocation.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::truncated(
                "packet header",
                HEADER_LEN,
                bytes.len(),
            ));
        }
        let ty = PacketType::from_u8(bytes[0])?;
        let length = u16::from_be_bytes([bytes[2], bytes[3]]);
        if (length as usize) < HEADER_LEN {
            return Err(CodecError::PacketTooShort(length));
        }
        let max = max_len.min(MAX_PACKET_LEN);
        if length as usize > max {
            return Err(CodecError::PacketTooLong {
                len: length as usize,
                max,
            });
        }
        Ok(PacketHeader {
            ty,
            status: bytes[1],
            length,
            spid: u16::from_be_bytes([bytes[4], bytes[5]]),
            packet_id: bytes[6],
            window: bytes[7],
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let len = self.length.to_be_bytes();
        let spid = self.spid.to_be_bytes();
        [
            self.ty as u8,
            self.status,
            len[0],
            len[1],
            spid[0],
            spid[1],
            self.packet_id,
            self.window,
        ]
    }

    pub fn payload_len(&self) -> usize {
        self.length as usize - HEADER_LEN
    }

    pub fn is_eom(&self) -> bool {
        self.status & status::EOM != 0
    }
}

/// Splits `payload` into packets of at most `packet_len` bytes (header included), numbering
/// them from 1 and setting EOM on the last. An empty payload still yields one packet.
pub fn encode_message(ty: PacketType, payload: &[u8], packet_len: usize, spid: u16) -> Vec<u8> {
    let packet_len = packet_len.clamp(HEADER_LEN + 1, MAX_PACKET_LEN);
    let chunk = packet_len - HEADER_LEN;
    let count = payload.len().div_ceil(chunk).max(1);
    let mut out = Vec::with_capacity(payload.len() + count * HEADER_LEN);
    for i in 0..count {
        let part = &payload[(i * chunk).min(payload.len())..((i + 1) * chunk).min(payload.len())];
        let header = PacketHeader {
            ty,
            status: if i + 1 == count { status::EOM } else { 0 },
            length: (HEADER_LEN + part.len()) as u16,
            spid,
            packet_id: ((i + 1) % 256) as u8,
            window: 0,
        };
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_golden_bytes_from_ms_tds_4_1() {
        // [MS-TDS] 4.1, the PRELOGIN request's header.
        let bytes = [0x12, 0x01, 0x00, 0x2F, 0x00, 0x00, 0x01, 0x00];
        let h = PacketHeader::decode(&bytes, MAX_PACKET_LEN).unwrap();
        assert_eq!(h.ty, PacketType::PreLogin);
        assert!(h.is_eom());
        assert_eq!(h.length, 0x2F);
        assert_eq!(h.payload_len(), 0x2F - 8);
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn length_and_spid_are_big_endian() {
        let h = PacketHeader {
            ty: PacketType::TabularResult,
            status: status::EOM,
            length: 0x0102,
            spid: 0x0304,
            packet_id: 1,
            window: 0,
        };
        assert_eq!(h.encode(), [0x04, 0x01, 0x01, 0x02, 0x03, 0x04, 0x01, 0x00]);
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let mut bytes = [0x04, 0x01, 0xFF, 0xFF, 0, 0, 1, 0];
        assert!(matches!(
            PacketHeader::decode(&bytes, MAX_PACKET_LEN),
            Err(CodecError::PacketTooLong { len: 65535, .. })
        ));
        bytes[2] = 0;
        bytes[3] = 7;
        assert_eq!(
            PacketHeader::decode(&bytes, MAX_PACKET_LEN),
            Err(CodecError::PacketTooShort(7))
        );
        bytes[3] = 200;
        assert!(matches!(
            PacketHeader::decode(&bytes, 100),
            Err(CodecError::PacketTooLong { len: 200, max: 100 })
        ));
        bytes[0] = 0x99;
        assert_eq!(
            PacketHeader::decode(&bytes, MAX_PACKET_LEN),
            Err(CodecError::UnknownPacketType(0x99))
        );
        assert!(matches!(
            PacketHeader::decode(&bytes[..5], MAX_PACKET_LEN),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn messages_split_with_eom_on_the_last_packet_only() {
        let payload: Vec<u8> = (0..20u8).collect();
        let bytes = encode_message(PacketType::TabularResult, &payload, 16, 55);
        // 8 bytes of payload per packet: 3 packets of 16, 16 and 12 bytes.
        assert_eq!(bytes.len(), 16 + 16 + 12);
        let h1 = PacketHeader::decode(&bytes[0..8], MAX_PACKET_LEN).unwrap();
        let h2 = PacketHeader::decode(&bytes[16..24], MAX_PACKET_LEN).unwrap();
        let h3 = PacketHeader::decode(&bytes[32..40], MAX_PACKET_LEN).unwrap();
        assert!(!h1.is_eom() && !h2.is_eom() && h3.is_eom());
        assert_eq!((h1.packet_id, h2.packet_id, h3.packet_id), (1, 2, 3));
        assert_eq!(h3.spid, 55);
        assert_eq!(&bytes[40..], &payload[16..]);
        let empty = encode_message(PacketType::Attention, &[], 4096, 0);
        assert_eq!(empty, vec![0x06, 0x01, 0x00, 0x08, 0, 0, 1, 0]);
    }
}
