//! A value read block by block: which 1 MiB blocks are present, being fetched or missing; fetching
//! runs of them with one ranged GET each and decoding them (into the disk file or, for a streamed
//! value, into memory); a first random read in a raw block GETs only its bytes.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::*;
use crate::seek::{decode_block, SeekTable};
use crate::store::{BlobStore, GetResult};

/// State of one block of a value read by block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    Missing,
    Fetching,
    Present,
}

/// A value read block by block.
pub(super) struct Blocks {
    pub(super) store: Arc<dyn BlobStore>,
    pub(super) blob: String,
    pub(super) etag: String,
    pub(super) table: SeekTable,
    pub(super) state: Mutex<Vec<Block>>,
    /// Wakes readers waiting for blocks another task is fetching.
    pub(super) arrived: tokio::sync::Notify,
    /// Where the next sequential read would start, and the read-ahead window (blocks).
    pub(super) next: AtomicU64,
    pub(super) window: AtomicU64,
    /// For a streamed value, its decoded blocks in memory (a block evicted from here is missing
    /// again); `None`: blocks are written to the disk file.
    pub(super) mem: Option<Mutex<LruCache<usize, Bytes>>>,
    /// Raw blocks a random read has fetched a part of: the next read in one fetches it whole.
    pub(super) peeked: Mutex<HashSet<usize>>,
}

impl Blocks {
    pub(super) fn states(&self) -> std::sync::MutexGuard<'_, Vec<Block>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps decoded block `i` of a streamed value in memory; the block it pushes out is missing
    /// again.
    pub(super) fn remember(&self, i: usize, block: Bytes) {
        let Some(mem) = &self.mem else { return };
        let evicted = mem.lock().unwrap_or_else(|p| p.into_inner()).push(i, block);
        if let Some((j, _)) = evicted.filter(|(j, _)| *j != i) {
            self.states()[j] = Block::Missing;
        }
    }

    /// A streamed value read sequentially up to block `first`: drops the blocks in memory just
    /// behind it, more than `keep` blocks back (read once, they would otherwise fill the memory
    /// the window ahead needs: with GETs in flight, the blocks most recently used are mostly
    /// behind). Only a short band is dropped, so that another reader of the value further back
    /// keeps its blocks; only blocks that arrived (a block of a GET still being handed over is
    /// left to it).
    pub(super) fn forget_behind(&self, first: usize, keep: usize) {
        let Some(mem) = &self.mem else { return };
        let to = first.saturating_sub(keep);
        let from = to.saturating_sub(FORGET_BAND);
        // Lock order: states, then memory (as in `fetch_claimed`).
        let mut st = self.states();
        let mut mem = mem.lock().unwrap_or_else(|p| p.into_inner());
        for i in from..to {
            if st.get(i) == Some(&Block::Present) && mem.pop(&i).is_some() {
                st[i] = Block::Missing;
            }
        }
    }

    /// Bytes `offset..end` of a streamed value from the blocks in memory; `None` if one of them
    /// was pushed out meanwhile.
    pub(super) fn read_memory(&self, offset: u64, end: u64) -> Option<Bytes> {
        let mem = self.mem.as_ref()?;
        let bs = self.table.block_size;
        let (first, last) = ((offset / bs) as usize, ((end - 1) / bs) as usize);
        let mut mem = mem.lock().unwrap_or_else(|p| p.into_inner());
        let part = |block: &Bytes, i: usize| {
            let start = i as u64 * bs;
            let a = (offset.max(start) - start) as usize;
            let z = ((end - start) as usize).min(block.len());
            (a <= z).then(|| block.slice(a..z))
        };
        if first == last {
            // The usual case (FUSE reads of one block): no copy.
            return part(mem.get(&first)?, first);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for i in first..=last {
            out.extend_from_slice(&part(mem.get(&i)?, i)?);
        }
        Some(out.into())
    }

    /// Claims the missing blocks of `first..=last` (as runs) and says whether other tasks are
    /// fetching some of the rest.
    pub(super) fn claim(&self, first: usize, last: usize) -> (Vec<(usize, usize)>, bool) {
        let mut st = self.states();
        let mut runs = Vec::new();
        let mut others = false;
        let mut i = first;
        while i <= last {
            match st[i] {
                Block::Present => i += 1,
                Block::Fetching => {
                    others = true;
                    i += 1;
                }
                Block::Missing => {
                    let start = i;
                    while i <= last && st[i] == Block::Missing {
                        st[i] = Block::Fetching;
                        i += 1;
                    }
                    runs.push((start, i - 1));
                }
            }
        }
        (runs, others)
    }

    /// Makes sure blocks `first..=last` are on disk: fetches the missing runs (one ranged GET
    /// each) and waits for those other tasks are fetching.
    pub(super) async fn ensure(
        &self,
        file: &std::fs::File,
        first: usize,
        last: usize,
    ) -> FsResult<()> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (runs, others) = self.claim(first, last);
            for (a, b) in runs {
                self.fetch_claimed(file, a, b).await?;
            }
            if !others {
                return Ok(());
            }
            if self.states()[first..=last]
                .iter()
                .all(|s| *s == Block::Present)
            {
                return Ok(());
            }
            arrived.await;
        }
    }

    /// Fetches blocks `a..=b`, which the caller has marked `Fetching`, and wakes the waiters.
    pub(super) async fn fetch_claimed(
        &self,
        file: &std::fs::File,
        a: usize,
        b: usize,
    ) -> FsResult<()> {
        let fetched = self.fetch(file, a, b).await;
        let mut st = self.states();
        // A streamed block pushed out of memory while its run was handed over is missing, not
        // present (a reader would find it neither in memory nor being fetched).
        let mem = self
            .mem
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, s) in st.iter_mut().enumerate().take(b + 1).skip(a) {
            if *s == Block::Fetching {
                let held = mem.as_ref().is_none_or(|m| m.contains(&i));
                *s = if fetched.is_ok() && held {
                    Block::Present
                } else {
                    Block::Missing
                };
            }
        }
        drop(mem);
        drop(st);
        self.arrived.notify_waiters();
        fetched
    }

    pub(super) async fn fetch(&self, file: &std::fs::File, a: usize, b: usize) -> FsResult<()> {
        let range = self.table.stored_range(a, b);
        let data = self.get_range(range.clone()).await?;
        for i in a..=b {
            let r = self.table.stored_range(i, i);
            let slice = data
                .get((r.start - range.start) as usize..(r.end - range.start) as usize)
                .ok_or_else(|| {
                    FsError::from(TransferError::Corrupt {
                        blob: self.blob.clone(),
                        message: "the blob is shorter than its seek table says".into(),
                    })
                })?;
            let corrupt = |message: String| {
                log::error!("reading {:?}: block {i}: {message}", self.blob);
                FsError::from(TransferError::Corrupt {
                    blob: self.blob.clone(),
                    message,
                })
            };
            let block = if self.table.raw {
                std::borrow::Cow::Borrowed(slice)
            } else {
                decode_block(slice, self.table.block_size as usize)
                    .map_err(|e| corrupt(e.to_string()))?
            };
            // Every block but the last is whole; a shorter one would shift or lose bytes.
            let want = self.table.block_len(i);
            if block.len() as u64 != want {
                return Err(corrupt(format!(
                    "decodes to {} bytes, the seek table says {want}",
                    block.len()
                )));
            }
            if self.mem.is_none() {
                file.write_all_at(&block, i as u64 * self.table.block_size)?;
            } else {
                self.remember(
                    i,
                    match block {
                        // A block stored raw is a slice of the response: no copy.
                        std::borrow::Cow::Borrowed(raw) => data.slice_ref(raw),
                        std::borrow::Cow::Owned(v) => Bytes::from(v),
                    },
                );
            }
        }
        Ok(())
    }

    /// Where block `i`'s bytes lie in the blob if it is stored raw: its stored length is its
    /// size word plus its uncompressed length (a writer stores a block compressed only when that
    /// makes it smaller; docs/FORMAT.md).
    pub(super) fn raw_bytes(&self, i: usize) -> Option<std::ops::Range<u64>> {
        let r = self.table.stored_range(i, i);
        if self.table.raw {
            return Some(r);
        }
        (r.end.checked_sub(r.start)? == 4 + self.table.block_len(i)).then(|| r.start + 4..r.end)
    }

    /// A random read of `offset..end` inside block `i`: if the block is stored raw and neither
    /// held nor being fetched, GETs just those bytes the first time (a 1 MiB block would cost a
    /// whole block's transfer for a few KiB); `None` when the whole block should be fetched.
    pub(super) async fn read_part(
        &self,
        i: usize,
        offset: u64,
        end: u64,
    ) -> FsResult<Option<Bytes>> {
        let Some(raw) = self.raw_bytes(i) else {
            return Ok(None);
        };
        if self.states()[i] != Block::Missing
            || !self
                .peeked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(i)
        {
            return Ok(None);
        }
        let start = raw.start + (offset - i as u64 * self.table.block_size);
        let data = self.get_range(start..start + (end - offset)).await?;
        if data.len() as u64 != end - offset {
            return Err(TransferError::Corrupt {
                blob: self.blob.clone(),
                message: "a ranged read answered fewer bytes than asked for".into(),
            }
            .into());
        }
        Ok(Some(data))
    }

    /// Stored bytes `range` of this version of the blob (`Changed` once it was rewritten).
    pub(super) async fn get_range(&self, range: std::ops::Range<u64>) -> FsResult<Bytes> {
        match self.store.get(&self.blob, Some(range), None).await? {
            GetResult::Found { props, data } if props.etag == self.etag => Ok(data),
            _ => Err(TransferError::Changed(self.blob.clone()).into()),
        }
    }

    pub(super) fn held_bytes(&self) -> u64 {
        self.states()
            .iter()
            .filter(|s| **s == Block::Present)
            .count() as u64
            * self.table.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::MemStore;

    /// A streamed raw value of `n` blocks, nothing fetched.
    fn streamed(n: usize) -> Blocks {
        Blocks {
            store: Arc::new(MemStore::new()),
            blob: "b".into(),
            etag: "e".into(),
            table: SeekTable::for_raw(n as u64 * (1 << 20)),
            state: Mutex::new(vec![Block::Missing; n]),
            arrived: tokio::sync::Notify::new(),
            next: AtomicU64::new(0),
            window: AtomicU64::new(1),
            mem: Some(Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(STREAM_BLOCKS).unwrap(),
            ))),
            peeked: Mutex::new(HashSet::new()),
        }
    }

    #[test]
    fn a_sequential_reader_lets_go_only_of_arrived_blocks_just_behind_it() {
        let b = streamed(40);
        for i in 0..20 {
            b.remember(i, Bytes::from_static(b"x"));
            b.states()[i] = Block::Present;
        }
        // Block 9 is still being handed over by its GET (in memory, not yet marked present).
        b.states()[9] = Block::Fetching;
        b.forget_behind(20, 8);
        let st = b.states().clone();
        let mem = b.mem.as_ref().unwrap().lock().unwrap();
        for (i, state) in st.iter().enumerate().take(20) {
            let dropped = (8..12).contains(&i) && i != 9;
            assert_eq!(!mem.contains(&i), dropped, "block {i} in memory");
            let want = match i {
                9 => Block::Fetching,
                _ if dropped => Block::Missing,
                _ => Block::Present,
            };
            assert!(*state == want, "block {i}'s state");
        }
    }
}
