//! The value decoder must never panic on any stored bytes (corrupt frames are errors), and
//! whatever it compresses it must decompress unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remotedict::codec;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decompress(data);
    let frame = codec::compress(data);
    assert_eq!(codec::decompress(&frame).expect("own frame decodes"), data);
});
