//! `ContentCache`: decompressed values on local disk, tied to the blob etag they came from.
//!
//! Opening a file for reading starts (or joins) a download into an unnamed temporary file; reads
//! wait only until the bytes they ask for have been decoded, so a large file can be read while it
//! is still arriving. Entries are keyed by (blob, etag): a value rewritten by another host has a
//! new etag and is fetched again. The least recently used entries not in use are dropped when the
//! total passes the configured size; the files vanish with them (and with the process).

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::watch;

use super::error::{FsError, FsResult};
use crate::store::BlobStore;
use crate::transfer::{self, TransferConfig};

/// How far a download got.
#[derive(Clone, Debug, Default)]
struct Fill {
    written: u64,
    /// `Some` once finished: the value's size, or why it failed.
    done: Option<Result<u64, FsError>>,
}

/// One value being or having been downloaded.
pub struct CachedValue {
    file: std::fs::File,
    fill: watch::Receiver<Fill>,
}

impl CachedValue {
    /// Reads up to `len` bytes at `offset`, waiting for the download to get that far.
    pub async fn read(&self, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        let want = offset.saturating_add(u64::from(len));
        let mut rx = self.fill.clone();
        let fill = rx
            .wait_for(|f| f.written >= want || f.done.is_some())
            .await
            .map_err(|_| FsError::Io("download task ended".into()))?
            .clone();
        let available = match fill.done {
            Some(Err(e)) if fill.written < want => return Err(e),
            Some(Ok(size)) => size,
            _ => fill.written,
        };
        let end = want.min(available);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Waits for the whole value; returns its size.
    pub async fn complete(&self) -> FsResult<u64> {
        let mut rx = self.fill.clone();
        let fill = rx
            .wait_for(|f| f.done.is_some())
            .await
            .map_err(|_| FsError::Io("download task ended".into()))?;
        fill.done
            .clone()
            .unwrap_or(Err(FsError::Io("download task ended".into())))
    }

    /// A handle on the local copy (for copying it whole).
    pub fn file(&self) -> FsResult<std::fs::File> {
        Ok(self.file.try_clone()?)
    }

    fn bytes(&self) -> u64 {
        let f = self.fill.borrow();
        f.written
    }

    fn failed(&self) -> bool {
        matches!(self.fill.borrow().done, Some(Err(_)))
    }
}

type Key = (String, String);

/// The disk cache of decompressed values.
pub struct ContentCache {
    dir: std::path::PathBuf,
    max_bytes: u64,
    cfg: TransferConfig,
    entries: Mutex<LruCache<Key, Arc<CachedValue>>>,
}

impl ContentCache {
    pub fn new(dir: std::path::PathBuf, max_bytes: u64, cfg: TransferConfig) -> Self {
        ContentCache {
            dir,
            max_bytes,
            cfg,
            entries: Mutex::new(LruCache::unbounded()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Key, Arc<CachedValue>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value of `blob` at `etag`, starting its download if it is not there.
    pub fn get(
        &self,
        store: &Arc<dyn BlobStore>,
        blob: &str,
        etag: &str,
    ) -> FsResult<Arc<CachedValue>> {
        let key = (blob.to_string(), etag.to_string());
        let mut entries = self.lock();
        if let Some(v) = entries.get(&key) {
            if !v.failed() {
                return Ok(v.clone());
            }
        }
        let file = tempfile::tempfile_in(&self.dir)?;
        let (tx, rx) = watch::channel(Fill::default());
        let value = Arc::new(CachedValue {
            file: file.try_clone()?,
            fill: rx,
        });
        entries.put(key, value.clone());
        self.evict(&mut entries);
        drop(entries);

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
            .iter()
            .filter(|(k, _)| k.0 == blob)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            entries.pop(&k);
        }
    }

    fn evict(&self, entries: &mut LruCache<Key, Arc<CachedValue>>) {
        let mut total: u64 = entries.iter().map(|(_, v)| v.bytes()).sum();
        while total > self.max_bytes {
            // Oldest first, skipping values some reader still holds.
            let victim = entries
                .iter()
                .rev()
                .find(|(_, v)| Arc::strong_count(v) == 1)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { break };
            if let Some(v) = entries.pop(&k) {
                total = total.saturating_sub(v.bytes());
            }
        }
    }

    /// Bytes of values held on disk.
    pub fn used_bytes(&self) -> u64 {
        self.lock().iter().map(|(_, v)| v.bytes()).sum()
    }
}
