//! The resident form of an index's entries: a sorted, packed run plus a small overlay of changes.
//!
//! A folder of a million keys is held as one byte buffer (about 40 bytes a key): keys sorted,
//! each with the prefix it shares with the one before elided (a full key every
//! [`RESTART`] entries, which a lookup finds by binary search), each followed by its entry in a
//! compact form (varints; an Azure etag as 8 bytes; ctime, mode, uid and gid left out when they
//! are the usual). Changes since the run was built live in an ordered overlay (an entry, or a
//! tombstone for a removed key of the run); when the overlay grows past a fraction of the run,
//! both are merged into a new run. Cloning is cheap (the run is shared), so the index's copies
//! (the last one read, the one with this host's changes) share it.
//!
//! Only this process reads this form; the formats other tools read are in `format`.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::format::{Entry, EntryKind};

/// A full key every this many entries of the run.
const RESTART: usize = 16;

/// The overlay is merged into the run once it holds more than this many keys and more than
/// 1/[`MERGE_FRACTION`] of the run.
const MERGE_MIN: usize = 4096;
const MERGE_FRACTION: usize = 8;

/// Flags of a packed entry (the low two bits are its kind).
const CTIME_IS_MTIME: u8 = 1 << 2;
const AZURE_ETAG: u8 = 1 << 3;
const NO_OWNER: u8 = 1 << 4;
const HAS_ATIME: u8 = 1 << 5;
const HAS_XATTRS: u8 = 1 << 6;

/// An immutable, sorted, packed run of entries.
#[derive(Default)]
struct Run {
    bytes: Vec<u8>,
    /// Byte offset of every [`RESTART`]-th entry (its key is whole).
    restarts: Vec<usize>,
    len: usize,
}

/// Keys and entries of an index, in key order.
#[derive(Clone, Default)]
pub struct Entries {
    run: Arc<Run>,
    /// Changes since the run was built: `None` removes a key of the run.
    overlay: imbl::OrdMap<String, Option<Entry>>,
    len: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
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

/// The number in an etag of Azure's form (`"0x8DC…"`: upper-case hex, no leading zero), if it
/// has that form exactly.
fn azure_etag(etag: &str) -> Option<u64> {
    let hex = etag.strip_prefix("\"0x")?.strip_suffix('"')?;
    let ok = (1..=16).contains(&hex.len())
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        && (hex.len() == 1 || !hex.starts_with('0'));
    ok.then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn pack_entry(out: &mut Vec<u8>, e: &Entry) {
    let azure = azure_etag(&e.etag);
    let mut flags = e.kind as u8;
    if e.ctime_ns == e.mtime_ns {
        flags |= CTIME_IS_MTIME;
    }
    if azure.is_some() {
        flags |= AZURE_ETAG;
    }
    if e.mode == 0 && e.uid == 0 && e.gid == 0 {
        flags |= NO_OWNER;
    }
    if e.atime_ns.is_some() {
        flags |= HAS_ATIME;
    }
    if !e.xattrs.is_empty() {
        flags |= HAS_XATTRS;
    }
    out.push(flags);
    put_varint(out, e.size);
    put_varint(out, e.stored_size);
    put_varint(out, zigzag(e.mtime_ns));
    if flags & CTIME_IS_MTIME == 0 {
        put_varint(out, zigzag(e.ctime_ns));
    }
    match azure {
        Some(v) => out.extend_from_slice(&v.to_le_bytes()),
        None => put_bytes(out, e.etag.as_bytes()),
    }
    if flags & NO_OWNER == 0 {
        put_varint(out, u64::from(e.mode));
        put_varint(out, u64::from(e.uid));
        put_varint(out, u64::from(e.gid));
    }
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

/// Reads what this module wrote (never other bytes: no validation needed).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.buf[self.pos];
        self.pos += 1;
        b
    }
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    fn bytes(&mut self) -> &'a [u8] {
        let len = self.varint() as usize;
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        s
    }
    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
    fn entry(&mut self) -> Entry {
        let flags = self.byte();
        let kind = match flags & 3 {
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::Special,
            _ => EntryKind::File,
        };
        let size = self.varint();
        let stored_size = self.varint();
        let mtime_ns = unzigzag(self.varint());
        let ctime_ns = if flags & CTIME_IS_MTIME != 0 {
            mtime_ns
        } else {
            unzigzag(self.varint())
        };
        let etag = if flags & AZURE_ETAG != 0 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
            self.pos += 8;
            format!("\"0x{:X}\"", u64::from_le_bytes(b))
        } else {
            self.text()
        };
        let (mode, uid, gid) = if flags & NO_OWNER != 0 {
            (0, 0, 0)
        } else {
            let mut id = || u32::try_from(self.varint()).unwrap_or(0);
            (id(), id(), id())
        };
        let target = if kind.has_target() {
            self.text()
        } else {
            String::new()
        };
        let atime_ns = (flags & HAS_ATIME != 0).then(|| unzigzag(self.varint()));
        let mut xattrs = Vec::new();
        if flags & HAS_XATTRS != 0 {
            for _ in 0..self.varint() {
                let name = self.text();
                xattrs.push((name, self.bytes().to_vec()));
            }
        }
        Entry {
            atime_ns,
            xattrs,
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
        }
    }
    fn skip_entry(&mut self) {
        let flags = self.byte();
        for _ in 0..3 {
            self.varint();
        }
        if flags & CTIME_IS_MTIME == 0 {
            self.varint();
        }
        if flags & AZURE_ETAG != 0 {
            self.pos += 8;
        } else {
            self.bytes();
        }
        if flags & NO_OWNER == 0 {
            for _ in 0..3 {
                self.varint();
            }
        }
        if flags & 3 >= EntryKind::Symlink as u8 {
            self.bytes();
        }
        if flags & HAS_ATIME != 0 {
            self.varint();
        }
        if flags & HAS_XATTRS != 0 {
            for _ in 0..self.varint() {
                self.bytes();
                self.bytes();
            }
        }
    }
}

/// Builds a run from entries given in strictly increasing key order.
#[derive(Default)]
struct RunBuilder {
    run: Run,
    prev: Vec<u8>,
}

impl RunBuilder {
    fn push(&mut self, key: &str, e: &Entry) {
        let k = key.as_bytes();
        let out = &mut self.run.bytes;
        let shared = if self.run.len.is_multiple_of(RESTART) {
            self.run.restarts.push(out.len());
            0
        } else {
            self.prev.iter().zip(k).take_while(|(a, b)| a == b).count()
        };
        put_varint(out, shared as u64);
        put_bytes(out, &k[shared..]);
        pack_entry(out, e);
        self.prev.clear();
        self.prev.extend_from_slice(k);
        self.run.len += 1;
    }
    fn finish(mut self) -> Run {
        self.run.bytes.shrink_to_fit();
        self.run.restarts.shrink_to_fit();
        self.run
    }
}

/// Builds [`Entries`] from keys given in strictly increasing order (the caller checks it).
#[derive(Default)]
pub(super) struct SortedBuilder(RunBuilder);

impl SortedBuilder {
    pub(super) fn push(&mut self, key: &str, e: &Entry) {
        self.0.push(key, e);
    }
    pub(super) fn finish(self) -> Entries {
        let run = self.0.finish();
        let len = run.len;
        Entries {
            run: Arc::new(run),
            overlay: imbl::OrdMap::new(),
            len,
        }
    }
}

/// A position in a run: the next entry to read (its key may be loaded already).
struct Cursor<'a> {
    run: &'a Run,
    /// Offset of the next entry to read (of its fields when `loaded`).
    pos: usize,
    /// Index of the next entry to read.
    at: usize,
    /// The key of the entry read last, or of the next one when `loaded`.
    key: Vec<u8>,
    /// The next entry's key is in `key` already.
    loaded: bool,
}

impl<'a> Cursor<'a> {
    /// At entry `restart * RESTART`.
    fn at_restart(run: &'a Run, restart: usize) -> Self {
        Cursor {
            run,
            pos: run
                .restarts
                .get(restart)
                .copied()
                .unwrap_or(run.bytes.len()),
            at: (restart * RESTART).min(run.len),
            key: Vec::new(),
            loaded: false,
        }
    }
    /// Loads the next entry's key into `key` (false at the end).
    fn load(&mut self) -> bool {
        if self.loaded {
            return true;
        }
        if self.at >= self.run.len {
            return false;
        }
        let mut r = Reader {
            buf: &self.run.bytes,
            pos: self.pos,
        };
        let shared = r.varint() as usize;
        let suffix = r.bytes();
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        self.pos = r.pos;
        self.loaded = true;
        true
    }
    /// Moves past the loaded entry, reading its fields (`want`) or skipping them.
    fn consume(&mut self, want: bool) -> Option<Entry> {
        let mut r = Reader {
            buf: &self.run.bytes,
            pos: self.pos,
        };
        let e = if want {
            Some(r.entry())
        } else {
            r.skip_entry();
            None
        };
        self.pos = r.pos;
        self.at += 1;
        self.loaded = false;
        e
    }
}

impl Run {
    /// The key at restart point `i`.
    fn restart_key(&self, i: usize) -> &[u8] {
        let mut r = Reader {
            buf: &self.bytes,
            pos: self.restarts[i],
        };
        let _shared = r.varint();
        r.bytes()
    }
    /// A cursor whose next entry is the first with a key at least `from` (its key loaded).
    fn seek(&self, from: &[u8]) -> Cursor<'_> {
        // The first restart whose key is past `from`; the one before it is where to scan.
        let (mut lo, mut hi) = (0, self.restarts.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.restart_key(mid) <= from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut c = Cursor::at_restart(self, lo.saturating_sub(1));
        while c.load() && c.key.as_slice() < from {
            c.consume(false);
        }
        c
    }
    fn get(&self, key: &str) -> Option<Entry> {
        let mut c = self.seek(key.as_bytes());
        if c.load() && c.key == key.as_bytes() {
            c.consume(true)
        } else {
            None
        }
    }
    fn contains(&self, key: &str) -> bool {
        let mut c = self.seek(key.as_bytes());
        c.load() && c.key == key.as_bytes()
    }
}

impl Entries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries given in strictly increasing key order (the caller checked it).
    pub(super) fn from_sorted<'a>(sorted: impl IntoIterator<Item = (&'a str, &'a Entry)>) -> Self {
        let mut b = SortedBuilder::default();
        for (k, e) in sorted {
            b.push(k, e);
        }
        b.finish()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry of `key`.
    pub fn get(&self, key: &str) -> Option<Entry> {
        match self.overlay.get(key) {
            Some(changed) => changed.clone(),
            None => self.run.get(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        match self.overlay.get(key) {
            Some(changed) => changed.is_some(),
            None => self.run.contains(key),
        }
    }

    /// Sets the entry of `key`; whether the key was listed before.
    pub fn insert(&mut self, key: String, entry: Entry) -> bool {
        let had = match self.overlay.get(key.as_str()) {
            Some(changed) => changed.is_some(),
            None => self.run.contains(&key),
        };
        self.overlay.insert(key, Some(entry));
        if !had {
            self.len += 1;
        }
        self.maybe_merge();
        had
    }

    /// Unlists `key`; whether it was listed.
    pub fn remove(&mut self, key: &str) -> bool {
        let in_run = self.run.contains(key);
        let had = match self.overlay.get(key) {
            Some(changed) => changed.is_some(),
            None => in_run,
        };
        if in_run {
            self.overlay.insert(key.to_string(), None);
        } else {
            self.overlay.remove(key);
        }
        if had {
            self.len -= 1;
        }
        self.maybe_merge();
        had
    }

    /// Every key and entry, in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.range_from("")
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The keys from `from` on (`from` included), with their entries, in key order.
    pub fn range_from(&self, from: &str) -> Iter<'_> {
        let overlay = self
            .overlay
            .range::<_, str>((Bound::Included(from), Bound::Unbounded));
        Iter {
            run: self.run.seek(from.as_bytes()),
            run_next: None,
            overlay: Box::new(overlay),
            overlay_next: None,
            started: false,
        }
    }

    fn maybe_merge(&mut self) {
        let n = self.overlay.len();
        if n > MERGE_MIN && n > self.run.len / MERGE_FRACTION {
            let mut b = RunBuilder::default();
            for (k, e) in self.iter() {
                b.push(&k, &e);
            }
            self.run = Arc::new(b.finish());
            self.overlay = imbl::OrdMap::new();
            debug_assert_eq!(self.run.len, self.len);
        }
    }
}

/// Keys and entries in key order: the run and the overlay merged (the overlay wins).
pub struct Iter<'a> {
    run: Cursor<'a>,
    run_next: Option<(String, Entry)>,
    overlay: Box<dyn Iterator<Item = (&'a String, &'a Option<Entry>)> + 'a>,
    overlay_next: Option<(&'a String, &'a Option<Entry>)>,
    started: bool,
}

impl Iter<'_> {
    fn pull_run(&mut self) {
        self.run_next = if self.run.load() {
            let key = String::from_utf8_lossy(&self.run.key).into_owned();
            self.run.consume(true).map(|e| (key, e))
        } else {
            None
        };
    }
}

impl Iterator for Iter<'_> {
    type Item = (String, Entry);

    fn next(&mut self) -> Option<(String, Entry)> {
        if !self.started {
            self.started = true;
            self.pull_run();
            self.overlay_next = self.overlay.next();
        }
        loop {
            let order = match (&self.run_next, &self.overlay_next) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((rk, _)), Some((ok, _))) => rk.as_str().cmp(ok.as_str()),
            };
            match order {
                Ordering::Less => {
                    let out = self.run_next.take();
                    self.pull_run();
                    return out;
                }
                Ordering::Equal | Ordering::Greater => {
                    if order == Ordering::Equal {
                        self.pull_run();
                    }
                    let (k, changed) = self.overlay_next.take()?;
                    self.overlay_next = self.overlay.next();
                    if let Some(e) = changed {
                        return Some((k.clone(), e.clone()));
                    }
                }
            }
        }
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = (String, Entry);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Entries {
    type Item = (String, Entry);
    type IntoIter = std::vec::IntoIter<(String, Entry)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter().collect::<Vec<_>>().into_iter()
    }
}

impl FromIterator<(String, Entry)> for Entries {
    /// In any order; of a key given twice, the last entry counts.
    fn from_iter<I: IntoIterator<Item = (String, Entry)>>(iter: I) -> Self {
        let sorted: std::collections::BTreeMap<String, Entry> = iter.into_iter().collect();
        Entries::from_sorted(sorted.iter().map(|(k, e)| (k.as_str(), e)))
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(i: u64) -> Entry {
        let mut e = Entry::file(i, i / 2, 1_700_000_000_000_000_000 + i as i64, "");
        e.etag = match i % 3 {
            0 => format!("\"0x8DE{:013X}\"", i * 7919),
            1 => format!("etag-{i}"),
            _ => "\"0x0\"".into(),
        };
        if i.is_multiple_of(5) {
            e.ctime_ns += 3;
            e.mode = 0o640;
            e.uid = 1000;
        }
        if i.is_multiple_of(7) {
            e.kind = EntryKind::Symlink;
            e.target = format!("../t{i}");
        }
        if i % 11 == 3 {
            e.kind = EntryKind::Special;
            e.target = "fifo".into();
        }
        if i % 3 == 2 {
            e.atime_ns = Some(i as i64 * 1_000_000_007);
        }
        if i % 13 == 5 {
            e.xattrs = vec![("k".into(), i.to_le_bytes().to_vec())];
        }
        e
    }

    /// A reference model (`BTreeMap`) and `Entries` take the same random inserts and removes,
    /// across merges; every lookup, range and the length agree throughout.
    #[test]
    fn matches_an_ordered_map_through_changes_and_merges() {
        let mut model: BTreeMap<String, Entry> = BTreeMap::new();
        for i in 0..3000u64 {
            model.insert(format!("d{}/k{:05}", i % 7, i * 3), entry(i));
        }
        let mut e = Entries::from_sorted(model.iter().map(|(k, v)| (k.as_str(), v)));
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("d{}/k{:05}", x % 7, (x >> 8) % 10_000);
            if x.is_multiple_of(3) {
                assert_eq!(e.remove(&key), model.remove(&key).is_some(), "{key}");
            } else {
                let v = entry(step);
                assert_eq!(
                    e.insert(key.clone(), v.clone()),
                    model.insert(key, v).is_some()
                );
            }
            assert_eq!(e.len(), model.len());
            if step % 997 == 0 {
                let probe = format!("d{}/k{:05}", (x >> 3) % 8, (x >> 20) % 10_000);
                assert_eq!(e.get(&probe), model.get(&probe).cloned());
                assert_eq!(e.contains_key(&probe), model.contains_key(&probe));
                let got: Vec<_> = e.range_from(&probe).take(40).collect();
                let want: Vec<_> = model
                    .range(probe.clone()..)
                    .take(40)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "range from {probe}");
            }
        }
        let all: Vec<_> = e.iter().collect();
        let want: Vec<_> = model.into_iter().collect();
        assert_eq!(all, want);
    }

    #[test]
    fn etags_of_every_form_come_back_as_they_were() {
        for etag in [
            "\"0x8DE1234567890AB\"",
            "\"0x0\"",
            "\"0x0A\"",
            "\"0xab\"",
            "x",
            "",
        ] {
            let mut e = Entry::file(1, 1, 5, etag);
            e.ctime_ns = -9;
            let got = Entries::from_sorted([("k", &e)]).get("k");
            assert_eq!(got, Some(e), "{etag:?}");
        }
        assert_eq!(
            azure_etag("\"0x0A\""),
            None,
            "a leading zero would not round-trip"
        );
        assert_eq!(azure_etag("\"0x8DE1\""), Some(0x8DE1));
    }

    #[test]
    fn an_empty_run_and_keys_before_and_after_it() {
        let mut e = Entries::new();
        assert_eq!(e.get("a"), None);
        assert_eq!(e.iter().count(), 0);
        e.insert("b".into(), entry(1));
        let e2 = Entries::from_sorted([("m", &entry(2))]);
        assert_eq!(e2.range_from("a").count(), 1);
        assert_eq!(e2.range_from("n").count(), 0);
        assert_eq!(
            e.range_from("a").next().map(|(k, _)| k),
            Some("b".to_string())
        );
    }
}
