//! COLMETADATA ([MS-TDS] 2.2.7.4): the column descriptions before the rows of a result set.
//!
//! UserType is a USHORT before TDS 7.2 and a ULONG from 7.2 on. Types are described by
//! [`TypeInfo`]; TEXT/NTEXT/IMAGE columns additionally carry a table name, which the decoder
//! reads (a multi-part name from 7.2 on) so that a stream from a real server can be parsed.

use super::ty;
use crate::CodecError;
use crate::cursor::{Cursor, put_b_varchar};
use crate::types::{TypeInfo, id};

pub mod flags {
    pub const NULLABLE: u16 = 0x0001;
    pub const CASE_SENSITIVE: u16 = 0x0002;
    /// fUpdateable = 0 (read-only) is bits 2–3 clear.
    pub const READ_ONLY: u16 = 0x0000;
    pub const IDENTITY: u16 = 0x0010;
    pub const COMPUTED: u16 = 0x0020;
}

/// More columns than SQL Server allows in a SELECT (4096) is hostile.
const MAX_COLUMNS: u16 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub user_type: u32,
    pub flags: u16,
    pub ty: TypeInfo,
    pub name: String,
}

impl Column {
    pub fn new(name: &str, ty: TypeInfo, flags: u16) -> Self {
        Column {
            user_type: 0,
            flags,
            ty,
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColMetaData {
    /// Empty encodes as the "no metadata" count 0xFFFF.
    pub columns: Vec<Column>,
}

impl ColMetaData {
    pub fn encode(&self, out: &mut Vec<u8>, v72: bool) {
        out.push(ty::COLMETADATA);
        if self.columns.is_empty() {
            out.extend_from_slice(&0xFFFFu16.to_le_bytes());
            return;
        }
        out.extend_from_slice(&(self.columns.len() as u16).to_le_bytes());
        for c in &self.columns {
            if v72 {
                out.extend_from_slice(&c.user_type.to_le_bytes());
            } else {
                out.extend_from_slice(&(c.user_type as u16).to_le_bytes());
            }
            out.extend_from_slice(&c.flags.to_le_bytes());
            c.ty.encode_into(out);
            if matches!(c.ty, TypeInfo::Long { .. }) {
                // An empty table name: one part of zero length (7.2+), or a bare US_VARCHAR.
                if v72 {
                    out.push(1);
                }
                out.extend_from_slice(&[0, 0]);
            }
            put_b_varchar(out, &c.name);
        }
    }

    pub(crate) fn decode(c: &mut Cursor<'_>, v72: bool) -> Result<Self, CodecError> {
        let count = c.u16_le("COLMETADATA Count")?;
        if count == 0xFFFF {
            return Ok(ColMetaData::default());
        }
        if count > MAX_COLUMNS {
            return Err(CodecError::invalid(
                "COLMETADATA Count",
                format!("{count} columns"),
            ));
        }
        let mut columns = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let user_type = if v72 {
                c.u32_le("COLMETADATA UserType")?
            } else {
                c.u16_le("COLMETADATA UserType")? as u32
            };
            let flags = c.u16_le("COLMETADATA Flags")?;
            let ty = TypeInfo::decode_from(c)?;
            if matches!(ty.type_id(), id::TEXT | id::NTEXT | id::IMAGE) {
                let parts = if v72 {
                    c.u8("COLMETADATA NumParts")?
                } else {
                    1
                };
                for _ in 0..parts {
                    c.us_varchar("COLMETADATA TableName")?;
                }
            }
            let name = c.b_varchar("COLMETADATA ColName")?;
            columns.push(Column {
                user_type,
                flags,
                ty,
                name,
            });
        }
        Ok(ColMetaData { columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Token, decode_stream};
    use proptest::prelude::*;

    #[test]
    fn golden_select_1() {
        // SELECT 1 on 7.4: one unnamed INTN(4) column, not nullable.
        let m = ColMetaData {
            columns: vec![Column::new("", TypeInfo::int_n(4), 0)],
        };
        let mut out = Vec::new();
        m.encode(&mut out, true);
        assert_eq!(
            out,
            [0x81, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x00, 0x26, 0x04, 0x00]
        );
        // Below 7.2 UserType is two bytes.
        out.clear();
        m.encode(&mut out, false);
        assert_eq!(out, [0x81, 0x01, 0x00, 0, 0, 0x00, 0x00, 0x26, 0x04, 0x00]);
    }

    #[test]
    fn golden_nvarchar_column() {
        let m = ColMetaData {
            columns: vec![Column::new(
                "name",
                TypeInfo::nvarchar(128),
                flags::NULLABLE,
            )],
        };
        let mut out = Vec::new();
        m.encode(&mut out, true);
        assert_eq!(
            out,
            [
                0x81, 0x01, 0x00, 0, 0, 0, 0, 0x01, 0x00, 0xE7, 0x00, 0x01, 0x09, 0x04, 0xD0, 0x00,
                0x34, 0x04, 0x6E, 0, 0x61, 0, 0x6D, 0, 0x65, 0
            ]
        );
        assert_eq!(
            decode_stream(&out, true).unwrap(),
            vec![Token::ColMetaData(m)]
        );
    }

    proptest! {
        #[test]
        fn round_trip(names in proptest::collection::vec("[a-z_]{0,12}", 1..6), v72 in any::<bool>()) {
            let m = ColMetaData {
                columns: names.iter().enumerate().map(|(i, n)| {
                    let ty = if i % 2 == 0 { TypeInfo::int_n(4) } else { TypeInfo::nvarchar(60) };
                    Column::new(n, ty, flags::NULLABLE)
                }).collect(),
            };
            let mut out = Vec::new();
            m.encode(&mut out, v72);
            prop_assert_eq!(decode_stream(&out, v72).unwrap(), vec![Token::ColMetaData(m)]);
        }
    }
}
