//! tds-sim's SQL recogniser: any text a client sends in a batch must parse or give an
//! error (which the simulator turns into an ERROR token), never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tds_sim::sql::parse_batch(text);
    }
});
