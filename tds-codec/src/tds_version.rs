//! TDS protocol version numbers and the server's choice of version for a LOGIN7.
//!
//! The same 32-bit values travel little-endian in LOGIN7 and big-endian in LOGINACK
//! ([MS-TDS] 2.2.6.4 and 2.2.7.14); mixing the two up was a real interoperability bug, so the
//! values live here once and the byte order is chosen by the encoder of each message.

pub const V7_0: u32 = 0x7000_0000;
pub const V7_1: u32 = 0x7100_0001;
/// What SQL Server 2000 RTM clients send for 7.1.
pub const V7_1_RTM: u32 = 0x7100_0000;
pub const V7_2: u32 = 0x7209_0002;
pub const V7_3A: u32 = 0x730A_0003;
pub const V7_3B: u32 = 0x730B_0003;
pub const V7_4: u32 = 0x7400_0004;
/// What TDS 8.0 ("strict", TLS first) clients such as go-mssqldb put in LOGIN7; SQL Server
/// answers it with 7.4 in LOGINACK, so it is not a value [`negotiate`] accepts.
pub const V8_0: u32 = 0x0800_0000;

/// The version a server speaking 7.1 to 7.4 answers a client's LOGIN7 `TDSVersion` with:
/// the client's own value when it is one of the published ones, otherwise the highest
/// published version of the same major number, capped at 7.4. `None` for clients below 7.1.
pub fn negotiate(client: u32) -> Option<u32> {
    match client {
        V7_1 | V7_2 | V7_3A | V7_3B | V7_4 => Some(client),
        V7_1_RTM => Some(V7_1),
        c if c >> 24 < 0x71 => None,
        c if c >> 24 == 0x71 => Some(V7_1),
        c if c >> 24 == 0x72 => Some(V7_2),
        c if c >> 24 == 0x73 => Some(V7_3B),
        _ => Some(V7_4),
    }
}

/// 7.2 added ALL_HEADERS, 8-byte DONE row counts, 4-byte UserType and 4-byte LineNumber.
pub fn is_72_plus(v: u32) -> bool {
    v >> 24 >= 0x72
}

/// A short human name ("7.4") for logs.
pub fn name(v: u32) -> String {
    format!("{}.{}", (v >> 28) & 0xF, (v >> 24) & 0xF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_known_versions_and_caps_the_rest() {
        assert_eq!(negotiate(V7_4), Some(V7_4));
        assert_eq!(negotiate(V7_3A), Some(V7_3A));
        assert_eq!(negotiate(V7_1_RTM), Some(V7_1));
        assert_eq!(negotiate(0x7500_0000), Some(V7_4));
        assert_eq!(negotiate(0x7301_0000), Some(V7_3B));
        assert_eq!(negotiate(V7_0), None);
        assert_eq!(negotiate(0x0700_0000), None);
        assert_eq!(
            negotiate(V8_0),
            None,
            "8.0 is the server's to map, inside TLS only"
        );
        assert!(is_72_plus(V7_2) && !is_72_plus(V7_1));
        assert_eq!(name(V7_3B), "7.3");
    }
}
