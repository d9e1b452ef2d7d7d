//! The kernel's references to inodes: every reply that hands out an entry (lookup, create, mkdir,
//! symlink, readdirplus) counts one lookup of its inode; `forget` gives them back. An inode that
//! the kernel no longer holds, that no open directory listing names and that no open or unsaved
//! file uses is forgotten, so names other hosts create and delete do not pile up in the table.
//! The root is never forgotten. Numbers are not reused (see `inode.rs`): a name looked up again
//! after it was forgotten gets a new one.

use super::*;
use crate::mutex::lock;

impl Fs {
    /// `lookup`, counting the entry handed out to the kernel.
    pub async fn lookup_entry(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let attr = self.lookup(parent, name).await?;
        Ok(self.handed_out(parent, name, attr))
    }

    /// `create`, counting the entry handed out to the kernel.
    pub async fn create_entry(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        let (attr, fh) = self.create(parent, name, mode, flags).await?;
        Ok((self.handed_out(parent, name, attr), fh))
    }

    /// `mkdir`, counting the entry handed out to the kernel.
    pub async fn mkdir_entry(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        let attr = self.mkdir(parent, name, mode).await?;
        Ok(self.handed_out(parent, name, attr))
    }

    /// `mknod`, counting the entry handed out to the kernel.
    pub async fn mknod_entry(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let attr = self.mknod(parent, name, mode, rdev).await?;
        Ok(self.handed_out(parent, name, attr))
    }

    /// `symlink`, counting the entry handed out to the kernel.
    pub async fn symlink_entry(&self, parent: u64, name: &str, target: &str) -> FsResult<Attr> {
        let attr = self.symlink(parent, name, target).await?;
        Ok(self.handed_out(parent, name, attr))
    }

    /// Counts one lookup of the entry `name` in `parent` that `attr` describes. The inode is
    /// taken by key, under the table's lock: had the number in `attr` been forgotten meanwhile
    /// (its last listing closed), the key gets a live one and `attr` says so.
    fn handed_out(&self, parent: u64, name: &str, mut attr: Attr) -> Attr {
        if self.virtual_attr(attr.ino).is_some() {
            return attr;
        }
        let mut inodes = lock(&self.inodes);
        match inodes.key(parent).map(|dir| child_key(dir, name)) {
            Some(key) => {
                let ino = inodes.hand_out(&key);
                if ino != attr.ino {
                    log::debug!("{key:?}: inode {} was forgotten; now {ino}", attr.ino);
                    attr.ino = ino;
                }
            }
            None => inodes.add_lookup(attr.ino),
        }
        attr
    }

    /// The kernel gives back `nlookup` lookups of `ino` (FUSE `forget`).
    pub fn forget(&self, ino: u64, nlookup: u64) {
        let files = lock(&self.files);
        let mut inodes = lock(&self.inodes);
        if inodes.forget(ino, nlookup) {
            inodes.release(ino, files.contains_key(&ino));
        }
        sweep_parked(&files, &mut inodes);
    }

    /// The entries of a readdirplus answer that did not fit in the kernel's reply: their lookups,
    /// counted by `readdir_plus`, are given back.
    pub fn readdir_plus_unsent(&self, unsent: &[(u64, DirEntry, Attr)]) {
        for (_, e, _) in unsent {
            if counts_lookup(e) {
                self.forget(e.ino, 1);
            }
        }
    }

    /// Counts one lookup of each entry of a readdirplus answer (the kernel skips `.` and `..`).
    pub(super) fn count_listed(&self, entries: &[(u64, DirEntry, Attr)]) {
        let mut inodes = lock(&self.inodes);
        for (_, e, _) in entries {
            if counts_lookup(e) {
                inodes.add_lookup(e.ino);
            }
        }
    }

    /// A closed listing's pins are dropped; inodes nothing references any more are forgotten.
    pub(super) fn unpin_listing(&self, list: &super::listing::Listing) {
        // A virtual listing (`.remotedict`) pinned nothing.
        if list
            .inos()
            .first()
            .is_some_and(|&ino| self.virtual_attr(ino).is_some())
        {
            return;
        }
        let files = lock(&self.files);
        let mut inodes = lock(&self.inodes);
        for &ino in list.inos() {
            if inodes.unpin(ino) {
                inodes.release(ino, files.contains_key(&ino));
            }
        }
        sweep_parked(&files, &mut inodes);
        inodes.shrink();
    }

    /// Inodes the table holds (the root included): names looked up, listed or open.
    pub fn inode_count(&self) -> usize {
        lock(&self.inodes).len()
    }
}

/// Whether the kernel counts a lookup for a readdirplus entry (not for `.` and `..`).
fn counts_lookup(e: &DirEntry) -> bool {
    e.name != "." && e.name != ".."
}

/// Releases parked inodes whose files have closed since.
fn sweep_parked(files: &HashMap<u64, Arc<OpenFile>>, inodes: &mut InodeTable) {
    if inodes.has_parked() {
        for ino in inodes.take_parked() {
            inodes.release(ino, files.contains_key(&ino));
        }
    }
}
