//! Transaction-manager requests (BEGIN / COMMIT / ROLLBACK from python-tds).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::TransactionManager;

fuzz_target!(|data: &[u8]| {
    let _ = TransactionManager::decode(data);
});
