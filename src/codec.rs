//! LZ4 frames in and out: how a value's bytes become a blob's bytes and back.
//!
//! Values are written as standard LZ4 frames (independent 1 MiB blocks, content checksum on), so
//! Python's `lz4.frame` and the `lz4` tool read them. Reading streams: a [`decoder`] wraps any
//! `Read` of the stored bytes and yields the value, never holding it whole. A blob that does not
//! start with the LZ4 frame magic was written by another tool and is served raw.

use std::io::{self, BufRead, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

/// The LZ4 frame magic number, little-endian on disk.
pub const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// Blob metadata name holding a value's uncompressed size in decimal, so a size query needs no
/// download.
pub const META_SIZE: &str = "remotedict_size";

/// Blob metadata name telling how the blob is encoded (`lz4` for our values).
pub const META_ENCODING: &str = "remotedict_encoding";

/// The frame parameters remotedict writes.
pub fn frame_info() -> FrameInfo {
    FrameInfo::new()
        .block_size(BlockSize::Max1MB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true)
}

/// A streaming compressor writing one LZ4 frame into `out`; call `finish` to end the frame.
pub fn encoder<W: Write>(out: W) -> FrameEncoder<W> {
    FrameEncoder::with_frame_info(frame_info(), out)
}

/// Whether stored bytes beginning with `prefix` are an LZ4 frame.
pub fn is_lz4(prefix: &[u8]) -> bool {
    prefix.len() >= 4 && prefix[..4] == LZ4_MAGIC
}

/// Compresses a whole small value (the index, tests) into one frame.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut enc = encoder(Vec::with_capacity(data.len() / 2 + 64));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Decompresses stored bytes: LZ4 frames are decoded (checksums verified), anything else is
/// returned as it is.
pub fn decompress(stored: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decoder(stored)?.read_to_end(&mut out)?;
    Ok(out)
}

/// Wraps a reader of stored bytes into a reader of the value: LZ4 frames are decoded as they
/// stream in, other content passes through unchanged.
pub fn decoder<'a, R: Read + 'a>(mut stored: R) -> io::Result<Box<dyn BufRead + 'a>> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = stored.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let replay = io::Cursor::new(head[..got].to_vec()).chain(stored);
    if is_lz4(&head[..got]) {
        Ok(Box::new(FrameDecoder::new(replay)))
    } else {
        Ok(Box::new(io::BufReader::new(replay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_compresses() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let c = compress(&data);
        assert!(is_lz4(&c));
        assert!(
            c.len() < data.len() / 10,
            "repetitive data should compress: {}",
            c.len()
        );
        assert_eq!(decompress(&c).unwrap(), data);
    }

    #[test]
    fn empty_value_is_a_valid_frame() {
        let c = compress(b"");
        assert!(is_lz4(&c));
        assert_eq!(decompress(&c).unwrap(), b"");
    }

    #[test]
    fn non_lz4_is_served_raw() {
        for raw in [&b""[..], b"ab", b"plain text written by another tool"] {
            assert_eq!(decompress(raw).unwrap(), raw);
        }
    }

    #[test]
    fn corrupt_frame_is_an_error_not_a_panic() {
        let mut c = compress(&vec![7u8; 100_000]);
        let n = c.len();
        c[n / 2] ^= 0xFF;
        c[n - 1] ^= 0xFF;
        assert!(decompress(&c).is_err());
        assert!(
            decompress(&c[..n / 2]).is_err(),
            "a truncated frame must not decode"
        );
    }
}
