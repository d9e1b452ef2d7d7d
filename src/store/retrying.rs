//! `RetryingStore`: the one place where storage requests are retried, for every backend.
//!
//! It wraps any [`BlobStore`] (`open_store` wraps every backend in it; the backends themselves
//! only bound each attempt in time) and retries transient failures (time-outs, connection
//! resets, 408/429/5xx) with exponential backoff ([`Backoff`]), `--retries` times.
//!
//! A transient failure does not tell whether the request reached the server: its answer may have
//! been lost after it was applied. A blind retry of a conditional write then meets its own
//! success as a failure — If-None-Match finds the blob it created (412), If-Match finds the etag
//! it changed (412), a block-list commit finds its blocks used up (`BlockListInvalid`). So every
//! write (put, commit, metadata) carries a fresh write id in the blob's metadata
//! ([`META_WRITE_ID`]), and when a retry that follows a transient failure is refused, the blob is
//! read back: if it carries this write's id, the write is reported as the success it was, with
//! the blob's etag. Leases get a proposed id when the caller has none, so a retried acquire
//! after a lost answer renews its own lease instead of meeting it as someone else's.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::retry::{with_backoff, Backoff};
use super::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata, PutOptions,
    Result, StoreError,
};

/// Metadata name of the id of the write that produced the blob's current state.
pub const META_WRITE_ID: &str = "remotedict_write_id";

/// A [`BlobStore`] that retries its inner store's transient failures and recognises its own
/// earlier success.
pub struct RetryingStore {
    inner: Arc<dyn BlobStore>,
    backoff: Backoff,
}

/// Errors a retried write meets when an earlier attempt of it was applied.
fn may_be_own_success(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::PreconditionFailed(_)
            | StoreError::LeaseConflict(_)
            | StoreError::BlockListInvalid(_)
    )
}

/// `metadata` with a fresh write id (replacing any the caller copied from another blob).
fn with_write_id(metadata: &Metadata) -> (Metadata, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut m = metadata.clone();
    m.insert(META_WRITE_ID.to_string(), id.clone());
    (m, id)
}

impl RetryingStore {
    /// `inner`, retried as `backoff` says.
    pub fn new(inner: Arc<dyn BlobStore>, backoff: Backoff) -> Self {
        RetryingStore { inner, backoff }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// Runs a request that is safe to repeat, retrying transient failures.
    async fn retry<T, F, Fut>(&self, what: &str, name: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        with_backoff(&format!("{what} {name:?}"), self.backoff, f).await
    }

    /// Runs a write carrying `write_id`, retrying transient failures; a refusal after a transient
    /// failure is checked against the blob: if it carries `write_id`, the earlier attempt was
    /// applied and its etag is the answer.
    async fn write<F, Fut>(
        &self,
        what: &str,
        name: &str,
        write_id: &str,
        mut f: F,
    ) -> Result<String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<String>>,
    {
        let mut delays = self.backoff.delays();
        let mut maybe_applied = false;
        loop {
            let err = match f().await {
                Ok(etag) => return Ok(etag),
                Err(e) => e,
            };
            if err.is_transient() {
                if let Some(delay) = delays.next() {
                    crate::metrics::store_retry();
                    log::warn!(
                        "{what} {name:?}: {err}; retrying in {} ms",
                        delay.as_millis()
                    );
                    maybe_applied = true;
                    tokio::time::sleep(delay).await;
                    continue;
                }
                return Err(err);
            }
            if maybe_applied && may_be_own_success(&err) {
                if let Some(etag) = self.own_write(name, write_id).await {
                    log::info!(
                        "{what} {name:?}: the retry was refused ({err}), but an earlier attempt \
                         whose answer was lost had been applied"
                    );
                    return Ok(etag);
                }
            }
            return Err(err);
        }
    }

    /// The etag of `name` if its current state is the write `write_id`.
    async fn own_write(&self, name: &str, write_id: &str) -> Option<String> {
        match self.retry("head", name, || self.inner.head(name)).await {
            Ok(p) if p.metadata.get(META_WRITE_ID).map(String::as_str) == Some(write_id) => {
                Some(p.etag)
            }
            Ok(_) => None,
            Err(e) => {
                log::warn!("{name:?}: cannot tell whether a lost write was applied: {e}");
                None
            }
        }
    }
}

#[async_trait]
impl BlobStore for RetryingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn check_container(&self) -> Result<()> {
        self.retry("check container", "", || self.inner.check_container())
            .await
    }

    async fn create_container(&self) -> Result<()> {
        self.retry("create container", "", || self.inner.create_container())
            .await
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        self.retry("get", name, || {
            self.inner.get(name, range.clone(), if_none_match)
        })
        .await
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        self.retry("head", name, || self.inner.head(name)).await
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        let (metadata, id) = with_write_id(&opts.metadata);
        let opts = PutOptions {
            conditions: opts.conditions.clone(),
            metadata,
        };
        self.write("put", name, &id, || {
            self.inner.put(name, data.clone(), &opts)
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
        // Staging a block again under its id replaces it with the same bytes.
        self.retry("put block", name, || {
            self.inner.put_block(name, block_id, data.clone(), lease_id)
        })
        .await
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        let (metadata, id) = with_write_id(&opts.metadata);
        let opts = PutOptions {
            conditions: opts.conditions.clone(),
            metadata,
        };
        self.write("commit blocks", name, &id, || {
            self.inner.commit_blocks(name, block_ids, &opts)
        })
        .await
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        // After a lost answer the retry finds the blob gone (NotFound), as the caller would.
        self.retry("delete", name, || self.inner.delete(name, conditions))
            .await
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        let (metadata, id) = with_write_id(&opts.metadata);
        let opts = PutOptions {
            conditions: opts.conditions.clone(),
            metadata,
        };
        self.write("create append blob", name, &id, || {
            self.inner.create_append(name, &opts)
        })
        .await
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        // An append carries no id of its own, but its bytes at its position are its own: a
        // retry refused because the blob grew is checked by reading them back (callers make
        // each append's bytes unique, e.g. with a batch id).
        let mut delays = self.backoff.delays();
        let mut maybe_applied = false;
        loop {
            let err = match self.inner.append(name, data.clone(), at).await {
                Ok(len) => return Ok(len),
                Err(e) => e,
            };
            if err.is_transient() {
                if let Some(delay) = delays.next() {
                    crate::metrics::store_retry();
                    log::warn!(
                        "append {name:?}: {err}; retrying in {} ms",
                        delay.as_millis()
                    );
                    maybe_applied = true;
                    tokio::time::sleep(delay).await;
                    continue;
                }
                return Err(err);
            }
            if maybe_applied && matches!(err, StoreError::PreconditionFailed(_)) {
                let end = at + data.len() as u64;
                let back = self
                    .retry("get", name, || self.inner.get(name, Some(at..end), None))
                    .await;
                if let Ok(GetResult::Found { data: found, .. }) = back {
                    if found == data {
                        log::info!(
                            "append {name:?}: the retry was refused ({err}), but an earlier \
                             attempt whose answer was lost had been applied"
                        );
                        return Ok(end);
                    }
                }
            }
            return Err(err);
        }
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        self.retry("list", prefix, || self.inner.list(prefix, marker.clone()))
            .await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        let (metadata, id) = with_write_id(metadata);
        self.write("set metadata", name, &id, || {
            self.inner.set_metadata(name, &metadata, conditions)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        // With an id of our own, a retry after a lost answer meets a lease of that id, which
        // every backend renews for its holder instead of refusing.
        let id = proposed_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        self.retry("acquire lease", name, || {
            self.inner.acquire_lease(name, duration, Some(&id))
        })
        .await
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.retry("renew lease", name, || {
            self.inner.renew_lease(name, lease_id)
        })
        .await
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        // After a lost answer the retry finds no lease (LeaseLost): the lock code takes that as
        // released.
        self.retry("release lease", name, || {
            self.inner.release_lease(name, lease_id)
        })
        .await
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        self.retry("break lease", name, || self.inner.break_lease(name))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Fault, FaultStore, MemStore, Op, When};
    use std::time::Duration;

    fn fast() -> Backoff {
        Backoff {
            max_retries: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    fn stores() -> (Arc<FaultStore>, RetryingStore) {
        let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
        let retrying = RetryingStore::new(faults.clone(), fast());
        (faults, retrying)
    }

    #[tokio::test]
    async fn a_lost_if_absent_put_is_recognised_and_another_hosts_is_not() {
        let (faults, store) = stores();
        faults.plan(Op::Put, When::Nth(1), Fault::LoseAnswer);
        let opts = PutOptions {
            conditions: Conditions::if_absent(),
            ..Default::default()
        };
        let etag = store.put("b", Bytes::from_static(b"v"), &opts).await;
        let head = faults.inner().head("b").await.unwrap();
        assert_eq!(etag.as_ref().ok(), Some(&head.etag), "{etag:?}");
        // A blob another write made: still refused, even after a transient failure.
        faults.plan(Op::Put, When::Nth(2), Fault::Timeout);
        let r = store.put("b", Bytes::from_static(b"w"), &opts).await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_retried_acquire_after_a_lost_answer_gets_its_own_lease() {
        let (faults, store) = stores();
        faults
            .inner()
            .put("b", Bytes::new(), &PutOptions::default())
            .await
            .unwrap();
        faults.plan(Op::AcquireLease, When::Nth(1), Fault::LoseAnswer);
        let id = store
            .acquire_lease("b", LeaseDuration::Seconds(15), None)
            .await
            .unwrap();
        store.release_lease("b", &id).await.unwrap();
    }
}
