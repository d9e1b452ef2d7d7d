//! The index decoder must never panic, whatever bytes it is given; what it accepts must encode
//! back to an index that decodes to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remotedict::index::format::{decode_body, encode_body};

fuzz_target!(|data: &[u8]| {
    // The raw body (the common case for structure bugs) and the LZ4-wrapped blob.
    if let Ok(index) = decode_body(data) {
        let again = decode_body(&encode_body(&index)).expect("re-encoded index decodes");
        assert_eq!(again, index);
    }
    let _ = remotedict::index::decode(data);
});
