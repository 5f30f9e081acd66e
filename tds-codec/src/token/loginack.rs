//! LOGINACK ([MS-TDS] 2.2.7.14): the token that makes a login succeed.
//!
//! Strict clients (FreeTDS, python-tds) treat a login without it as failed and check the
//! interface byte and the TDS version, which is written big-endian here although LOGIN7
//! carries it little-endian. The product version is the server's (e.g. 16.0.1000), with the
//! build number split into high and low bytes.

use super::{body, finish, ty, with_len};
use crate::CodecError;
use crate::cursor::{Cursor, put_b_varchar};

/// SQL_TSQL: the only interface value FreeTDS accepts from a TDS 7 server.
pub const INTERFACE_SQL_TSQL: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAck {
    pub interface: u8,
    pub tds_version: u32,
    pub prog_name: String,
    pub major: u8,
    pub minor: u8,
    pub build: u16,
}

impl LoginAck {
    pub fn encode(&self, out: &mut Vec<u8>) {
        with_len(out, ty::LOGINACK, |out| {
            out.push(self.interface);
            out.extend_from_slice(&self.tds_version.to_be_bytes());
            put_b_varchar(out, &self.prog_name);
            out.extend_from_slice(&[self.major, self.minor]);
            out.extend_from_slice(&self.build.to_be_bytes());
        });
    }

    /// Decodes the token after its type byte.
    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Self, CodecError> {
        let mut b = body(c, "LOGINACK")?;
        let out = LoginAck {
            interface: b.u8("LOGINACK Interface")?,
            tds_version: b.u32_be("LOGINACK TDSVersion")?,
            prog_name: b.b_varchar("LOGINACK ProgName")?,
            major: b.u8("LOGINACK MajorVer")?,
            minor: b.u8("LOGINACK MinorVer")?,
            build: u16::from_be_bytes(b.array("LOGINACK BuildNum")?),
        };
        finish(&b, "LOGINACK")?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds_version;
    use crate::token::{Token, decode_stream};
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        // TDS 7.4, "Microsoft SQL Server" (20 units), SQL Server 2022 RTM 16.0.1000 (0x03E8):
        // Length = 1 + 4 + 1 + 40 + 4 = 50 = 0x32.
        let ack = LoginAck {
            interface: INTERFACE_SQL_TSQL,
            tds_version: tds_version::V7_4,
            prog_name: "Microsoft SQL Server".into(),
            major: 16,
            minor: 0,
            build: 1000,
        };
        let mut out = Vec::new();
        ack.encode(&mut out);
        let mut expected = vec![0xAD, 0x32, 0x00, 0x01, 0x74, 0x00, 0x00, 0x04, 20];
        for ch in "Microsoft SQL Server".encode_utf16() {
            expected.extend_from_slice(&ch.to_le_bytes());
        }
        expected.extend_from_slice(&[0x10, 0x00, 0x03, 0xE8]);
        assert_eq!(out, expected);
        assert_eq!(
            decode_stream(&out, true).unwrap(),
            vec![Token::LoginAck(ack)]
        );
    }

    #[test]
    fn every_version_is_big_endian() {
        for (v, first) in [
            (tds_version::V7_1, 0x71),
            (tds_version::V7_2, 0x72),
            (tds_version::V7_3B, 0x73),
        ] {
            let mut out = Vec::new();
            LoginAck {
                interface: 1,
                tds_version: v,
                prog_name: String::new(),
                major: 0,
                minor: 0,
                build: 0,
            }
            .encode(&mut out);
            assert_eq!(out[4], first);
        }
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u32>(), name in ".{0,30}", major in any::<u8>(), build in any::<u16>()) {
            let ack = LoginAck { interface: 1, tds_version: v, prog_name: name, major, minor: 0, build };
            let mut out = Vec::new();
            ack.encode(&mut out);
            prop_assert_eq!(decode_stream(&out, true).unwrap(), vec![Token::LoginAck(ack)]);
        }
    }
}
