//! Packet headers from any peer: decode must fail cleanly, and whatever decodes re-encodes
//! to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tds_codec::packet::{MAX_PACKET_LEN, PacketHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = PacketHeader::decode(data, MAX_PACKET_LEN) {
        assert_eq!(&h.encode()[..], &data[..8]);
        assert!(h.payload_len() <= MAX_PACKET_LEN);
    }
});
