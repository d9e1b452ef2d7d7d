//! Random access into our LZ4 values: a seek table after the frame.
//!
//! Values are written as one LZ4 frame of independent 1 MiB blocks, followed by an LZ4 *skippable*
//! frame (standard decoders skip it) holding the stored offset of every block. A reader that
//! knows the value's uncompressed and stored sizes (from the index) can fetch the table with one
//! ranged GET of the blob's tail, then fetch and decode only the blocks a read needs.
//!
//! Skippable frame layout (all little-endian): magic `0x184D2A5E`, u32 payload length, payload:
//! `RDSK`, u8 version (1), u32 block size, u64 uncompressed size, u32 block count N, N × u64
//! stored offset of each block's 4-byte size word, u64 stored offset of the frame's end mark.

use std::io;

/// Magic of the skippable frame holding the seek table.
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const TAG: &[u8; 4] = b"RDSK";
const VERSION: u8 = 1;
/// Uncompressed bytes per block (the codec's frame block size).
pub const BLOCK_SIZE: u64 = 1 << 20;
const UNCOMPRESSED_BIT: u32 = 0x8000_0000;

/// Where each block of a value lies in its blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeekTable {
    pub block_size: u64,
    pub content_size: u64,
    /// Stored offset of each block's size word.
    pub blocks: Vec<u64>,
    /// Stored offset of the frame's end mark (where the last block ends).
    pub frame_end: u64,
    /// The blob is the value itself, not an LZ4 frame (raw bytes written by another tool): block
    /// `i` is stored bytes `i * block_size ..` as they are, with no size word ([`Self::for_raw`]).
    pub raw: bool,
}

impl SeekTable {
    /// The table of a raw blob of `size` bytes: blocks of [`BLOCK_SIZE`] read by range.
    pub fn for_raw(size: u64) -> SeekTable {
        SeekTable {
            block_size: BLOCK_SIZE,
            content_size: size,
            blocks: (0..size.div_ceil(BLOCK_SIZE))
                .map(|i| i * BLOCK_SIZE)
                .collect(),
            frame_end: size,
            raw: true,
        }
    }

    /// Stored byte range of blocks `first..=last`.
    pub fn stored_range(&self, first: usize, last: usize) -> std::ops::Range<u64> {
        let end = self.blocks.get(last + 1).copied().unwrap_or(self.frame_end);
        self.blocks[first]..end
    }

    /// Uncompressed length of block `i` (the last one may be short; 0 past the end).
    pub fn block_len(&self, i: usize) -> u64 {
        self.block_size
            .min(self.content_size.saturating_sub(i as u64 * self.block_size))
    }

    /// Encodes the table as a skippable frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let payload_len = 4 + 1 + 4 + 8 + 4 + 8 * self.blocks.len() + 8;
        let mut out = Vec::with_capacity(8 + payload_len);
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        out.extend_from_slice(TAG);
        out.push(VERSION);
        out.extend_from_slice(&(self.block_size as u32).to_le_bytes());
        out.extend_from_slice(&self.content_size.to_le_bytes());
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend_from_slice(&self.frame_end.to_le_bytes());
        out
    }

    /// Length of the skippable frame of a value of `content_size` bytes: a reader computes the
    /// tail range to fetch from the sizes in the index alone.
    pub fn frame_len(content_size: u64) -> u64 {
        let n = content_size.div_ceil(BLOCK_SIZE);
        8 + 4 + 1 + 4 + 8 + 4 + 8 * n + 8
    }

    /// Parses a skippable frame; `None` if it is not one of ours or is inconsistent.
    pub fn from_frame(b: &[u8]) -> Option<SeekTable> {
        let u32_at = |i: usize| {
            b.get(i..i + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
        };
        if u32_at(0)? != SKIPPABLE_MAGIC || b.get(8..12)? != TAG || *b.get(12)? != VERSION {
            return None;
        }
        let block_size = u64::from(u32_at(13)?);
        let content_size = u64_at(17)?;
        let n = u32_at(25)? as usize;
        if block_size == 0
            || n as u64 != content_size.div_ceil(block_size)
            || b.len() != 29 + 8 * n + 8
        {
            return None;
        }
        let blocks: Vec<u64> = (0..n).map(|i| u64_at(29 + 8 * i)).collect::<Option<_>>()?;
        let frame_end = u64_at(29 + 8 * n)?;
        let ordered =
            blocks.windows(2).all(|w| w[0] < w[1]) && blocks.last().is_none_or(|&l| l < frame_end);
        ordered.then_some(SeekTable {
            raw: false,
            block_size,
            content_size,
            blocks,
            frame_end,
        })
    }
}

/// Follows an LZ4 frame as it is written and notes where each block starts.
#[derive(Debug, Default)]
pub struct FrameScanner {
    pos: u64,
    state: ScanState,
    word: [u8; 4],
    have: usize,
    pub blocks: Vec<u64>,
    pub frame_end: Option<u64>,
}

#[derive(Debug, Default)]
enum ScanState {
    /// Magic, FLG, BD, HC: our frames carry no content size and no dictionary id.
    #[default]
    Header,
    SizeWord,
    Body(u64),
    Trailer(u64),
    Done,
}

impl FrameScanner {
    /// Bytes of header of the frames `codec::frame_info` describes.
    const HEADER: u64 = 7;

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                ScanState::Header => {
                    let take = (Self::HEADER - self.pos).min(data.len() as u64) as usize;
                    self.advance(take, &mut data);
                    if self.pos == Self::HEADER {
                        self.state = ScanState::SizeWord;
                    }
                }
                ScanState::SizeWord => {
                    if self.have == 0 {
                        self.blocks.push(self.pos);
                    }
                    let take = (4 - self.have).min(data.len());
                    self.word[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    self.advance(take, &mut data);
                    if self.have == 4 {
                        self.have = 0;
                        let word = u32::from_le_bytes(self.word);
                        let len = u64::from(word & !UNCOMPRESSED_BIT);
                        if word == 0 {
                            // The end mark is not a block.
                            self.blocks.pop();
                            self.frame_end = Some(self.pos - 4);
                            self.state = ScanState::Trailer(4); // content checksum
                        } else {
                            self.state = ScanState::Body(len);
                        }
                    }
                }
                ScanState::Body(left) | ScanState::Trailer(left) => {
                    let take = left.min(data.len() as u64) as usize;
                    self.advance(take, &mut data);
                    let left = left - take as u64;
                    self.state = match (&self.state, left) {
                        (ScanState::Body(_), 0) => ScanState::SizeWord,
                        (ScanState::Body(_), l) => ScanState::Body(l),
                        (_, 0) => ScanState::Done,
                        (_, l) => ScanState::Trailer(l),
                    };
                }
                ScanState::Done => return,
            }
        }
    }

    fn advance(&mut self, n: usize, data: &mut &[u8]) {
        self.pos += n as u64;
        *data = &data[n..];
    }

    /// The seek table of the frame seen, once it has ended.
    pub fn table(&self, content_size: u64) -> Option<SeekTable> {
        let frame_end = self.frame_end?;
        (self.blocks.len() as u64 == content_size.div_ceil(BLOCK_SIZE)).then(|| SeekTable {
            raw: false,
            block_size: BLOCK_SIZE,
            content_size,
            blocks: self.blocks.clone(),
            frame_end,
        })
    }
}

/// Decodes one stored block (size word + data) into at most `max` bytes; a block stored raw is
/// returned in place, without a copy.
pub fn decode_block(stored: &[u8], max: usize) -> io::Result<std::borrow::Cow<'_, [u8]>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let word = stored
        .get(..4)
        .ok_or_else(|| bad("block shorter than its size word"))?;
    let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    let len = (word & !UNCOMPRESSED_BIT) as usize;
    let data = stored
        .get(4..4 + len)
        .ok_or_else(|| bad("block shorter than its size word says"))?;
    if word & UNCOMPRESSED_BIT != 0 {
        if len > max {
            return Err(bad("raw block larger than the block size"));
        }
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut out = vec![0u8; max];
    let n = lz4_flex::block::decompress_into(data, &mut out)
        .map_err(|e| bad(&format!("LZ4 block: {e}")))?;
    out.truncate(n);
    Ok(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use std::io::Write;

    fn encode_with_table(data: &[u8]) -> (Vec<u8>, SeekTable) {
        struct Tee(Vec<u8>, FrameScanner);
        impl Write for Tee {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.feed(b);
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut enc = codec::encoder(Tee(Vec::new(), FrameScanner::default()));
        enc.write_all(data).unwrap();
        let Tee(mut bytes, scanner) = enc.finish().unwrap();
        let table = scanner.table(data.len() as u64).unwrap();
        bytes.extend(table.to_frame());
        (bytes, table)
    }

    #[test]
    fn blocks_are_found_and_decode_on_their_own() {
        let data: Vec<u8> = (0..3_500_000u32)
            .map(|i| ((i / 7) % 251) as u8 ^ (i % 3) as u8)
            .collect();
        let (bytes, table) = encode_with_table(&data);
        assert_eq!(table.blocks.len(), 4);
        for i in 0..4 {
            let r = table.stored_range(i, i);
            let block = decode_block(
                &bytes[r.start as usize..r.end as usize],
                BLOCK_SIZE as usize,
            )
            .unwrap();
            let want = &data[i * (1 << 20)..((i + 1) << 20).min(data.len())];
            assert!(*block == *want, "block {i}");
        }
        // The table is found from the sizes alone, and standard decoding skips it.
        let tail = &bytes[bytes.len() - SeekTable::frame_len(data.len() as u64) as usize..];
        assert_eq!(SeekTable::from_frame(tail), Some(table));
        assert_eq!(codec::decompress(&bytes).unwrap(), data);
    }

    #[test]
    fn incompressible_blocks_are_stored_raw_and_still_found() {
        let mut x = 1u64;
        let data: Vec<u8> = (0..2_200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (bytes, table) = encode_with_table(&data);
        let r = table.stored_range(1, 2);
        let two = &bytes[r.start as usize..r.end as usize];
        let first = decode_block(two, BLOCK_SIZE as usize).unwrap();
        assert!(*first == data[1 << 20..2 << 20]);
    }

    #[test]
    fn garbage_tables_are_refused() {
        assert_eq!(SeekTable::from_frame(b"nonsense"), None);
        let t = SeekTable {
            raw: false,
            block_size: BLOCK_SIZE,
            content_size: 5,
            blocks: vec![7],
            frame_end: 20,
        };
        let mut f = t.to_frame();
        assert_eq!(SeekTable::from_frame(&f), Some(t));
        f[30] ^= 0xFF;
        let _ = SeekTable::from_frame(&f);
        assert!(decode_block(&[1, 0, 0], 10).is_err());
    }
}
