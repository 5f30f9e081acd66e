//! RPC requests (sp_executesql and its parameters, as python-tds sends them); the first
//! byte picks the TDS 7.2+ layout or the older one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::RpcRequest;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let _ = RpcRequest::decode(rest, flag & 1 == 1);
});
