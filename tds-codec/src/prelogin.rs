//! PRELOGIN ([MS-TDS] 2.2.6.5): the first message of every connection, in both directions.
//!
//! The payload is a table of `(token, offset, length)` entries (offset and length big-endian,
//! relative to the payload start) closed by 0xFF, followed by the option data. The same
//! structure travels client → server (packet type 0x12) and server → client (0x04). The
//! decoder checks every offset and length against the payload, so a hostile table can point
//! nowhere outside it.

use crate::CodecError;

mod token {
    pub const VERSION: u8 = 0x00;
    pub const ENCRYPTION: u8 = 0x01;
    pub const INSTOPT: u8 = 0x02;
    pub const THREADID: u8 = 0x03;
    pub const MARS: u8 = 0x04;
    pub const TRACEID: u8 = 0x05;
    pub const FEDAUTHREQUIRED: u8 = 0x06;
    pub const NONCEOPT: u8 = 0x07;
    pub const TERMINATOR: u8 = 0xFF;
}

/// The sender's version: the client library's, or the SQL Server product version
/// (e.g. 16.0.1000 for SQL Server 2022 RTM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub build: u16,
    pub sub_build: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)?;
        if self.sub_build != 0 {
            write!(f, ".{}", self.sub_build)?;
        }
        Ok(())
    }
}

/// B_FENCRYPTION. The 0x20 bit (client certificate, TDS 7.4+) is not modelled: a value
/// carrying it decodes as [`Encryption::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    Off,
    On,
    NotSupported,
    Required,
    Other(u8),
}

impl Encryption {
    pub fn from_u8(b: u8) -> Self {
        match b {
            0 => Encryption::Off,
            1 => Encryption::On,
            2 => Encryption::NotSupported,
            3 => Encryption::Required,
            other => Encryption::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Encryption::Off => 0,
            Encryption::On => 1,
            Encryption::NotSupported => 2,
            Encryption::Required => 3,
            Encryption::Other(b) => b,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encryption::Off => "off",
            Encryption::On => "on",
            Encryption::NotSupported => "not_supported",
            Encryption::Required => "required",
            Encryption::Other(_) => "other",
        }
    }
}

/// A PRELOGIN message; `None` means the option is absent from the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prelogin {
    pub version: Option<Version>,
    pub encryption: Option<Encryption>,
    /// Instance name without its terminating NUL (empty for the default instance).
    pub instance: Option<Vec<u8>>,
    /// THREADID; SQL Server answers it with length 0, which decodes as `Some(None)`.
    pub thread_id: Option<Option<u32>>,
    pub mars: Option<bool>,
    pub trace_id: Option<[u8; 36]>,
    pub fed_auth_required: Option<u8>,
    pub nonce: Option<[u8; 32]>,
}

/// Option tables are tiny; a hostile table with thousands of entries is refused.
const MAX_OPTIONS: usize = 32;

impl Prelogin {
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        let mut entries: Vec<(u8, usize, usize)> = Vec::new();
        let mut pos = 0;
        loop {
            let Some(&tok) = payload.get(pos) else {
                return Err(CodecError::truncated(
                    "PRELOGIN option table (no terminator)",
                    pos + 1,
                    payload.len(),
                ));
            };
            if tok == token::TERMINATOR {
                break;
            }
            if payload.len() < pos + 5 {
                return Err(CodecError::truncated(
                    "PRELOGIN option entry",
                    pos + 5,
                    payload.len(),
                ));
            }
            if entries.len() == MAX_OPTIONS {
                return Err(CodecError::BadPreloginOption {
                    token: tok,
                    reason: "more than 32 options",
                });
            }
            let offset = u16::from_be_bytes([payload[pos + 1], payload[pos + 2]]) as usize;
            let length = u16::from_be_bytes([payload[pos + 3], payload[pos + 4]]) as usize;
            if offset + length > payload.len() {
                return Err(CodecError::BadPreloginOption {
                    token: tok,
                    reason: "data lies outside the payload",
                });
            }
            if entries.iter().any(|(t, _, _)| *t == tok) {
                return Err(CodecError::BadPreloginOption {
                    token: tok,
                    reason: "option appears twice",
                });
            }
            entries.push((tok, offset, length));
            pos += 5;
        }

        let mut out = Prelogin::default();
        for (tok, offset, length) in entries {
            let data = &payload[offset..offset + length];
            let exact = |n: usize, reason: &'static str| {
                if data.len() == n {
                    Ok(())
                } else {
                    Err(CodecError::BadPreloginOption { token: tok, reason })
                }
            };
            match tok {
                token::VERSION => {
                    exact(6, "VERSION must be 6 bytes")?;
                    out.version = Some(Version {
                        major: data[0],
                        minor: data[1],
                        build: u16::from_be_bytes([data[2], data[3]]),
                        sub_build: u16::from_be_bytes([data[4], data[5]]),
                    });
                }
                token::ENCRYPTION => {
                    exact(1, "ENCRYPTION must be 1 byte")?;
                    out.encryption = Some(Encryption::from_u8(data[0]));
                }
                token::INSTOPT => {
                    let name = match data.iter().position(|&b| b == 0) {
                        Some(nul) => &data[..nul],
                        None => data,
                    };
                    out.instance = Some(name.to_vec());
                }
                token::THREADID => {
                    out.thread_id = Some(match data.len() {
                        0 => None,
                        4 => Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]])),
                        _ => {
                            return Err(CodecError::BadPreloginOption {
                                token: tok,
                                reason: "THREADID must be 0 or 4 bytes",
                            });
                        }
                    });
                }
                token::MARS => {
                    exact(1, "MARS must be 1 byte")?;
                    out.mars = Some(data[0] != 0);
                }
                token::TRACEID => {
                    exact(36, "TRACEID must be 36 bytes")?;
                    let mut id = [0u8; 36];
                    id.copy_from_slice(data);
                    out.trace_id = Some(id);
                }
                token::FEDAUTHREQUIRED => {
                    exact(1, "FEDAUTHREQUIRED must be 1 byte")?;
                    out.fed_auth_required = Some(data[0]);
                }
                token::NONCEOPT => {
                    exact(32, "NONCEOPT must be 32 bytes")?;
                    let mut n = [0u8; 32];
                    n.copy_from_slice(data);
                    out.nonce = Some(n);
                }
                // Options from future TDS versions are skipped, as servers do.
                _ => {}
            }
        }
        Ok(out)
    }

    /// Encodes the options present, in token order, data packed after the table.
    pub fn encode(&self) -> Vec<u8> {
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        if let Some(v) = self.version {
            let mut d = vec![v.major, v.minor];
            d.extend_from_slice(&v.build.to_be_bytes());
            d.extend_from_slice(&v.sub_build.to_be_bytes());
            options.push((token::VERSION, d));
        }
        if let Some(e) = self.encryption {
            options.push((token::ENCRYPTION, vec![e.to_u8()]));
        }
        if let Some(name) = &self.instance {
            let mut d = name.clone();
            d.push(0);
            options.push((token::INSTOPT, d));
        }
        if let Some(t) = self.thread_id {
            options.push((
                token::THREADID,
                t.map(|t| t.to_be_bytes().to_vec()).unwrap_or_default(),
            ));
        }
        if let Some(m) = self.mars {
            options.push((token::MARS, vec![m as u8]));
        }
        if let Some(id) = self.trace_id {
            options.push((token::TRACEID, id.to_vec()));
        }
        if let Some(f) = self.fed_auth_required {
            options.push((token::FEDAUTHREQUIRED, vec![f]));
        }
        if let Some(n) = self.nonce {
            options.push((token::NONCEOPT, n.to_vec()));
        }

        let table_len = options.len() * 5 + 1;
        let mut table = Vec::with_capacity(table_len);
        let mut data = Vec::new();
        for (tok, d) in &options {
            table.push(*tok);
            table.extend_from_slice(&((table_len + data.len()) as u16).to_be_bytes());
            table.extend_from_slice(&(d.len() as u16).to_be_bytes());
            data.extend_from_slice(d);
        }
        table.push(token::TERMINATOR);
        table.extend_from_slice(&data);
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{self, PacketHeader, PacketType};
    use proptest::prelude::*;

    /// [MS-TDS] 4.1, "Pre-Login Request", byte for byte.
    const SPEC_4_1: [u8; 47] = [
        0x12, 0x01, 0x00, 0x2F, 0x00, 0x00, 0x01, 0x00, //
        0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00, 0x20, //
        0x00, 0x01, 0x02, 0x00, 0x21, 0x00, 0x01, 0x03, //
        0x00, 0x22, 0x00, 0x04, 0x04, 0x00, 0x26, 0x00, //
        0x01, 0xFF, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x01, 0x00, 0xB8, 0x0D, 0x00, 0x00, 0x01,
    ];

    fn spec_4_1_message() -> Prelogin {
        Prelogin {
            version: Some(Version {
                major: 9,
                minor: 0,
                build: 0,
                sub_build: 0,
            }),
            encryption: Some(Encryption::On),
            instance: Some(vec![]),
            thread_id: Some(Some(0xB80D_0000)),
            mars: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_the_spec_example() {
        let h = PacketHeader::decode(&SPEC_4_1[..8], packet::MAX_PACKET_LEN).unwrap();
        assert_eq!(h.ty, PacketType::PreLogin);
        assert_eq!(
            Prelogin::decode(&SPEC_4_1[8..]).unwrap(),
            spec_4_1_message()
        );
    }

    #[test]
    fn encodes_the_spec_example_byte_for_byte() {
        let payload = spec_4_1_message().encode();
        let bytes = packet::encode_message(PacketType::PreLogin, &payload, 4096, 0);
        assert_eq!(bytes, SPEC_4_1);
    }

    #[test]
    fn server_answer_with_empty_thread_id() {
        // What SQL Server 2022 answers a plain-text client: version 16.0.1000, NOT_SUP.
        let answer = Prelogin {
            version: Some(Version {
                major: 16,
                minor: 0,
                build: 1000,
                sub_build: 0,
            }),
            encryption: Some(Encryption::NotSupported),
            instance: Some(vec![]),
            thread_id: Some(None),
            mars: Some(false),
            ..Default::default()
        };
        let payload = answer.encode();
        assert_eq!(
            payload,
            [
                0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00,
                0x01, 0x03, 0x00, 0x22, 0x00, 0x00, 0x04, 0x00, 0x22, 0x00, 0x01, 0xFF, 0x10, 0x00,
                0x03, 0xE8, 0x00, 0x00, 0x02, 0x00, 0x00,
            ]
        );
        let decoded = Prelogin::decode(&payload).unwrap();
        assert_eq!(decoded, answer);
        assert_eq!(decoded.version.unwrap().to_string(), "16.0.1000");
    }

    /// B_FENCRYPTION's four values, byte for byte, in a client's PRELOGIN (packet 0x12) and
    /// in a server's answer (packet 0x04): the table holds one entry (token 0x01, offset 6,
    /// length 1), then the terminator and the value.
    #[test]
    fn encryption_values_golden_bytes_both_directions() {
        let values = [
            (0x00, Encryption::Off, "off"),
            (0x01, Encryption::On, "on"),
            (0x02, Encryption::NotSupported, "not_supported"),
            (0x03, Encryption::Required, "required"),
        ];
        for (byte, e, name) in values {
            let p = Prelogin {
                encryption: Some(e),
                ..Default::default()
            };
            let payload = [0x01, 0x00, 0x06, 0x00, 0x01, 0xFF, byte];
            assert_eq!(p.encode(), payload, "{name}");
            assert_eq!((e.to_u8(), Encryption::from_u8(byte)), (byte, e), "{name}");
            assert_eq!(e.name(), name);
            for (ty, first) in [
                (PacketType::PreLogin, 0x12),
                (PacketType::TabularResult, 0x04),
            ] {
                let wire = packet::encode_message(ty, &p.encode(), 4096, 0);
                let mut want = vec![first, 0x01, 0x00, 0x0F, 0x00, 0x00, 0x01, 0x00];
                want.extend_from_slice(&payload);
                assert_eq!(wire, want, "{name} in {}", ty.name());
                assert_eq!(Prelogin::decode(&wire[8..]).unwrap().encryption, Some(e));
            }
        }
        // Values past the four (e.g. with the client-certificate bit) are kept as they are.
        let other = Prelogin::decode(&[0x01, 0x00, 0x06, 0x00, 0x01, 0xFF, 0x81]).unwrap();
        assert_eq!(other.encryption, Some(Encryption::Other(0x81)));
        assert_eq!(Encryption::Other(0x81).to_u8(), 0x81);
    }

    #[test]
    fn hostile_tables_are_errors() {
        // No terminator.
        assert!(matches!(
            Prelogin::decode(&[0x00, 0x00, 0x00, 0x00, 0x00]),
            Err(CodecError::Truncated { .. })
        ));
        // Offset past the end.
        assert!(matches!(
            Prelogin::decode(&[0x00, 0xFF, 0xF0, 0x00, 0x06, 0xFF]),
            Err(CodecError::BadPreloginOption { token: 0, .. })
        ));
        // Wrong VERSION length.
        assert!(matches!(
            Prelogin::decode(&[0x00, 0x00, 0x06, 0x00, 0x01, 0xFF, 0x09]),
            Err(CodecError::BadPreloginOption { token: 0, .. })
        ));
        // Duplicate option.
        assert!(matches!(
            Prelogin::decode(&[
                0x01, 0x00, 0x0B, 0x00, 0x01, 0x01, 0x00, 0x0B, 0x00, 0x01, 0xFF, 0x02
            ]),
            Err(CodecError::BadPreloginOption { token: 1, .. })
        ));
        assert!(Prelogin::decode(&[]).is_err());
        // Unknown options are skipped.
        let p = Prelogin::decode(&[0x42, 0x00, 0x06, 0x00, 0x01, 0xFF, 0x00]).unwrap();
        assert_eq!(p, Prelogin::default());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Prelogin::decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(
            major in any::<u8>(), build in any::<u16>(), enc in 0u8..4,
            inst in proptest::collection::vec(1u8..=255, 0..20),
            tid in proptest::option::of(any::<u32>()), mars in any::<bool>(),
        ) {
            let p = Prelogin {
                version: Some(Version { major, minor: 0, build, sub_build: 0 }),
                encryption: Some(Encryption::from_u8(enc)),
                instance: Some(inst),
                thread_id: Some(tid),
                mars: Some(mars),
                ..Default::default()
            };
            prop_assert_eq!(Prelogin::decode(&p.encode()).unwrap(), p);
        }
    }
}
