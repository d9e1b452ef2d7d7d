//! Staged write-back: writes go to a local temporary copy, uploaded as one atomic commit on
//! flush/fsync/close (the blob first, then the index entry, submitted to the next group commit).
//! A failed upload fails the close and leaves the previous value intact.

use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use super::claims::Holder;
use super::*;
use crate::index::meta::{blob_metadata, entry_from_props};
use crate::index::{Change, Entry};
use crate::mutex::lock;
use crate::store::{Conditions, PutOptions, StoreError};
use crate::time::{from_ns, to_ns};
use crate::transfer::{self, TransferError};

/// The local, writable copy of a file being written.
pub(super) struct Staged {
    pub(super) file: std::fs::File,
    pub(super) dirty: bool,
    /// mtime to record at the next upload.
    pub(super) mtime: SystemTime,
    /// The copy holds the bytes of `FileState::base` (not truncated to nothing since): its
    /// save must replace that version and no other, or it would undo a write another host
    /// made since (the save is conditional on the base's etag).
    pub(super) derived: bool,
    /// While every change to a derived copy appended at its end: the length of the base
    /// version, where the appended bytes begin (a save refused because the blob changed moves
    /// them onto the newest version, as appends on a local disk go to the current end).
    pub(super) appended_from: Option<u64>,
    /// An upload running while a new file is written front to back (see `transfer::early`):
    /// dropped (given up) as soon as the copy changes any other way.
    pub(super) early: Option<transfer::EarlyUpload>,
    /// A write landed elsewhere than at the end: no early upload for this copy any more (a
    /// program that writes all over its file would start one again and again).
    pub(super) scattered: bool,
}

/// A new file written front to back starts uploading once it is this large (smaller ones are
/// uploaded at close, in one or two blocks).
const EARLY_MIN: u64 = 16 << 20;

impl Fs {
    pub(super) fn new_staged(&self) -> FsResult<std::fs::File> {
        Ok(tempfile::tempfile_in(&self.cfg.cache_dir)?)
    }

    /// Makes sure `st` has a staged copy: empty when truncating, else the current value. A
    /// truncation is a write: it is refused while a lock on `key` that ended with its lease is
    /// still held here (`check_lease`), whether or not a copy is staged yet. (A truncating open
    /// by a process the lost holder started, arriving once the lock table had dropped the lease,
    /// used to stage an empty copy bound to no lease, which the next lock here then adopted as
    /// changes made without a lock and saved: found by scripts/lock-torture, a counter reset.)
    pub(super) async fn ensure_staged(
        &self,
        key: &str,
        st: &mut FileState,
        truncate: bool,
    ) -> FsResult<()> {
        // The lease the truncation belongs to, read before the check: a lock table that drops a
        // lost lease between the two makes the check fail, never the truncation unbound.
        let lease = self.locks.lease_id(key);
        if truncate {
            self.check_lease(key, None, st)?;
        }
        if st.staged.is_some() {
            if truncate {
                let dirty = st.staged.as_ref().is_some_and(|s| s.dirty);
                if !dirty || st.dirty_under.is_none() {
                    st.dirty_under = lease.clone();
                }
                if let Some(s) = st.staged.as_mut() {
                    s.early = None;
                    s.scattered = false;
                    s.file.set_len(0)?;
                    s.dirty = true;
                    s.mtime = SystemTime::now();
                    s.derived = false;
                    s.appended_from = None;
                }
            }
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.stage_base(key, st, truncate).await {
                Err(FsError::Transfer(TransferError::Changed(_))) if attempts < 4 => {
                    // Another host rewrote it after this host's index copy was taken: the copy
                    // starts from the newest version instead.
                    let props = self.store.head(&self.layout.blob_name(key)).await?;
                    log::debug!("{key:?} changed before it could be staged; staging the newest");
                    st.base = Some(entry_from_props(&props));
                }
                r => {
                    if r.is_ok() && truncate {
                        st.dirty_under = lease;
                    }
                    return r;
                }
            }
        }
    }

    /// Stages `st.base` (or nothing, when truncating): a new local copy of that version.
    async fn stage_base(&self, key: &str, st: &mut FileState, truncate: bool) -> FsResult<()> {
        let file = self.new_staged()?;
        let derived = !truncate && st.base.is_some();
        let base_len = st.base.as_ref().map_or(0, |b| b.size);
        if let Some(base) = st.base.as_ref().filter(|b| !truncate && b.size > 0) {
            let blob = self.layout.blob_name(key);
            let value = self
                .content
                .get(
                    &self.store,
                    &blob,
                    &base.etag,
                    Some((base.size, base.stored_size)),
                )
                .await?;
            if value.on_disk() {
                value.complete().await?;
                let mut src = value.file()?;
                let mut dst = file.try_clone()?;
                tokio::task::spawn_blocking(move || {
                    use std::io::{Seek, SeekFrom};
                    src.seek(SeekFrom::Start(0))?;
                    std::io::copy(&mut src, &mut dst)
                })
                .await
                .map_err(FsError::from)??;
            } else {
                // A value too large for the disk cache is decoded straight into the staged copy.
                transfer::download_to(
                    &self.store,
                    &blob,
                    Some(&base.etag),
                    file.try_clone()?,
                    &self.cfg.transfer,
                    None,
                )
                .await?;
            }
        }
        let mtime = st
            .base
            .as_ref()
            .map_or_else(SystemTime::now, |b| from_ns(b.mtime_ns));
        st.staged = Some(Staged {
            file,
            dirty: truncate,
            mtime: if truncate { SystemTime::now() } else { mtime },
            derived,
            appended_from: derived.then_some(base_len),
            early: None,
            scattered: false,
        });
        st.written |= truncate;
        Ok(())
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        if !h.write {
            return Err(FsError::BadHandle);
        }
        if offset.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
            return Err(FsError::FileTooLarge);
        }
        let f = self.open_file(h.ino).ok_or(FsError::BadHandle)?;
        let key = self.key_of(h.ino)?;
        let mut st = f.state.lock().await;
        self.check_lease(&key, Some(fh), &st)?;
        self.note_dirty(&key, &mut st);
        self.note_unsaved(&key, fh);
        let lease = st.dirty_under.clone().or_else(|| self.locks.lease_id(&key));
        let unlinked = st.unlinked;
        let staged = st.staged.as_mut().ok_or(FsError::BadHandle)?;
        let end = staged.file.metadata()?.len();
        let at = if h.append { end } else { offset };
        if at != end {
            staged.appended_from = None;
            // Bytes an early upload may have read already change: give it up.
            staged.early = None;
            staged.scattered = true;
        }
        staged.file.write_all_at(data, at)?;
        staged.dirty = true;
        staged.mtime = SystemTime::now();
        let len = end.max(at + data.len() as u64);
        match &staged.early {
            Some(early) => early.grew(len),
            None if !staged.derived && !staged.scattered && !unlinked && len >= EARLY_MIN => {
                // (Not starting one is never an error: the close uploads the file whole.)
                staged.early = transfer::EarlyUpload::start(
                    &self.store,
                    &self.layout.blob_name(&key),
                    &staged.file,
                    len,
                    lease,
                    &self.cfg.transfer,
                    &self.early_slots,
                );
            }
            None => {}
        }
        st.written = true;
        st.save_failed = false;
        Ok(data.len() as u32)
    }

    /// Makes a handle's file durable and listed everywhere: uploads unsaved changes and waits
    /// for the index commit that lists them.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh).await?;
        self.sync_index().await
    }

    /// Waits until every listing change this process made so far is in the index blob.
    pub async fn sync_index(&self) -> FsResult<()> {
        self.index.flush().await.map_err(|e| {
            log::error!("index: changes this host made are not listed yet: {e}");
            e.into()
        })
    }

    /// Uploads unsaved changes of a handle's file (flush on close).
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        if !h.write {
            return Ok(());
        }
        if let (Some(Some(_)), Ok(key)) = (&h.unsaved, self.key_of(h.ino)) {
            if let Some(f) = self.open_file(h.ino) {
                // This handle's writes were made under a lease that is gone: they are not
                // saved under another one, and the close says so.
                let st = f.state.lock().await;
                self.check_lease(&key, Some(fh), &st)?;
            }
        }
        self.save(h.ino).await
    }

    /// Refuses a change to `key` (through handle `fh`, if given) when that handle's unsaved
    /// writes, or the staged copy's unsaved changes, were made under a lease this host no longer
    /// holds: its lock was lost, and another host may have written since.
    pub(super) fn check_lease(&self, key: &str, fh: Option<u64>, st: &FileState) -> FsResult<()> {
        let current = self.locks.lease_id(key);
        let lost = |l: &String| current.as_ref() != Some(l);
        let handle_lost = fh.is_some_and(|fh| {
            lock(&self.handles)
                .get(&fh)
                .is_some_and(|h| matches!(&h.unsaved, Some(Some(l)) if lost(l)))
        });
        // A lock taken through this handle ended with its lease: what the handle writes now was
        // meant to be written under that lock (held up on its way while this host was paused).
        let lock_lost = fh.is_some_and(|fh| self.locks.lost_lock(key, fh).is_some())
            || self.locks.others_lost(key, fh);
        let dirty = st.staged.as_ref().is_some_and(|s| s.dirty);
        if handle_lost || lock_lost || (dirty && st.dirty_under.as_ref().is_some_and(lost)) {
            log::error!("{key:?}: {}", FsError::LockLost);
            return Err(FsError::LockLost);
        }
        Ok(())
    }

    /// Refuses a change to the name `key` (a rename onto or away from it, an unlink) while a
    /// lock on it that ended with its lease is still held here: like a write, it would land
    /// without the lock its holder (or a process it started: `mv f.tmp f` under `flock f`)
    /// meant to make it under.
    pub(super) fn check_name(&self, key: &str) -> FsResult<()> {
        if self.locks.others_lost(key, None) {
            log::error!("{key:?}: {}", FsError::LockLost);
            return Err(FsError::LockLost);
        }
        Ok(())
    }

    /// The staged copy of `key` is about to get changes: they belong to the lease this host
    /// holds on it now (changes begun without one join the first lease taken while they are
    /// unsaved).
    pub(super) fn note_dirty(&self, key: &str, st: &mut FileState) {
        let dirty = st.staged.as_ref().is_some_and(|s| s.dirty);
        if !dirty || st.dirty_under.is_none() {
            st.dirty_under = self.locks.lease_id(key);
        }
    }

    /// Handle `fh` of `key` writes: its writes belong to the lease this host holds on it now.
    pub(super) fn note_unsaved(&self, key: &str, fh: u64) {
        let current = self.locks.lease_id(key);
        if let Some(h) = lock(&self.handles).get_mut(&fh) {
            if !matches!(h.unsaved, Some(Some(_))) {
                h.unsaved = Some(current);
            }
        }
    }

    /// The unsaved writes of every handle of `ino` were dropped (made under a lost lock): each
    /// such handle fails its later writes and its close, whatever lease it wrote under.
    pub(super) fn fence_unsaved(&self, ino: u64) {
        for h in lock(&self.handles).values_mut() {
            if h.ino == ino && h.unsaved.is_some() {
                // (No lease id is empty: this binding matches no lease, ever.)
                h.unsaved = Some(Some(String::new()));
            }
        }
    }

    /// The unsaved changes of `ino` (whose state is `st`) now belong to `lease`: a rename
    /// carried its lock to a new name, with a lease on the new blob.
    /// Only changes made under `old`, the lease the old name had, move: others were made
    /// under a lock already lost, and stay refused.
    pub(super) fn rebind_unsaved(
        &self,
        ino: u64,
        st: &mut FileState,
        old: &Option<String>,
        lease: Option<String>,
    ) {
        let Some(old) = old else {
            return;
        };
        if st.dirty_under.as_ref() == Some(old) {
            st.dirty_under = lease.clone();
        }
        for h in lock(&self.handles).values_mut() {
            if h.ino == ino && matches!(&h.unsaved, Some(Some(l)) if l == old) {
                h.unsaved = Some(lease.clone());
            }
        }
    }

    /// Uploads the staged copy of `ino` if it has unsaved changes: blob first, then the index.
    pub(super) async fn save(&self, ino: u64) -> FsResult<()> {
        self.save_under(ino, None).await
    }

    /// [`Fs::save`], presenting `lease` (one this host is about to give back, no longer in the
    /// lock table) instead of the lock table's lease for the file.
    pub(super) async fn save_under(&self, ino: u64, lease: Option<String>) -> FsResult<()> {
        let Some(f) = self.open_file(ino) else {
            return Ok(());
        };
        let mut st = f.state.lock().await;
        let Some(staged) = &st.staged else {
            return Ok(());
        };
        if !staged.dirty {
            return Ok(());
        }
        if st.unlinked {
            // Unlinked while open: its data lives on in the open handles, saved nowhere.
            if let Some(s) = st.staged.as_mut() {
                s.dirty = false;
            }
            return Ok(());
        }
        let key = self.key_of(ino)?;
        let blob = self.layout.blob_name(&key);
        let src = staged.file.try_clone()?;
        let mtime = staged.mtime;
        // Changes begun under a lease are saved under that one only (if it is gone, the save
        // fails: they were made under a lock that no longer holds).
        let lease = st
            .dirty_under
            .clone()
            .or(lease)
            .or_else(|| self.locks.lease_id(&key));
        let mut opts = PutOptions {
            conditions: Conditions::default().with_lease(lease),
            ..Default::default()
        };
        // The attributes travel with the value, in its metadata (see index::meta).
        let mut entry = Entry::file(0, 0, to_ns(mtime), "");
        entry.ctime_ns = to_ns(SystemTime::now());
        // A new value's access time follows its mtime, unless set while it was unsaved.
        entry.atime_ns = st.atime;
        // The file's own attributes stay with it across new values.
        entry.xattrs = match &st.xattrs {
            Some(x) => x.clone(),
            None => st
                .base
                .as_ref()
                .map(|b| b.xattrs.clone())
                .unwrap_or_default(),
        };
        if let Some((mode, uid, gid)) = st
            .perms
            .or_else(|| st.base.as_ref().map(|b| (b.mode, b.uid, b.gid)))
        {
            (entry.mode, entry.uid, entry.gid) = (mode, uid, gid);
        }
        opts.metadata = blob_metadata(&entry);
        let create_only = st.base.is_none() && !st.written;
        opts.conditions.if_none_match_any = create_only;
        // A copy of the base version replaces that version only (see `Staged::derived`).
        let derived = staged.derived && !create_only;
        if derived {
            opts.conditions.if_match = st.base.as_ref().map(|b| b.etag.clone());
        }
        // An upload that ran while the file was written commits now, if it streamed exactly
        // this file under this lease; if it fails, the file is uploaded from its start.
        let early = st.staged.as_mut().and_then(|s| s.early.take());
        let mut early = match early {
            Some(e) if e.fits(&blob, src.metadata()?.len(), &opts.conditions.lease_id) => {
                Some(e.finish(opts.clone()))
            }
            _ => None,
        };
        let mut src = src;
        let mut attempts = 0;
        let uploaded = loop {
            attempts += 1;
            let body = src.try_clone()?;
            let early_result = match early.take() {
                Some(finish) => match finish.await {
                    // A refusal (lease, condition, credential) would come again: it is the
                    // answer. Anything else (blocks discarded by another upload's commit, a
                    // failure of the network while the file was written, local I/O, the task)
                    // is retried with the whole file.
                    Err(TransferError::Store(e))
                        if !e.is_transient() && !matches!(e, StoreError::BlockListInvalid(_)) =>
                    {
                        Some(Err(TransferError::Store(e)))
                    }
                    Ok(u) => Some(Ok(u)),
                    Err(e) => {
                        log::info!(
                            "{key:?}: the upload made while writing failed ({e}); uploading the \
                             file again"
                        );
                        None
                    }
                },
                None => None,
            };
            let result = match early_result {
                Some(r) => r,
                None => {
                    let (cfg, opts) = (&self.cfg.transfer, opts.clone());
                    transfer::upload_file(&self.store, &blob, body, opts, cfg).await
                }
            };
            match result {
                Err(TransferError::Store(
                    StoreError::PreconditionFailed(_) | StoreError::LeaseConflict(_),
                )) if create_only && attempts < 4 => {
                    // Another host created this name since this host's index copy: the file
                    // this open(O_CREAT) should have found exists.
                    match self.holder(&key).await? {
                        Holder::Value(found) => {
                            // Adopt it instead of blanking it; this handle goes on writing to
                            // it, as if the open had found it.
                            log::info!("{key:?} was created elsewhere meanwhile; using that value");
                            st.staged = None;
                            st.perms = None;
                            (st.atime, st.xattrs) = (None, None);
                            st.base = Some(found);
                            return self.ensure_staged(&key, &mut st, false).await;
                        }
                        Holder::LiveClaim => {
                            // Another host is writing it (O_EXCL) and nothing was written
                            // here: the name is that host's.
                            if let Some(s) = st.staged.as_mut() {
                                s.dirty = false;
                            }
                            return Ok(());
                        }
                        Holder::StaleClaim(etag) => {
                            opts.conditions.if_none_match_any = false;
                            opts.conditions.if_match = Some(etag);
                        }
                        Holder::Nothing => {
                            opts.conditions.if_none_match_any = true;
                            opts.conditions.if_match = None;
                        }
                    }
                }
                Err(TransferError::Store(StoreError::PreconditionFailed(_)))
                    if derived && opts.conditions.if_match.is_some() =>
                {
                    let appended = st.staged.as_ref().and_then(|s| s.appended_from);
                    match appended {
                        Some(from) if attempts < 4 => {
                            // Another host wrote the file after the copy here was read: these
                            // appends go onto its newest version instead of undoing that write.
                            log::info!(
                                "{key:?} changed elsewhere since it was read here; appending \
                                 onto its newest version"
                            );
                            self.rebase_appends(&key, &mut st, from).await?;
                            opts.conditions.if_match = st.base.as_ref().map(|b| b.etag.clone());
                            src = match st.staged.as_ref() {
                                Some(s) => s.file.try_clone()?,
                                None => return Err(FsError::BadHandle),
                            };
                        }
                        _ => {
                            log::error!(
                                "saving {key:?} refused: another host wrote it after this host \
                                 read it, and saving these changes (made to the older version) \
                                 would undo that write; the newer value stays"
                            );
                            st.save_failed = true;
                            return Err(FsError::Transfer(TransferError::Store(
                                StoreError::PreconditionFailed(format!(
                                    "{blob}: changed on another host since it was read here"
                                )),
                            )));
                        }
                    }
                }
                Ok(uploaded) => break uploaded,
                Err(e) => {
                    log::error!("saving {key:?} failed, the previous value stays: {e}");
                    st.save_failed = true;
                    return Err(e.into());
                }
            }
        };
        (entry.size, entry.stored_size, entry.etag) =
            (uploaded.size, uploaded.stored_size, uploaded.etag);
        // The listing follows in the next group commit (fsync waits for it): a copy of many
        // small files costs one index write per batch, not one per file. It replaces the entry
        // this write was based on, if that one is listed (a claim of `O_EXCL` is not).
        let replaces = st.base.as_ref().map(|b| b.etag.clone()).filter(|etag| {
            self.index
                .cached()
                .entries
                .get(&key)
                .is_some_and(|e| &e.etag == etag)
        });
        let mut changes = vec![Change::Saved {
            key: key.clone(),
            blob: blob.clone(),
            entry: entry.clone(),
            replaces,
        }];
        // A new name in its directory: the directory changed.
        if !self.index.cached().entries.contains_key(&key) {
            changes.extend(self.parent_changed(&key));
        }
        self.index.submit(changes);
        self.index.sync_journal().await;
        self.content.forget(&blob);
        st.base = Some(entry);
        // Saved over the claim (if any): its heartbeat stops.
        st.claim = None;
        st.perms = None;
        st.atime = None;
        st.xattrs = None;
        st.replacing = false;
        st.written = false;
        st.save_failed = false;
        st.dirty_under = None;
        if let Some(s) = st.staged.as_mut() {
            s.dirty = false;
        }
        for h in lock(&self.handles).values_mut() {
            if h.ino == ino {
                h.unsaved = None;
            }
        }
        Ok(())
    }

    /// Moves the bytes appended to `st`'s copy (from byte `from` on) onto a copy of the newest
    /// version of `key`, which becomes the base.
    async fn rebase_appends(&self, key: &str, st: &mut FileState, from: u64) -> FsResult<()> {
        let props = self.store.head(&self.layout.blob_name(key)).await?;
        let newest = entry_from_props(&props);
        let Some(old) = st.staged.take() else {
            return Err(FsError::BadHandle);
        };
        let kept_base = st.base.replace(newest);
        if let Err(e) = self.ensure_staged(key, st, false).await {
            (st.staged, st.base) = (Some(old), kept_base);
            return Err(e);
        }
        let Some(new) = st.staged.as_mut() else {
            return Err(FsError::BadHandle);
        };
        let (src, dst) = (old.file.try_clone()?, new.file.try_clone()?);
        let start = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            use std::io::{Seek, SeekFrom};
            let (mut src, mut dst) = (src, dst);
            let at = dst.seek(SeekFrom::End(0))?;
            src.seek(SeekFrom::Start(from))?;
            std::io::copy(&mut src, &mut dst)?;
            Ok(at)
        })
        .await
        .map_err(FsError::from)??;
        new.dirty = true;
        new.mtime = old.mtime;
        new.appended_from = Some(start);
        Ok(())
    }

    /// Saves every file with unsaved changes and waits for the index to list them (at unmount).
    pub async fn save_all(&self) -> FsResult<()> {
        let inos: Vec<u64> = lock(&self.files).keys().copied().collect();
        let mut first_err = None;
        for ino in inos {
            if let Err(e) = self.save(ino).await {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.sync_index().await {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Before unmounting: saves every unsaved change, waits for the index to list them, and
    /// releases every lease this host holds. Failures are logged (nothing is left to return
    /// them to).
    pub async fn shutdown(&self) {
        if let Err(e) = self.save_all().await {
            log::error!("unmount: some changes could not be saved: {e}");
        }
        self.release_all_locks().await;
    }
}
