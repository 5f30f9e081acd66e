//! LOGIN7 records from clients (tds-sim's side): offsets, lengths and the obfuscated
//! password all come from the peer. Whatever decodes must re-encode to an equal record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::Login7;

fuzz_target!(|data: &[u8]| {
    if let Ok(login) = Login7::decode(data) {
        let again = Login7::decode(&login.encode()).expect("re-encoded LOGIN7 must decode");
        assert_eq!(again, login);
    }
});
