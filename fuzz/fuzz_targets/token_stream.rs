//! Server token streams (LOGINACK, ENVCHANGE, ERROR, COLMETADATA, ROW, DONE ...), as a
//! client would parse them; the first byte picks the TDS 7.2+ layout or the older one.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let _ = tds_codec::token::decode_stream(rest, flag & 1 == 1);
});
