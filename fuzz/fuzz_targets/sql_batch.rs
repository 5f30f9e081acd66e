//! SQLBatch payloads, with and without ALL_HEADERS (the first byte picks, as the
//! negotiated TDS version would): UCS-2 text of odd length, hostile header lengths.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::SqlBatch;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let _ = SqlBatch::decode(rest, flag & 1 == 1);
});
