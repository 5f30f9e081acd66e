//! LOGIN7 ([MS-TDS] 2.2.6.4): the client's login record, decoded by `tds-sim` to check SQL
//! authentication and to learn the TDS version and packet size the client wants.
//!
//! The record is a fixed header, a table of (offset, length) pairs pointing into the same
//! record, and the variable data. Offsets are relative to the start of the record and string
//! lengths count UTF-16 units, so every pair is checked against the record before any string
//! is read. The password travels "obfuscated" (nibbles swapped, then XOR 0xA5 per byte); this
//! is not encryption, and the decoder undoes it so the server can compare passwords.
//!
//! The encoder exists for tests and fuzzing: it lays data out in table order, which
//! reproduces the spec's example in 4.2 byte for byte.

use crate::cursor::Cursor;
use crate::{CodecError, tds_version, ucs2};

/// Fixed part up to ClientLCID.
const FIXED_LEN: usize = 36;
/// Header length with the 7.1 table (up to ibAtchDBFile/cchAtchDBFile).
const HEADER_71: usize = 86;
/// Header length with the 7.2+ table (adds ChangePassword and cbSSPILong).
const HEADER_72: usize = 94;
/// [MS-TDS]: a LOGIN7 stream must not be longer than 128K-1 bytes.
pub const MAX_LEN: usize = 128 * 1024 - 1;
/// fExtension in OptionFlags3: the Extension slot points at FeatureExt (TDS 7.4).
pub const OPTION_FLAGS3_EXTENSION: u8 = 0x10;
const FEATURE_TERMINATOR: u8 = 0xFF;
const MAX_FEATURES: usize = 32;

/// One FeatureExt option (e.g. 0x0A UTF8_SUPPORT) as sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub id: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login7 {
    /// As on the wire (little-endian), e.g. [`tds_version::V7_4`].
    pub tds_version: u32,
    /// Requested packet size; 0 asks for the server's default.
    pub packet_size: u32,
    pub client_prog_ver: u32,
    pub client_pid: u32,
    pub connection_id: u32,
    pub option_flags1: u8,
    pub option_flags2: u8,
    pub type_flags: u8,
    pub option_flags3: u8,
    pub client_time_zone: i32,
    pub client_lcid: u32,
    pub hostname: String,
    pub username: String,
    /// In clear text, de-obfuscated.
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    pub library_name: String,
    pub language: String,
    pub database: String,
    pub client_id: [u8; 6],
    pub sspi: Vec<u8>,
    pub attach_db_file: String,
    /// In clear text; 7.2+ only.
    pub change_password: String,
    /// FeatureExt options when fExtension is set (7.4).
    pub features: Option<Vec<Feature>>,
}

/// Undoes the password obfuscation of [MS-TDS] 2.2.6.4: XOR 0xA5, then swap nibbles.
pub fn deobfuscate(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| (b ^ 0xA5).rotate_left(4)).collect()
}

/// Swap nibbles, then XOR 0xA5: what a client does to each byte of the UTF-16 password.
pub fn obfuscate(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b.rotate_left(4) ^ 0xA5).collect()
}

/// Reads one (offset, length-in-units) pair and the UTF-16 string it points at.
fn string_at(
    record: &[u8],
    table: &mut Cursor<'_>,
    what: &'static str,
) -> Result<Vec<u8>, CodecError> {
    let ib = table.u16_le(what)? as usize;
    let cch = table.u16_le(what)? as usize;
    if cch == 0 {
        return Ok(Vec::new());
    }
    let end = ib + cch * 2;
    if end > record.len() {
        return Err(CodecError::invalid(
            what,
            format!(
                "offset {ib} + {cch} units lies outside the {}-byte record",
                record.len()
            ),
        ));
    }
    Ok(record[ib..end].to_vec())
}

impl Login7 {
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        let mut c = Cursor::new(payload);
        let length = c.u32_le("LOGIN7 Length")? as usize;
        if length > payload.len() || !(HEADER_71..=MAX_LEN).contains(&length) {
            return Err(CodecError::invalid(
                "LOGIN7 Length",
                format!("{length} with {} bytes present", payload.len()),
            ));
        }
        let record = &payload[..length];
        let mut c = Cursor::new(&record[4..]);
        let mut l = Login7 {
            tds_version: c.u32_le("LOGIN7 TDSVersion")?,
            packet_size: c.u32_le("LOGIN7 PacketSize")?,
            client_prog_ver: c.u32_le("LOGIN7 ClientProgVer")?,
            client_pid: c.u32_le("LOGIN7 ClientPID")?,
            connection_id: c.u32_le("LOGIN7 ConnectionID")?,
            option_flags1: c.u8("LOGIN7 OptionFlags1")?,
            option_flags2: c.u8("LOGIN7 OptionFlags2")?,
            type_flags: c.u8("LOGIN7 TypeFlags")?,
            option_flags3: c.u8("LOGIN7 OptionFlags3")?,
            client_time_zone: c.i32_le("LOGIN7 ClientTimeZone")?,
            client_lcid: c.u32_le("LOGIN7 ClientLCID")?,
            ..Default::default()
        };
        debug_assert_eq!(c.pos() + 4, FIXED_LEN);
        let text = |what, bytes: Vec<u8>| ucs2::decode(what, &bytes);
        l.hostname = text(
            "LOGIN7 HostName",
            string_at(record, &mut c, "LOGIN7 HostName")?,
        )?;
        l.username = text(
            "LOGIN7 UserName",
            string_at(record, &mut c, "LOGIN7 UserName")?,
        )?;
        let pw = string_at(record, &mut c, "LOGIN7 Password")?;
        l.password = text("LOGIN7 Password", deobfuscate(&pw))?;
        l.app_name = text(
            "LOGIN7 AppName",
            string_at(record, &mut c, "LOGIN7 AppName")?,
        )?;
        l.server_name = text(
            "LOGIN7 ServerName",
            string_at(record, &mut c, "LOGIN7 ServerName")?,
        )?;
        // The Extension slot counts bytes, not units.
        let ib_ext = c.u16_le("LOGIN7 ibExtension")? as usize;
        let cb_ext = c.u16_le("LOGIN7 cbExtension")? as usize;
        l.library_name = text(
            "LOGIN7 CltIntName",
            string_at(record, &mut c, "LOGIN7 CltIntName")?,
        )?;
        l.language = text(
            "LOGIN7 Language",
            string_at(record, &mut c, "LOGIN7 Language")?,
        )?;
        l.database = text(
            "LOGIN7 Database",
            string_at(record, &mut c, "LOGIN7 Database")?,
        )?;
        l.client_id = c.array("LOGIN7 ClientID")?;
        let ib_sspi = c.u16_le("LOGIN7 ibSSPI")? as usize;
        let cb_sspi = c.u16_le("LOGIN7 cbSSPI")? as usize;
        l.attach_db_file = text(
            "LOGIN7 AtchDBFile",
            string_at(record, &mut c, "LOGIN7 AtchDBFile")?,
        )?;
        let mut sspi_len = cb_sspi;
        if tds_version::is_72_plus(l.tds_version) {
            if length < HEADER_72 {
                return Err(CodecError::truncated(
                    "LOGIN7 7.2 header",
                    HEADER_72,
                    length,
                ));
            }
            let cp = string_at(record, &mut c, "LOGIN7 ChangePassword")?;
            l.change_password = text("LOGIN7 ChangePassword", deobfuscate(&cp))?;
            let long = c.u32_le("LOGIN7 cbSSPILong")? as usize;
            if cb_sspi == 0xFFFF {
                sspi_len = long;
            }
        }
        if sspi_len > 0 {
            if ib_sspi + sspi_len > record.len() {
                return Err(CodecError::invalid(
                    "LOGIN7 SSPI",
                    "data lies outside the record",
                ));
            }
            l.sspi = record[ib_sspi..ib_sspi + sspi_len].to_vec();
        }
        if l.option_flags3 & OPTION_FLAGS3_EXTENSION != 0 {
            if cb_ext != 4 || ib_ext + 4 > record.len() {
                return Err(CodecError::invalid(
                    "LOGIN7 Extension",
                    format!("fExtension set but the slot is ({ib_ext}, {cb_ext})"),
                ));
            }
            let mut p = Cursor::new(&record[ib_ext..]);
            let at = p.u32_le("LOGIN7 FeatureExt offset")? as usize;
            if at >= record.len() {
                return Err(CodecError::invalid(
                    "LOGIN7 FeatureExt offset",
                    format!("{at} lies outside the {length}-byte record"),
                ));
            }
            l.features = Some(decode_features(&record[at..])?);
        }
        Ok(l)
    }

    /// Encodes the record in table order; 7.2+ versions get the 94-byte header.
    pub fn encode(&self) -> Vec<u8> {
        let v72 = tds_version::is_72_plus(self.tds_version);
        let header = if v72 { HEADER_72 } else { HEADER_71 };
        let mut table: Vec<u8> = Vec::with_capacity(header);
        let mut data: Vec<u8> = Vec::new();
        let put = |table: &mut Vec<u8>, data: &mut Vec<u8>, bytes: &[u8], units: usize| {
            table.extend_from_slice(&((header + data.len()) as u16).to_le_bytes());
            table.extend_from_slice(&(units as u16).to_le_bytes());
            data.extend_from_slice(bytes);
        };
        let s = |t: &str| ucs2::encode(t);
        put(
            &mut table,
            &mut data,
            &s(&self.hostname),
            ucs2::units(&self.hostname),
        );
        put(
            &mut table,
            &mut data,
            &s(&self.username),
            ucs2::units(&self.username),
        );
        put(
            &mut table,
            &mut data,
            &obfuscate(&s(&self.password)),
            ucs2::units(&self.password),
        );
        put(
            &mut table,
            &mut data,
            &s(&self.app_name),
            ucs2::units(&self.app_name),
        );
        put(
            &mut table,
            &mut data,
            &s(&self.server_name),
            ucs2::units(&self.server_name),
        );
        // Extension: a DWORD whose value is patched once the FeatureExt position is known.
        let ext_at = data.len();
        if self.features.is_some() {
            put(&mut table, &mut data, &[0, 0, 0, 0], 4);
        } else {
            put(&mut table, &mut data, &[], 0);
        }
        put(
            &mut table,
            &mut data,
            &s(&self.library_name),
            ucs2::units(&self.library_name),
        );
        put(
            &mut table,
            &mut data,
            &s(&self.language),
            ucs2::units(&self.language),
        );
        put(
            &mut table,
            &mut data,
            &s(&self.database),
            ucs2::units(&self.database),
        );
        table.extend_from_slice(&self.client_id);
        let sspi_short = if self.sspi.len() >= 0xFFFF && v72 {
            0xFFFF
        } else {
            self.sspi.len()
        };
        put(&mut table, &mut data, &self.sspi, sspi_short);
        put(
            &mut table,
            &mut data,
            &s(&self.attach_db_file),
            ucs2::units(&self.attach_db_file),
        );
        if v72 {
            put(
                &mut table,
                &mut data,
                &obfuscate(&s(&self.change_password)),
                ucs2::units(&self.change_password),
            );
            let long = if sspi_short == 0xFFFF {
                self.sspi.len() as u32
            } else {
                0
            };
            table.extend_from_slice(&long.to_le_bytes());
        }
        let mut flags3 = self.option_flags3;
        if let Some(features) = &self.features {
            flags3 |= OPTION_FLAGS3_EXTENSION;
            let at = (header + data.len()) as u32;
            data[ext_at..ext_at + 4].copy_from_slice(&at.to_le_bytes());
            data.extend_from_slice(&encode_features(features));
        }
        debug_assert_eq!(table.len() + FIXED_LEN, header);

        let total = (FIXED_LEN + table.len() + data.len()) as u32;
        let mut out = Vec::with_capacity(total as usize);
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&self.tds_version.to_le_bytes());
        out.extend_from_slice(&self.packet_size.to_le_bytes());
        out.extend_from_slice(&self.client_prog_ver.to_le_bytes());
        out.extend_from_slice(&self.client_pid.to_le_bytes());
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.extend_from_slice(&[
            self.option_flags1,
            self.option_flags2,
            self.type_flags,
            flags3,
        ]);
        out.extend_from_slice(&self.client_time_zone.to_le_bytes());
        out.extend_from_slice(&self.client_lcid.to_le_bytes());
        out.extend_from_slice(&table);
        out.extend_from_slice(&data);
        out
    }
}

fn decode_features(bytes: &[u8]) -> Result<Vec<Feature>, CodecError> {
    let mut c = Cursor::new(bytes);
    let mut out = Vec::new();
    loop {
        let id = c.u8("FeatureExt FeatureId")?;
        if id == FEATURE_TERMINATOR {
            return Ok(out);
        }
        if out.len() == MAX_FEATURES {
            return Err(CodecError::invalid("FeatureExt", "more than 32 features"));
        }
        let len = c.u32_le("FeatureExt FeatureDataLen")? as usize;
        let data = c.bytes("FeatureExt FeatureData", len)?;
        out.push(Feature {
            id,
            data: data.to_vec(),
        });
    }
}

fn encode_features(features: &[Feature]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in features {
        out.push(f.id);
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    out.push(FEATURE_TERMINATOR);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{self, PacketHeader, PacketType};
    use proptest::prelude::*;

    /// [MS-TDS] 4.2, "Login Request", byte for byte (a TDS 7.2 login as "sa", no password).
    const SPEC_4_2: [u8; 144] = [
        0x10, 0x01, 0x00, 0x90, 0x00, 0x00, 0x01, 0x00, 0x88, 0x00, 0x00, 0x00, 0x02, 0x00, 0x09,
        0x72, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xE0, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x04, 0x00, 0x00, 0x5E,
        0x00, 0x08, 0x00, 0x6E, 0x00, 0x02, 0x00, 0x72, 0x00, 0x00, 0x00, 0x72, 0x00, 0x07, 0x00,
        0x80, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x00, 0x04, 0x00, 0x88, 0x00, 0x00,
        0x00, 0x88, 0x00, 0x00, 0x00, 0x00, 0x50, 0x8B, 0xE2, 0xB7, 0x8F, 0x88, 0x00, 0x00, 0x00,
        0x88, 0x00, 0x00, 0x00, 0x88, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x73, 0x00, 0x6B,
        0x00, 0x6F, 0x00, 0x73, 0x00, 0x74, 0x00, 0x6F, 0x00, 0x76, 0x00, 0x31, 0x00, 0x73, 0x00,
        0x61, 0x00, 0x4F, 0x00, 0x53, 0x00, 0x51, 0x00, 0x4C, 0x00, 0x2D, 0x00, 0x33, 0x00, 0x32,
        0x00, 0x4F, 0x00, 0x44, 0x00, 0x42, 0x00, 0x43, 0x00,
    ];

    fn spec_4_2() -> Login7 {
        Login7 {
            tds_version: tds_version::V7_2,
            packet_size: 4096,
            client_prog_ver: 0x0700_0000,
            client_pid: 0x100,
            option_flags1: 0xE0,
            option_flags2: 0x03,
            client_lcid: 0x0409,
            hostname: "skostov1".into(),
            username: "sa".into(),
            app_name: "OSQL-32".into(),
            library_name: "ODBC".into(),
            client_id: [0x00, 0x50, 0x8B, 0xE2, 0xB7, 0x8F],
            ..Default::default()
        }
    }

    #[test]
    fn decodes_the_spec_example() {
        let h = PacketHeader::decode(&SPEC_4_2[..8], packet::MAX_PACKET_LEN).unwrap();
        assert_eq!(h.ty, PacketType::Login7);
        assert_eq!(Login7::decode(&SPEC_4_2[8..]).unwrap(), spec_4_2());
    }

    #[test]
    fn encodes_the_spec_example_byte_for_byte() {
        let bytes = packet::encode_message(PacketType::Login7, &spec_4_2().encode(), 4096, 0);
        assert_eq!(bytes, SPEC_4_2);
    }

    #[test]
    fn password_obfuscation_golden_bytes() {
        // "a" is 0x61 0x00 in UTF-16LE: 0x61 -> swap 0x16 -> ^A5 = 0xB3; 0x00 -> 0xA5.
        assert_eq!(obfuscate(&[0x61, 0x00]), [0xB3, 0xA5]);
        assert_eq!(deobfuscate(&[0xB3, 0xA5]), [0x61, 0x00]);
        let l = Login7 {
            tds_version: tds_version::V7_4,
            username: "tdsvip".into(),
            password: "secret".into(),
            ..Default::default()
        };
        let bytes = l.encode();
        // The clear-text password must not appear on the wire.
        let clear = ucs2::encode("secret");
        assert!(!bytes.windows(clear.len()).any(|w| w == clear));
        assert_eq!(Login7::decode(&bytes).unwrap().password, "secret");
    }

    #[test]
    fn seven_one_layout_has_no_change_password_fields() {
        let l = Login7 {
            tds_version: tds_version::V7_1,
            username: "u".into(),
            ..Default::default()
        };
        let bytes = l.encode();
        // ibHostName (first data offset) is the 7.1 header length.
        assert_eq!(u16::from_le_bytes([bytes[36], bytes[37]]), 86);
        assert_eq!(Login7::decode(&bytes).unwrap(), l);
    }

    #[test]
    fn feature_ext_round_trips() {
        let l = Login7 {
            tds_version: tds_version::V7_4,
            option_flags3: OPTION_FLAGS3_EXTENSION,
            username: "u".into(),
            features: Some(vec![
                Feature {
                    id: 0x0A,
                    data: vec![],
                },
                Feature {
                    id: 0x01,
                    data: vec![1, 2, 3],
                },
            ]),
            ..Default::default()
        };
        assert_eq!(Login7::decode(&l.encode()).unwrap(), l);
    }

    #[test]
    fn hostile_records_are_errors() {
        let good = spec_4_2().encode();
        // Length larger than the bytes present.
        let mut b = good.clone();
        b[0] = 0xFF;
        assert!(Login7::decode(&b).is_err());
        // UserName pointing past the end.
        let mut b = good.clone();
        b[40] = 0xF0;
        assert!(Login7::decode(&b).is_err());
        // Claimed unit count far beyond the record.
        let mut b = good.clone();
        b[42] = 0xFF;
        b[43] = 0xFF;
        assert!(Login7::decode(&b).is_err());
        // fExtension without a 4-byte Extension slot.
        let mut b = good;
        b[27] |= OPTION_FLAGS3_EXTENSION;
        assert!(Login7::decode(&b).is_err());
        assert!(Login7::decode(&[]).is_err());
    }

    fn arb_login() -> impl Strategy<Value = Login7> {
        (
            prop_oneof![
                Just(tds_version::V7_1),
                Just(tds_version::V7_2),
                Just(tds_version::V7_3B),
                Just(tds_version::V7_4)
            ],
            any::<u32>(),
            "[a-zA-Z0-9_é]{0,12}",
            ".{0,16}",
            "[a-z]{0,8}",
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::option::of(proptest::collection::vec(
                (0u8..0xFF, proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            )),
        )
            .prop_map(|(v, ps, user, pw, db, sspi, feats)| {
                let features = if v == tds_version::V7_4 {
                    feats.map(|f| {
                        f.into_iter()
                            .map(|(id, data)| Feature { id, data })
                            .collect()
                    })
                } else {
                    None
                };
                Login7 {
                    tds_version: v,
                    packet_size: ps,
                    option_flags3: if features.is_some() {
                        OPTION_FLAGS3_EXTENSION
                    } else {
                        0
                    },
                    username: user,
                    password: pw,
                    database: db,
                    sspi,
                    features,
                    ..Default::default()
                }
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Login7::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_logins(l in arb_login(), at in any::<usize>(), b in any::<u8>()) {
            let mut bytes = l.encode();
            let i = at % bytes.len();
            bytes[i] = b;
            let _ = Login7::decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(l in arb_login()) {
            prop_assert_eq!(Login7::decode(&l.encode()).unwrap(), l);
        }
    }
}
