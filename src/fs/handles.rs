//! Open files and their handles: `open`, `read`, `release`. A read-only handle reads the version
//! saved when it opened (close-to-open, on this host too) through the content cache; a handle
//! that writes reads the staged copy.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::index::meta::entry_from_props;
use crate::index::{Change, Entry};
use crate::mutex::lock;
use crate::store::StoreError;
use crate::transfer::TransferError;

/// Per-inode state while a file is open or has unsaved changes.
pub(super) struct OpenFile {
    pub(super) state: Arc<tokio::sync::Mutex<FileState>>,
}

pub(super) struct FileState {
    /// The index entry this copy started from; `None` for a file created here and not yet saved.
    pub(super) base: Option<Entry>,
    pub(super) staged: Option<Staged>,
    pub(super) handles: usize,
    /// (mode, uid, gid) set while the content was unsaved, recorded at the next upload.
    pub(super) perms: Option<(u32, u32, u32)>,
    /// An access time set while the content was unsaved, recorded at the next upload.
    pub(super) atime: Option<i64>,
    /// Renamed over an existing value before its first save: `base` is that value, which the
    /// first save replaces (and which goes if the file moves on before that).
    pub(super) replacing: bool,
    /// The file's own extended attributes as changed while the content was unsaved, recorded
    /// at the next upload (`None`: the base entry's).
    pub(super) xattrs: Option<Vec<(String, Vec<u8>)>>,
    /// Whether the user wrote or truncated the content. A file created here and never written
    /// does not overwrite a value another host saved under the same name meanwhile.
    pub(super) written: bool,
    /// The claim of a file created here with `O_EXCL` and not saved yet (its heartbeat).
    pub(super) claim: Option<claims::ClaimKeeper>,
    /// The name was unlinked while open: nothing of it is saved any more.
    pub(super) unlinked: bool,
    /// The last save failed and nothing was written since: the program was told (EIO at
    /// `close`/`fsync`), so the kernel's later `release` must not upload it after all (a value
    /// landing after its close failed could undo another host's newer write).
    pub(super) save_failed: bool,
    /// The lease this host held on the file when its unsaved changes were begun (`None`: none,
    /// or no unsaved changes). They are saved under that lease only: once it is lost, they
    /// were made under a lock that no longer holds, and may not land under a later one.
    pub(super) dirty_under: Option<String>,
}

/// An open file handle.
#[derive(Clone)]
pub(super) struct Handle {
    pub(super) ino: u64,
    pub(super) write: bool,
    pub(super) append: bool,
    /// For read-only handles: the etag of the version opened (close-to-open) ...
    pub(super) etag: Option<String>,
    /// ... its (value, stored) sizes ...
    pub(super) sizes: Option<(u64, u64)>,
    /// ... and, from the first read on, its decoded value.
    pub(super) value: Option<Arc<content::CachedValue>>,
    /// For a handle of the status file: the snapshot it reads.
    pub(super) snapshot: Option<Arc<Vec<u8>>>,
    /// Writes through this handle not saved yet (`Some`), and the lease this host held on the
    /// file when they were made: once that lease is lost, the handle's writes and close fail.
    pub(super) unsaved: Option<Option<String>>,
}

impl Handle {
    /// A handle of `ino` that has read nothing yet.
    pub(super) fn new(ino: u64, write: bool, append: bool) -> Self {
        Handle {
            ino,
            write,
            append,
            etag: None,
            sizes: None,
            value: None,
            snapshot: None,
            unsaved: None,
        }
    }
}

impl Fs {
    pub(super) fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Handle> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    pub(super) fn file_state(&self, ino: u64) -> Arc<OpenFile> {
        lock(&self.files)
            .entry(ino)
            .or_insert_with(|| {
                Arc::new(OpenFile {
                    state: Arc::new(tokio::sync::Mutex::new(FileState {
                        base: None,
                        staged: None,
                        handles: 0,
                        perms: None,
                        atime: None,
                        replacing: false,
                        xattrs: None,
                        written: false,
                        claim: None,
                        unlinked: false,
                        save_failed: false,
                        dirty_under: None,
                    })),
                })
            })
            .clone()
    }

    /// The local state of `ino`, locked, for a new handle or a change: the one every later
    /// lookup finds. The last handle's release drops the state while another open may be
    /// waiting for its lock (the kernel sends `release` after `close` has returned), so a state
    /// found dropped once locked is put back, or the newer one is taken.
    pub(super) async fn lock_state(
        &self,
        ino: u64,
    ) -> (Arc<OpenFile>, tokio::sync::OwnedMutexGuard<FileState>) {
        loop {
            let f = self.file_state(ino);
            let st = f.state.clone().lock_owned().await;
            let mut files = lock(&self.files);
            match files.get(&ino) {
                Some(current) if Arc::ptr_eq(current, &f) => {}
                Some(_) => continue,
                None => {
                    files.insert(ino, f.clone());
                }
            }
            drop(files);
            return (f, st);
        }
    }

    pub(super) fn open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&ino).cloned()
    }

    /// Forgets the local state `f` of `ino` (locked: `st`) when no handle uses it and nothing
    /// in it is unsaved, and only if it is still the state every lookup finds (a newer one,
    /// of an open since, stays).
    pub(super) fn drop_if_idle(&self, ino: u64, f: &Arc<OpenFile>, st: &FileState) {
        if st.handles > 0 || st.staged.as_ref().is_some_and(|s| s.dirty) {
            return;
        }
        let mut files = lock(&self.files);
        if files.get(&ino).is_some_and(|g| Arc::ptr_eq(g, f)) {
            files.remove(&ino);
        }
    }

    /// Whether the kernel should pass reads of a handle opened with `flags` straight through
    /// (no page cache): read-only handles are, so a value rewritten by another host is never
    /// cut at the size the kernel cached before the index caught up.
    pub fn direct_io(flags: i32) -> bool {
        flags & libc::O_ACCMODE == libc::O_RDONLY
    }

    /// Opens a file; `flags` are the open(2) flags.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        if ino == status::STATUS_INO {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                return Err(FsError::NotPermitted("the status file is read-only"));
            }
            let text = Arc::new(self.status_json().await?);
            return Ok(self.new_handle(Handle {
                snapshot: Some(text),
                ..Handle::new(ino, false, false)
            }));
        }
        let key = self.key_of(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if write {
            self.writable()?;
        }
        let attr = self.attr_of(&key, ino).await?;
        if attr.kind == NodeKind::Dir {
            return Err(FsError::IsDir);
        }
        let entry = self.entry_of(&key).await?;
        let (f, mut st) = self.lock_state(ino).await;
        // Close-to-open: a saved local copy of an older version (another host has written
        // since) is dropped, so this open sees the newest value.
        let stale = st.staged.as_ref().is_some_and(|s| !s.dirty)
            && st.base.as_ref().map(|b| &b.etag) != entry.as_ref().map(|e| &e.etag);
        if stale {
            let kept = (st.staged.take(), st.base.clone());
            st.base = entry.clone();
            if st.handles > 0 {
                // Other handles here work on that copy (a writer waiting for its lock, say): it
                // is replaced by a copy of the newest version, never taken from under them.
                if let Err(e) = self.ensure_staged(&key, &mut st, false).await {
                    log::warn!(
                        "{key:?}: cannot fetch its newest version ({e}); keeping the older copy"
                    );
                    (st.staged, st.base) = kept;
                }
            }
        }
        if st.staged.is_none() {
            st.base = entry.clone();
        }
        if write {
            // flock is advisory: another host's lock does not stop an open (the usual
            // open-then-lock idiom); a save without the lease while it is held fails instead.
            let staged = self.ensure_staged(&key, &mut st, flags & libc::O_TRUNC != 0);
            if let Err(e) = staged.await {
                self.drop_if_idle(ino, &f, &st);
                return Err(e);
            }
        }
        st.handles += 1;
        drop(st);
        Ok(self.new_handle(Handle {
            sizes: entry.as_ref().map(|e| (e.size, e.stored_size)),
            etag: entry.map(|e| e.etag),
            ..Handle::new(ino, write, flags & libc::O_APPEND != 0)
        }))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self.handle(fh)?;
        if let Some(text) = &h.snapshot {
            let start = (offset as usize).min(text.len());
            let end = start.saturating_add(size as usize).min(text.len());
            return Ok(Bytes::copy_from_slice(&text[start..end]));
        }
        if let Some(f) = self.open_file(h.ino) {
            let st = f.state.lock().await;
            // Only handles that write read the staged copy (their own bytes, and those of other
            // writers of this host, as on a local disk). A handle opened for reading reads the
            // version saved when it opened: never a value half-written, or cut short by a
            // later `O_TRUNC`, on this host either.
            if let Some(staged) = st.staged.as_ref().filter(|_| h.write) {
                let file = staged.file.try_clone()?;
                drop(st);
                return tokio::task::spawn_blocking(move || -> FsResult<Bytes> {
                    let len = file.metadata()?.len();
                    let end = len.min(offset.saturating_add(u64::from(size)));
                    if offset >= end {
                        return Ok(Bytes::new());
                    }
                    let mut buf = vec![0u8; (end - offset) as usize];
                    file.read_exact_at(&mut buf, offset)?;
                    Ok(buf.into())
                })
                .await
                .map_err(FsError::from)?;
            }
        }
        let Some(etag) = h.etag.clone() else {
            return Ok(Bytes::new()); // a file with no saved value yet
        };
        let key = self.key_of(h.ino)?;
        let blob = self.layout.blob_name(&key);
        // No byte of this handle's version served yet: a newer version may take its place.
        let unread = h.value.is_none();
        let first = match h.value {
            Some(v) => v.read(offset, size).await,
            None => match self.attach_value(fh, &blob, &etag, h.sizes).await {
                Ok(v) => v.read(offset, size).await,
                Err(e) => Err(e),
            },
        };
        let result = match first {
            Err(FsError::Transfer(TransferError::Changed(_))) if offset == 0 || unread => {
                // Another host rewrote the value after this host's copy of the index was taken:
                // serve the newest version, and refresh the index.
                self.index.invalidate();
                let props = self.store.head(&blob).await?;
                let newer = entry_from_props(&props);
                let sizes = Some((newer.size, newer.stored_size));
                lock(&self.fresher).insert(key.clone(), (newer, std::time::Instant::now(), etag));
                self.attach_value(fh, &blob, &props.etag, sizes)
                    .await?
                    .read(offset, size)
                    .await
            }
            r => r,
        };
        let gone = |e: &FsError| matches!(e.store_cause(), Some(StoreError::NotFound(_)));
        if result.as_ref().is_err_and(gone) {
            self.unlist_vanished(&key, &blob).await;
        }
        result
    }

    /// A listed name whose blob is gone (removed elsewhere, or a host died between an `rm`'s
    /// delete and its index commit): its listing goes too, so no name stays that no host can
    /// read. Only the version listed before the store said it was gone is unlisted (a value
    /// written since is not touched); failures are logged, the read has already failed.
    async fn unlist_vanished(&self, key: &str, blob: &str) {
        let listed = match self.index.current().await {
            Ok(index) => index.entries.get(key).map(|e| e.etag.clone()),
            Err(_) => return,
        };
        let Some(listed) = listed else { return };
        match self.store.head(blob).await {
            Err(StoreError::NotFound(_)) => {
                log::info!("{key:?} is listed but its blob is gone; unlisting it");
                self.index.submit(vec![Change::Remove {
                    key: key.to_string(),
                    if_etag: Some(listed),
                }]);
            }
            Ok(_) => {}
            Err(e) => log::debug!("{key:?}: could not check whether its blob is gone: {e}"),
        }
    }

    /// Starts (or joins) the download of `blob` at `etag` for handle `fh`.
    pub(super) async fn attach_value(
        &self,
        fh: u64,
        blob: &str,
        etag: &str,
        sizes: Option<(u64, u64)>,
    ) -> FsResult<Arc<content::CachedValue>> {
        let value = self.content.get(&self.store, blob, etag, sizes).await?;
        if let Some(h) = lock(&self.handles).get_mut(&fh) {
            h.etag = Some(etag.to_string());
            h.value = Some(value.clone());
        }
        Ok(value)
    }

    /// Closes a handle; the last one saves (if `flush` did not already) and drops local state.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return Ok(());
        };
        let Some(f) = self.open_file(h.ino) else {
            return Ok(());
        };
        let retry = h.write && !f.state.lock().await.save_failed;
        let result = if retry {
            self.save(h.ino).await
        } else {
            Ok(())
        };
        let mut st = f.state.lock().await;
        st.handles = st.handles.saturating_sub(1);
        if st.handles == 0 {
            if st.staged.as_ref().is_some_and(|s| s.dirty) {
                log::error!(
                    "unsaved changes of inode {} are dropped: the upload failed",
                    h.ino
                );
            }
            st.staged = None;
            (st.atime, st.xattrs) = (None, None);
            // A claim whose file was never saved does not outlive its last handle.
            if let Some(claim) = st.claim.take() {
                let key = self.key_of(h.ino).ok();
                if let Some(key) = key.filter(|_| !st.unlinked) {
                    if let Err(e) = self.drop_claim(&key, claim).await {
                        log::warn!("could not remove the claim of {key:?}: {e}");
                    }
                }
            }
            self.drop_if_idle(h.ino, &f, &st);
        }
        result
    }

    /// Reads the value of a small key whole (symlink targets, tests).
    pub async fn read_all(&self, ino: u64) -> FsResult<Vec<u8>> {
        let fh = self.open(ino, libc::O_RDONLY).await?;
        let mut out = Vec::new();
        let result = async {
            loop {
                let chunk = self.read(fh, out.len() as u64, 1 << 20).await?;
                if chunk.is_empty() {
                    return Ok::<_, FsError>(());
                }
                out.extend_from_slice(&chunk);
            }
        }
        .await;
        self.release(fh).await?;
        result.map(|_| out)
    }
}
