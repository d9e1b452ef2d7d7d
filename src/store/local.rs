//! The local backend: a directory on disk that behaves like a blob container.
//!
//! It keeps the semantics the upper layers rely on — etags that change on every write, conditional
//! writes checked atomically, leases that expire, atomic durable writes — and holds across
//! processes on one machine, so two daemons on one local store exclude each other exactly as two
//! hosts on Azure do.
//!
//! Layout under the root (all names derived from SHA-256 of the blob name, so any blob name maps
//! to one flat file name):
//! - `blobs/<hash>`: magic `RDLBLOB1`, u32 LE header length, JSON header (name, etag, mtime,
//!   metadata), then the content;
//! - `leases/<hash>`: JSON lease record (id, expiry, broken);
//! - `staging/<hash>/<block id>`: staged blocks of uncommitted block-list uploads; a commit
//!   discards all of them (as Azure does), so a commit whose blocks went that way fails with
//!   [`StoreError::BlockListInvalid`];
//! - `tmp/`: temporary files, renamed into place once fsynced;
//! - `store.lock`: `flock`ed by every mutation while it checks conditions and renames.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, LeaseState, ListPage, Metadata,
    PutOptions, Result, StoreError,
};

const MAGIC: &[u8; 8] = b"RDLBLOB1";
const MARKER: &str = "remotedict-local-store";
const PAGE_SIZE: usize = 5000;

/// A blob container kept in a local directory.
#[derive(Clone, Debug)]
pub struct LocalStore {
    inner: Arc<Paths>,
}

#[derive(Debug)]
struct Paths {
    root: PathBuf,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Header {
    name: String,
    etag: String,
    mtime_ms: u64,
    #[serde(default)]
    metadata: Metadata,
    /// Present on an append blob: how many bytes after the header are its content (bytes past
    /// them belong to an append that did not finish) and how many appends it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    append: Option<AppendState>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
struct AppendState {
    len: u64,
    appends: u32,
}

impl Header {
    /// Bytes of content in a blob file of `file_len` bytes whose content starts at `start`.
    fn content_len(&self, file_len: u64, start: u64) -> u64 {
        let stored = file_len.saturating_sub(start);
        self.append.map_or(stored, |a| a.len.min(stored))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct LeaseRecord {
    id: String,
    /// Unix milliseconds at which the lease expires; `None` for an infinite lease.
    expires_ms: Option<u64>,
    /// Length of the lease as acquired; renewals extend it by this much.
    duration_ms: Option<u64>,
    broken: bool,
}

impl LeaseRecord {
    fn state(&self, now_ms: u64) -> LeaseState {
        if self.broken {
            LeaseState::Broken
        } else if self.expires_ms.is_none_or(|e| e > now_ms) {
            LeaseState::Leased
        } else {
            LeaseState::Expired
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_etag() -> String {
    format!("\"0x{:032X}\"", uuid::Uuid::new_v4().as_u128())
}

fn io_err(what: &str, e: io::Error) -> StoreError {
    let message = format!("local store: {what}: {e}");
    if e.kind() == io::ErrorKind::StorageFull {
        StoreError::NoSpace(message)
    } else {
        StoreError::Other(message)
    }
}

/// Azure's rules for blob names, applied locally too so both backends refuse the same names.
pub fn validate_blob_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.chars().count() > 1024 {
        "it is longer than 1024 characters"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

impl LocalStore {
    /// Opens (without creating) a local store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            inner: Arc::new(Paths { root: root.into() }),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Paths) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Other(format!("local store task failed: {e}")))?
    }
}

impl Paths {
    fn hash(name: &str) -> String {
        hex::encode(Sha256::digest(name.as_bytes()))
    }
    fn blob_path(&self, name: &str) -> PathBuf {
        self.root.join("blobs").join(Self::hash(name))
    }
    fn lease_path(&self, name: &str) -> PathBuf {
        self.root.join("leases").join(Self::hash(name))
    }
    fn staging_dir(&self, name: &str) -> PathBuf {
        self.root.join("staging").join(Self::hash(name))
    }

    fn check(&self) -> Result<()> {
        if self.root.join(MARKER).is_file() {
            Ok(())
        } else {
            Err(StoreError::ContainerNotFound(
                self.root.display().to_string(),
            ))
        }
    }

    fn create(&self) -> Result<()> {
        for sub in ["blobs", "leases", "staging", "tmp"] {
            fs::create_dir_all(self.root.join(sub))
                .map_err(|e| io_err("creating the store directory", e))?;
        }
        let marker = self.root.join(MARKER);
        if !marker.exists() {
            fs::write(&marker, "remotedict local blob store, format 1\n")
                .map_err(|e| io_err("writing marker", e))?;
        }
        Ok(())
    }

    /// Holds the store-wide mutation lock (released on drop of the file).
    fn lock(&self) -> Result<File> {
        self.check()?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("store.lock"))
            .map_err(|e| io_err("opening store.lock", e))?;
        f.lock_exclusive()
            .map_err(|e| io_err("locking store.lock", e))?;
        Ok(f)
    }

    /// Holds the store lock shared: no mutation runs meanwhile (readers of append blobs).
    fn lock_shared(&self) -> Result<File> {
        self.check()?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("store.lock"))
            .map_err(|e| io_err("opening store.lock", e))?;
        FileExt::lock_shared(&f).map_err(|e| io_err("locking store.lock", e))?;
        Ok(f)
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .map_err(|e| io_err("creating a temporary file", e))
    }

    /// Opens a blob and reads its header; the open file is a consistent snapshot. An append
    /// blob's header is rewritten in place by each append, so it is read again under the store
    /// lock (shared), where no append is half done. Not for callers holding the lock.
    fn open_blob(&self, name: &str) -> Result<Option<(Header, File, u64)>> {
        match self.open_blob_unlocked(name) {
            Ok(Some((h, ..))) if h.append.is_some() => {
                let _shared = self.lock_shared()?;
                self.open_blob_unlocked(name)
            }
            Err(_) => {
                // (A header caught half rewritten by an append.)
                let _shared = self.lock_shared()?;
                self.open_blob_unlocked(name)
            }
            r => r,
        }
    }

    /// [`Paths::open_blob`] without the store lock (for callers that hold it).
    fn open_blob_unlocked(&self, name: &str) -> Result<Option<(Header, File, u64)>> {
        let path = self.blob_path(name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening blob", e)),
        };
        let (header, data_start) =
            read_header(&mut f).map_err(|e| io_err(&format!("reading {}", path.display()), e))?;
        let total = f.metadata().map_err(|e| io_err("stat", e))?.len();
        let len = header.content_len(total, data_start);
        Ok(Some((header, f, len)))
    }

    fn lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        match fs::read(self.lease_path(name)) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading lease", e)),
        }
    }

    fn write_lease(&self, name: &str, rec: &LeaseRecord) -> Result<()> {
        let mut tmp = self.temp_file()?;
        let body = serde_json::to_vec(rec).map_err(|e| StoreError::Other(e.to_string()))?;
        tmp.write_all(&body)
            .map_err(|e| io_err("writing lease", e))?;
        tmp.persist(self.lease_path(name))
            .map_err(|e| io_err("renaming lease", e.error))?;
        Ok(())
    }

    fn props(&self, header: Header, size: u64) -> Result<BlobProps> {
        let lease = self.lease(&header.name)?;
        let now = now_ms();
        Ok(BlobProps {
            size,
            etag: header.etag,
            last_modified: UNIX_EPOCH + Duration::from_millis(header.mtime_ms),
            metadata: header.metadata,
            lease_state: lease
                .as_ref()
                .map_or(LeaseState::Available, |l| l.state(now)),
            lease_infinite: lease
                .as_ref()
                .is_some_and(|l| l.expires_ms.is_none() && l.state(now) == LeaseState::Leased),
            name: header.name,
        })
    }

    /// Checks lease and etag conditions for a mutation of `name`; the store lock must be held.
    fn check_conditions(
        &self,
        name: &str,
        current: Option<&Header>,
        cond: &Conditions,
    ) -> Result<()> {
        let active = self
            .lease(name)?
            .filter(|l| current.is_some() && l.state(now_ms()) == LeaseState::Leased);
        match (&active, &cond.lease_id) {
            (Some(l), Some(id)) if &l.id == id => {}
            (Some(_), _) => return Err(StoreError::LeaseConflict(name.to_string())),
            (None, Some(_)) => return Err(StoreError::LeaseLost(name.to_string())),
            (None, None) => {}
        }
        if let Some(want) = &cond.if_match {
            if current.map(|h| &h.etag) != Some(want) {
                return Err(StoreError::PreconditionFailed(name.to_string()));
            }
        }
        if cond.if_none_match_any && current.is_some() {
            return Err(StoreError::PreconditionFailed(name.to_string()));
        }
        Ok(())
    }

    fn current_header(&self, name: &str) -> Result<Option<Header>> {
        Ok(self.open_blob_unlocked(name)?.map(|(h, _, _)| h))
    }

    /// Writes `content` (already in a temp file, positioned anywhere) as blob `name` if
    /// `cond` holds; returns the new etag.
    fn commit_file(
        &self,
        name: &str,
        mut content: File,
        metadata: &Metadata,
        cond: &Conditions,
        blocks: Option<&[String]>,
        append: bool,
    ) -> Result<String> {
        let header = Header {
            name: name.to_string(),
            etag: new_etag(),
            mtime_ms: now_ms(),
            metadata: metadata.clone(),
            append: append.then_some(AppendState { len: 0, appends: 0 }),
        };
        let mut out = self.temp_file()?;
        write_header(out.as_file_mut(), &header).map_err(|e| io_err("writing blob header", e))?;
        content
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_err("seek", e))?;
        io::copy(&mut content, out.as_file_mut()).map_err(|e| io_err("writing blob", e))?;
        out.as_file()
            .sync_all()
            .map_err(|e| io_err("fsync blob", e))?;
        let _guard = self.lock()?;
        let current = self.current_header(name)?;
        if current.is_none() {
            // A deleted blob's lease went with it.
            let _ = fs::remove_file(self.lease_path(name));
        }
        self.check_conditions(name, current.as_ref(), cond)?;
        let staging = self.staging_dir(name);
        if let Some(ids) = blocks {
            // As Azure: a commit whose blocks another commit discarded meanwhile fails, even
            // though they were assembled before.
            if !ids.iter().all(|id| staging.join(id).is_file()) {
                return Err(StoreError::BlockListInvalid(name.to_string()));
            }
        }
        out.persist(self.blob_path(name))
            .map_err(|e| io_err("renaming blob into place", e.error))?;
        sync_dir(&self.root.join("blobs"));
        if blocks.is_some() {
            // A commit discards every staged block of the blob, whichever upload staged it.
            let _ = fs::remove_dir_all(&staging);
        }
        Ok(header.etag)
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn read_header(f: &mut File) -> io::Result<(Header, u64)> {
    let mut magic = [0u8; 12];
    f.read_exact(&mut magic)?;
    if &magic[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a remotedict local blob",
        ));
    }
    let len = u32::from_le_bytes([magic[8], magic[9], magic[10], magic[11]]) as usize;
    if len > 64 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "blob header too large",
        ));
    }
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    let header =
        serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((header, 12 + len as u64))
}

fn write_header(f: &mut File, h: &Header) -> io::Result<()> {
    f.write_all(&header_bytes(h, None)?)
}

/// The bytes of header `h`. An append blob's header has room to grow (spaces after the JSON),
/// so each append rewrites it in place: to `reserved` bytes of JSON when given.
fn header_bytes(h: &Header, reserved: Option<usize>) -> io::Result<Vec<u8>> {
    let mut body = serde_json::to_vec(h).map_err(io::Error::other)?;
    let room = match reserved {
        Some(r) => r,
        None if h.append.is_some() => (body.len() + 128).div_ceil(512) * 512,
        None => body.len(),
    };
    if body.len() > room {
        return Err(io::Error::other("append blob header outgrew its room"));
    }
    body.resize(room, b' ');
    let mut out = Vec::with_capacity(12 + room);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(room as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn valid_block_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[async_trait]
impl BlobStore for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.inner.root.display())
    }

    async fn check_container(&self) -> Result<()> {
        self.run(|p| p.check()).await
    }

    async fn create_container(&self) -> Result<()> {
        self.run(|p| p.create()).await
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        let name = name.to_string();
        let inm = if_none_match.map(str::to_string);
        self.run(move |p| {
            p.check()?;
            let Some((header, mut f, size)) = p.open_blob(&name)? else {
                return Err(StoreError::NotFound(name));
            };
            if inm.as_deref() == Some(header.etag.as_str()) {
                return Ok(GetResult::NotModified);
            }
            let r = range.unwrap_or(0..size);
            let start = r.start.min(size);
            let end = r.end.min(size).max(start);
            let mut data = vec![0u8; (end - start) as usize];
            f.seek(SeekFrom::Current(start as i64))
                .map_err(|e| io_err("seek", e))?;
            f.read_exact(&mut data)
                .map_err(|e| io_err("reading blob", e))?;
            let props = p.props(header, size)?;
            Ok(GetResult::Found {
                props,
                data: Bytes::from(data),
            })
        })
        .await
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        let name = name.to_string();
        self.run(move |p| {
            p.check()?;
            match p.open_blob(&name)? {
                Some((h, _, size)) => p.props(h, size),
                None => Err(StoreError::NotFound(name)),
            }
        })
        .await
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        validate_blob_name(name)?;
        let name = name.to_string();
        let opts = opts.clone();
        self.run(move |p| {
            p.check()?;
            let mut tmp = p.temp_file()?;
            tmp.write_all(&data).map_err(|e| io_err("writing", e))?;
            p.commit_file(
                &name,
                tmp.reopen().map_err(|e| io_err("reopen", e))?,
                &opts.metadata,
                &opts.conditions,
                None,
                false,
            )
        })
        .await
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        validate_blob_name(name)?;
        let name = name.to_string();
        let opts = opts.clone();
        self.run(move |p| {
            p.check()?;
            let tmp = p.temp_file()?;
            p.commit_file(
                &name,
                tmp.reopen().map_err(|e| io_err("reopen", e))?,
                &opts.metadata,
                &opts.conditions,
                None,
                true,
            )
        })
        .await
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        validate_blob_name(name)?;
        if data.len() > super::MAX_APPEND_BYTES {
            return Err(StoreError::Other(format!(
                "append to {name:?}: {} bytes is more than one append takes",
                data.len()
            )));
        }
        let name = name.to_string();
        self.run(move |p| {
            let _guard = p.lock()?;
            let path = p.blob_path(&name);
            let mut f = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound(name))
                }
                Err(e) => return Err(io_err("opening blob", e)),
            };
            let (mut header, start) =
                read_header(&mut f).map_err(|e| io_err("reading blob header", e))?;
            p.check_conditions(&name, Some(&header), &Conditions::default())?;
            let Some(state) = header.append else {
                return Err(StoreError::Other(format!("{name:?} is not an append blob")));
            };
            if state.len != at {
                return Err(StoreError::PreconditionFailed(name));
            }
            if state.appends >= super::MAX_APPENDS {
                return Err(StoreError::BlobFull(name));
            }
            // The content first (past the length the header gives, so no reader sees it), then
            // the header that takes it in; bytes of an append cut short by a crash go.
            use std::os::unix::fs::FileExt as _;
            let end = start + state.len;
            f.set_len(end).map_err(|e| io_err("appending", e))?;
            f.write_all_at(&data, end)
                .map_err(|e| io_err("appending", e))?;
            f.sync_data().map_err(|e| io_err("fsync blob", e))?;
            let len = state.len + data.len() as u64;
            header.append = Some(AppendState {
                len,
                appends: state.appends + 1,
            });
            header.etag = new_etag();
            header.mtime_ms = now_ms();
            let bytes = header_bytes(&header, Some((start - 12) as usize))
                .map_err(|e| io_err("rewriting blob header", e))?;
            f.write_all_at(&bytes, 0)
                .map_err(|e| io_err("rewriting blob header", e))?;
            f.sync_data().map_err(|e| io_err("fsync blob", e))?;
            Ok(len)
        })
        .await
    }

    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()> {
        validate_blob_name(name)?;
        if !valid_block_id(block_id) {
            return Err(StoreError::Other(format!("invalid block id {block_id:?}")));
        }
        let (name, block_id, lease_id) = (
            name.to_string(),
            block_id.to_string(),
            lease_id.map(str::to_string),
        );
        self.run(move |p| {
            p.check()?;
            if lease_id.is_some() {
                let current = p.current_header(&name)?;
                p.check_conditions(
                    &name,
                    current.as_ref(),
                    &Conditions::default().with_lease(lease_id),
                )?;
            }
            let dir = p.staging_dir(&name);
            let mut tmp = p.temp_file()?;
            tmp.write_all(&data)
                .map_err(|e| io_err("writing block", e))?;
            tmp.as_file()
                .sync_all()
                .map_err(|e| io_err("fsync block", e))?;
            // Under the lock: a commit discards the blocks staged before it, not after it.
            let _guard = p.lock()?;
            fs::create_dir_all(&dir).map_err(|e| io_err("creating staging dir", e))?;
            tmp.persist(dir.join(&block_id))
                .map_err(|e| io_err("staging block", e.error))?;
            Ok(())
        })
        .await
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        validate_blob_name(name)?;
        let name = name.to_string();
        let ids = block_ids.to_vec();
        let opts = opts.clone();
        self.run(move |p| {
            p.check()?;
            let dir = p.staging_dir(&name);
            let mut tmp = p.temp_file()?;
            for id in &ids {
                if !valid_block_id(id) {
                    return Err(StoreError::Other(format!("invalid block id {id:?}")));
                }
                let mut block = File::open(dir.join(id))
                    .map_err(|_| StoreError::BlockListInvalid(name.clone()))?;
                io::copy(&mut block, tmp.as_file_mut())
                    .map_err(|e| io_err("assembling blocks", e))?;
            }
            let content = tmp.reopen().map_err(|e| io_err("reopen", e))?;
            p.commit_file(
                &name,
                content,
                &opts.metadata,
                &opts.conditions,
                Some(&ids),
                false,
            )
        })
        .await
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        let name = name.to_string();
        let cond = conditions.clone();
        self.run(move |p| {
            let _guard = p.lock()?;
            let Some(current) = p.current_header(&name)? else {
                return Err(StoreError::NotFound(name));
            };
            p.check_conditions(&name, Some(&current), &cond)?;
            fs::remove_file(p.blob_path(&name)).map_err(|e| io_err("deleting blob", e))?;
            let _ = fs::remove_file(p.lease_path(&name));
            let _ = fs::remove_dir_all(p.staging_dir(&name));
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        let prefix = prefix.to_string();
        self.run(move |p| {
            p.check()?;
            let mut found = Vec::new();
            let entries = fs::read_dir(p.root.join("blobs")).map_err(|e| io_err("listing", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_err("listing", e))?;
                let mut f = match File::open(entry.path()) {
                    Ok(f) => f,
                    Err(_) => continue, // deleted meanwhile
                };
                let Ok((header, start)) = read_header(&mut f) else {
                    continue;
                };
                if !header.name.starts_with(&prefix)
                    || marker.as_ref().is_some_and(|m| header.name <= *m)
                {
                    continue;
                }
                let size =
                    header.content_len(f.metadata().map(|m| m.len()).unwrap_or(start), start);
                found.push((header, size));
            }
            found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            let next = (found.len() > PAGE_SIZE).then(|| found[PAGE_SIZE - 1].0.name.clone());
            found.truncate(PAGE_SIZE);
            let items = found
                .into_iter()
                .map(|(h, s)| p.props(h, s))
                .collect::<Result<Vec<_>>>()?;
            Ok(ListPage { items, next })
        })
        .await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        let name = name.to_string();
        let metadata = metadata.clone();
        let cond = conditions.clone();
        self.run(move |p| {
            // Copies the content under the lock: metadata changes are rare.
            let _guard = p.lock()?;
            let Some((current, _, size)) = p.open_blob_unlocked(&name)? else {
                return Err(StoreError::NotFound(name));
            };
            p.check_conditions(&name, Some(&current), &cond)?;
            let header = Header {
                etag: new_etag(),
                mtime_ms: now_ms(),
                metadata,
                ..current
            };
            let mut out = p.temp_file()?;
            write_header(out.as_file_mut(), &header).map_err(|e| io_err("writing header", e))?;
            let mut f = File::open(p.blob_path(&name)).map_err(|e| io_err("opening blob", e))?;
            read_header(&mut f).map_err(|e| io_err("reading blob", e))?;
            io::copy(&mut f.take(size), out.as_file_mut())
                .map_err(|e| io_err("copying blob", e))?;
            out.as_file().sync_all().map_err(|e| io_err("fsync", e))?;
            out.persist(p.blob_path(&name))
                .map_err(|e| io_err("renaming blob", e.error))?;
            Ok(header.etag)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        let name = name.to_string();
        let id = proposed_id
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.run(move |p| {
            let _guard = p.lock()?;
            if p.current_header(&name)?.is_none() {
                return Err(StoreError::NotFound(name));
            }
            let now = now_ms();
            if let Some(l) = p.lease(&name)? {
                if l.state(now) == LeaseState::Leased && l.id != id {
                    return Err(StoreError::LeaseConflict(name));
                }
            }
            let duration_ms = duration.as_duration().map(|d| d.as_millis() as u64);
            let expires_ms = duration_ms.map(|len| now + len);
            p.write_lease(
                &name,
                &LeaseRecord {
                    id: id.clone(),
                    expires_ms,
                    duration_ms,
                    broken: false,
                },
            )?;
            Ok(id)
        })
        .await
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        let (name, id) = (name.to_string(), lease_id.to_string());
        self.run(move |p| {
            let _guard = p.lock()?;
            if p.current_header(&name)?.is_none() {
                return Err(StoreError::NotFound(name));
            }
            match p.lease(&name)? {
                Some(mut l) if l.id == id && !l.broken => {
                    // Like Azure, an expired lease can be renewed if nobody leased the blob since;
                    // the renewal keeps the duration it was acquired with.
                    l.expires_ms = l.duration_ms.map(|len| now_ms() + len);
                    p.write_lease(&name, &l)
                }
                _ => Err(StoreError::LeaseLost(name)),
            }
        })
        .await
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        let (name, id) = (name.to_string(), lease_id.to_string());
        self.run(move |p| {
            let _guard = p.lock()?;
            match p.lease(&name)? {
                Some(l) if l.id == id => {
                    fs::remove_file(p.lease_path(&name))
                        .map_err(|e| io_err("releasing lease", e))?;
                    Ok(())
                }
                _ => Err(StoreError::LeaseLost(name)),
            }
        })
        .await
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(move |p| {
            let _guard = p.lock()?;
            if p.current_header(&name)?.is_none() {
                return Err(StoreError::NotFound(name));
            }
            if let Some(mut l) = p.lease(&name)? {
                l.broken = true;
                p.write_lease(&name, &l)?;
            }
            Ok(())
        })
        .await
    }
}
