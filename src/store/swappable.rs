//! `SwappableStore`: a [`BlobStore`] whose backend can be replaced while the mount runs, so a
//! rotated credential (a new SAS, a new account key) is picked up on SIGHUP without remounting.
//!
//! Each request runs on the backend that was current when it started; requests that start after
//! [`SwappableStore::swap`] use the new one. Both backends point at the same container, so what
//! the upper layers hold (etags, lease ids, append positions) stays valid across a swap.

use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata, PutOptions,
    Result,
};

/// A [`BlobStore`] that forwards to a backend that [`swap`](SwappableStore::swap) replaces.
pub struct SwappableStore {
    current: RwLock<Arc<dyn BlobStore>>,
}

impl SwappableStore {
    /// Forwards to `backend` until the first swap.
    pub fn new(backend: Arc<dyn BlobStore>) -> Self {
        SwappableStore {
            current: RwLock::new(backend),
        }
    }

    /// The backend requests starting now use.
    pub fn current(&self) -> Arc<dyn BlobStore> {
        // A poisoned lock still holds a whole Arc: a panic cannot leave it half-written.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `backend` the one new requests use; returns the one it replaces (requests in
    /// flight finish on it).
    pub fn swap(&self, backend: Arc<dyn BlobStore>) -> Arc<dyn BlobStore> {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *cur, backend)
    }
}

#[async_trait]
impl BlobStore for SwappableStore {
    fn describe(&self) -> String {
        self.current().describe()
    }

    async fn check_container(&self) -> Result<()> {
        self.current().check_container().await
    }

    async fn create_container(&self) -> Result<()> {
        self.current().create_container().await
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        self.current().get(name, range, if_none_match).await
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        self.current().head(name).await
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        self.current().put(name, data, opts).await
    }

    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()> {
        self.current()
            .put_block(name, block_id, data, lease_id)
            .await
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        self.current().commit_blocks(name, block_ids, opts).await
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        self.current().delete(name, conditions).await
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        self.current().create_append(name, opts).await
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        self.current().append(name, data, at).await
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        self.current().list(prefix, marker).await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        self.current()
            .set_metadata(name, metadata, conditions)
            .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        self.current()
            .acquire_lease(name, duration, proposed_id)
            .await
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.current().renew_lease(name, lease_id).await
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.current().release_lease(name, lease_id).await
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        self.current().break_lease(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::MemStore;

    #[tokio::test]
    async fn requests_after_a_swap_go_to_the_new_backend() {
        let a: Arc<dyn BlobStore> = Arc::new(MemStore::new());
        let b: Arc<dyn BlobStore> = Arc::new(MemStore::new());
        let s = SwappableStore::new(a.clone());
        s.put("k", Bytes::from_static(b"one"), &PutOptions::default())
            .await
            .unwrap();
        let old = s.swap(b.clone());
        assert!(Arc::ptr_eq(&old, &a));
        s.put("k", Bytes::from_static(b"two"), &PutOptions::default())
            .await
            .unwrap();
        let body = |r: GetResult| match r {
            GetResult::Found { data, .. } => data,
            GetResult::NotModified => panic!("not modified"),
        };
        assert_eq!(body(a.get("k", None, None).await.unwrap()), "one");
        assert_eq!(body(b.get("k", None, None).await.unwrap()), "two");
    }
}
