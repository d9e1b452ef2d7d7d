//! Namespace operations: create (O_EXCL claims across hosts), symlink, mknod, mkdir, unlink and
//! rmdir
//! (rename is in `rename`).

use std::time::SystemTime;

use bytes::Bytes;

use super::*;
use crate::index::meta::{blob_metadata, entry_from_props, META_CLAIM};
use crate::index::{Change, Entry, EntryKind, Index, SpecialKind};
use crate::mutex::lock;
use crate::store::{Conditions, PutOptions, StoreError};
use crate::time::to_ns;

/// When an `rm` that removed another host's unlisted value looks for that value's late listing.
const UNLIST_AGAIN: [std::time::Duration; 3] = [
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(8),
    std::time::Duration::from_secs(50),
];

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
        let perms = self.perms_for(&index, &key, mode, false);
        // O_EXCL holds across hosts: the name is claimed in the container right away (an empty
        // blob, listed in the index when the file is first saved).
        let (claimed, keeper) = if flags & libc::O_EXCL != 0 {
            let (entry, keeper) = self.claim_new(&key, perms).await?;
            (Some(entry), Some(keeper))
        } else {
            (None, None)
        };
        let ino = lock(&self.inodes).ino(&key);
        let (_f, mut st) = self.lock_state(ino).await;
        st.staged = Some(Staged {
            file: self.new_staged()?,
            dirty: true,
            mtime: SystemTime::now(),
            derived: false,
            appended_from: None,
            early: None,
            scattered: false,
        });
        st.perms = Some(perms);
        st.base = claimed;
        st.claim = keeper;
        st.replacing = false;
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
            metadata: crate::transfer::with_new_value_id(blob_metadata(&entry)),
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

    /// A new entry of `kind` owned by the mount's user, timestamped now (see [`Fs::perms_for`]
    /// for the mode and owner a new node gets).
    pub(super) fn new_entry(&self, kind: EntryKind, perms: (u32, u32, u32)) -> Entry {
        let mut e = Entry::file(0, 0, to_ns(SystemTime::now()), "");
        e.kind = kind;
        (e.mode, e.uid, e.gid) = perms;
        e
    }

    /// Mode and owner of a new node at `key`, as a local filesystem gives them: the caller's
    /// user and group (the mount's outside a request); in a set-group-ID directory the
    /// directory's group instead, and a new directory there is set-group-ID too.
    pub(super) fn perms_for(
        &self,
        index: &Index,
        key: &str,
        mode: u32,
        dir: bool,
    ) -> (u32, u32, u32) {
        let caller = caller::current().unwrap_or(Caller {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        });
        let mut perms = (mode & 0o7777, caller.uid, caller.gid);
        let parent = parent_key(key);
        if let Some(p) = index.entries.get(parent).filter(|_| !parent.is_empty()) {
            if p.mode & libc::S_ISGID != 0 {
                perms.2 = p.gid;
                if dir {
                    perms.0 |= libc::S_ISGID;
                }
            }
        }
        perms
    }

    /// Writes a new node's blob if the name is free anywhere (EEXIST otherwise), then lists it.
    pub(super) async fn create_node(
        &self,
        key: &str,
        entry: Entry,
        content: Bytes,
    ) -> FsResult<Entry> {
        let entry = self.put_if_absent(key, entry, content).await?;
        // Listed unless another host changed it meanwhile (a `chmod` there lists its own).
        let mut changes = vec![Change::Saved {
            key: key.to_string(),
            blob: self.layout.blob_name(key),
            entry: entry.clone(),
            replaces: None,
        }];
        changes.extend(self.parent_changed(key));
        self.index.commit(changes).await?;
        Ok(entry)
    }

    /// The change that marks the directory holding `key` as changed now (its mtime and ctime),
    /// when it has an entry (an explicit directory): applied only while that entry names the
    /// same blob version, so a `chmod` or attribute change elsewhere is never undone. Only the
    /// index changes: the marker blob keeps the times it was written with (a rebuilt index shows
    /// those).
    pub(super) fn parent_changed(&self, key: &str) -> Option<Change> {
        let parent = parent_key(key);
        if parent.is_empty() {
            return None;
        }
        let mut e = self.index.cached().entries.get(parent)?;
        if e.kind != EntryKind::Dir {
            return None;
        }
        let now = to_ns(SystemTime::now());
        (e.mtime_ns, e.ctime_ns) = (now, now);
        Some(Change::Update {
            key: parent.to_string(),
            if_etag: e.etag.clone(),
            entry: e,
        })
    }

    /// Submits [`Fs::parent_changed`] (it lands with the next group commit).
    pub(super) fn touch_parent(&self, key: &str) {
        if let Some(c) = self.parent_changed(key) {
            self.index.submit(vec![c]);
        }
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
        let mut entry = self.new_entry(
            EntryKind::Symlink,
            self.perms_for(&index, &key, 0o777, false),
        );
        entry.target = target.to_string();
        entry.size = target.len() as u64;
        entry.stored_size = entry.size;
        self.create_node(&key, entry, Bytes::from(target.as_bytes().to_vec()))
            .await?;
        let ino = lock(&self.inodes).ino(&key);
        self.getattr(ino).await
    }

    /// `mknod`: a FIFO, socket or device node is a small blob naming what it is (its entry
    /// says the same, see docs/FORMAT.md); a regular file is created empty, as by `create`.
    /// FIFOs and sockets are rendezvous points local to each host (the kernel serves them).
    pub async fn mknod(&self, parent: u64, name: &str, mode: u32, rdev: u32) -> FsResult<Attr> {
        let special = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                let (attr, fh) = self.create(parent, name, mode, flags).await?;
                self.release(fh).await?;
                return self.getattr(attr.ino).await;
            }
            libc::S_IFIFO => SpecialKind::Fifo,
            libc::S_IFSOCK => SpecialKind::Socket,
            libc::S_IFCHR => {
                let (major, minor) = major_minor(rdev);
                SpecialKind::Char(major, minor)
            }
            libc::S_IFBLK => {
                let (major, minor) = major_minor(rdev);
                SpecialKind::Block(major, minor)
            }
            libc::S_IFDIR => return Err(FsError::Invalid("mknod cannot make a directory".into())),
            _ => {
                return Err(FsError::Invalid(format!(
                    "mknod: unknown file type {mode:o}"
                )))
            }
        };
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        if index.entries.contains_key(&key) || has_children(&index, &key) {
            return Err(FsError::Exists);
        }
        let mut entry = self.new_entry(
            EntryKind::Special,
            self.perms_for(&index, &key, mode, false),
        );
        entry.target = special.to_string();
        entry.stored_size = entry.target.len() as u64;
        let content = Bytes::from(entry.target.clone().into_bytes());
        self.create_node(&key, entry, content).await?;
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
        self.check_name(&key)?;
        // A file open here is decided on under its state lock: a save in progress lands first
        // (and is listed, so it is what gets deleted), and none begins after (it is marked
        // unlinked before the lock is let go). If the name changed hands while this waited (a
        // rename onto it, another unlink, the last close), it is looked up again.
        let mut tries = 0;
        let mut st = loop {
            tries += 1;
            let ino = lock(&self.inodes).get(&key);
            let Some(f) = ino.and_then(|i| self.open_file(i)) else {
                break None;
            };
            let st = f.state.clone().lock_owned().await;
            let same = lock(&self.inodes).get(&key) == ino
                && ino
                    .and_then(|i| self.open_file(i))
                    .is_some_and(|now| Arc::ptr_eq(&now, &f));
            if (same && !st.unlinked) || tries >= 8 {
                break Some(st);
            }
        };
        let index = self.index.current().await?;
        match index.entries.get(&key) {
            Some(e) if e.kind == EntryKind::Dir => return Err(FsError::IsDir),
            Some(e) => self.delete_listed(&key, &e.etag).await?,
            // Created here and not listed yet. The name goes as it is now: a value another host
            // saved there since this host's index copy goes too (as for a stale view of a
            // listed file); the claim of an O_EXCL create goes below.
            None if st.is_some() => self.delete_unlisted(&key).await?,
            None if has_children(&index, &key) => return Err(FsError::IsDir),
            None => return Err(FsError::NotFound),
        }
        let open = st.is_some();
        if let Some(st) = st.as_mut() {
            // Open handles keep their data; it is not saved under the old name any more, and a
            // claim of a file created here and never saved goes with the name.
            if let Some(s) = st.staged.as_mut() {
                s.dirty = false;
                s.early = None;
            }
            st.unlinked = true;
            if let Some(claim) = st.claim.take() {
                self.drop_claim(&key, claim).await?;
            }
        }
        drop(st);
        // The locks on the file stay with its open descriptors (as on a local disk); its lease
        // went with the blob, and the name is free to be locked anew. (After the open file is
        // marked unlinked: a save in between still presents the lease, and fails, rather than
        // bring the file back.) A reader slot is a blob of its own: it is given back.
        if let Some(slot) = self.locks.forget(&key) {
            let _ = slot.release().await;
        }
        lock(&self.inodes).remove_key(&key, open);
        self.touch_parent(&key);
        Ok(())
    }

    /// Deletes whatever value of `key` the store holds that the index does not list yet (another
    /// host's, saved since this host's index copy was taken). A directory stays, and so does a
    /// claim (another host's `O_EXCL` create in progress is not a value yet; this host's own
    /// claim is dropped by the caller).
    async fn delete_unlisted(&self, key: &str) -> FsResult<()> {
        match self.store.head(&self.layout.blob_name(key)).await {
            Ok(p) if p.metadata.contains_key(META_CLAIM) => Ok(()),
            Ok(p) if entry_from_props(&p).kind != EntryKind::Dir => {
                log::info!("{key:?} was created elsewhere meanwhile; removing that value too");
                self.delete_listed(key, &p.etag).await?;
                self.unlist_later(key, &p.etag);
                Ok(())
            }
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// After deleting version `etag` of `key`, a value another host saved and had not listed
    /// yet: that host's listing may land after this removal (a listing that replaces no entry is
    /// not checked against the store), leaving the name listed without its blob. So the listing
    /// is looked for again a few times later and removed while it names that version (a newer
    /// value stays).
    fn unlist_later(&self, key: &str, etag: &str) {
        let (index, key, etag) = (self.index.clone(), key.to_string(), etag.to_string());
        tokio::spawn(async move {
            for wait in UNLIST_AGAIN {
                tokio::time::sleep(wait).await;
                let listed = match index.revalidate().await {
                    Ok(i) => i.entries.get(&key).is_some_and(|e| e.etag == etag),
                    Err(e) => {
                        log::debug!("{key:?}: looking for a late listing: {e}");
                        continue;
                    }
                };
                if listed {
                    log::info!("{key:?}: unlisting a value removed before its listing landed");
                    if let Err(e) = index.commit(removals(&key, vec![etag.clone()])).await {
                        log::warn!("{key:?}: could not unlist a removed value: {e}");
                    }
                }
            }
        });
    }

    /// Deletes the blob of `key`, listed as version `etag`, and its index entry. A precondition
    /// failure (rewritten elsewhere) is decided again on the version there now, a few times.
    pub(super) async fn delete_listed(&self, key: &str, etag: &str) -> FsResult<()> {
        let (seen, _) = self
            .delete_versions(key, etag, self.locks.lease_id(key), |p| {
                if entry_from_props(p).kind == EntryKind::Dir {
                    Err(FsError::IsDir)
                } else {
                    log::info!("{key:?} was rewritten elsewhere; removing the newest version");
                    Ok(true)
                }
            })
            .await?;
        // Whichever of those versions the index lists goes; a newer one committed later by its
        // writer is checked against the store then (and finds the blob gone).
        self.index.commit(removals(key, seen)).await?;
        Ok(())
    }

    /// Deletes the blob of `key` at version `etag` (If-Match, presenting `lease`: the lease this
    /// host holds on it, if any). When another version is there instead, `follow` decides whether to delete
    /// that one too (a few times). Returns every version tried (whose index entries are to go)
    /// and whether the blob is gone; `false` when a version `follow` refused stays.
    pub(super) async fn delete_versions(
        &self,
        key: &str,
        etag: &str,
        lease: Option<String>,
        follow: impl Fn(&crate::store::BlobProps) -> FsResult<bool>,
    ) -> FsResult<(Vec<String>, bool)> {
        let blob = self.layout.blob_name(key);
        let mut seen = vec![etag.to_string()];
        let mut attempts = 0;
        let gone = loop {
            attempts += 1;
            let cond = Conditions::if_match(seen[seen.len() - 1].clone()).with_lease(lease.clone());
            match self.store.delete(&blob, &cond).await {
                // NotFound: gone already (or an earlier try of this delete landed).
                Ok(()) | Err(StoreError::NotFound(_)) => break true,
                Err(StoreError::PreconditionFailed(_)) if attempts < 5 => {
                    match self.store.head(&blob).await {
                        Ok(p) if follow(&p)? => seen.push(p.etag),
                        Ok(_) => break false,
                        Err(StoreError::NotFound(_)) => break true,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.content.forget(&blob);
        Ok((seen, gone))
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        if index.entries.contains_key(&key) || has_children(&index, &key) {
            return Err(FsError::Exists);
        }
        let perms = self.perms_for(&index, &key, mode, true);
        self.create_node(&key, self.new_entry(EntryKind::Dir, perms), Bytes::new())
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
                lock(&self.inodes).remove_key(&key, false);
                self.touch_parent(&key);
                Ok(())
            }
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }
}

/// Index changes dropping `key` while it lists one of the versions `etags`.
pub(super) fn removals(key: &str, etags: Vec<String>) -> Vec<Change> {
    etags
        .into_iter()
        .map(|etag| Change::Remove {
            key: key.to_string(),
            if_etag: Some(etag),
        })
        .collect()
}
