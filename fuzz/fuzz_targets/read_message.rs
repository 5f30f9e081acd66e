//! A whole byte stream through the framed reader, with the probe's tight limits: it must
//! return an error or a message within the limits, never panic or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::io::{Limits, read_message};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let limits = Limits {
        max_packet: 4096,
        max_message: 8192,
    };
    rt.block_on(async {
        let mut input = data;
        while let Ok(msg) = read_message(&mut input, limits).await {
            assert!(msg.payload.len() <= limits.max_message);
        }
    });
});
