//! ROW ([MS-TDS] 2.2.7.19): one row of values in the order and types of the last COLMETADATA.
//!
//! A ROW has no length of its own, so it can only be read with the metadata that precedes it;
//! the encoder checks each value against its column so a mismatch is an error here rather
//! than a desynchronised stream at the client.

use super::colmetadata::ColMetaData;
use super::ty;
use crate::CodecError;
use crate::cursor::Cursor;
use crate::types::{Value, encode_value};

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<Value>,
}

impl Row {
    pub fn encode(&self, meta: &ColMetaData, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if self.values.len() != meta.columns.len() {
            return Err(CodecError::invalid(
                "ROW",
                format!(
                    "{} values for {} columns",
                    self.values.len(),
                    meta.columns.len()
                ),
            ));
        }
        out.push(ty::ROW);
        for (v, c) in self.values.iter().zip(&meta.columns) {
            encode_value(&c.ty, v, out)?;
        }
        Ok(())
    }

    pub(crate) fn decode(c: &mut Cursor<'_>, meta: &ColMetaData) -> Result<Self, CodecError> {
        let mut values = Vec::with_capacity(meta.columns.len());
        for col in &meta.columns {
            values.push(col.ty.decode_value(c)?);
        }
        Ok(Row { values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::colmetadata::Column;
    use crate::token::{Token, decode_stream};
    use crate::types::TypeInfo;
    use proptest::prelude::*;

    fn meta() -> ColMetaData {
        ColMetaData {
            columns: vec![
                Column::new("", TypeInfo::int_n(4), 0),
                Column::new("n", TypeInfo::nvarchar(60), 1),
            ],
        }
    }

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        Row {
            values: vec![Value::Int(1), Value::Text("OK".into())],
        }
        .encode(&meta(), &mut out)
        .unwrap();
        assert_eq!(
            out,
            [0xD1, 0x04, 0x01, 0, 0, 0, 0x04, 0x00, 0x4F, 0, 0x4B, 0]
        );
        out.clear();
        Row {
            values: vec![Value::Null, Value::Null],
        }
        .encode(&meta(), &mut out)
        .unwrap();
        assert_eq!(out, [0xD1, 0x00, 0xFF, 0xFF]);
        assert!(
            Row {
                values: vec![Value::Int(1)]
            }
            .encode(&meta(), &mut out)
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn round_trip(i in any::<i32>(), s in ".{0,30}") {
            let m = meta();
            let mut out = Vec::new();
            m.encode(&mut out, true);
            let row = Row { values: vec![Value::Int(i as i64), Value::Text(s)] };
            row.encode(&m, &mut out).unwrap();
            prop_assert_eq!(decode_stream(&out, true).unwrap(), vec![Token::ColMetaData(m), Token::Row(row)]);
        }
    }
}
