//! INFO and ERROR ([MS-TDS] 2.2.7.13 and 2.2.7.10): server messages, with one layout.
//!
//! Login failure is ERROR 18456 class 14; "Changed database context" is INFO 5701. The line
//! number is a USHORT before TDS 7.2 and a LONG from 7.2 on; getting that wrong shifts every
//! token after it, which is why the encoder takes the version.

use super::{body, finish, ty, with_len};
use crate::CodecError;
use crate::cursor::{Cursor, put_b_varchar, put_us_varchar};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Info,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub number: i32,
    pub state: u8,
    /// Severity: 0–10 informational, 11–16 user errors (14 = login/permission), 20+ fatal.
    pub class: u8,
    pub text: String,
    pub server: String,
    pub procedure: String,
    pub line: u32,
}

impl Message {
    pub fn encode(&self, out: &mut Vec<u8>, v72: bool) {
        let t = match self.kind {
            MessageKind::Info => ty::INFO,
            MessageKind::Error => ty::ERROR,
        };
        with_len(out, t, |out| {
            out.extend_from_slice(&self.number.to_le_bytes());
            out.push(self.state);
            out.push(self.class);
            put_us_varchar(out, &self.text);
            put_b_varchar(out, &self.server);
            put_b_varchar(out, &self.procedure);
            if v72 {
                out.extend_from_slice(&self.line.to_le_bytes());
            } else {
                out.extend_from_slice(&(self.line.min(u16::MAX as u32) as u16).to_le_bytes());
            }
        });
    }

    pub(crate) fn decode(t: u8, c: &mut Cursor<'_>, v72: bool) -> Result<Self, CodecError> {
        let mut b = body(c, "INFO/ERROR")?;
        let out = Message {
            kind: if t == ty::ERROR {
                MessageKind::Error
            } else {
                MessageKind::Info
            },
            number: b.i32_le("INFO/ERROR Number")?,
            state: b.u8("INFO/ERROR State")?,
            class: b.u8("INFO/ERROR Class")?,
            text: b.us_varchar("INFO/ERROR MsgText")?,
            server: b.b_varchar("INFO/ERROR ServerName")?,
            procedure: b.b_varchar("INFO/ERROR ProcName")?,
            line: if v72 {
                b.u32_le("INFO/ERROR LineNumber")?
            } else {
                b.u16_le("INFO/ERROR LineNumber")? as u32
            },
        };
        finish(&b, "INFO/ERROR")?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Token, decode_stream};
    use proptest::prelude::*;

    #[test]
    fn golden_login_failed() {
        let m = Message {
            kind: MessageKind::Error,
            number: 18456,
            state: 1,
            class: 14,
            text: "Login failed for user 'x'.".into(),
            server: "S".into(),
            procedure: String::new(),
            line: 1,
        };
        let mut out = Vec::new();
        m.encode(&mut out, true);
        // 4 + 1 + 1 + (2 + 52) + (1 + 2) + 1 + 4 = 68 = 0x44.
        let mut expected = vec![0xAA, 0x44, 0x00, 0x18, 0x48, 0x00, 0x00, 0x01, 0x0E, 26, 0];
        for ch in "Login failed for user 'x'.".encode_utf16() {
            expected.extend_from_slice(&ch.to_le_bytes());
        }
        expected.extend_from_slice(&[1, 0x53, 0x00, 0, 1, 0, 0, 0]);
        assert_eq!(out, expected);
        assert_eq!(
            decode_stream(&out, true).unwrap(),
            vec![Token::Message(m.clone())]
        );
        // Below 7.2 the line number is two bytes.
        let mut short = Vec::new();
        m.encode(&mut short, false);
        assert_eq!(short.len(), out.len() - 2);
        assert_eq!(
            decode_stream(&short, false).unwrap(),
            vec![Token::Message(m)]
        );
    }

    proptest! {
        #[test]
        fn round_trip(n in any::<i32>(), class in any::<u8>(), text in ".{0,80}", line in any::<u16>(), v72 in any::<bool>(), info in any::<bool>()) {
            let m = Message {
                kind: if info { MessageKind::Info } else { MessageKind::Error },
                number: n, state: 1, class, text, server: "srv".into(), procedure: "p".into(), line: line as u32,
            };
            let mut out = Vec::new();
            m.encode(&mut out, v72);
            prop_assert_eq!(decode_stream(&out, v72).unwrap(), vec![Token::Message(m)]);
        }
    }
}
