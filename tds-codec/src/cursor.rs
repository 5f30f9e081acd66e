//! A bounds-checked reader over untrusted bytes, shared by every decoder in this crate.
//!
//! Each accessor checks the remaining length before touching the slice and reports a
//! [`CodecError::Truncated`] naming the field, so decoders are written as straight-line
//! field reads with `?` and cannot index out of bounds or allocate from a claimed length
//! that the input does not back.

use crate::{CodecError, ucs2};

#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn bytes(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::truncated(what, n, self.remaining()));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(what, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16_le(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32_le(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32_be(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32_le(&mut self, what: &'static str) -> Result<i32, CodecError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64_le(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// B_VARCHAR: a one-byte count of UTF-16 units, then the text.
    pub(crate) fn b_varchar(&mut self, what: &'static str) -> Result<String, CodecError> {
        let n = self.u8(what)? as usize;
        ucs2::decode(what, self.bytes(what, n * 2)?)
    }

    /// US_VARCHAR: a two-byte count of UTF-16 units, then the text.
    pub(crate) fn us_varchar(&mut self, what: &'static str) -> Result<String, CodecError> {
        let n = self.u16_le(what)? as usize;
        ucs2::decode(what, self.bytes(what, n * 2)?)
    }

    /// B_VARBYTE: a one-byte length, then that many bytes.
    pub(crate) fn b_varbyte(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let n = self.u8(what)? as usize;
        self.bytes(what, n)
    }
}

/// Writes B_VARCHAR; text longer than 255 UTF-16 units is an encoder bug, so it is cut at a
/// unit boundary rather than producing a length byte that disagrees with the data.
pub(crate) fn put_b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// Writes US_VARCHAR, cut at 65535 units for the same reason as [`put_b_varchar`].
pub(crate) fn put_us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(65535).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// Writes B_VARBYTE (at most 255 bytes are kept).
pub(crate) fn put_b_varbyte(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u16_le("a").unwrap(), 0x0201);
        assert!(matches!(
            c.u16_le("b"),
            Err(CodecError::Truncated {
                what: "b",
                needed: 2,
                available: 1
            })
        ));
        // A B_VARCHAR claiming 200 units over 1 byte fails without allocating.
        let mut c = Cursor::new(&[200, 0x41]);
        assert!(c.b_varchar("name").is_err());
    }

    #[test]
    fn writers_keep_prefix_and_data_consistent() {
        let mut out = Vec::new();
        put_b_varchar(&mut out, &"x".repeat(300));
        assert_eq!(out[0], 255);
        assert_eq!(out.len(), 1 + 255 * 2);
        let mut c = Cursor::new(&out);
        assert_eq!(c.b_varchar("x").unwrap().len(), 255);
    }
}
