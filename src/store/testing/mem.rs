//! `MemStore`: a blob container held in memory, with the semantics of the local and Azure
//! backends (see `tests/store_semantics.rs`, which runs on all three).
//!
//! Etags change on every write; If-Match / If-None-Match and lease ids are checked atomically
//! under one lock; staged blocks are invisible until committed, and a commit (or a delete)
//! discards every block staged for that blob, whichever upload staged it, as Azure does; leases
//! expire, renew, release and break as Azure's do. Lease expiry follows the wall clock, shifted by whatever a test adds with
//! [`MemStore::advance`], so a test can let a 15 s lease expire without waiting for it.
//!
//! Clones share one container, like two hosts pointed at the same Azure container.
//!
//! Where the two backends answer differently, this one follows Azure (Azurite): staging a block
//! on a leased blob without its lease id is `LeaseConflict` (local accepts it), releasing a lease
//! on a missing blob is `NotFound` (local: `LeaseLost`), and a commit checks its conditions
//! before its block list. Like local, it accepts lease ids that are not UUIDs, any metadata
//! names, and the blob names `local::validate_blob_name` accepts.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, Range};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::mutex::lock;
use crate::store::local::validate_blob_name;
use crate::store::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, LeaseState, ListPage, Metadata,
    PutOptions, Result, StoreError,
};

/// Blobs per listing page unless made with [`MemStore::with_page_size`] (as local and Azure).
pub const DEFAULT_PAGE_SIZE: usize = 5000;

/// An in-memory blob container; cloning it gives another handle on the same container.
#[derive(Clone, Debug)]
pub struct MemStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    page_size: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    container: bool,
    /// Added to the wall clock: what [`MemStore::advance`] moved time on by.
    skew: Duration,
    /// Source of etags: every write takes the next number.
    writes: u64,
    blobs: BTreeMap<String, Blob>,
    /// Staged, uncommitted blocks per blob name, by block id.
    staged: HashMap<String, HashMap<String, Bytes>>,
}

#[derive(Debug, Clone)]
struct Blob {
    data: Bytes,
    etag: String,
    modified: SystemTime,
    metadata: Metadata,
    lease: Option<Lease>,
    /// Appends taken, for an append blob (`None`: a block blob).
    appends: Option<u32>,
}

#[derive(Debug, Clone)]
struct Lease {
    id: String,
    /// `None` for an infinite lease.
    expires: Option<SystemTime>,
    /// Length as acquired; a renewal extends the lease by this much.
    duration: Option<Duration>,
    broken: bool,
}

impl Lease {
    fn state(&self, now: SystemTime) -> LeaseState {
        if self.broken {
            LeaseState::Broken
        } else if self.expires.is_none_or(|e| e > now) {
            LeaseState::Leased
        } else {
            LeaseState::Expired
        }
    }
}

impl Blob {
    /// The lease that currently excludes other holders, if any.
    fn active_lease(&self, now: SystemTime) -> Option<&Lease> {
        self.lease
            .as_ref()
            .filter(|l| l.state(now) == LeaseState::Leased)
    }

    fn props(&self, name: &str, now: SystemTime) -> BlobProps {
        let state = self
            .lease
            .as_ref()
            .map_or(LeaseState::Available, |l| l.state(now));
        BlobProps {
            name: name.to_string(),
            size: self.data.len() as u64,
            etag: self.etag.clone(),
            last_modified: self.modified,
            metadata: self.metadata.clone(),
            lease_state: state,
            lease_infinite: state == LeaseState::Leased
                && self.lease.as_ref().is_some_and(|l| l.expires.is_none()),
        }
    }
}

impl State {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.skew
    }

    fn new_etag(&mut self) -> String {
        self.writes += 1;
        format!("\"0x{:016X}\"", self.writes)
    }

    fn check_container(&self, label: &str) -> Result<()> {
        if self.container {
            Ok(())
        } else {
            Err(StoreError::ContainerNotFound(label.to_string()))
        }
    }

    fn blob(&self, name: &str) -> Result<&Blob> {
        self.blobs
            .get(name)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    /// Checks lease and etag conditions for a mutation of `name`, as the local backend does and
    /// Azure answers: a leased blob needs its lease id (`LeaseConflict` otherwise), a lease id on
    /// a blob without an active lease is `LeaseLost`, then If-Match and If-None-Match.
    fn check_conditions(&self, name: &str, cond: &Conditions) -> Result<()> {
        let current = self.blobs.get(name);
        let active = current.and_then(|b| b.active_lease(self.now()));
        match (active, &cond.lease_id) {
            (Some(l), Some(id)) if &l.id == id => {}
            (Some(_), _) => return Err(StoreError::LeaseConflict(name.to_string())),
            (None, Some(_)) => return Err(StoreError::LeaseLost(name.to_string())),
            (None, None) => {}
        }
        if let Some(want) = &cond.if_match {
            if current.map(|b| &b.etag) != Some(want) {
                return Err(StoreError::PreconditionFailed(name.to_string()));
            }
        }
        if cond.if_none_match_any && current.is_some() {
            return Err(StoreError::PreconditionFailed(name.to_string()));
        }
        Ok(())
    }

    /// Stores `data` as blob `name` if `opts` allow it; keeps the blob's lease; returns the etag.
    fn write(&mut self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        self.check_conditions(name, &opts.conditions)?;
        let etag = self.new_etag();
        let modified = self.now();
        let lease = self.blobs.get(name).and_then(|b| b.lease.clone());
        self.blobs.insert(
            name.to_string(),
            Blob {
                data,
                etag: etag.clone(),
                modified,
                metadata: opts.metadata.clone(),
                lease,
                appends: None,
            },
        );
        Ok(etag)
    }
}

/// Block ids the local backend accepts (Azure takes any 1–64 bytes; we keep to the stricter).
fn valid_block_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store whose container exists.
    pub fn new() -> Self {
        Self::build(DEFAULT_PAGE_SIZE, true)
    }

    /// An empty store whose container does not exist yet: every call but
    /// [`create_container`](BlobStore::create_container) answers `ContainerNotFound`.
    pub fn without_container() -> Self {
        Self::build(DEFAULT_PAGE_SIZE, false)
    }

    /// An empty store (container existing) with `n` (at least 1) blobs per listing page, to
    /// exercise paging.
    pub fn with_page_size(n: usize) -> Self {
        Self::build(n.max(1), true)
    }

    fn build(page_size: usize, container: bool) -> Self {
        MemStore {
            inner: Arc::new(Inner {
                page_size,
                state: Mutex::new(State {
                    container,
                    ..Default::default()
                }),
            }),
        }
    }

    /// Moves this store's clock on by `by`: leases expire as if that much time had passed.
    pub fn advance(&self, by: Duration) {
        lock(&self.inner.state).skew += by;
    }

    /// The store's current time (the wall clock plus what [`advance`](Self::advance) added).
    pub fn now(&self) -> SystemTime {
        lock(&self.inner.state).now()
    }

    /// Names of the blobs stored now, in order (committed blobs only).
    pub fn names(&self) -> Vec<String> {
        lock(&self.inner.state).blobs.keys().cloned().collect()
    }

    /// Ids of the blocks staged for `name` and not yet committed, sorted.
    pub fn staged_blocks(&self, name: &str) -> Vec<String> {
        let state = lock(&self.inner.state);
        let mut ids: Vec<String> = state
            .staged
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Runs `f` on the state once the container is known to exist.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut state = lock(&self.inner.state);
        state.check_container("mem")?;
        f(&mut state)
    }
}

#[async_trait]
impl BlobStore for MemStore {
    fn describe(&self) -> String {
        "mem".to_string()
    }

    async fn check_container(&self) -> Result<()> {
        self.with(|_| Ok(()))
    }

    async fn create_container(&self) -> Result<()> {
        lock(&self.inner.state).container = true;
        Ok(())
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        self.with(|s| {
            let blob = s.blob(name)?;
            if if_none_match == Some(blob.etag.as_str()) {
                return Ok(GetResult::NotModified);
            }
            let size = blob.data.len() as u64;
            let r = range.unwrap_or(0..size);
            let start = r.start.min(size);
            let end = r.end.min(size).max(start);
            Ok(GetResult::Found {
                props: blob.props(name, s.now()),
                data: blob.data.slice(start as usize..end as usize),
            })
        })
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        self.with(|s| Ok(s.blob(name)?.props(name, s.now())))
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        validate_blob_name(name)?;
        self.with(|s| s.write(name, data, opts))
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        validate_blob_name(name)?;
        self.with(|s| {
            let etag = s.write(name, Bytes::new(), opts)?;
            if let Some(b) = s.blobs.get_mut(name) {
                b.appends = Some(0);
            }
            Ok(etag)
        })
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        validate_blob_name(name)?;
        self.with(|s| {
            s.check_conditions(name, &Conditions::default())?;
            let etag = s.new_etag();
            let now = s.now();
            let b = s
                .blobs
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            let Some(appends) = b.appends else {
                return Err(StoreError::Other(format!("{name:?} is not an append blob")));
            };
            if b.data.len() as u64 != at {
                return Err(StoreError::PreconditionFailed(name.to_string()));
            }
            if appends >= crate::store::MAX_APPENDS {
                return Err(StoreError::BlobFull(name.to_string()));
            }
            let mut grown = BytesMut::with_capacity(b.data.len() + data.len());
            grown.extend_from_slice(&b.data);
            grown.extend_from_slice(&data);
            b.data = grown.freeze();
            b.appends = Some(appends + 1);
            b.etag = etag;
            b.modified = now;
            Ok(b.data.len() as u64)
        })
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
        self.with(|s| {
            // As Azure: staging on a leased blob needs its lease id, like any other write.
            let cond = Conditions::default().with_lease(lease_id.map(str::to_string));
            s.check_conditions(name, &cond)?;
            s.staged
                .entry(name.to_string())
                .or_default()
                .insert(block_id.to_string(), data);
            Ok(())
        })
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        validate_blob_name(name)?;
        self.with(|s| {
            // Azure checks the conditions (lease, etags) before the block list.
            s.check_conditions(name, &opts.conditions)?;
            let staged = s.staged.get(name);
            let mut data = BytesMut::new();
            for id in block_ids {
                if !valid_block_id(id) {
                    return Err(StoreError::Other(format!("invalid block id {id:?}")));
                }
                // As Azure's 400 InvalidBlockList and the local backend.
                let block = staged
                    .and_then(|m| m.get(id))
                    .ok_or_else(|| StoreError::BlockListInvalid(name.to_string()))?;
                data.extend_from_slice(block);
            }
            let etag = s.write(name, data.freeze(), opts)?;
            s.staged.remove(name);
            Ok(etag)
        })
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        self.with(|s| {
            s.blob(name)?;
            s.check_conditions(name, conditions)?;
            s.blobs.remove(name);
            s.staged.remove(name);
            Ok(())
        })
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        let page_size = self.inner.page_size;
        self.with(|s| {
            let now = s.now();
            let from = match &marker {
                Some(m) => Bound::Excluded(m.clone()),
                None => Bound::Included(prefix.to_string()),
            };
            let mut items: Vec<BlobProps> = s
                .blobs
                .range((from, Bound::Unbounded))
                .skip_while(|(n, _)| !n.starts_with(prefix) && n.as_str() < prefix)
                .take_while(|(n, _)| n.starts_with(prefix))
                .take(page_size + 1)
                .map(|(n, b)| b.props(n, now))
                .collect();
            let next = (items.len() > page_size).then(|| items[page_size - 1].name.clone());
            items.truncate(page_size);
            Ok(ListPage { items, next })
        })
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        self.with(|s| {
            s.blob(name)?;
            s.check_conditions(name, conditions)?;
            let etag = s.new_etag();
            let now = s.now();
            if let Some(b) = s.blobs.get_mut(name) {
                b.etag = etag.clone();
                b.modified = now;
                b.metadata = metadata.clone();
            }
            Ok(etag)
        })
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        if let LeaseDuration::Seconds(secs) = duration {
            if !(15..=60).contains(&secs) {
                return Err(StoreError::Other(format!(
                    "lease duration {secs} s is out of Azure's range 15-60 s"
                )));
            }
        }
        let id = proposed_id
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.with(|s| {
            let now = s.now();
            let blob = s
                .blobs
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            if blob.active_lease(now).is_some_and(|l| l.id != id) {
                return Err(StoreError::LeaseConflict(name.to_string()));
            }
            let len = duration.as_duration();
            blob.lease = Some(Lease {
                id: id.clone(),
                expires: len.map(|d| now + d),
                duration: len,
                broken: false,
            });
            Ok(id)
        })
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.with(|s| {
            let now = s.now();
            let blob = s
                .blobs
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            match &mut blob.lease {
                // Like Azure, an expired lease can be renewed if nobody leased the blob since.
                Some(l) if l.id == lease_id && !l.broken => {
                    l.expires = l.duration.map(|d| now + d);
                    Ok(())
                }
                _ => Err(StoreError::LeaseLost(name.to_string())),
            }
        })
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.with(|s| {
            let blob = s
                .blobs
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            match &blob.lease {
                Some(l) if l.id == lease_id => {
                    blob.lease = None;
                    Ok(())
                }
                _ => Err(StoreError::LeaseLost(name.to_string())),
            }
        })
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        self.with(|s| {
            let blob = s
                .blobs
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            if let Some(l) = &mut blob.lease {
                l.broken = true;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_opts(lease: Option<&str>) -> PutOptions {
        PutOptions {
            conditions: Conditions::default().with_lease(lease.map(str::to_string)),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn advancing_the_clock_expires_leases() {
        let store = MemStore::new();
        store
            .put("b", Bytes::from_static(b"v"), &put_opts(None))
            .await
            .unwrap();
        let id = store
            .acquire_lease("b", LeaseDuration::Seconds(15), None)
            .await
            .unwrap();
        store.advance(Duration::from_secs(14));
        assert_eq!(
            store.head("b").await.unwrap().lease_state,
            LeaseState::Leased
        );
        store.advance(Duration::from_secs(2));
        assert_eq!(
            store.head("b").await.unwrap().lease_state,
            LeaseState::Expired
        );
        // Expired: writes without the lease pass, and the old holder may still renew.
        store
            .put("b", Bytes::from_static(b"w"), &put_opts(None))
            .await
            .unwrap();
        store.renew_lease("b", &id).await.unwrap();
        assert_eq!(
            store.head("b").await.unwrap().lease_state,
            LeaseState::Leased
        );
        assert!(matches!(
            store
                .put("b", Bytes::from_static(b"x"), &put_opts(None))
                .await,
            Err(StoreError::LeaseConflict(_))
        ));
    }

    #[tokio::test]
    async fn listings_page_in_name_order() {
        let store = MemStore::with_page_size(2);
        for n in ["a", "p/3", "p/1", "p/2", "q"] {
            store.put(n, Bytes::new(), &put_opts(None)).await.unwrap();
        }
        let first = store.list("p/", None).await.unwrap();
        let names: Vec<_> = first.items.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["p/1", "p/2"]);
        let second = store.list("p/", first.next).await.unwrap();
        let names: Vec<_> = second.items.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["p/3"]);
        assert!(second.next.is_none());
        assert_eq!(store.list("", None).await.unwrap().items.len(), 2);
    }

    #[tokio::test]
    async fn staging_on_a_leased_blob_needs_the_lease_and_commits_need_staged_blocks() {
        let store = MemStore::new();
        store
            .put("b", Bytes::from_static(b"v"), &put_opts(None))
            .await
            .unwrap();
        let id = store
            .acquire_lease("b", LeaseDuration::Infinite, None)
            .await
            .unwrap();
        assert!(matches!(
            store.put_block("b", "0001", Bytes::new(), None).await,
            Err(StoreError::LeaseConflict(_))
        ));
        store
            .put_block("b", "0001", Bytes::from_static(b"x"), Some(&id))
            .await
            .unwrap();
        assert_eq!(store.staged_blocks("b"), ["0001"]);
        let unknown = ["0002".to_string()];
        assert!(matches!(
            store
                .commit_blocks("b", &unknown, &put_opts(Some(&id)))
                .await,
            Err(StoreError::BlockListInvalid(_))
        ));
        let ids = ["0001".to_string()];
        store
            .commit_blocks("b", &ids, &put_opts(Some(&id)))
            .await
            .unwrap();
        assert!(store.staged_blocks("b").is_empty());
    }

    #[tokio::test]
    async fn a_missing_container_is_reported_until_created() {
        let store = MemStore::without_container();
        assert!(matches!(
            store.check_container().await,
            Err(StoreError::ContainerNotFound(_))
        ));
        assert!(matches!(
            store.put("b", Bytes::new(), &put_opts(None)).await,
            Err(StoreError::ContainerNotFound(_))
        ));
        store.create_container().await.unwrap();
        store.check_container().await.unwrap();
        store.put("b", Bytes::new(), &put_opts(None)).await.unwrap();
    }
}
