//! Attributes: what `stat` shows for a key, from this host's unsaved state, then the index, with
//! the "fresher" overlay (an entry newer than the index copy, seen in a blob another host just
//! rewrote, trusted for a few seconds); `lookup` and `getattr`.

use std::time::Duration;

use super::*;
use crate::index::{Entry, Index};
use crate::mutex::lock;
use crate::time::from_ns;

/// How long an entry newer than the index copy is trusted over it.
pub(super) const FRESHER_FOR: Duration = Duration::from_secs(5);

impl Fs {
    pub(super) fn default_perm(&self, kind: NodeKind) -> u16 {
        match kind {
            NodeKind::Dir => 0o755,
            NodeKind::File => 0o644,
            NodeKind::Symlink => 0o777,
            _ => 0o644,
        }
    }

    pub(super) fn attr_from_entry(&self, ino: u64, e: &Entry) -> Attr {
        let kind = kind_of(e);
        Attr {
            ino,
            kind,
            size: e.size,
            stored_size: e.stored_size,
            mtime: from_ns(e.mtime_ns),
            ctime: from_ns(e.ctime_ns),
            atime: from_ns(e.atime()),
            perm: if e.mode == 0 {
                self.default_perm(kind)
            } else {
                (e.mode & 0o7777) as u16
            },
            uid: if e.mode == 0 { self.cfg.uid } else { e.uid },
            gid: if e.mode == 0 { self.cfg.gid } else { e.gid },
            rdev: rdev_of(e),
            nlink: if kind == NodeKind::Dir { 2 } else { 1 },
        }
    }

    pub(super) fn implicit_dir(&self, ino: u64) -> Attr {
        Attr {
            ino,
            kind: NodeKind::Dir,
            size: 0,
            stored_size: 0,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            atime: self.mounted_at,
            perm: 0o755,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            rdev: 0,
            nlink: 2,
        }
    }

    /// Attributes of the node at `key`, from local unsaved state, then the index.
    pub(super) async fn attr_of(&self, key: &str, ino: u64) -> FsResult<Attr> {
        if let Some(f) = self.open_file(ino) {
            let st = f.state.lock().await;
            if let Some(staged) = &st.staged {
                let size = staged.file.metadata()?.len();
                let mut attr = match &st.base {
                    Some(e) => self.attr_from_entry(ino, e),
                    None => Attr {
                        perm: 0o644,
                        ..self.implicit_dir(ino)
                    },
                };
                attr.kind = NodeKind::File;
                attr.nlink = if st.unlinked && lock(&self.inodes).get(key) != Some(ino) {
                    0
                } else {
                    1
                };
                attr.size = size;
                attr.mtime = staged.mtime;
                attr.ctime = staged.mtime.max(attr.ctime);
                attr.atime = st.atime.map_or(staged.mtime, from_ns);
                if let Some((mode, uid, gid)) = st.perms {
                    (attr.perm, attr.uid, attr.gid) = ((mode & 0o7777) as u16, uid, gid);
                }
                return Ok(attr);
            }
            // Unlinked while open (for reading), its name gone or given to another file: what it
            // was, with no name left.
            let detached = st.unlinked && lock(&self.inodes).get(key) != Some(ino);
            if let (true, Some(base)) = (detached, &st.base) {
                return Ok(Attr {
                    nlink: 0,
                    ..self.attr_from_entry(ino, base)
                });
            }
        }
        if key.is_empty() {
            return Ok(self.implicit_dir(ino));
        }
        let entry = self.entry_of(key).await?;
        self.listed_attr(&*self.index.current().await?, key, ino, entry.as_ref())
    }

    /// Attributes of `key` given its entry in `index` (if any): a file or folder entry, an
    /// implicit folder (keys below it), or NotFound.
    pub(super) fn listed_attr(
        &self,
        index: &Index,
        key: &str,
        ino: u64,
        entry: Option<&Entry>,
    ) -> FsResult<Attr> {
        match entry {
            Some(e) => Ok(self.attr_from_entry(ino, e)),
            None if has_children(index, key) => Ok(self.implicit_dir(ino)),
            None => Err(FsError::NotFound),
        }
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        if let Some(attr) = self
            .virtual_lookup(parent, name)
            .and_then(|i| self.virtual_attr(i))
        {
            return Ok(attr);
        }
        if parent == status::STATUS_DIR_INO {
            return Err(FsError::NotFound);
        }
        let key = self.child(parent, name)?;
        let ino = lock(&self.inodes).get(&key);
        if let Some(ino) = ino {
            return self.attr_of(&key, ino).await;
        }
        let index = self.index.current().await?;
        let exists = index.entries.contains_key(&key) || has_children(&index, &key);
        if !exists {
            return Err(FsError::NotFound);
        }
        let ino = lock(&self.inodes).ino(&key);
        self.attr_of(&key, ino).await
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if let Some(attr) = self.virtual_attr(ino) {
            return Ok(attr);
        }
        let key = self.key_of(ino)?;
        self.attr_of(&key, ino).await
    }

    /// The entry of `key`: the index's, unless this host has just seen a newer blob.
    pub(super) async fn entry_of(&self, key: &str) -> FsResult<Option<Entry>> {
        let listed = self.index.current().await?.entries.get(key);
        let mut fresher = lock(&self.fresher);
        if let Some((e, seen, over)) = fresher.get(key) {
            // Newer only while the index still lists the version it replaced; for a while, or
            // as long as this host holds a lock on the file (no other host can write it then).
            let locked = self.locks.lease_id(key).is_some() || self.locks.slot_of(key).is_some();
            let trusted = seen.elapsed() < FRESHER_FOR || locked;
            if trusted && listed.as_ref().map(|l| &l.etag) == Some(over) {
                return Ok(Some(e.clone()));
            }
            fresher.remove(key);
        }
        Ok(listed)
    }
}
