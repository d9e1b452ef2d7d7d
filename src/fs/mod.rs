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

mod attr;
mod caller;
mod claims;
pub mod content;
mod dir;
pub mod error;
mod flock;
mod forget;
mod handles;
pub mod inode;
pub mod listing;
pub mod locks;
mod namespace;
mod readers;
mod recovery;
mod rename;
mod setattr;
mod staged;
pub mod status;
mod tree;
mod types;
mod waiters;
pub mod xattr;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::index::journal::Journal;
use crate::index::{Entry, SharedIndex};
use crate::layout::Layout;
use crate::mutex::lock;
use crate::store::BlobStore;
use crate::transfer::TransferConfig;
use attr::FRESHER_FOR;
pub use caller::{as_caller, Caller};

/// The largest file: Azure's largest block blob (50,000 blocks of 4,000 MiB). Writing or
/// truncating past it is EFBIG.
pub const MAX_FILE_SIZE: u64 = 50_000 * 4_000 * (1 << 20);
use content::ContentCache;
pub use error::{FsError, FsResult};
use handles::{FileState, Handle, OpenFile};
use inode::{child_key, parent_key, InodeTable, ROOT_INO};
pub use locks::{
    HeldLock, LockKind, LockMode, LockRequest, LockTable, Segment, WaitingLock, WHOLE,
};
use recovery::journal_stem;
use staged::Staged;
use tree::{children, has_children};
use types::{kind_of, major_minor, rdev_of};
pub use types::{Attr, DirEntry, NodeKind, SetAttr};

pub use crate::index::meta::META_IS_FOLDER;

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
    dirs: Mutex<HashMap<u64, Arc<listing::Listing>>>,
    /// Per open directory: where the last readdirplus slice started and how long it was.
    dir_slices: Mutex<HashMap<u64, (usize, usize)>>,
    next_fh: AtomicU64,
    content: ContentCache,
    /// Early uploads (files uploaded while written) this `Fs` may run at once.
    early_slots: Arc<tokio::sync::Semaphore>,
    locks: LockTable,
    /// Entries this host knows to be newer than its index copy (a blob read right after another
    /// host rewrote it, before that host's index commit), for a few seconds.
    /// Each with the etag the index listed then: once the index names another version, the
    /// index has moved past it.
    fresher: Mutex<HashMap<String, (Entry, std::time::Instant, String)>>,
    /// Failures reported to users (not routine answers), for the status file.
    failures: AtomicU64,
    /// The last few of them (when, and what), newest last, for the status file.
    last_errors: Mutex<std::collections::VecDeque<(SystemTime, String)>>,
    /// Tells the kernel to drop what it caches of an inode (its size and pages), when the FUSE
    /// adapter serves this core (see [`Fs::set_kernel_cache_invalidator`]).
    kernel_cache: std::sync::OnceLock<KernelCacheInvalidator>,
}

/// Drops the kernel's cached attributes and pages of an inode (blocking: a write to the FUSE
/// device).
pub type KernelCacheInvalidator = Arc<dyn Fn(u64) + Send + Sync>;

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
            early_slots: Arc::new(tokio::sync::Semaphore::new(
                crate::transfer::early::MAX_EARLY,
            )),
            locks: LockTable::default(),
            fresher: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            last_errors: Mutex::new(std::collections::VecDeque::new()),
            kernel_cache: std::sync::OnceLock::new(),
        })
    }

    /// Lets the core drop the kernel's cache of an inode whose value it knows changed (a new
    /// lock holder must not read at a size the kernel cached before the last holder's write).
    /// The index journal length (bytes) from which this host compacts it.
    pub fn set_index_compaction(&self, bytes: u64) {
        self.index
            .set_compaction(bytes, crate::index::generations::GENERATION_GRACE);
    }

    pub fn set_kernel_cache_invalidator(&self, f: KernelCacheInvalidator) {
        let _ = self.kernel_cache.set(f);
    }

    /// Drops the kernel's cached size and pages of `ino`, if a kernel serves this core.
    pub(crate) async fn invalidate_kernel_cache(&self, ino: u64) {
        if let Some(f) = self.kernel_cache.get().cloned() {
            // Off the async threads: the kernel may wait on a page whose read this core serves.
            let _ = tokio::task::spawn_blocking(move || f(ino)).await;
        }
    }

    /// Loads the index once, so a broken one is reported at mount time.
    pub async fn warm_up(&self) -> FsResult<usize> {
        let keys = self.index.current().await?.entries.len();
        if !self.cfg.read_only {
            self.recover_journals().await;
        }
        Ok(keys)
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

    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Filesystem statistics: (blocks, free blocks, files) — a blob container has no fixed size.
    pub fn statfs(&self) -> (u64, u64, u64) {
        let files = self.index.cached().entries.len() as u64;
        (1 << 40, 1 << 40, files)
    }
}
