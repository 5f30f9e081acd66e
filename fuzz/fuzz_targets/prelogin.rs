//! PRELOGIN payloads: what the probe parses from servers and tds-sim parses from clients.
//! Whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::Prelogin;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Prelogin::decode(data) {
        let again = Prelogin::decode(&p.encode()).expect("re-encoded PRELOGIN must decode");
        assert_eq!(again, p);
    }
});
