//! Directory listings: `opendir` snapshots a folder's children from the index (plus files created
//! here and not yet saved) and pins their inodes until releasedir; `readdirplus` serves them in
//! slices that adapt to what the kernel takes, counting each entry as a lookup.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::listing::Listing;
use super::*;
use crate::mutex::lock;

/// Entries a readdirplus reply is first asked for, and at most (see [`Fs::readdir_plus`]).
const MIN_DIR_SLICE: usize = 32;
const MAX_DIR_SLICE: usize = 4096;

impl Fs {
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        if let Some(list) = self.virtual_dir(ino) {
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            lock(&self.dirs).insert(fh, Arc::new(list.into_iter().collect()));
            return Ok(fh);
        }
        let key = self.key_of(ino)?;
        let attr = self.attr_of(&key, ino).await?;
        if attr.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        let index = self.index.current().await?;
        let mut names = children(&index, &key);
        // Files created here and not yet saved.
        let pending: Vec<(u64, String)> = {
            let files = lock(&self.files);
            let inodes = lock(&self.inodes);
            files
                .keys()
                .filter_map(|i| inodes.key(*i).map(|k| (*i, k.to_string())))
                .collect()
        };
        for (_, k) in pending {
            if parent_key(&k) == key && !k.is_empty() {
                let name = k.rsplit('/').next().unwrap_or(&k).to_string();
                if let Err(at) = names.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
                    names.insert(at, (name, NodeKind::File));
                }
            }
        }
        let list = {
            // Every inode the listing names is pinned until releasedir: its number stays valid
            // while the kernel may still be handed it (see forget.rs).
            let mut inodes = lock(&self.inodes);
            let mut list = Listing::with_capacity(names.len() + 2);
            let parent = if ino == ROOT_INO {
                ROOT_INO
            } else {
                inodes.ino(parent_key(&key))
            };
            for dot in [(ino, "."), (parent, "..")] {
                inodes.pin_ino(dot.0);
                list.push(dot.0, dot.1, NodeKind::Dir);
            }
            let mut child = child_key(&key, "");
            let dir_len = child.len();
            for (name, kind) in names {
                child.truncate(dir_len);
                child.push_str(&name);
                let child_ino = inodes.pin(&child);
                list.push(child_ino, &name, kind);
            }
            list
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, Arc::new(list));
        Ok(fh)
    }

    /// Entries of an open directory from position `offset` on.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Listing>> {
        lock(&self.dirs).get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    /// Entries of an open directory from `offset` on, with their attributes (readdirplus: `ls -l`
    /// then needs no lookup per entry), each with the offset that follows it. Entries removed
    /// since opendir are left out.
    ///
    /// The kernel's reply buffer size is not known here, so the slice adapts: the next call's
    /// offset says how many entries the last reply took. All of them: the slice doubles (up to
    /// [`MAX_DIR_SLICE`]); fewer: it shrinks to about that many.
    pub async fn readdir_plus(
        &self,
        fh: u64,
        offset: usize,
    ) -> FsResult<Vec<(u64, DirEntry, Attr)>> {
        let entries = self.readdir(fh)?;
        let max = {
            let mut slices = lock(&self.dir_slices);
            let (last_offset, last_len) = slices.get(&fh).copied().unwrap_or((0, 0));
            let took = offset.saturating_sub(last_offset);
            let max = match last_len {
                0 => MIN_DIR_SLICE,
                n if took >= n => (n * 2).min(MAX_DIR_SLICE),
                _ => (took + took / 8 + 1).clamp(MIN_DIR_SLICE, MAX_DIR_SLICE),
            };
            slices.insert(fh, (offset, max));
            max
        };
        // A slice whose entries all vanished must not end the listing early: go on to the next.
        let mut start = offset;
        loop {
            let out = self.attrs_of_slice(&entries, start, max).await?;
            if !out.is_empty() || start + max >= entries.len() {
                // Each entry handed out is a lookup the kernel counts (the adapter gives back
                // those that did not fit: `readdir_plus_unsent`).
                self.count_listed(&out);
                return Ok(out);
            }
            start += max;
        }
    }

    /// Entries `start..start + max` of a directory listing with their attributes, leaving out
    /// those removed since opendir.
    pub(super) async fn attrs_of_slice(
        &self,
        entries: &Listing,
        start: usize,
        max: usize,
    ) -> FsResult<Vec<(u64, DirEntry, Attr)>> {
        let slice: Vec<(usize, DirEntry)> = (start..entries.len().min(start.saturating_add(max)))
            .filter_map(|i| entries.get(i).map(|e| (i, e)))
            .collect();
        // One index copy and one pass over the inode table for the slice; entries with an open
        // file, a fresher entry or a virtual node take the general path.
        let index = self.index.current().await?;
        let quick = {
            let mut fresher = lock(&self.fresher);
            fresher.retain(|_, (_, seen, _)| seen.elapsed() < FRESHER_FOR);
            fresher.is_empty()
        };
        let keys: Vec<Option<String>> = {
            let inodes = lock(&self.inodes);
            slice
                .iter()
                .map(|(_, e)| inodes.key(e.ino).map(str::to_string))
                .collect()
        };
        let mut out = Vec::with_capacity(slice.len());
        for ((pos, e), key) in slice.into_iter().zip(keys) {
            let general = !quick
                || key.as_deref().is_none_or(str::is_empty)
                || self.virtual_attr(e.ino).is_some()
                || self.open_file(e.ino).is_some();
            let attr = if general {
                self.getattr(e.ino).await
            } else {
                let key = key.unwrap_or_default();
                self.listed_attr(&index, &key, e.ino, index.entries.get(&key).as_ref())
            };
            match attr {
                Ok(a) => out.push((pos as u64 + 1, e.clone(), a)),
                // Gone since opendir (removed by another host): leave it out.
                Err(FsError::NotFound) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// Closes a listing, unpinning the inodes it named; returns how many entries it had.
    pub fn releasedir(&self, fh: u64) -> usize {
        let list = lock(&self.dirs).remove(&fh);
        lock(&self.dir_slices).remove(&fh);
        match list {
            Some(list) => {
                self.unpin_listing(&list);
                list.len()
            }
            None => 0,
        }
    }
}
