//! `ContentCache`: decompressed values on local disk, tied to the blob etag they came from.
//!
//! Two ways to fill an entry:
//! - **whole**: a download task decodes the value front to back into an unnamed temporary file;
//!   reads wait only until the bytes they ask for have arrived (small values, and blobs written
//!   by other tools);
//! - **by block**: for large values with a seek table (`seek`), the table is fetched with one
//!   ranged GET of the blob's tail, and each read fetches and decodes only the 1 MiB blocks it
//!   needs; while reads stay sequential, a read-ahead window of blocks (growing up to 64 MiB,
//!   64 MiB stored) is fetched in the background by a few large ranged GETs in parallel. A random
//!   4 KiB read costs one block, not the whole prefix. Streamed values (below) keep their recent
//!   blocks in memory, not on disk.
//!
//! **Streamed** values are not written to disk: the first read of a value read by block (most
//! such reads copy the value through once: writing it to disk would cost more CPU than fetching
//! it), and every read of a value larger than an eighth of the cache. A value read a second time
//! while the cache still remembers it was streamed is kept on disk (admission on second use). A
//! value without a seek table (an LZ4 frame another tool wrote) is streamed only when too large
//! for the disk cache: decoded front to back through a bounded window in memory (`stream`), where
//! a read behind the window starts over.
//!
//! Raw blobs (written by other tools without LZ4: as many bytes stored as listed) of at least
//! [`BY_BLOCK_MIN`] are read by block too, with a table of 1 MiB blocks read by range as they are.
//!
//! Values of at most [`SMALL_MAX`] (256 KiB) are held in memory instead (`small`: one GET, no
//! local file), up to [`small::SMALL_BUDGET`] in all.
//!
//! Entries are keyed by (blob, etag): a value rewritten by another host has a new etag and is
//! fetched again. The least recently used entries not in use are dropped when the total passes
//! the configured size, or when more than [`MAX_FILES`] values keep a local file open (each is
//! a descriptor: the daemon must not run out of them however many values it has read); their
//! files vanish with them (and with the process). A value dropped is fetched again when read.
//! A value in use (a handle reading it) keeps its file.

mod blocks;
mod read_ahead;
mod small;
mod stream;

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::watch;

use super::error::{FsError, FsResult};
use crate::seek::SeekTable;
use crate::store::{BlobStore, GetResult};
use crate::transfer::{self, TransferConfig, TransferError};
use blocks::{Block, Blocks};
use read_ahead::plan_read_ahead;
pub use small::SMALL_MAX;

/// Values at least this large are read by block when they carry a seek table.
pub const BY_BLOCK_MIN: u64 = 8 << 20;
/// Most values that keep a local file (a descriptor) open while no handle reads them.
pub const MAX_FILES: usize = 64;
/// A value read by block that is larger than this fraction of the cache size is streamed: its
/// decoded blocks are kept in memory only (the most recent [`STREAM_BLOCKS`]), not written to
/// disk — copying a gigabyte into the disk cache costs more CPU than decoding it.
const STREAM_FRACTION: u64 = 8;
/// Values streamed once that the cache remembers (to keep them on disk when read again).
const REMEMBER_STREAMED: usize = 4096;
/// Decoded blocks a streamed value keeps in memory: the read-ahead window and more.
const STREAM_BLOCKS: usize = MAX_WINDOW as usize + KEEP_BEHIND + 2;
/// Blocks a streamed value read sequentially keeps in memory behind the reader.
const KEEP_BEHIND: usize = 8;
/// Blocks behind `KEEP_BEHIND` a sequential read lets go of (a band: not those of another reader
/// further back).
const FORGET_BAND: usize = 4;
/// Largest read-ahead window, in blocks (of 1 MiB, before compression).
const MAX_WINDOW: u64 = 64;
/// Most stored (compressed) bytes the read-ahead window spans: several GETs in flight (4 of
/// 16 MiB: a 256 MiB raw blob through a mount on Azurite, 684 MiB/s with 32 MiB, 897 with 64).
const MAX_AHEAD_STORED: u64 = 64 << 20;
/// Stored bytes a read-ahead GET aims for. Blob services serve a large range far more cheaply per
/// byte than several small ones (Azurite: 8 MiB ranges run five times faster than 1 MiB ones;
/// a 256 MiB raw blob read through a mount, 506-574 MiB/s with 8 MiB, 617-877 with 16, about
/// 610 with 32), so the read-ahead waits until this much is missing instead of fetching each
/// block as the window slides past it.
const READ_AHEAD_GET: u64 = 16 << 20;

/// How far a whole download got.
#[derive(Clone, Debug, Default)]
struct Fill {
    written: u64,
    /// `Some` once finished: the value's size, or why it failed.
    done: Option<Result<u64, FsError>>,
}

enum Fetch {
    Whole(watch::Receiver<Fill>),
    ByBlock(Arc<Blocks>),
    /// A small value, in memory (and the cache's directory, for [`CachedValue::file`]).
    Small(small::Small, Arc<std::path::Path>),
    /// A large value without a seek table, decoded through memory.
    Stream(stream::Streamed),
}

/// One value being or having been fetched.
pub struct CachedValue {
    /// The local copy (`None` for a small value).
    file: Option<Arc<std::fs::File>>,
    fetch: Fetch,
}

impl CachedValue {
    /// Reads up to `len` bytes at `offset`.
    pub async fn read(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        let want = offset.saturating_add(u64::from(len));
        let file = match (&self.fetch, &self.file) {
            (Fetch::Small(s, _), _) => {
                let value = small::wait(s).await?;
                let end = want.min(value.len() as u64) as usize;
                let start = (offset as usize).min(end);
                return Ok(value.slice(start..end));
            }
            (Fetch::Stream(s), _) => return s.read(offset, len).await,
            (_, Some(file)) => file,
            (_, None) => return Err(FsError::Internal("a cached value lost its file".into())),
        };
        let end = match &self.fetch {
            Fetch::Small(..) | Fetch::Stream(_) => {
                return Err(FsError::Internal("a value in memory has no file".into()))
            }
            Fetch::Whole(fill) => {
                let mut rx = fill.clone();
                let fill = rx
                    .wait_for(|f| f.written >= want || f.done.is_some())
                    .await
                    .map_err(|_| {
                        FsError::Internal("a download task ended without its result".into())
                    })?
                    .clone();
                let available = match fill.done {
                    Some(Err(e)) if fill.written < want => return Err(e),
                    Some(Ok(size)) => size,
                    _ => fill.written,
                };
                want.min(available)
            }
            Fetch::ByBlock(b) => {
                let end = want.min(b.table.content_size);
                if offset >= end {
                    return Ok(Bytes::new());
                }
                let bs = b.table.block_size;
                let (first, last) = ((offset / bs) as usize, ((end - 1) / bs) as usize);
                if first == last && b.next.load(Ordering::Relaxed) != offset {
                    if let Some(part) = b.read_part(first, offset, end).await? {
                        self.read_ahead(b, file, offset, end, last);
                        return Ok(part);
                    }
                }
                b.ensure(file, first, last).await?;
                self.read_ahead(b, file, offset, end, last);
                if b.mem.is_some() {
                    // A block can be pushed out between `ensure` and the copy: fetch it again.
                    loop {
                        if let Some(out) = b.read_memory(offset, end) {
                            return Ok(out);
                        }
                        // Let the task pushing it out mark it missing before looking again.
                        tokio::task::yield_now().await;
                        b.ensure(file, first, last).await?;
                    }
                }
                end
            }
        };
        if offset >= end {
            return Ok(Bytes::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf.into())
    }

    /// While reads are sequential, fetch a growing window of blocks ahead in the background.
    fn read_ahead(
        &self,
        b: &Arc<Blocks>,
        file: &Arc<std::fs::File>,
        offset: u64,
        end: u64,
        last: usize,
    ) {
        let sequential = b.next.swap(end, Ordering::Relaxed) == offset;
        let window = if sequential {
            (b.window.load(Ordering::Relaxed) * 2).clamp(2, MAX_WINDOW)
        } else {
            1
        };
        b.window.store(window, Ordering::Relaxed);
        if !sequential {
            return;
        }
        b.forget_behind((offset / b.table.block_size) as usize, KEEP_BEHIND);
        // Plan and claim under one lock, so that neither the next read's plan nor a foreground
        // fetch splits a planned GET into single blocks.
        let plan = {
            let mut st = b.states();
            let to = (last + window as usize).min(st.len().saturating_sub(1));
            let missing: Vec<usize> = (last + 1..=to)
                .filter(|&i| st[i] == Block::Missing)
                .collect();
            let plan = plan_read_ahead(&b.table, last, window as usize, &missing);
            for &(start, end) in &plan {
                st[start..=end].fill(Block::Fetching);
            }
            plan
        };
        for (start, end) in plan {
            let (b, file) = (b.clone(), file.clone());
            tokio::spawn(async move {
                if let Err(e) = b.fetch_claimed(&file, start, end).await {
                    log::debug!("read-ahead of {:?}: {e}", b.blob);
                }
            });
        }
    }

    /// Waits for (or fetches) the whole value into the local file; returns its size. Not for
    /// streamed values ([`Self::on_disk`]).
    pub async fn complete(&self) -> FsResult<u64> {
        match &self.fetch {
            Fetch::Small(s, _) => Ok(small::wait(s).await?.len() as u64),
            Fetch::Whole(fill) => {
                let mut rx = fill.clone();
                let fill = rx.wait_for(|f| f.done.is_some()).await.map_err(|_| {
                    FsError::Internal("a download task ended without its result".into())
                })?;
                fill.done.clone().unwrap_or(Err(FsError::Internal(
                    "a download task ended without its result".into(),
                )))
            }
            Fetch::ByBlock(b) if b.mem.is_some() => Err(FsError::Internal(format!(
                "{}: a streamed value is not kept whole on disk",
                b.blob
            ))),
            Fetch::Stream(_) => Err(FsError::Internal(
                "a streamed value is not kept whole on disk".into(),
            )),
            Fetch::ByBlock(b) => {
                if !b.table.blocks.is_empty() {
                    b.ensure(self.disk()?, 0, b.table.blocks.len() - 1).await?;
                }
                Ok(b.table.content_size)
            }
        }
    }

    /// Whether the whole value is kept locally, so that [`Self::file`] can give it whole after
    /// `complete` (on disk, or a small value in memory); streamed values are not.
    pub fn on_disk(&self) -> bool {
        !matches!(&self.fetch, Fetch::ByBlock(b) if b.mem.is_some())
            && !matches!(&self.fetch, Fetch::Stream(_))
    }

    /// A file holding the whole local copy (for copying it whole, after `complete`): the cache's
    /// own file, or for a small value a temporary file written from memory.
    pub fn file(&self) -> FsResult<std::fs::File> {
        if let Fetch::Small(s, dir) = &self.fetch {
            let value = match &*s.borrow() {
                Some(Ok(v)) => v.clone(),
                _ => {
                    return Err(FsError::Internal(
                        "a small value was not fetched yet".into(),
                    ))
                }
            };
            let mut file = tempfile::tempfile_in(dir)?;
            std::io::Write::write_all(&mut file, &value)?;
            return Ok(file);
        }
        Ok(self.disk()?.try_clone()?)
    }

    fn disk(&self) -> FsResult<&Arc<std::fs::File>> {
        self.file
            .as_ref()
            .ok_or_else(|| FsError::Internal("a value held in memory has no file".into()))
    }

    fn bytes(&self) -> u64 {
        match &self.fetch {
            Fetch::Whole(fill) => fill.borrow().written,
            Fetch::ByBlock(b) => b.held_bytes(),
            Fetch::Small(..) | Fetch::Stream(_) => 0,
        }
    }

    fn failed(&self) -> bool {
        match &self.fetch {
            Fetch::Whole(fill) => matches!(fill.borrow().done, Some(Err(_))),
            Fetch::ByBlock(_) | Fetch::Stream(_) => false,
            Fetch::Small(s, _) => small::failed(s),
        }
    }
}

type Key = (String, String);

/// The cache's entries.
struct Entries {
    /// Values with a local file (or streamed), least recently used last.
    files: LruCache<Key, Arc<CachedValue>>,
    /// Small values in memory, with the sizes they were counted at, and the sum of those.
    small: LruCache<Key, (Arc<CachedValue>, u64)>,
    small_bytes: u64,
}

/// The cache of decompressed values: on disk, small ones in memory.
pub struct ContentCache {
    dir: Arc<std::path::Path>,
    max_bytes: u64,
    cfg: TransferConfig,
    entries: Mutex<Entries>,
    /// Values of at least [`BY_BLOCK_MIN`] streamed once: the next read keeps them on disk.
    streamed: Mutex<LruCache<Key, ()>>,
}

impl ContentCache {
    pub fn new(dir: std::path::PathBuf, max_bytes: u64, cfg: TransferConfig) -> Self {
        ContentCache {
            dir: Arc::from(dir),
            max_bytes,
            cfg,
            entries: Mutex::new(Entries {
                files: LruCache::unbounded(),
                small: LruCache::unbounded(),
                small_bytes: 0,
            }),
            streamed: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(REMEMBER_STREAMED)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }

    /// Whether a value of `size` that is not cached is to be streamed (not written to disk): when
    /// it is larger than an eighth of the cache, or read by block (`by_block`: any read costs its
    /// blocks only) and read for the first time as far as the cache remembers. Records the value
    /// as streamed. A value without a seek table is decoded front to back, so reading it through
    /// memory makes every read behind the decoder start over: it goes to disk when it fits.
    fn stream_now(&self, key: &Key, size: u64, by_block: bool) -> bool {
        if size > self.max_bytes / STREAM_FRACTION {
            return true;
        }
        by_block
            && crate::mutex::lock(&self.streamed)
                .put(key.clone(), ())
                .is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        crate::mutex::lock(&self.entries)
    }

    /// The cached value of `blob` at `etag`, fetching it if it is not there. `sizes` (value size,
    /// stored size, from the index) let a small value be held in memory and a large one be read
    /// by block.
    pub async fn get(
        &self,
        store: &Arc<dyn BlobStore>,
        blob: &str,
        etag: &str,
        sizes: Option<(u64, u64)>,
    ) -> FsResult<Arc<CachedValue>> {
        let key = (blob.to_string(), etag.to_string());
        let size = sizes.map_or(0, |(size, _)| size);
        {
            let mut entries = self.lock();
            if let Some((v, _)) = entries.small.get(&key) {
                if !v.failed() {
                    crate::metrics::cache_lookup(true, size);
                    return Ok(v.clone());
                }
            }
            if let Some(v) = entries.files.get(&key) {
                // A streamed value is shared by the readers it has, not kept for later ones.
                if !v.failed() && (v.on_disk() || Arc::strong_count(v) > 1) {
                    crate::metrics::cache_lookup(true, size);
                    return Ok(v.clone());
                }
            }
        }
        crate::metrics::cache_lookup(false, 0);
        if small::is_small(sizes) {
            let value = Arc::new(CachedValue {
                file: None,
                fetch: Fetch::Small(small::start(store, blob, etag), self.dir.clone()),
            });
            let mut entries = self.lock();
            if let Some((_, (_, old))) = entries.small.push(key, (value.clone(), size)) {
                entries.small_bytes = entries.small_bytes.saturating_sub(old);
            }
            entries.small_bytes += size;
            self.evict_small(&mut entries);
            return Ok(value);
        }
        let table = match sizes {
            // As many bytes stored as listed: a raw blob (an LZ4 frame never has exactly its
            // content's size), read by range like our blocks once its first bytes confirm it.
            Some((size, stored)) if size >= BY_BLOCK_MIN && size == stored => {
                probe_raw(store, blob, etag, size).await?
            }
            Some((size, stored)) if size >= BY_BLOCK_MIN => {
                fetch_table(store, blob, etag, size, stored).await?
            }
            _ => None,
        };
        let stream = self.stream_now(&key, size, table.is_some());
        if table.is_none() && stream {
            let value = Arc::new(CachedValue {
                file: None,
                fetch: Fetch::Stream(stream::Streamed::new(store, blob, etag, &self.cfg)),
            });
            let mut entries = self.lock();
            entries.files.put(key, value.clone());
            self.evict(&mut entries.files);
            return Ok(value);
        }
        let file = tempfile::tempfile_in(&self.dir)?;
        let value = match table {
            Some(table) => {
                if !stream {
                    file.set_len(table.content_size)?;
                }
                let n = table.blocks.len();
                Arc::new(CachedValue {
                    file: Some(Arc::new(file)),
                    fetch: Fetch::ByBlock(Arc::new(Blocks {
                        store: store.clone(),
                        blob: blob.to_string(),
                        etag: etag.to_string(),
                        table,
                        state: Mutex::new(vec![Block::Missing; n]),
                        arrived: tokio::sync::Notify::new(),
                        next: AtomicU64::new(0),
                        window: AtomicU64::new(1),
                        mem: stream.then(|| {
                            Mutex::new(LruCache::new(
                                std::num::NonZeroUsize::new(STREAM_BLOCKS)
                                    .unwrap_or(std::num::NonZeroUsize::MIN),
                            ))
                        }),
                        peeked: Mutex::new(HashSet::new()),
                    })),
                })
            }
            None => self.start_whole(store, blob, etag, file)?,
        };
        let mut entries = self.lock();
        entries.files.put(key, value.clone());
        self.evict(&mut entries.files);
        Ok(value)
    }

    fn start_whole(
        &self,
        store: &Arc<dyn BlobStore>,
        blob: &str,
        etag: &str,
        file: std::fs::File,
    ) -> FsResult<Arc<CachedValue>> {
        let (tx, rx) = watch::channel(Fill::default());
        let value = Arc::new(CachedValue {
            file: Some(Arc::new(file.try_clone()?)),
            fetch: Fetch::Whole(rx),
        });
        let (progress_tx, mut progress_rx) = watch::channel(0u64);
        let (store, blob, etag, cfg) = (
            store.clone(),
            blob.to_string(),
            etag.to_string(),
            self.cfg.clone(),
        );
        tokio::spawn(async move {
            let download =
                transfer::download_to(&store, &blob, Some(&etag), file, &cfg, Some(progress_tx));
            tokio::pin!(download);
            let result = loop {
                tokio::select! {
                    r = &mut download => break r,
                    changed = progress_rx.changed() => {
                        if changed.is_ok() {
                            let n = *progress_rx.borrow_and_update();
                            tx.send_modify(|f| f.written = n);
                        }
                    }
                }
            };
            let written = *progress_rx.borrow();
            let done = match result {
                Ok(d) => Ok(d.size),
                Err(e) => {
                    log::error!("reading {blob:?}: {e}");
                    Err(FsError::from(e))
                }
            };
            tx.send_modify(|f| {
                f.written = written;
                f.done = Some(done);
            });
        });
        Ok(value)
    }

    /// Drops a key's entries (after this host rewrote or deleted it).
    pub fn forget(&self, blob: &str) {
        let mut entries = self.lock();
        let stale: Vec<Key> = entries
            .files
            .iter()
            .filter(|(k, _)| k.0 == blob)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            entries.files.pop(&k);
        }
        let stale: Vec<Key> = entries
            .small
            .iter()
            .filter(|(k, _)| k.0 == blob)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some((_, size)) = entries.small.pop(&k) {
                entries.small_bytes = entries.small_bytes.saturating_sub(size);
            }
        }
    }

    /// Drops the least recently used small values past their budget. One in use stays with its
    /// readers (it is in memory, not in a file that could be reused).
    fn evict_small(&self, entries: &mut Entries) {
        let budget = small::SMALL_BUDGET.min(self.max_bytes / 4);
        while entries.small_bytes > budget {
            let Some((_, (_, size))) = entries.small.pop_lru() else {
                break;
            };
            entries.small_bytes = entries.small_bytes.saturating_sub(size);
        }
    }

    fn evict(&self, files: &mut LruCache<Key, Arc<CachedValue>>) {
        // A streamed value nobody reads any more gives its blocks in memory back at once.
        let idle_streams: Vec<Key> = files
            .iter()
            .filter(|(_, v)| !v.on_disk() && Arc::strong_count(v) == 1)
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle_streams {
            files.pop(&k);
        }
        let mut total: u64 = files.iter().map(|(_, v)| v.bytes()).sum();
        while total > self.max_bytes || files.len() > MAX_FILES {
            // Oldest first, skipping values some reader still holds (they keep their files).
            let victim = files
                .iter()
                .rev()
                .find(|(_, v)| Arc::strong_count(v) == 1)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { break };
            if let Some(v) = files.pop(&k) {
                total = total.saturating_sub(v.bytes());
            }
        }
    }

    /// Bytes of values held: on disk, and small ones in memory.
    pub fn used_bytes(&self) -> u64 {
        let entries = self.lock();
        entries.files.iter().map(|(_, v)| v.bytes()).sum::<u64>() + entries.small_bytes
    }

    /// Values that keep a local file open (each a descriptor).
    pub fn open_files(&self) -> usize {
        self.lock().files.len()
    }
}

/// The table of a raw blob of `size` bytes when its first bytes are not an LZ4 frame's magic;
/// `None` when they are (then it is read whole).
async fn probe_raw(
    store: &Arc<dyn BlobStore>,
    blob: &str,
    etag: &str,
    size: u64,
) -> FsResult<Option<SeekTable>> {
    match store.get(blob, Some(0..4), None).await {
        Ok(GetResult::Found { props, data }) if props.etag == etag => {
            Ok((!crate::codec::is_lz4(&data)).then(|| SeekTable::for_raw(size)))
        }
        Ok(_) => Err(TransferError::Changed(blob.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Fetches the seek table from the blob's tail (one ranged GET; its place follows from the
/// sizes). `None` when the blob has none (written by another tool, or an older remotedict).
async fn fetch_table(
    store: &Arc<dyn BlobStore>,
    blob: &str,
    etag: &str,
    size: u64,
    stored: u64,
) -> FsResult<Option<SeekTable>> {
    let len = SeekTable::frame_len(size);
    if stored < len {
        return Ok(None);
    }
    match store.get(blob, Some(stored - len..stored), None).await {
        Ok(GetResult::Found { props, data }) if props.etag == etag => {
            Ok(SeekTable::from_frame(&data)
                .filter(|t| t.content_size == size && t.frame_end <= stored - len))
        }
        Ok(_) => Err(TransferError::Changed(blob.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}
