//! The storage layer: one async `BlobStore` trait that every layer above talks to, with two
//! backends — Azure Blob Storage (`azure`) and a local directory with the same semantics (`local`).
//!
//! The trait is deliberately the small subset of the Blob API the filesystem needs: whole and ranged
//! reads, conditional writes (If-Match / If-None-Match / lease id), block uploads committed
//! atomically, conditional deletes, paged listings and leases. Errors are one enum whose variants
//! tell apart the cases the upper layers react to differently (see [`StoreError`]).

pub mod azure;
pub mod local;
pub mod metered;
pub mod retry;
pub mod retrying;
pub mod swappable;
pub mod testing;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

/// Metadata attached to a blob: Azure metadata names are C# identifiers (letters, digits, `_`),
/// case-insensitive; we always use lower-case names.
pub type Metadata = BTreeMap<String, String>;

/// Appends one append blob takes (Azure's limit; the local and in-memory stores keep it too).
pub const MAX_APPENDS: u32 = 50_000;

/// Largest single append (Azure's limit for an Append Block).
pub const MAX_APPEND_BYTES: usize = 4 << 20;

/// Errors every backend reports in the same terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} not found (create it, or pass --create-container)")]
    ContainerNotFound(String),
    #[error("precondition failed on {0:?}: it changed since it was read, or it already exists")]
    PreconditionFailed(String),
    #[error("blob {0:?} is leased by another holder")]
    LeaseConflict(String),
    #[error("the lease on {0:?} was lost (expired, broken or released)")]
    LeaseLost(String),
    #[error("transient failure on {name:?}: {message}")]
    Transient { name: String, message: String },
    #[error("access denied: {0} (check the credential and its permissions)")]
    Auth(String),
    #[error("invalid blob name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A block-list commit named a block that is not staged (any more): another upload's
    /// commit of the same blob discarded it, or this commit's own earlier attempt used it up.
    #[error("the block list of {0:?} names blocks that are not staged (another upload of it committed first?)")]
    BlockListInvalid(String),
    #[error("no space left on the device: {0}")]
    NoSpace(String),
    #[error("append blob {0:?} is full (it holds the most appends a blob can take)")]
    BlobFull(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// A short name of the kind of failure (a metrics label: no blob names, no messages).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::ContainerNotFound(_) => "container_not_found",
            StoreError::PreconditionFailed(_) => "precondition_failed",
            StoreError::LeaseConflict(_) => "lease_conflict",
            StoreError::LeaseLost(_) => "lease_lost",
            StoreError::Transient { .. } => "transient",
            StoreError::Auth(_) => "auth",
            StoreError::InvalidName { .. } => "invalid_name",
            StoreError::BlockListInvalid(_) => "block_list_invalid",
            StoreError::NoSpace(_) => "no_space",
            StoreError::BlobFull(_) => "blob_full",
            StoreError::Other(_) => "other",
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// State of a blob's lease, as Azure reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LeaseState {
    #[default]
    Available,
    Leased,
    Expired,
    Breaking,
    Broken,
}

impl LeaseState {
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseState::Available => "available",
            LeaseState::Leased => "leased",
            LeaseState::Expired => "expired",
            LeaseState::Breaking => "breaking",
            LeaseState::Broken => "broken",
        }
    }
}

/// Length of a lease: Azure accepts 15–60 seconds or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseDuration {
    Seconds(u32),
    Infinite,
}

impl LeaseDuration {
    /// Validates a duration in Azure's terms: 15..=60 seconds, or -1 for infinite.
    pub fn from_secs(secs: i64) -> std::result::Result<Self, String> {
        match secs {
            -1 => Ok(LeaseDuration::Infinite),
            15..=60 => Ok(LeaseDuration::Seconds(secs as u32)),
            _ => Err(format!(
                "lease duration {secs} is out of range: use 15 to 60 seconds, or -1 for infinite"
            )),
        }
    }
    pub fn as_duration(&self) -> Option<Duration> {
        match self {
            LeaseDuration::Seconds(s) => Some(Duration::from_secs(u64::from(*s))),
            LeaseDuration::Infinite => None,
        }
    }
}

/// What a backend knows about one blob without reading its content.
#[derive(Clone, Debug)]
pub struct BlobProps {
    pub name: String,
    /// Stored size in bytes (for our values: the compressed size).
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub metadata: Metadata,
    pub lease_state: LeaseState,
    /// Whether the current lease (if any) is infinite.
    pub lease_infinite: bool,
}

/// Conditions a write or delete must satisfy; all that are set must hold.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    /// Only if the blob's current etag equals this one.
    pub if_match: Option<String>,
    /// Only if no blob of that name exists (`If-None-Match: *`).
    pub if_none_match_any: bool,
    /// The lease id to present; required when the blob is leased.
    pub lease_id: Option<String>,
}

impl Conditions {
    pub fn if_match(etag: impl Into<String>) -> Self {
        Conditions {
            if_match: Some(etag.into()),
            ..Default::default()
        }
    }
    pub fn if_absent() -> Self {
        Conditions {
            if_none_match_any: true,
            ..Default::default()
        }
    }
    pub fn with_lease(mut self, lease_id: Option<String>) -> Self {
        self.lease_id = lease_id;
        self
    }
}

/// Options of a whole-blob put or a block-list commit.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub conditions: Conditions,
    pub metadata: Metadata,
}

/// Answer of a (possibly conditional) read.
#[derive(Debug)]
pub enum GetResult {
    /// `If-None-Match` held: the caller's copy is current.
    NotModified,
    Found {
        props: BlobProps,
        data: Bytes,
    },
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<BlobProps>,
    /// Continuation marker for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// The storage operations remotedict needs, with the same semantics on every backend.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Human-readable place this store points at (no secrets), for logs and errors.
    fn describe(&self) -> String;

    /// Checks that the container exists and the credential can read it.
    async fn check_container(&self) -> Result<()>;

    /// Creates the container if it does not exist.
    async fn create_container(&self) -> Result<()>;

    /// Reads a blob, or the byte range of it. With `if_none_match`, returns `NotModified` when
    /// the blob's etag still equals it. A range past the end is clamped to the blob's size.
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult>;

    /// Reads the properties and metadata of a blob.
    async fn head(&self, name: &str) -> Result<BlobProps>;

    /// Writes a whole blob atomically; returns the new etag.
    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String>;

    /// Stages one block of a future block-list commit. Block ids must all have the same length.
    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()>;

    /// Commits staged blocks, in order, as the blob's new content: atomic, like `put`.
    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String>;

    /// Deletes a blob.
    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()>;

    /// Creates an empty *append blob* `name` (a log that only grows: see [`BlobStore::append`])
    /// under `opts` (conditions and metadata as for [`BlobStore::put`]); returns its etag.
    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String>;

    /// Appends `data` to append blob `name` in one atomic step, only if the blob is exactly `at`
    /// bytes long before it (`PreconditionFailed` otherwise: someone appended first); returns
    /// its length after. A blob that is not an append blob is refused (`Other`), one that took
    /// [`MAX_APPENDS`] appends already is `BlobFull`. A reader never sees part of an append.
    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64>;

    /// Lists blobs whose names start with `prefix`, with their metadata, one page at a time.
    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage>;

    /// Replaces a blob's metadata; returns the new etag.
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String>;

    /// Acquires a lease; returns its id (the proposed one if given).
    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String>;

    /// Renews a lease held under `lease_id`.
    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()>;

    /// Releases a lease held under `lease_id`.
    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()>;

    /// Breaks whatever lease the blob has, immediately.
    async fn break_lease(&self, name: &str) -> Result<()>;
}

/// Lists every blob under `prefix`, following continuation markers.
pub async fn list_all(store: &dyn BlobStore, prefix: &str) -> Result<Vec<BlobProps>> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let page = store.list(prefix, marker).await?;
        out.extend(page.items);
        match page.next {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
}

/// The block ids of one block-list upload: `<upload>-<index>`, all of one length (Azure refuses
/// block ids of different lengths for one blob), with a random part of their own so that two
/// uploads of one name at once never stage, and so never commit, each other's blocks.
#[derive(Clone, Debug)]
pub struct BlockIds {
    upload: String,
}

impl BlockIds {
    /// The ids of a new upload.
    pub fn new() -> Self {
        BlockIds {
            upload: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The id of the `index`th block (41 bytes whatever the index, up to Azure's 50,000 blocks).
    pub fn id(&self, index: usize) -> String {
        format!("{}-{index:08}", self.upload)
    }
}

impl Default for BlockIds {
    fn default() -> Self {
        Self::new()
    }
}
