//! Binary formats of the index; see docs/FORMAT.md for the byte layout.
//!
//! An *entry list* (version 1) — magic, version, then entries sorted by key with the key's
//! common prefix with the previous key elided — inside a standard LZ4 frame with content
//! checksum: the whole index of a format-1 folder, and a format-2 folder's snapshots. A format-2
//! *head* (version 2) names the folder's current generation (its snapshot and journal, see
//! `records` and `generations`). Decoding validates every length and never panics, whatever
//! bytes it is given.

use crate::codec;

/// Magic at the start of the (decompressed) index body.
pub const MAGIC: &[u8; 4] = b"RDIX";

/// The newest index format this build reads and writes (older ones it reads, and upgrades).
pub const FORMAT_VERSION: u8 = 2;

/// Version byte of an entry list (a format-1 index, a format-2 snapshot).
pub const ENTRY_LIST_VERSION: u8 = 1;

/// Largest decompressed index accepted (protects against decompression bombs).
const MAX_BODY: u64 = 4 << 30;

/// What a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File = 0,
    /// An explicit directory (it persists even when empty).
    Dir = 1,
    Symlink = 2,
    /// A FIFO, socket or device node; its `target` says which (see [`SpecialKind`]).
    Special = 3,
}

/// Set in an entry's kind byte when an access time follows its other fields.
const HAS_ATIME: u8 = 0x80;
/// Set in an entry's kind byte when extended attributes follow (after the access time).
const HAS_XATTRS: u8 = 0x40;

impl EntryKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::File),
            1 => Some(EntryKind::Dir),
            2 => Some(EntryKind::Symlink),
            3 => Some(EntryKind::Special),
            _ => None,
        }
    }

    /// Whether entries of this kind carry a `target` (a link target, a special file's type).
    pub fn has_target(self) -> bool {
        matches!(self, EntryKind::Symlink | EntryKind::Special)
    }
}

/// What a special entry is: its `target` is `fifo`, `socket`, `char MAJOR:MINOR` or
/// `block MAJOR:MINOR` (docs/FORMAT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialKind {
    Fifo,
    Socket,
    Char(u32, u32),
    Block(u32, u32),
}

impl SpecialKind {
    /// Parses an entry's `target`.
    pub fn parse(s: &str) -> Option<Self> {
        let dev = |d: &str| {
            let (major, minor) = d.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        };
        match s.split_once(' ') {
            None if s == "fifo" => Some(SpecialKind::Fifo),
            None if s == "socket" => Some(SpecialKind::Socket),
            Some(("char", d)) => dev(d).map(|(a, b)| SpecialKind::Char(a, b)),
            Some(("block", d)) => dev(d).map(|(a, b)| SpecialKind::Block(a, b)),
            _ => None,
        }
    }
}

impl std::fmt::Display for SpecialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecialKind::Fifo => f.write_str("fifo"),
            SpecialKind::Socket => f.write_str("socket"),
            SpecialKind::Char(a, b) => write!(f, "char {a}:{b}"),
            SpecialKind::Block(a, b) => write!(f, "block {a}:{b}"),
        }
    }
}

/// One key's entry. The blob name is `<folder>/<key>` (see `layout`), so it is not repeated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Uncompressed size of the value.
    pub size: u64,
    /// Bytes stored in the blob (compressed size).
    pub stored_size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time (content, attributes or name), nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
    /// Etag of the blob this entry describes.
    pub etag: String,
    /// Permission bits (0 means: use the mount's default).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Target of a symbolic link, what a special file is (empty for other kinds).
    pub target: String,
    /// Access time, nanoseconds since the Unix epoch, once set explicitly (`utimensat`, `touch
    /// -a`, `cp -a`); `None`: the access time is the modification time.
    pub atime_ns: Option<i64>,
    /// The file's own extended attributes (`user.*` names without the `user.` prefix, sorted by
    /// name), mirrored from its blob's metadata so that reading them needs no request.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A file entry with default attributes; ctime starts equal to mtime.
    pub fn file(size: u64, stored_size: u64, mtime_ns: i64, etag: impl Into<String>) -> Self {
        Entry {
            kind: EntryKind::File,
            size,
            stored_size,
            mtime_ns,
            ctime_ns: mtime_ns,
            etag: etag.into(),
            mode: 0,
            uid: 0,
            gid: 0,
            target: String::new(),
            atime_ns: None,
            xattrs: Vec::new(),
        }
    }

    /// The access time `stat` shows.
    pub fn atime(&self) -> i64 {
        self.atime_ns.unwrap_or(self.mtime_ns)
    }
}

/// The decoded index: keys in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    pub entries: super::entries::Entries,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexFormatError {
    #[error("the index is corrupt: {0}")]
    Corrupt(String),
    #[error("the index has format version {0}, newer than this remotedict understands (version {FORMAT_VERSION}); upgrade remotedict")]
    NewerVersion(u8),
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes the index body (not yet compressed).
pub fn encode_body(index: &Index) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + index.entries.len() * 48);
    out.extend_from_slice(MAGIC);
    out.push(ENTRY_LIST_VERSION);
    put_varint(&mut out, 0); // flags, reserved
    put_varint(&mut out, index.entries.len() as u64);
    let mut prev = String::new();
    for (key, e) in &index.entries {
        let k = key.as_bytes();
        let shared = prev.bytes().zip(k).take_while(|(a, b)| a == *b).count();
        put_varint(&mut out, shared as u64);
        put_bytes(&mut out, &k[shared..]);
        put_entry(&mut out, &e);
        prev = key;
    }
    out
}

/// An entry's fields (after its key), as entry lists and journal records hold them.
pub(super) fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    let mut kind = e.kind as u8;
    if e.atime_ns.is_some() {
        kind |= HAS_ATIME;
    }
    if !e.xattrs.is_empty() {
        kind |= HAS_XATTRS;
    }
    out.push(kind);
    put_varint(out, e.size);
    put_varint(out, e.stored_size);
    put_varint(out, zigzag(e.mtime_ns));
    put_varint(out, zigzag(e.ctime_ns));
    put_bytes(out, e.etag.as_bytes());
    put_varint(out, u64::from(e.mode));
    put_varint(out, u64::from(e.uid));
    put_varint(out, u64::from(e.gid));
    if e.kind.has_target() {
        put_bytes(out, e.target.as_bytes());
    }
    if let Some(atime) = e.atime_ns {
        put_varint(out, zigzag(atime));
    }
    if !e.xattrs.is_empty() {
        put_varint(out, e.xattrs.len() as u64);
        for (name, value) in &e.xattrs {
            put_bytes(out, name.as_bytes());
            put_bytes(out, value);
        }
    }
}

/// The bytes of a format-2 head blob naming generation `generation`.
pub fn encode_head(generation: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + generation.len());
    out.extend_from_slice(MAGIC);
    out.push(2);
    put_varint(&mut out, 0); // flags, reserved
    put_bytes(&mut out, generation.as_bytes());
    codec::compress(&out)
}

/// What the index blob of a folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Format 1: the whole index.
    Whole(Index),
    /// Format 2: the name of the current generation (snapshot and journal).
    Generation(String),
}

/// Decodes the bytes of an index blob (format 1 or 2).
pub fn decode_head(stored: &[u8]) -> Result<Head, IndexFormatError> {
    let body = decompress(stored)?;
    if body.len() < 5 || &body[..4] != MAGIC {
        return Err(IndexFormatError::Corrupt(
            "bad magic: this blob is not a remotedict index".into(),
        ));
    }
    match body[4] {
        1 => decode_body(&body).map(Head::Whole),
        2 => {
            let mut r = Reader { buf: &body, pos: 5 };
            let _flags = r.varint()?;
            let g = std::str::from_utf8(r.bytes()?)
                .map_err(|_| r.err("generation name is not UTF-8"))?
                .to_string();
            if !super::generations::valid_generation(&g) {
                return Err(r.err("invalid generation name"));
            }
            if r.pos != body.len() {
                return Err(r.err("trailing bytes after the head"));
            }
            Ok(Head::Generation(g))
        }
        0 => Err(IndexFormatError::Corrupt(
            "format version 0 does not exist".into(),
        )),
        v => Err(IndexFormatError::NewerVersion(v)),
    }
}

/// Encodes the index as the bytes of its blob: the body inside an LZ4 frame.
pub fn encode(index: &Index) -> Vec<u8> {
    codec::compress(&encode_body(index))
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn err(&self, what: &str) -> IndexFormatError {
        IndexFormatError::Corrupt(format!("{what} at byte {}", self.pos))
    }
    pub(super) fn byte(&mut self) -> Result<u8, IndexFormatError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }
    pub(super) fn varint(&mut self) -> Result<u64, IndexFormatError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7F);
            if shift == 63 && part > 1 {
                return Err(self.err("varint overflow"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }
    fn u32(&mut self) -> Result<u32, IndexFormatError> {
        u32::try_from(self.varint()?).map_err(|_| self.err("value out of range"))
    }
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], IndexFormatError> {
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("length past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Decodes an index body (already decompressed).
pub fn decode_body(buf: &[u8]) -> Result<Index, IndexFormatError> {
    if buf.len() < 5 || &buf[..4] != MAGIC {
        return Err(IndexFormatError::Corrupt(
            "bad magic: this blob is not a remotedict index".into(),
        ));
    }
    if buf[4] == 2 {
        return Err(IndexFormatError::Corrupt(
            "a format-2 head where an entry list was expected".into(),
        ));
    }
    if buf[4] > FORMAT_VERSION {
        return Err(IndexFormatError::NewerVersion(buf[4]));
    }
    if buf[4] == 0 {
        return Err(IndexFormatError::Corrupt(
            "format version 0 does not exist".into(),
        ));
    }
    let mut r = Reader { buf, pos: 5 };
    let _flags = r.varint()?;
    let count = r.varint()?;
    let mut entries = super::entries::SortedBuilder::default();
    let mut prev: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared =
            usize::try_from(r.varint()?).map_err(|_| r.err("prefix length out of range"))?;
        if shared > prev.len() {
            return Err(r.err("shared prefix longer than the previous key"));
        }
        let suffix = r.bytes()?;
        let mut key = prev[..shared].to_vec();
        key.extend_from_slice(suffix);
        if !prev.is_empty() && key <= prev {
            return Err(r.err("keys out of order"));
        }
        let entry = read_entry(&mut r)?;
        let key_str = std::str::from_utf8(&key).map_err(|_| r.err("key is not UTF-8"))?;
        if key_str.is_empty() {
            return Err(r.err("empty key"));
        }
        entries.push(key_str, &entry);
        prev = key;
    }
    if r.pos != buf.len() {
        return Err(r.err("trailing bytes after the last entry"));
    }
    Ok(Index {
        entries: entries.finish(),
    })
}

/// Reads an entry's fields (after its key), as [`put_entry`] wrote them.
pub(super) fn read_entry(r: &mut Reader<'_>) -> Result<Entry, IndexFormatError> {
    let kind_byte = r.byte()?;
    let kind = EntryKind::from_u8(kind_byte & !(HAS_ATIME | HAS_XATTRS))
        .ok_or_else(|| r.err("unknown entry kind"))?;
    let size = r.varint()?;
    let stored_size = r.varint()?;
    let mtime_ns = unzigzag(r.varint()?);
    let ctime_ns = unzigzag(r.varint()?);
    let etag = std::str::from_utf8(r.bytes()?)
        .map_err(|_| r.err("etag is not UTF-8"))?
        .to_string();
    let mode = r.u32()?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let target = if kind.has_target() {
        std::str::from_utf8(r.bytes()?)
            .map_err(|_| r.err("link target is not UTF-8"))?
            .to_string()
    } else {
        String::new()
    };
    let atime_ns = if kind_byte & HAS_ATIME != 0 {
        Some(unzigzag(r.varint()?))
    } else {
        None
    };
    let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
    if kind_byte & HAS_XATTRS != 0 {
        let count = r.varint()?;
        for _ in 0..count {
            let name = std::str::from_utf8(r.bytes()?)
                .map_err(|_| r.err("attribute name is not UTF-8"))?
                .to_string();
            let value = r.bytes()?.to_vec();
            if xattrs.last().is_some_and(|(last, _)| *last >= name) {
                return Err(r.err("attribute names out of order"));
            }
            xattrs.push((name, value));
        }
    }
    Ok(Entry {
        kind,
        size,
        stored_size,
        mtime_ns,
        ctime_ns,
        etag,
        mode,
        uid,
        gid,
        target,
        atime_ns,
        xattrs,
    })
}

/// Decodes the bytes of an entry list blob (a format-1 index, a format-2 snapshot).
pub fn decode(stored: &[u8]) -> Result<Index, IndexFormatError> {
    decode_body(&decompress(stored)?)
}

/// The decompressed body of an index blob.
fn decompress(stored: &[u8]) -> Result<Vec<u8>, IndexFormatError> {
    if !codec::is_lz4(stored) {
        return Err(IndexFormatError::Corrupt(
            "the index blob is not an LZ4 frame".into(),
        ));
    }
    let mut body = Vec::new();
    let dec = codec::decoder(stored).map_err(|e| IndexFormatError::Corrupt(e.to_string()))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(dec, MAX_BODY + 1), &mut body)
        .map_err(|e| IndexFormatError::Corrupt(format!("LZ4 frame: {e}")))?;
    if body.len() as u64 > MAX_BODY {
        return Err(IndexFormatError::Corrupt(
            "decompressed index larger than 4 GiB".into(),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Index {
        let mut index = Index::default();
        for i in 0..n {
            let mut e = Entry::file(
                i as u64 * 1000,
                i as u64 * 300,
                1_700_000_000_000_000_000 + i as i64,
                format!("\"0x8DC{i:013X}\""),
            );
            e.mode = 0o644;
            e.uid = 1000;
            if i % 10 == 0 {
                e.kind = EntryKind::Dir;
            }
            if i % 10 == 5 {
                e.kind = EntryKind::Symlink;
                e.target = format!("../target/{i}");
            }
            if i % 4 == 1 {
                e.atime_ns = Some(-5 - i as i64);
            }
            if i % 9 == 2 {
                e.xattrs = vec![
                    ("a".into(), vec![0, 1, 2]),
                    ("mime_type".into(), b"text".to_vec()),
                ];
            }
            if i % 10 == 6 {
                e.kind = EntryKind::Special;
                e.target = SpecialKind::Char(1, i as u32).to_string();
            }
            e.ctime_ns = e.mtime_ns + 7;
            index
                .entries
                .insert(format!("dir{}/file-{i:06}.dat", i % 7), e);
        }
        index
    }

    #[test]
    fn round_trips() {
        for n in [0, 1, 2, 1000] {
            let idx = sample(n);
            assert_eq!(decode(&encode(&idx)).unwrap(), idx);
        }
        let mut idx = Index::default();
        let mut e = Entry::file(u64::MAX, 0, i64::MIN, "");
        e.mode = u32::MAX;
        idx.entries.insert("é/ü 日本".into(), e.clone());
        e.mtime_ns = -1;
        idx.entries.insert("é".into(), e);
        assert_eq!(decode(&encode(&idx)).unwrap(), idx);
    }

    #[test]
    fn newer_version_is_refused_clearly() {
        let mut body = encode_body(&sample(3));
        body[4] = FORMAT_VERSION + 1;
        let err = decode(&codec::compress(&body)).unwrap_err();
        assert_eq!(err, IndexFormatError::NewerVersion(FORMAT_VERSION + 1));
        assert!(err.to_string().contains("upgrade"));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let body = encode_body(&sample(20));
        for cut in 0..body.len() {
            assert!(
                decode_body(&body[..cut]).is_err(),
                "truncated at {cut} decoded"
            );
        }
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] ^= 0x80;
            let _ = decode_body(&b);
        }
        assert!(decode(b"not an index").is_err());
        let mut stored = encode(&sample(20));
        let n = stored.len();
        stored[n - 2] ^= 1;
        assert!(
            decode(&stored).is_err(),
            "the frame checksum must catch a flipped bit"
        );
    }
}
