//! The filesystem core: POSIX semantics over the index, the store and the caches, independent of
//! FUSE so it can be tested without a kernel mount.
//!
//! - Names and attributes come from the index (`SharedIndex`), revalidated at most once per TTL;
//!   `readdir` never lists the container.
//! - Reads go through the `ContentCache` (values decoded to local disk, tied to their etag).
//! - Writes go to a `StagedFile` (a local temporary file) and are uploaded compressed, as one
//!   atomic commit, on flush/fsync/close; the index is updated after the blob, never before.
//!   An upload that fails fails the close/fsync, and the previous value stays intact. The index
//!   entry of a saved file is *submitted* (listed here at once, written in the next group
//!   commit); fsync, fsyncdir and unmount wait for that commit.
//! - Directories are key prefixes; an explicit (possibly empty) directory is an index entry of
//!   kind `Dir` plus a zero-length marker blob with metadata `hdi_isfolder=true`.

pub mod content;
pub mod error;
pub mod inode;
pub mod locking;
pub mod status;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::codec;
use crate::index::journal::Journal;
use crate::index::{Change, Entry, EntryKind, Index, SharedIndex};
use crate::layout::Layout;
use crate::mutex::lock;
use crate::store::{BlobStore, Conditions, PutOptions, StoreError};
use crate::time::{from_ns, to_ns};
use crate::transfer::{self, TransferConfig, TransferError};
use content::ContentCache;
pub use error::{FsError, FsResult};
use inode::{child_key, parent_key, InodeTable, ROOT_INO};
pub use locking::LockMode;
use locking::LockTable;

pub use crate::index::meta::META_IS_FOLDER;
use crate::index::meta::{blob_metadata, entry_from_props};

/// How long an entry newer than the index copy is trusted over it.
const FRESHER_FOR: Duration = Duration::from_secs(5);
/// Entries a readdirplus reply is first asked for, and at most (see [`Fs::readdir_plus`]).
const MIN_DIR_SLICE: usize = 32;
const MAX_DIR_SLICE: usize = 4096;

/// Settings of the filesystem core.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Owner shown for every file (permission bits come from the index, default 0644/0755).
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    /// Directory for staged writes and cached values.
    pub cache_dir: PathBuf,
    /// Upper bound of the disk cache of decoded values.
    pub cache_bytes: u64,
    pub transfer: TransferConfig,
    /// Length of the leases behind `flock` locks (renewed while held).
    pub lease_duration: crate::store::LeaseDuration,
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// Attributes of a node, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    /// Bytes stored in the container (compressed), for `st_blocks`.
    pub stored_size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// One directory entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: NodeKind,
}

/// Attribute changes of `setattr`.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The local, writable copy of a file being written.
struct Staged {
    file: std::fs::File,
    dirty: bool,
    /// Its last upload failed: until one succeeds, handles opened only for reading see the
    /// saved value, not these bytes (they may never reach the store).
    upload_failed: bool,
    /// mtime to record at the next upload.
    mtime: SystemTime,
}

/// Per-inode state while a file is open or has unsaved changes.
struct OpenFile {
    state: tokio::sync::Mutex<FileState>,
}

struct FileState {
    /// The index entry this copy started from; `None` for a file created here and not yet saved.
    base: Option<Entry>,
    staged: Option<Staged>,
    handles: usize,
    /// (mode, uid, gid) set while the content was unsaved, recorded at the next upload.
    perms: Option<(u32, u32, u32)>,
    /// Whether the user wrote or truncated the content. A file created here and never written
    /// does not overwrite a value another host saved under the same name meanwhile.
    written: bool,
}

/// An open file handle.
#[derive(Clone)]
struct Handle {
    ino: u64,
    write: bool,
    append: bool,
    /// For read-only handles: the etag of the version opened (close-to-open) ...
    etag: Option<String>,
    /// ... its (value, stored) sizes ...
    sizes: Option<(u64, u64)>,
    /// ... and, from the first read on, its decoded value.
    value: Option<Arc<content::CachedValue>>,
}

/// The filesystem core.
pub struct Fs {
    store: Arc<dyn BlobStore>,
    layout: Layout,
    index: Arc<SharedIndex>,
    cfg: FsConfig,
    mounted_at: SystemTime,
    inodes: Mutex<InodeTable>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Per open directory: where the last readdirplus slice started and how long it was.
    dir_slices: Mutex<HashMap<u64, (usize, usize)>>,
    next_fh: AtomicU64,
    content: ContentCache,
    locks: LockTable,
    /// Entries this host knows to be newer than its index copy (a blob read right after another
    /// host rewrote it, before that host's index commit), for a few seconds.
    /// Each with the etag the index listed then: once the index names another version, the
    /// index has moved past it.
    fresher: Mutex<HashMap<String, (Entry, std::time::Instant, String)>>,
    /// Open handles of the status file: the snapshot each one reads.
    status_handles: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

/// The children of directory `dir` in the index: (name, kind), in name order.
fn children(index: &Index, dir: &str) -> Vec<(String, NodeKind)> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = Vec::new();
    let mut from = prefix.clone();
    // One pass over the folder's keys; a subfolder's keys are skipped with one new seek.
    'seek: loop {
        for (key, entry) in index.entries.range::<_, String>(from.clone()..) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break 'seek;
            };
            match rest.split_once('/') {
                Some((name, _)) => {
                    out.push((name.to_string(), NodeKind::Dir));
                    // Past the whole subtree: '0' is the character after '/'.
                    from = format!("{prefix}{name}0");
                    continue 'seek;
                }
                None => out.push((rest.to_string(), kind_of(entry))),
            }
        }
        break;
    }
    // A folder's name comes back once more after names that sort between it and its '/'
    // ("a", "a-b", "a/x"): sort (nearly sorted already) and keep one of each.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn kind_of(e: &Entry) -> NodeKind {
    match e.kind {
        EntryKind::File => NodeKind::File,
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink => NodeKind::Symlink,
    }
}

/// Names this folder's index journals: the same store and folder give the same stem.
fn journal_stem(store: &dyn BlobStore, layout: &Layout) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}\n{}", store.describe(), layout.index_blob()));
    format!("index-{}", &hex::encode(digest)[..16])
}

/// Whether any key lies under `dir/`.
fn has_children(index: &Index, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    index
        .entries
        .range::<_, String>(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

impl Fs {
    pub fn new(
        store: Arc<dyn BlobStore>,
        layout: Layout,
        index_ttl: Duration,
        cfg: FsConfig,
    ) -> FsResult<Self> {
        std::fs::create_dir_all(&cfg.cache_dir)?;
        let index = SharedIndex::new(store.clone(), layout.index_blob(), index_ttl);
        if !cfg.read_only {
            match Journal::create(&cfg.cache_dir, &journal_stem(store.as_ref(), &layout)) {
                Ok(j) => index.attach_journal(j),
                Err(e) => log::warn!(
                    "no index journal in {} ({e}): a crash right after a close may leave that \
                     file unlisted until `remotedict fsck --repair`",
                    cfg.cache_dir.display()
                ),
            }
        }
        let content =
            ContentCache::new(cfg.cache_dir.clone(), cfg.cache_bytes, cfg.transfer.clone());
        Ok(Fs {
            store,
            layout,
            index,
            cfg,
            mounted_at: SystemTime::now(),
            inodes: Mutex::new(InodeTable::default()),
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            dir_slices: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            content,
            locks: LockTable::default(),
            fresher: Mutex::new(HashMap::new()),
            status_handles: Mutex::new(HashMap::new()),
        })
    }

    /// Loads the index once, so a broken one is reported at mount time.
    pub async fn warm_up(&self) -> FsResult<usize> {
        let keys = self.index.current().await?.entries.len();
        if !self.cfg.read_only {
            self.recover_journals().await;
        }
        Ok(keys)
    }

    /// Lists again the files an earlier mount of this folder saved but had not listed when it
    /// died (its journal, see `index::journal`), where the blob is still the version it wrote.
    async fn recover_journals(&self) {
        let stem = journal_stem(self.store.as_ref(), &self.layout);
        let orphans = match Journal::orphans(&self.cfg.cache_dir, &stem) {
            Ok(o) => o,
            Err(e) => {
                log::warn!("cannot read old index journals: {e}");
                return;
            }
        };
        for orphan in orphans {
            let mut changes = Vec::new();
            let mut complete = true;
            for (key, entry) in &orphan.entries {
                match self.store.head(&self.layout.blob_name(key)).await {
                    Ok(p) if p.etag == entry.etag => changes.push(Change::Put {
                        key: key.clone(),
                        entry: entry.clone(),
                    }),
                    Ok(_) | Err(StoreError::NotFound(_)) => {} // replaced or removed since
                    Err(e) => {
                        log::warn!("index journal {}: {key:?}: {e}", orphan.path.display());
                        complete = false;
                    }
                }
            }
            let n = changes.len();
            if let Err(e) = self.index.commit(changes).await {
                log::warn!("index journal {}: {e}", orphan.path.display());
                continue;
            }
            if n > 0 {
                log::info!(
                    "listed {n} file(s) an earlier mount saved but had not listed when it stopped"
                );
            }
            if complete {
                orphan.settle();
            }
        }
    }

    fn key_of(&self, ino: u64) -> FsResult<String> {
        lock(&self.inodes)
            .key(ino)
            .map(str::to_string)
            .ok_or(FsError::NotFound)
    }

    fn child(&self, parent: u64, name: &str) -> FsResult<String> {
        if self.virtual_attr(parent).is_some() || self.virtual_lookup(parent, name).is_some() {
            return Err(FsError::NotPermitted(
                "`.remotedict` is remotedict's own (read-only)",
            ));
        }
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(FsError::Invalid(format!("bad name {name:?}")));
        }
        let key = child_key(&self.key_of(parent)?, name);
        self.layout.check_key(&key)?;
        Ok(key)
    }

    fn open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&ino).cloned()
    }

    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn default_perm(&self, kind: NodeKind) -> u16 {
        match kind {
            NodeKind::Dir => 0o755,
            NodeKind::File => 0o644,
            NodeKind::Symlink => 0o777,
        }
    }

    fn attr_from_entry(&self, ino: u64, e: &Entry) -> Attr {
        let kind = kind_of(e);
        Attr {
            ino,
            kind,
            size: e.size,
            stored_size: e.stored_size,
            mtime: from_ns(e.mtime_ns),
            ctime: from_ns(e.ctime_ns),
            perm: if e.mode == 0 {
                self.default_perm(kind)
            } else {
                (e.mode & 0o7777) as u16
            },
            uid: if e.mode == 0 { self.cfg.uid } else { e.uid },
            gid: if e.mode == 0 { self.cfg.gid } else { e.gid },
        }
    }

    fn implicit_dir(&self, ino: u64) -> Attr {
        Attr {
            ino,
            kind: NodeKind::Dir,
            size: 0,
            stored_size: 0,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            perm: 0o755,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    /// Attributes of the node at `key`, from local unsaved state, then the index.
    async fn attr_of(&self, key: &str, ino: u64) -> FsResult<Attr> {
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
                attr.size = size;
                attr.mtime = staged.mtime;
                attr.ctime = staged.mtime.max(attr.ctime);
                if let Some((mode, uid, gid)) = st.perms {
                    (attr.perm, attr.uid, attr.gid) = ((mode & 0o7777) as u16, uid, gid);
                }
                return Ok(attr);
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
    fn listed_attr(
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

    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        if let Some(list) = self.virtual_dir(ino) {
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            lock(&self.dirs).insert(fh, Arc::new(list));
            return Ok(fh);
        }
        let key = self.key_of(ino)?;
        let attr = self.attr_of(&key, ino).await?;
        if attr.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        let index = self.index.current().await?;
        let mut list = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: NodeKind::Dir,
            },
            DirEntry {
                ino: if ino == ROOT_INO {
                    ROOT_INO
                } else {
                    self.parent_ino(&key)
                },
                name: "..".into(),
                kind: NodeKind::Dir,
            },
        ];
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
        {
            let mut inodes = lock(&self.inodes);
            list.reserve(names.len());
            for (name, kind) in names {
                let child_ino = inodes.ino(&child_key(&key, &name));
                list.push(DirEntry {
                    ino: child_ino,
                    name,
                    kind,
                });
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, Arc::new(list));
        Ok(fh)
    }

    fn parent_ino(&self, key: &str) -> u64 {
        lock(&self.inodes).ino(parent_key(key))
    }

    /// Entries of an open directory from position `offset` on.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
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
                return Ok(out);
            }
            start += max;
        }
    }

    /// Entries `start..start + max` of a directory listing with their attributes, leaving out
    /// those removed since opendir.
    async fn attrs_of_slice(
        &self,
        entries: &[DirEntry],
        start: usize,
        max: usize,
    ) -> FsResult<Vec<(u64, DirEntry, Attr)>> {
        let slice: Vec<(usize, &DirEntry)> =
            entries.iter().enumerate().skip(start).take(max).collect();
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
                self.listed_attr(&index, &key, e.ino, index.entries.get(&key))
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

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
        lock(&self.dir_slices).remove(&fh);
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Handle> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    fn file_state(&self, ino: u64) -> Arc<OpenFile> {
        lock(&self.files)
            .entry(ino)
            .or_insert_with(|| {
                Arc::new(OpenFile {
                    state: tokio::sync::Mutex::new(FileState {
                        base: None,
                        staged: None,
                        handles: 0,
                        perms: None,
                        written: false,
                    }),
                })
            })
            .clone()
    }

    fn new_staged(&self) -> FsResult<std::fs::File> {
        Ok(tempfile::tempfile_in(&self.cfg.cache_dir)?)
    }

    /// Makes sure `st` has a staged copy: empty when truncating, else the current value.
    async fn ensure_staged(&self, key: &str, st: &mut FileState, truncate: bool) -> FsResult<()> {
        if st.staged.is_some() {
            if truncate {
                if let Some(s) = st.staged.as_mut() {
                    s.file.set_len(0)?;
                    s.dirty = true;
                    s.mtime = SystemTime::now();
                }
            }
            return Ok(());
        }
        let file = self.new_staged()?;
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
                .map_err(|e| FsError::Io(e.to_string()))??;
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
            upload_failed: false,
            mtime: if truncate { SystemTime::now() } else { mtime },
        });
        st.written |= truncate;
        Ok(())
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
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            let text = Arc::new(self.status_json().await?);
            lock(&self.status_handles).insert(fh, text);
            return Ok(fh);
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
        let f = self.file_state(ino);
        let mut st = f.state.lock().await;
        // Close-to-open: a saved local copy of an older version (another host has written
        // since) is dropped, so this open sees the newest value.
        let stale = st.staged.as_ref().is_some_and(|s| !s.dirty)
            && st.base.as_ref().map(|b| &b.etag) != entry.as_ref().map(|e| &e.etag);
        if stale {
            st.staged = None;
        }
        if st.staged.is_none() {
            st.base = entry.clone();
        }
        if write {
            let staged = async {
                if entry.is_some() {
                    self.check_not_leased_elsewhere(&key).await?;
                }
                self.ensure_staged(&key, &mut st, flags & libc::O_TRUNC != 0)
                    .await
            };
            if let Err(e) = staged.await {
                self.drop_if_idle(ino, &st);
                return Err(e);
            }
        }
        st.handles += 1;
        drop(st);
        Ok(self.new_handle(Handle {
            ino,
            write,
            append: flags & libc::O_APPEND != 0,
            sizes: entry.as_ref().map(|e| (e.size, e.stored_size)),
            etag: entry.map(|e| e.etag),
            value: None,
        }))
    }

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
        let claimed = if flags & libc::O_EXCL != 0 {
            Some(self.claim_new(&key, perms).await?)
        } else {
            None
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
        st.written = flags & libc::O_TRUNC != 0;
        st.handles += 1;
        drop(st);
        let fh = self.new_handle(Handle {
            ino,
            write: true,
            append: flags & libc::O_APPEND != 0,
            etag: None,
            sizes: None,
            value: None,
        });
        Ok((self.getattr(ino).await?, fh))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let status = lock(&self.status_handles).get(&fh).cloned();
        if let Some(text) = status {
            let start = (offset as usize).min(text.len());
            let end = start.saturating_add(size as usize).min(text.len());
            return Ok(Bytes::copy_from_slice(&text[start..end]));
        }
        let h = self.handle(fh)?;
        if let Some(f) = self.open_file(h.ino) {
            let st = f.state.lock().await;
            if let Some(staged) = st.staged.as_ref().filter(|s| h.write || !s.upload_failed) {
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
                .map_err(|e| FsError::Io(e.to_string()))?;
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
        match first {
            Err(FsError::Transfer(TransferError::Changed(_))) if offset == 0 || unread => {
                // Another host rewrote the value after this host's copy of the index was taken:
                // serve the newest version, and refresh the index.
                self.index.invalidate();
                let props = self.store.head(&blob).await?;
                let newer = entry_from_props(&props);
                let sizes = Some((newer.size, newer.stored_size));
                lock(&self.fresher).insert(key, (newer, std::time::Instant::now(), etag));
                self.attach_value(fh, &blob, &props.etag, sizes)
                    .await?
                    .read(offset, size)
                    .await
            }
            r => r,
        }
    }

    /// Claims `key` for an `O_EXCL` create: an empty value, written only if no blob of that name
    /// exists anywhere (EEXIST if another host got there first). It is listed at the first save.
    async fn claim_new(&self, key: &str, perms: (u32, u32, u32)) -> FsResult<Entry> {
        let empty = Bytes::from(codec::compress(b""));
        let mut entry = self.new_entry(EntryKind::File, perms.0);
        (entry.uid, entry.gid) = (perms.1, perms.2);
        entry.stored_size = empty.len() as u64;
        self.put_if_absent(key, entry, empty).await
    }

    /// Writes `key`'s blob, carrying `entry`'s attributes, only if no blob of that name exists
    /// anywhere; returns the entry with the new etag.
    async fn put_if_absent(&self, key: &str, mut entry: Entry, content: Bytes) -> FsResult<Entry> {
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
            Err(StoreError::PreconditionFailed(_)) => return Err(FsError::Exists),
            Err(e) => return Err(e.into()),
        };
        Ok(entry)
    }

    /// A new entry of `kind` owned by the mount's user, timestamped now.
    fn new_entry(&self, kind: EntryKind, mode: u32) -> Entry {
        let mut e = Entry::file(0, 0, to_ns(SystemTime::now()), "");
        e.kind = kind;
        (e.mode, e.uid, e.gid) = (mode & 0o7777, self.cfg.uid, self.cfg.gid);
        e
    }

    /// Writes a new node's blob if the name is free anywhere (EEXIST otherwise), then lists it.
    async fn create_node(&self, key: &str, entry: Entry, content: Bytes) -> FsResult<Entry> {
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

    /// Lists the blob of `key` as it is in the container (another host wrote it and may not have
    /// committed its index entry yet; the same entry from both is harmless).
    async fn adopt_blob(&self, key: &str) -> FsResult<Option<Entry>> {
        let props = match self.store.head(&self.layout.blob_name(key)).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => {
                self.index.invalidate();
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let size = props
            .metadata
            .get(codec::META_SIZE)
            .and_then(|v| v.parse().ok())
            .unwrap_or(props.size);
        let entry = Entry::file(size, props.size, to_ns(props.last_modified), props.etag);
        self.index
            .commit(vec![Change::Insert {
                key: key.to_string(),
                entry: entry.clone(),
            }])
            .await?;
        Ok(self.index.cached().entries.get(key).cloned())
    }

    /// The entry of `key`: the index's, unless this host has just seen a newer blob.
    async fn entry_of(&self, key: &str) -> FsResult<Option<Entry>> {
        let listed = self.index.current().await?.entries.get(key).cloned();
        let mut fresher = lock(&self.fresher);
        if let Some((e, seen, over)) = fresher.get(key) {
            // Newer only while the index still lists the version it replaced.
            if seen.elapsed() < FRESHER_FOR && listed.as_ref().map(|l| &l.etag) == Some(over) {
                return Ok(Some(e.clone()));
            }
            fresher.remove(key);
        }
        Ok(listed)
    }

    /// Starts (or joins) the download of `blob` at `etag` for handle `fh`.
    async fn attach_value(
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

    /// EBUSY when another host holds the lease of `key` (its lock), so a write fails at open
    /// rather than at close.
    async fn check_not_leased_elsewhere(&self, key: &str) -> FsResult<()> {
        if self.locks.lease_id(key).is_some() {
            return Ok(());
        }
        match self.store.head(&self.layout.blob_name(key)).await {
            Ok(p) if p.lease_state == crate::store::LeaseState::Leased => {
                Err(StoreError::LeaseConflict(key.to_string()).into())
            }
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        if !h.write {
            return Err(FsError::BadHandle);
        }
        let f = self.open_file(h.ino).ok_or(FsError::BadHandle)?;
        let mut st = f.state.lock().await;
        let staged = st.staged.as_mut().ok_or(FsError::BadHandle)?;
        let at = if h.append {
            staged.file.metadata()?.len()
        } else {
            offset
        };
        staged.file.write_all_at(data, at)?;
        staged.dirty = true;
        staged.mtime = SystemTime::now();
        st.written = true;
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
        if lock(&self.status_handles).contains_key(&fh) {
            return Ok(());
        }
        let h = self.handle(fh)?;
        if !h.write {
            return Ok(());
        }
        self.save(h.ino).await
    }

    /// Uploads the staged copy of `ino` if it has unsaved changes: blob first, then the index.
    async fn save(&self, ino: u64) -> FsResult<()> {
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
        let key = self.key_of(ino)?;
        let blob = self.layout.blob_name(&key);
        let src = staged.file.try_clone()?;
        let mtime = staged.mtime;
        let mut opts = PutOptions {
            conditions: Conditions::default().with_lease(self.locks.lease_id(&key)),
            ..Default::default()
        };
        // The attributes travel with the value, in its metadata (see index::meta).
        let mut entry = Entry::file(0, 0, to_ns(mtime), "");
        entry.ctime_ns = to_ns(SystemTime::now());
        if let Some((mode, uid, gid)) = st
            .perms
            .or_else(|| st.base.as_ref().map(|b| (b.mode, b.uid, b.gid)))
        {
            (entry.mode, entry.uid, entry.gid) = (mode, uid, gid);
        }
        opts.metadata = blob_metadata(&entry);
        let create_only = st.base.is_none() && !st.written;
        opts.conditions.if_none_match_any = create_only;
        let uploaded =
            match transfer::upload_file(&self.store, &blob, src, opts, &self.cfg.transfer).await {
                Err(TransferError::Store(
                    StoreError::PreconditionFailed(_) | StoreError::LeaseConflict(_),
                )) if create_only => {
                    // Another host saved this name since this host's index copy: the file this
                    // open(O_CREAT) should have found exists. Adopt it instead of blanking it.
                    log::info!("{key:?} was created elsewhere meanwhile; using that value");
                    st.staged = None;
                    st.perms = None;
                    st.base = self.adopt_blob(&key).await?;
                    return Ok(());
                }
                Ok(uploaded) => uploaded,
                Err(e) => {
                    log::error!("saving {key:?} failed, the previous value stays: {e}");
                    if let Some(s) = st.staged.as_mut() {
                        s.upload_failed = true;
                    }
                    return Err(e.into());
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
        self.index.submit(vec![Change::Saved {
            key: key.clone(),
            blob: blob.clone(),
            entry: entry.clone(),
            replaces,
        }]);
        self.content.forget(&blob);
        st.base = Some(entry);
        st.perms = None;
        st.written = false;
        if let Some(s) = st.staged.as_mut() {
            s.dirty = false;
            s.upload_failed = false;
        }
        Ok(())
    }

    /// Closes a handle; the last one saves (if `flush` did not already) and drops local state.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        lock(&self.status_handles).remove(&fh);
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return Ok(());
        };
        let Some(f) = self.open_file(h.ino) else {
            return Ok(());
        };
        let result = if h.write {
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
            lock(&self.files).remove(&h.ino);
        }
        result
    }

    fn drop_if_idle(&self, ino: u64, st: &FileState) {
        if st.handles == 0 && st.staged.is_none() {
            lock(&self.files).remove(&ino);
        }
    }

    pub async fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> FsResult<Attr> {
        if self.virtual_attr(ino).is_some() {
            return Err(FsError::NotPermitted(
                "`.remotedict` is remotedict's own (read-only)",
            ));
        }
        let key = self.key_of(ino)?;
        if key.is_empty() {
            return self.getattr(ino).await;
        }
        self.writable()?;
        let attr = self.attr_of(&key, ino).await?;
        if let Some(size) = set.size {
            if attr.kind == NodeKind::Dir {
                return Err(FsError::IsDir);
            }
            let f = self.file_state(ino);
            let mut st = f.state.lock().await;
            if st.staged.is_none() {
                st.base = self.index.current().await?.entries.get(&key).cloned();
            }
            let r = async {
                if st.staged.is_none() && st.base.is_some() {
                    self.check_not_leased_elsewhere(&key).await?;
                }
                self.ensure_staged(&key, &mut st, size == 0).await
            }
            .await;
            if let Err(e) = r {
                self.drop_if_idle(ino, &st);
                return Err(e);
            }
            if let Some(s) = st.staged.as_mut() {
                s.file.set_len(size)?;
                s.dirty = true;
                s.mtime = set.mtime.unwrap_or_else(SystemTime::now);
            }
            st.written = true;
            let idle = st.handles == 0;
            drop(st);
            if idle || fh.is_none() {
                // truncate(2) on a path: save now, there is no close to wait for.
                let saved = self.save(ino).await;
                let st = f.state.lock().await;
                if st.handles == 0 {
                    lock(&self.files).remove(&ino);
                }
                drop(st);
                saved?;
            }
        }
        // Attribute-only changes: mode, owner, and mtime unless it came with a size change.
        let mtime = if set.size.is_some() { None } else { set.mtime };
        let owner = set.mode.is_some() || set.uid.is_some() || set.gid.is_some();
        if mtime.is_none() && !owner {
            return self.getattr(ino).await;
        }
        let perms = (
            set.mode.map_or(u32::from(attr.perm), |m| m & 0o7777),
            set.uid.unwrap_or(attr.uid),
            set.gid.unwrap_or(attr.gid),
        );
        if let Some(f) = self.open_file(ino) {
            let mut st = f.state.lock().await;
            if st.staged.as_ref().is_some_and(|s| s.dirty) {
                // Unsaved content: the attributes go with the next upload.
                if owner {
                    st.perms = Some(perms);
                }
                if let (Some(t), Some(s)) = (mtime, st.staged.as_mut()) {
                    s.mtime = t;
                }
                drop(st);
                return self.getattr(ino).await;
            }
        }
        let entry = self
            .update_entry(&key, attr.kind, |e| {
                if owner {
                    (e.mode, e.uid, e.gid) = perms;
                }
                if let Some(t) = mtime {
                    e.mtime_ns = to_ns(t);
                }
            })
            .await?;
        if let Some(f) = self.open_file(ino) {
            let mut st = f.state.lock().await;
            if st.base.is_some() {
                st.base = Some(entry);
            }
            if let (Some(t), Some(s)) = (mtime, st.staged.as_mut()) {
                s.mtime = t;
            }
        }
        self.getattr(ino).await
    }

    /// Changes an index entry's attributes (not its value) and the blob metadata that mirrors
    /// them; an implicit directory becomes an explicit one (with its marker blob) so its
    /// attributes have somewhere to live.
    async fn update_entry(
        &self,
        key: &str,
        kind: NodeKind,
        change: impl Fn(&mut Entry),
    ) -> FsResult<Entry> {
        let blob = self.layout.blob_name(key);
        for attempt in 0..3 {
            let index = if attempt == 0 {
                self.index.current().await?
            } else {
                self.index.revalidate().await?
            };
            let existing = index.entries.get(key).cloned();
            let mut e = match &existing {
                Some(e) => e.clone(),
                None if kind == NodeKind::Dir => {
                    let mut d = Entry::file(0, 0, to_ns(SystemTime::now()), "");
                    d.kind = EntryKind::Dir;
                    d
                }
                None => return Err(FsError::NotFound),
            };
            change(&mut e);
            e.ctime_ns = to_ns(SystemTime::now());
            let metadata = blob_metadata(&e);
            let written = match &existing {
                Some(old) => {
                    let cond =
                        Conditions::if_match(old.etag.clone()).with_lease(self.locks.lease_id(key));
                    self.store.set_metadata(&blob, &metadata, &cond).await
                }
                None => {
                    let opts = PutOptions {
                        conditions: Conditions::if_absent(),
                        metadata,
                    };
                    self.store.put(&blob, Bytes::new(), &opts).await
                }
            };
            match written {
                Ok(etag) => {
                    e.etag = etag;
                    self.index
                        .commit(vec![Change::Put {
                            key: key.to_string(),
                            entry: e.clone(),
                        }])
                        .await?;
                    self.content.forget(&blob);
                    return Ok(e);
                }
                // Another host changed it meanwhile: start again from the newest entry.
                Err(StoreError::PreconditionFailed(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(FsError::Store(StoreError::PreconditionFailed(
            key.to_string(),
        )))
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let key = self.child(parent, name)?;
        let index = self.index.current().await?;
        let entry = index.entries.get(&key).cloned();
        let ino = lock(&self.inodes).get(&key);
        let pending = ino.and_then(|i| self.open_file(i));
        match entry {
            Some(e) if e.kind == EntryKind::Dir => return Err(FsError::IsDir),
            Some(e) => {
                let blob = self.layout.blob_name(&key);
                let cond = Conditions::default().with_lease(self.locks.lease_id(&key));
                match self.store.delete(&blob, &cond).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(err) => return Err(err.into()),
                }
                self.index
                    .commit(vec![Change::Remove {
                        key: key.clone(),
                        if_etag: Some(e.etag),
                    }])
                    .await?;
                self.content.forget(&blob);
            }
            None if pending.is_some() => {}
            None if has_children(&index, &key) => return Err(FsError::IsDir),
            None => return Err(FsError::NotFound),
        }
        if let Some(f) = pending {
            // Open handles keep their data; it is not saved under the old name any more.
            let mut st = f.state.lock().await;
            if let Some(s) = st.staged.as_mut() {
                s.dirty = false;
            }
        }
        lock(&self.inodes).remove_key(&key);
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
        for (old, e) in &moving {
            let new = format!("{to}{}", &old[from.len()..]);
            let etag = self
                .copy_blob(&self.layout.blob_name(old), &self.layout.blob_name(&new))
                .await?;
            changes.push(Change::Put {
                key: new,
                entry: Entry {
                    etag,
                    ctime_ns: to_ns(SystemTime::now()),
                    ..e.clone()
                },
            });
            changes.push(Change::Remove {
                key: old.clone(),
                if_etag: Some(e.etag.clone()),
            });
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
        for (old, _) in &moving {
            let blob = self.layout.blob_name(old);
            let cond = Conditions::default().with_lease(self.locks.lease_id(old));
            match self.store.delete(&blob, &cond).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => log::warn!("rename: could not delete the old blob {blob:?}: {e}"),
            }
            self.content.forget(&blob);
        }
        lock(&self.inodes).rename(&from, &to);
        Ok(())
    }

    /// Copies a blob's stored bytes (no re-compression) to a new name; returns the new etag.
    async fn copy_blob(&self, from: &str, to: &str) -> FsResult<String> {
        let props = self.store.head(from).await?;
        let opts = PutOptions {
            metadata: props.metadata.clone(),
            ..Default::default()
        };
        let step = self.cfg.transfer.block_size as u64;
        if props.size <= step {
            let data = match self.store.get(from, None, None).await? {
                crate::store::GetResult::Found { data, .. } => data,
                crate::store::GetResult::NotModified => {
                    return Err(FsError::Io("unexpected 304".into()))
                }
            };
            return Ok(self.store.put(to, data, &opts).await?);
        }
        let mut ids = Vec::new();
        let mut offset = 0;
        while offset < props.size {
            let end = (offset + step).min(props.size);
            let data = match self.store.get(from, Some(offset..end), None).await? {
                crate::store::GetResult::Found { data, props: p } if p.etag == props.etag => data,
                _ => return Err(FsError::Io(format!("{from:?} changed while it was copied"))),
            };
            let id = crate::store::block_id(ids.len());
            self.store.put_block(to, &id, data, None).await?;
            ids.push(id);
            offset = end;
        }
        Ok(self.store.commit_blocks(to, &ids, &opts).await?)
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

    /// Filesystem statistics: (blocks, free blocks, files) — a blob container has no fixed size.
    pub fn statfs(&self) -> (u64, u64, u64) {
        let files = self.index.cached().entries.len() as u64;
        (1 << 40, 1 << 40, files)
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
}
