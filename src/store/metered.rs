//! `MeteredStore`: counts and times every request that reaches a backend, for the metrics a
//! mount exports (`--metrics`, see `crate::metrics`): `remotedict_store_requests_total` by
//! operation and outcome, `remotedict_store_request_seconds` by operation, and the bytes read
//! and written. It sits under the retry layer, so each attempt counts once.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata, PutOptions,
    Result,
};
use crate::metrics as m;

/// A [`BlobStore`] that records each request to `inner` in the metrics.
pub struct MeteredStore {
    inner: Arc<dyn BlobStore>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        MeteredStore { inner }
    }
}

/// Records a request when it ends: with its outcome, or as `cancelled` when the caller gave up
/// on it first (a time limit around it ran out: those are the hung ones).
struct Pending {
    op: &'static str,
    started: Instant,
    outcome: Option<&'static str>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        m::store_request(self.op, outcome, self.started.elapsed());
    }
}

/// Runs request `op`, recording its outcome and how long it took.
async fn measured<T>(op: &'static str, request: impl Future<Output = Result<T>>) -> Result<T> {
    let mut pending = Pending {
        op,
        started: Instant::now(),
        outcome: None,
    };
    let result = request.await;
    pending.outcome = Some(match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    });
    result
}

#[async_trait]
impl BlobStore for MeteredStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn check_container(&self) -> Result<()> {
        measured("check_container", self.inner.check_container()).await
    }

    async fn create_container(&self) -> Result<()> {
        measured("create_container", self.inner.create_container()).await
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        let r = measured("get", self.inner.get(name, range, if_none_match)).await;
        if let Ok(GetResult::Found { data, .. }) = &r {
            m::store_bytes("read", data.len());
        }
        r
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        measured("head", self.inner.head(name)).await
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        let len = data.len();
        let r = measured("put", self.inner.put(name, data, opts)).await;
        if r.is_ok() {
            m::store_bytes("written", len);
        }
        r
    }

    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()> {
        let len = data.len();
        let r = measured(
            "put_block",
            self.inner.put_block(name, block_id, data, lease_id),
        )
        .await;
        if r.is_ok() {
            m::store_bytes("written", len);
        }
        r
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        measured(
            "commit_blocks",
            self.inner.commit_blocks(name, block_ids, opts),
        )
        .await
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        measured("delete", self.inner.delete(name, conditions)).await
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        measured("create_append", self.inner.create_append(name, opts)).await
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        let len = data.len();
        let r = measured("append", self.inner.append(name, data, at)).await;
        if r.is_ok() {
            m::store_bytes("written", len);
        }
        r
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        measured("list", self.inner.list(prefix, marker)).await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        measured(
            "set_metadata",
            self.inner.set_metadata(name, metadata, conditions),
        )
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        measured(
            "acquire_lease",
            self.inner.acquire_lease(name, duration, proposed_id),
        )
        .await
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        measured("renew_lease", self.inner.renew_lease(name, lease_id)).await
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        measured("release_lease", self.inner.release_lease(name, lease_id)).await
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        measured("break_lease", self.inner.break_lease(name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Fault, FaultStore, MemStore, Op, When};
    use std::time::Duration;

    /// Each request counts once, with its outcome; one the caller stopped waiting for counts
    /// as `cancelled`.
    #[test]
    fn requests_are_counted_by_outcome_and_a_hung_one_as_cancelled() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
                let store = MeteredStore::new(faults.clone());
                store
                    .put("a", Bytes::from_static(b"abc"), &PutOptions::default())
                    .await
                    .unwrap();
                assert!(store.head("missing").await.is_err());
                faults.plan(
                    Op::Head,
                    When::Always,
                    Fault::DelayBefore(Duration::from_secs(300)),
                );
                let hung = tokio::time::timeout(Duration::from_millis(20), store.head("a")).await;
                assert!(hung.is_err());
            })
        });
        let text = handle.render();
        for line in [
            "remotedict_store_requests_total{op=\"put\",outcome=\"ok\"} 1",
            "remotedict_store_requests_total{op=\"head\",outcome=\"not_found\"} 1",
            "remotedict_store_requests_total{op=\"head\",outcome=\"cancelled\"} 1",
            "remotedict_store_bytes_total{direction=\"written\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
