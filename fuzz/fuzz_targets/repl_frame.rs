//! tds-sim's replication frame decoder (what a mirroring endpoint reads from the network
//! and what a restarted replica reads back from its log file): any bytes must decode to
//! frames or an error, never panic or allocate without bound; what decodes must re-encode
//! to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_sim::repl::codec::Frame;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match Frame::decode(&data[at..]) {
            Ok((f, n)) => {
                assert_eq!(f.encode(), data[at..at + n], "re-encoding differs");
                at += n;
            }
            Err(_) => break,
        }
    }
});
