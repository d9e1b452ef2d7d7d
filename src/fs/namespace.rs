//! Namespace operations: create (O_EXCL claims across hosts), symlink, mkdir, unlink, rmdir and
//! rename (blobs copied, one index commit, old blobs deleted).

use std::time::SystemTime;

use bytes::Bytes;

use super::*;
use crate::index::meta::{blob_metadata, entry_from_props};
use crate::index::{Change, Entry, EntryKind};
use crate::mutex::lock;
use crate::store::{Conditions, PutOptions, StoreError};
use crate::time::to_ns;

impl Fs {
    /// Creates and opens a new file.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        if index.entries.contains_key(&key) || has_children(&index, &key) {
            if flags & libc::O_EXCL != 0 {
                return Err(FsError::Exists);
            }
            let ino = lock(&self.inodes).ino(&key);
            let fh = self.open(ino, flags).await?;
            return Ok((self.getattr(ino).await?, fh));
        }
        let perms = (mode & 0o7777, self.cfg.uid, self.cfg.gid);
        // O_EXCL holds across hosts: the name is claimed in the container right away (an empty
        // blob, listed in the index when the file is first saved).
        let (claimed, keeper) = if flags & libc::O_EXCL != 0 {
            let (entry, keeper) = self.claim_new(&key, perms).await?;
            (Some(entry), Some(keeper))
        } else {
            (None, None)
        };
        let ino = lock(&self.inodes).ino(&key);
        let f = self.file_state(ino);
        let mut st = f.state.lock().await;
        st.staged = Some(Staged {
            file: self.new_staged()?,
            dirty: true,
            upload_failed: false,
            mtime: SystemTime::now(),
        });
        st.perms = Some(perms);
        st.base = claimed;
        st.claim = keeper;
        st.unlinked = false;
        st.written = flags & libc::O_TRUNC != 0;
        st.handles += 1;
        drop(st);
        let fh = self.new_handle(Handle::new(ino, true, flags & libc::O_APPEND != 0));
        Ok((self.getattr(ino).await?, fh))
    }

    /// Writes `key`'s blob, carrying `entry`'s attributes, only if no blob of that name exists
    /// anywhere; returns the entry with the new etag.
    pub(super) async fn put_if_absent(
        &self,
        key: &str,
        mut entry: Entry,
        content: Bytes,
    ) -> FsResult<Entry> {
        let opts = PutOptions {
            conditions: Conditions::if_absent(),
            metadata: blob_metadata(&entry),
        };
        entry.etag = match self
            .store
            .put(&self.layout.blob_name(key), content, &opts)
            .await
        {
            Ok(etag) => etag,
            Err(StoreError::PreconditionFailed(_)) => {
                // Taken: what holds it is listed here at once, so the EEXIST this returns
                // agrees with what `stat` shows next (`mkdir -p` stats what it could not make).
                self.holder(key).await?;
                return Err(FsError::Exists);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(entry)
    }

    /// A new entry of `kind` owned by the mount's user, timestamped now.
    pub(super) fn new_entry(&self, kind: EntryKind, mode: u32) -> Entry {
        let mut e = Entry::file(0, 0, to_ns(SystemTime::now()), "");
        e.kind = kind;
        (e.mode, e.uid, e.gid) = (mode & 0o7777, self.cfg.uid, self.cfg.gid);
        e
    }

    /// Writes a new node's blob if the name is free anywhere (EEXIST otherwise), then lists it.
    pub(super) async fn create_node(
        &self,
        key: &str,
        entry: Entry,
        content: Bytes,
    ) -> FsResult<Entry> {
        let entry = self.put_if_absent(key, entry, content).await?;
        self.index
            .commit(vec![Change::Put {
                key: key.to_string(),
                entry: entry.clone(),
            }])
            .await?;
        Ok(entry)
    }

    /// Creates a symbolic link: a blob holding the target, raw, marked `remotedict_symlink`.
    pub async fn symlink(&self, parent: u64, name: &str, target: &str) -> FsResult<Attr> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        if index.entries.contains_key(&key) || has_children(&index, &key) {
            return Err(FsError::Exists);
        }
        if target.is_empty() || target.contains('\0') || target.len() > 4096 {
            return Err(FsError::Invalid(
                "a link target must be 1 to 4096 bytes, without NUL".into(),
            ));
        }
        let mut entry = self.new_entry(EntryKind::Symlink, 0o777);
        entry.target = target.to_string();
        entry.size = target.len() as u64;
        entry.stored_size = entry.size;
        self.create_node(&key, entry, Bytes::from(target.as_bytes().to_vec()))
            .await?;
        let ino = lock(&self.inodes).ino(&key);
        self.getattr(ino).await
    }

    /// The target of a symbolic link.
    pub async fn readlink(&self, ino: u64) -> FsResult<String> {
        let key = self.key_of(ino)?;
        match self.index.current().await?.entries.get(&key) {
            Some(e) if e.kind == EntryKind::Symlink => Ok(e.target.clone()),
            Some(_) => Err(FsError::Invalid("not a symbolic link".into())),
            None => Err(FsError::NotFound),
        }
    }

    /// Removes a file. The blob is deleted only at the version this host decided on (If-Match);
    /// when another host rewrote it meanwhile, `rm` removes the name as it is now (the newest
    /// value, looked up again), so the blob and the index never disagree.
    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        let entry = index.entries.get(&key).cloned();
        let ino = lock(&self.inodes).get(&key);
        let pending = ino.and_then(|i| self.open_file(i));
        match entry {
            Some(e) if e.kind == EntryKind::Dir => return Err(FsError::IsDir),
            Some(e) => self.delete_listed(&key, &e.etag).await?,
            None if pending.is_some() => {}
            None if has_children(&index, &key) => return Err(FsError::IsDir),
            None => return Err(FsError::NotFound),
        }
        if let Some(f) = pending {
            // Open handles keep their data; it is not saved under the old name any more, and a
            // claim of a file created here and never saved goes with the name.
            let mut st = f.state.lock().await;
            if let Some(s) = st.staged.as_mut() {
                s.dirty = false;
            }
            st.unlinked = true;
            if let Some(claim) = st.claim.take() {
                self.drop_claim(&key, claim).await?;
            }
        }
        lock(&self.inodes).remove_key(&key);
        Ok(())
    }

    /// Deletes the blob of `key`, listed as version `etag`, and its index entry. A precondition
    /// failure (rewritten elsewhere) is decided again on the version there now, a few times.
    async fn delete_listed(&self, key: &str, etag: &str) -> FsResult<()> {
        let blob = self.layout.blob_name(key);
        let lease = self.locks.lease_id(key);
        let mut seen = vec![etag.to_string()];
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cond = Conditions::if_match(seen[seen.len() - 1].clone()).with_lease(lease.clone());
            match self.store.delete(&blob, &cond).await {
                // NotFound: gone already (or an earlier try of this delete landed).
                Ok(()) | Err(StoreError::NotFound(_)) => break,
                Err(StoreError::PreconditionFailed(_)) if attempts < 5 => {
                    log::info!("{key:?} was rewritten elsewhere; removing the newest version");
                    match self.store.head(&blob).await {
                        Ok(p) if entry_from_props(&p).kind == EntryKind::Dir => {
                            return Err(FsError::IsDir)
                        }
                        Ok(p) => seen.push(p.etag),
                        Err(StoreError::NotFound(_)) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Whichever of those versions the index lists goes; a newer one committed later by its
        // writer is checked against the store then (and finds the blob gone).
        let changes = seen
            .into_iter()
            .map(|etag| Change::Remove {
                key: key.to_string(),
                if_etag: Some(etag),
            })
            .collect();
        self.index.commit(changes).await?;
        self.content.forget(&blob);
        Ok(())
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        if index.entries.contains_key(&key) || has_children(&index, &key) {
            return Err(FsError::Exists);
        }
        self.create_node(&key, self.new_entry(EntryKind::Dir, mode), Bytes::new())
            .await?;
        let ino = lock(&self.inodes).ino(&key);
        self.getattr(ino).await
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        if has_children(&index, &key) {
            return Err(FsError::NotEmpty);
        }
        match index.entries.get(&key) {
            Some(e) if e.kind == EntryKind::Dir => {
                match self
                    .store
                    .delete(&self.layout.blob_name(&key), &Conditions::default())
                    .await
                {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(err) => return Err(err.into()),
                }
                self.index
                    .commit(vec![Change::Remove {
                        key: key.clone(),
                        if_etag: Some(e.etag.clone()),
                    }])
                    .await?;
                lock(&self.inodes).remove_key(&key);
                Ok(())
            }
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Renames a file or a directory tree: copy the blobs, one index commit, delete the old blobs.
    /// Not atomic for directories: a crash midway leaves the copies and the originals both listed
    /// or neither, never a missing value.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        noreplace: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        // Unsaved data of the source is saved first, so the copy carries it.
        let src_ino = lock(&self.inodes).get(&from);
        if let Some(ino) = src_ino {
            self.save(ino).await?;
        }
        let index = self.index.current().await?;
        let src_entry = index.entries.get(&from).cloned();
        let src_is_dir = src_entry
            .as_ref()
            .map_or_else(|| has_children(&index, &from), |e| e.kind == EntryKind::Dir);
        if src_entry.is_none() && !src_is_dir {
            return Err(FsError::NotFound);
        }
        let dst_entry = index.entries.get(&to).cloned();
        let dst_is_dir = dst_entry
            .as_ref()
            .map_or_else(|| has_children(&index, &to), |e| e.kind == EntryKind::Dir);
        let dst_exists = dst_entry.is_some() || dst_is_dir;
        if dst_exists && noreplace {
            return Err(FsError::Exists);
        }
        if dst_is_dir && !src_is_dir {
            return Err(FsError::IsDir);
        }
        if dst_exists && src_is_dir && !dst_is_dir {
            return Err(FsError::NotDir);
        }
        if dst_is_dir && has_children(&index, &to) {
            return Err(FsError::NotEmpty);
        }
        // Every key that moves: the node itself and, for a directory, everything under it.
        let prefix = format!("{from}/");
        let moving: Vec<(String, Entry)> = index
            .entries
            .get_key_value(&from)
            .into_iter()
            .chain(
                index
                    .entries
                    .range::<_, String>(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix)),
            )
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut changes = Vec::new();
        let mut moved = Vec::new();
        for (old, e) in &moving {
            let new = format!("{to}{}", &old[from.len()..]);
            // The copy is of the version this decision was based on, or, if another host
            // rewrote it meanwhile, of the newest one (looked up again): never of an unknown one.
            let Some((now, etag)) = self.copy_checked(old, &new, e).await? else {
                if old == &from {
                    return Err(FsError::NotFound); // deleted elsewhere meanwhile
                }
                continue;
            };
            changes.push(Change::Put {
                key: new,
                entry: Entry {
                    etag,
                    ctime_ns: to_ns(SystemTime::now()),
                    ..now.clone()
                },
            });
            for listed in [&e.etag, &now.etag] {
                changes.push(Change::Remove {
                    key: old.clone(),
                    if_etag: Some(listed.clone()),
                });
            }
            moved.push((old.clone(), now.etag));
        }
        if let Some(d) = &dst_entry {
            if d.kind == EntryKind::Dir && src_entry.is_none() {
                // An implicit directory moved onto an explicit empty one: drop the old marker.
                changes.push(Change::Remove {
                    key: to.clone(),
                    if_etag: Some(d.etag.clone()),
                });
                let _ = self
                    .store
                    .delete(&self.layout.blob_name(&to), &Conditions::default())
                    .await;
            }
        }
        self.index.commit(changes).await?;
        for (old, etag) in &moved {
            let blob = self.layout.blob_name(old);
            // Only the version copied: a value another host wrote there since stays (its
            // writer lists it).
            let cond = Conditions::if_match(etag.clone()).with_lease(self.locks.lease_id(old));
            match self.store.delete(&blob, &cond).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::PreconditionFailed(_)) => {
                    log::info!("rename: {blob:?} was rewritten elsewhere meanwhile; it stays")
                }
                Err(e) => log::warn!("rename: could not delete the old blob {blob:?}: {e}"),
            }
            self.content.forget(&blob);
        }
        lock(&self.inodes).rename(&from, &to);
        Ok(())
    }

    /// Copies the blob of `old` (listed as `listed`) to `new`, making sure the copy is of one
    /// known version: the source is looked at before and after, and copied again if another
    /// host rewrote it meanwhile. Returns that version's entry and the copy's etag; `None` if
    /// the source is gone.
    async fn copy_checked(
        &self,
        old: &str,
        new: &str,
        listed: &Entry,
    ) -> FsResult<Option<(Entry, String)>> {
        let src = self.layout.blob_name(old);
        let dst = self.layout.blob_name(new);
        let mut last_err = None;
        for _ in 0..5 {
            let before = match self.store.head(&src).await {
                Ok(p) => p,
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let now = if before.etag == listed.etag {
                listed.clone()
            } else {
                log::info!("rename: {old:?} was rewritten elsewhere; moving the newest version");
                Entry {
                    target: listed.target.clone(),
                    ..entry_from_props(&before)
                }
            };
            let copied =
                crate::transfer::copy_stored(self.store.as_ref(), &src, &dst, &self.cfg.transfer)
                    .await;
            let etag = match copied {
                Ok(etag) => etag,
                Err(e @ crate::transfer::TransferError::Changed(_)) => {
                    last_err = Some(FsError::from(e));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match self.store.head(&src).await {
                // Unchanged from before the copy to after it: etags never come back, so the
                // copy is of that version.
                Ok(after) if after.etag == now.etag => return Ok(Some((now, etag))),
                Ok(_) | Err(StoreError::NotFound(_)) => {
                    last_err = Some(FsError::Store(StoreError::PreconditionFailed(src.clone())))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err.unwrap_or(FsError::Internal("rename: no copy attempted".into())))
    }
}
