//! TYPE_INFO ([MS-TDS] 2.2.5.6) and the data values it describes (2.2.5.5 TYPE_VARBYTE).
//!
//! Two directions use this: `tds-sim` *writes* column types in COLMETADATA (INTN, NVARCHAR
//! with its collation), and *reads* RPC parameters that clients such as python-tds send with
//! `sp_executesql`, which can be of nearly any type. Parameters are decoded into a small
//! [`Value`] enum: integers, strings and binaries are interpreted, the rarer types (decimal,
//! date/time, money, GUID) are kept as their raw bytes, which is all a query recogniser needs.
//! Types the server would have to understand deeply to skip (UDT, TVP) are refused with an
//! error rather than guessed at.

use crate::cursor::Cursor;
use crate::{CodecError, ucs2};

/// Type ids ([MS-TDS] 2.2.5.4).
pub mod id {
    pub const NULL: u8 = 0x1F;
    pub const INT1: u8 = 0x30;
    pub const BIT: u8 = 0x32;
    pub const INT2: u8 = 0x34;
    pub const INT4: u8 = 0x38;
    pub const DATETIM4: u8 = 0x3A;
    pub const FLT4: u8 = 0x3B;
    pub const MONEY: u8 = 0x3C;
    pub const DATETIME: u8 = 0x3D;
    pub const FLT8: u8 = 0x3E;
    pub const MONEY4: u8 = 0x7A;
    pub const INT8: u8 = 0x7F;
    pub const GUID: u8 = 0x24;
    pub const INTN: u8 = 0x26;
    pub const BITN: u8 = 0x68;
    pub const DECIMALN: u8 = 0x6A;
    pub const NUMERICN: u8 = 0x6C;
    pub const FLTN: u8 = 0x6D;
    pub const MONEYN: u8 = 0x6E;
    pub const DATETIMN: u8 = 0x6F;
    pub const DATEN: u8 = 0x28;
    pub const TIMEN: u8 = 0x29;
    pub const DATETIME2N: u8 = 0x2A;
    pub const DATETIMEOFFSETN: u8 = 0x2B;
    pub const BIGVARBINARY: u8 = 0xA5;
    pub const BIGVARCHAR: u8 = 0xA7;
    pub const BIGBINARY: u8 = 0xAD;
    pub const BIGCHAR: u8 = 0xAF;
    pub const NVARCHAR: u8 = 0xE7;
    pub const NCHAR: u8 = 0xEF;
    pub const IMAGE: u8 = 0x22;
    pub const TEXT: u8 = 0x23;
    pub const NTEXT: u8 = 0x63;
    pub const XML: u8 = 0xF1;
    pub const SSVARIANT: u8 = 0x62;
}

/// The 5-byte collation ([MS-TDS] 2.2.5.1.2): LCID and flags in a little-endian DWORD, then
/// the SQL sort id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collation(pub [u8; 5]);

impl Collation {
    /// SQL_Latin1_General_CP1_CI_AS, SQL Server's default: LCID 0x0409, flags
    /// IgnoreCase|IgnoreKana|IgnoreWidth (0xD0), sort id 52.
    pub const SQL_LATIN1_GENERAL_CP1_CI_AS: Collation = Collation([0x09, 0x04, 0xD0, 0x00, 0x34]);
}

/// Length of a PLP (MAX) value's header meaning "NULL".
const PLP_NULL: u64 = u64::MAX;
/// USHORTLEN max length that marks a MAX type, sent as PLP.
const MAX_MARKER: u16 = 0xFFFF;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeInfo {
    /// A fixed-length type (INT4, BIT, DATETIME, NULL...): the id alone.
    Fixed(u8),
    /// A BYTELEN type (INTN, BITN, FLTN, GUID...) with its maximum length.
    ByteLen { ty: u8, max_len: u8 },
    /// DECIMALN / NUMERICN.
    Decimal {
        ty: u8,
        max_len: u8,
        precision: u8,
        scale: u8,
    },
    /// DATEN.
    Date,
    /// TIMEN, DATETIME2N, DATETIMEOFFSETN with their fractional-second scale.
    Scaled { ty: u8, scale: u8 },
    /// BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR; `max_len` in bytes, 0xFFFF for MAX.
    Chars {
        ty: u8,
        max_len: u16,
        collation: Collation,
    },
    /// BIGVARBINARY, BIGBINARY; `max_len` 0xFFFF for MAX.
    Binary { ty: u8, max_len: u16 },
    /// TEXT, NTEXT (with collation) and IMAGE (without).
    Long {
        ty: u8,
        max_len: u32,
        collation: Option<Collation>,
    },
    /// XML without a schema collection.
    Xml,
    /// SQL_VARIANT.
    Variant { max_len: u32 },
}

/// A decoded data value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bit(bool),
    Float(f64),
    Text(String),
    Binary(Vec<u8>),
    /// A value of a type this crate does not interpret (decimal, date/time, money, GUID,
    /// variant), as its raw bytes.
    Raw {
        ty: u8,
        bytes: Vec<u8>,
    },
}

fn fixed_len(ty: u8) -> Option<usize> {
    Some(match ty {
        id::NULL => 0,
        id::INT1 | id::BIT => 1,
        id::INT2 => 2,
        id::INT4 | id::DATETIM4 | id::FLT4 | id::MONEY4 => 4,
        id::MONEY | id::DATETIME | id::FLT8 | id::INT8 => 8,
        _ => return None,
    })
}

impl TypeInfo {
    /// INTN of 1, 2, 4 or 8 bytes, how SQL Server describes an int column or `SELECT 1`.
    pub fn int_n(bytes: u8) -> Self {
        TypeInfo::ByteLen {
            ty: id::INTN,
            max_len: bytes,
        }
    }

    /// NVARCHAR(`chars`) in the server's default collation.
    pub fn nvarchar(chars: u16) -> Self {
        TypeInfo::Chars {
            ty: id::NVARCHAR,
            max_len: chars.saturating_mul(2),
            collation: Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
        }
    }

    pub fn type_id(&self) -> u8 {
        match self {
            TypeInfo::Fixed(ty)
            | TypeInfo::ByteLen { ty, .. }
            | TypeInfo::Decimal { ty, .. }
            | TypeInfo::Scaled { ty, .. }
            | TypeInfo::Chars { ty, .. }
            | TypeInfo::Binary { ty, .. }
            | TypeInfo::Long { ty, .. } => *ty,
            TypeInfo::Date => id::DATEN,
            TypeInfo::Xml => id::XML,
            TypeInfo::Variant { .. } => id::SSVARIANT,
        }
    }

    pub(crate) fn decode_from(c: &mut Cursor<'_>) -> Result<Self, CodecError> {
        let ty = c.u8("TYPE_INFO type")?;
        if fixed_len(ty).is_some() {
            return Ok(TypeInfo::Fixed(ty));
        }
        Ok(match ty {
            id::GUID | id::INTN | id::BITN | id::FLTN | id::MONEYN | id::DATETIMN => {
                TypeInfo::ByteLen {
                    ty,
                    max_len: c.u8("TYPE_INFO length")?,
                }
            }
            id::DECIMALN | id::NUMERICN => TypeInfo::Decimal {
                ty,
                max_len: c.u8("TYPE_INFO length")?,
                precision: c.u8("TYPE_INFO precision")?,
                scale: c.u8("TYPE_INFO scale")?,
            },
            id::DATEN => TypeInfo::Date,
            id::TIMEN | id::DATETIME2N | id::DATETIMEOFFSETN => TypeInfo::Scaled {
                ty,
                scale: c.u8("TYPE_INFO scale")?,
            },
            id::BIGVARCHAR | id::BIGCHAR | id::NVARCHAR | id::NCHAR => TypeInfo::Chars {
                ty,
                max_len: c.u16_le("TYPE_INFO length")?,
                collation: Collation(c.array("TYPE_INFO collation")?),
            },
            id::BIGVARBINARY | id::BIGBINARY => TypeInfo::Binary {
                ty,
                max_len: c.u16_le("TYPE_INFO length")?,
            },
            id::TEXT | id::NTEXT | id::IMAGE => {
                let max_len = c.u32_le("TYPE_INFO length")?;
                let collation = if ty == id::IMAGE {
                    None
                } else {
                    Some(Collation(c.array("TYPE_INFO collation")?))
                };
                TypeInfo::Long {
                    ty,
                    max_len,
                    collation,
                }
            }
            id::XML => {
                if c.u8("TYPE_INFO XML schema present")? != 0 {
                    return Err(CodecError::invalid(
                        "TYPE_INFO",
                        "XML with a schema collection is not supported",
                    ));
                }
                TypeInfo::Xml
            }
            id::SSVARIANT => TypeInfo::Variant {
                max_len: c.u32_le("TYPE_INFO length")?,
            },
            other => {
                return Err(CodecError::invalid(
                    "TYPE_INFO",
                    format!("unsupported type 0x{other:02x}"),
                ));
            }
        })
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.type_id());
        match self {
            TypeInfo::Fixed(_) | TypeInfo::Date => {}
            TypeInfo::ByteLen { max_len, .. } => out.push(*max_len),
            TypeInfo::Decimal {
                max_len,
                precision,
                scale,
                ..
            } => out.extend_from_slice(&[*max_len, *precision, *scale]),
            TypeInfo::Scaled { scale, .. } => out.push(*scale),
            TypeInfo::Chars {
                max_len, collation, ..
            } => {
                out.extend_from_slice(&max_len.to_le_bytes());
                out.extend_from_slice(&collation.0);
            }
            TypeInfo::Binary { max_len, .. } => out.extend_from_slice(&max_len.to_le_bytes()),
            TypeInfo::Long {
                max_len, collation, ..
            } => {
                out.extend_from_slice(&max_len.to_le_bytes());
                if let Some(c) = collation {
                    out.extend_from_slice(&c.0);
                }
            }
            TypeInfo::Xml => out.push(0),
            TypeInfo::Variant { max_len } => out.extend_from_slice(&max_len.to_le_bytes()),
        }
    }

    fn is_plp(&self) -> bool {
        matches!(self, TypeInfo::Xml)
            || matches!(self, TypeInfo::Chars { ty, max_len: MAX_MARKER, .. } if *ty == id::NVARCHAR || *ty == id::BIGVARCHAR)
            || matches!(
                self,
                TypeInfo::Binary {
                    ty: id::BIGVARBINARY,
                    max_len: MAX_MARKER
                }
            )
    }

    /// Reads one value of this type as it appears in RPC parameters and ROW tokens
    /// (TEXT/NTEXT/IMAGE in the RPC form, without a text pointer).
    pub(crate) fn decode_value(&self, c: &mut Cursor<'_>) -> Result<Value, CodecError> {
        let ty = self.type_id();
        let data: Option<Vec<u8>> = if self.is_plp() {
            read_plp(c)?
        } else {
            match self {
                TypeInfo::Fixed(_) => {
                    let n = fixed_len(ty).unwrap_or(0);
                    if ty == id::NULL {
                        None
                    } else {
                        Some(c.bytes("value", n)?.to_vec())
                    }
                }
                TypeInfo::ByteLen { .. }
                | TypeInfo::Decimal { .. }
                | TypeInfo::Date
                | TypeInfo::Scaled { .. } => {
                    let n = c.u8("value length")? as usize;
                    if n == 0 {
                        None
                    } else {
                        Some(c.bytes("value", n)?.to_vec())
                    }
                }
                TypeInfo::Chars { .. } | TypeInfo::Binary { .. } => {
                    let n = c.u16_le("value length")?;
                    if n == 0xFFFF {
                        None
                    } else {
                        Some(c.bytes("value", n as usize)?.to_vec())
                    }
                }
                TypeInfo::Long { .. } | TypeInfo::Variant { .. } => {
                    let n = c.u32_le("value length")?;
                    if n == u32::MAX || (n == 0 && matches!(self, TypeInfo::Variant { .. })) {
                        None
                    } else {
                        Some(c.bytes("value", n as usize)?.to_vec())
                    }
                }
                // is_plp() covers XML; reading it as PLP here too keeps the match total.
                TypeInfo::Xml => read_plp(c)?,
            }
        };
        let Some(b) = data else {
            return Ok(Value::Null);
        };
        let int = |b: &[u8]| -> Result<i64, CodecError> {
            Ok(match b.len() {
                1 => b[0] as i64,
                2 => i16::from_le_bytes([b[0], b[1]]) as i64,
                4 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
                8 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                n => return Err(CodecError::invalid("integer value", format!("length {n}"))),
            })
        };
        Ok(match ty {
            id::INT1 | id::INT2 | id::INT4 | id::INT8 | id::INTN => Value::Int(int(&b)?),
            id::BIT | id::BITN => Value::Bit(b.first().is_some_and(|v| *v != 0)),
            id::FLT4 | id::FLT8 | id::FLTN => match b.len() {
                4 => Value::Float(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
                8 => Value::Float(f64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ])),
                n => return Err(CodecError::invalid("float value", format!("length {n}"))),
            },
            id::NVARCHAR | id::NCHAR | id::NTEXT | id::XML => {
                Value::Text(ucs2::decode("string value", &b)?)
            }
            // Single-byte text: the collation's code page is almost always 1252 for what a
            // probe sends; Latin-1 decoding is exact for ASCII and never fails.
            id::BIGVARCHAR | id::BIGCHAR | id::TEXT => {
                Value::Text(b.iter().map(|&c| c as char).collect())
            }
            id::BIGVARBINARY | id::BIGBINARY | id::IMAGE => Value::Binary(b),
            _ => Value::Raw { ty, bytes: b },
        })
    }
}

/// Reads a PLP value ([MS-TDS] 2.2.5.2.3): total length, then chunks until a zero chunk.
/// The total is only a hint (it may be "unknown"), so the chunks, each checked against the
/// bytes present, decide what is allocated.
fn read_plp(c: &mut Cursor<'_>) -> Result<Option<Vec<u8>>, CodecError> {
    let total = c.u64_le("PLP length")?;
    if total == PLP_NULL {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let n = c.u32_le("PLP chunk length")? as usize;
        if n == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(c.bytes("PLP chunk", n)?);
    }
}

/// Writes a value for a column of type `ty` in ROW: only what `tds-sim` sends (INTN and
/// non-MAX NVARCHAR, and NULL of either).
pub fn encode_value(ty: &TypeInfo, v: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match (ty, v) {
        (TypeInfo::ByteLen { ty: id::INTN, .. }, Value::Null) => out.push(0),
        (
            TypeInfo::ByteLen {
                ty: id::INTN,
                max_len,
            },
            Value::Int(i),
        ) => {
            let bytes = i.to_le_bytes();
            let n = *max_len as usize;
            if !matches!(n, 1 | 2 | 4 | 8) {
                return Err(CodecError::invalid("INTN", format!("length {n}")));
            }
            out.push(n as u8);
            out.extend_from_slice(&bytes[..n]);
        }
        (
            TypeInfo::Chars {
                ty: id::NVARCHAR,
                max_len,
                ..
            },
            Value::Null,
        ) if *max_len != MAX_MARKER => out.extend_from_slice(&0xFFFFu16.to_le_bytes()),
        (
            TypeInfo::Chars {
                ty: id::NVARCHAR,
                max_len,
                ..
            },
            Value::Text(s),
        ) if *max_len != MAX_MARKER => {
            let b = ucs2::encode(s);
            if b.len() > *max_len as usize {
                return Err(CodecError::invalid(
                    "NVARCHAR value",
                    format!("{} bytes exceed the column's {max_len}", b.len()),
                ));
            }
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(&b);
        }
        (t, v) => {
            return Err(CodecError::invalid(
                "value",
                format!("cannot encode {v:?} as type 0x{:02x}", t.type_id()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_type_infos() {
        let mut out = Vec::new();
        TypeInfo::int_n(4).encode_into(&mut out);
        assert_eq!(out, [0x26, 0x04]);
        out.clear();
        // NVARCHAR(128): 256 bytes, then the collation SQL Server sends for its default.
        TypeInfo::nvarchar(128).encode_into(&mut out);
        assert_eq!(out, [0xE7, 0x00, 0x01, 0x09, 0x04, 0xD0, 0x00, 0x34]);
        let mut c = Cursor::new(&out);
        assert_eq!(
            TypeInfo::decode_from(&mut c).unwrap(),
            TypeInfo::nvarchar(128)
        );
    }

    #[test]
    fn golden_values() {
        let mut out = Vec::new();
        encode_value(&TypeInfo::int_n(4), &Value::Int(1), &mut out).unwrap();
        assert_eq!(out, [0x04, 0x01, 0x00, 0x00, 0x00]);
        out.clear();
        encode_value(&TypeInfo::nvarchar(10), &Value::Text("AG".into()), &mut out).unwrap();
        assert_eq!(out, [0x04, 0x00, 0x41, 0x00, 0x47, 0x00]);
        out.clear();
        encode_value(&TypeInfo::nvarchar(10), &Value::Null, &mut out).unwrap();
        assert_eq!(out, [0xFF, 0xFF]);
        assert!(encode_value(&TypeInfo::nvarchar(1), &Value::Text("AG".into()), &mut out).is_err());
    }

    #[test]
    fn plp_values_are_reassembled() {
        let ty = TypeInfo::Chars {
            ty: id::NVARCHAR,
            max_len: 0xFFFF,
            collation: Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
        };
        // "AB" in two chunks, total length unknown (0xFFFFFFFFFFFFFFFE).
        let bytes = [
            0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0x41, 0, 2, 0, 0, 0, 0x42,
            0, 0, 0, 0, 0,
        ];
        let mut c = Cursor::new(&bytes);
        assert_eq!(ty.decode_value(&mut c).unwrap(), Value::Text("AB".into()));
        assert!(c.is_empty());
        let mut c = Cursor::new(&[0xFF; 8]);
        assert_eq!(ty.decode_value(&mut c).unwrap(), Value::Null);
        // A chunk claiming 4 GiB over a few bytes is an error, not an allocation.
        let mut c = Cursor::new(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1]);
        assert!(ty.decode_value(&mut c).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut c = Cursor::new(&bytes);
            if let Ok(t) = TypeInfo::decode_from(&mut c) {
                let _ = t.decode_value(&mut c);
            }
        }

        #[test]
        fn int_and_nvarchar_round_trip(i in any::<i32>(), s in ".{0,20}") {
            for (ty, v) in [(TypeInfo::int_n(4), Value::Int(i as i64)), (TypeInfo::nvarchar(100), Value::Text(s.clone()))] {
                let mut out = Vec::new();
                ty.encode_into(&mut out);
                encode_value(&ty, &v, &mut out).unwrap();
                let mut c = Cursor::new(&out);
                let t2 = TypeInfo::decode_from(&mut c).unwrap();
                prop_assert_eq!(&t2, &ty);
                prop_assert_eq!(t2.decode_value(&mut c).unwrap(), v);
            }
        }
    }
}
