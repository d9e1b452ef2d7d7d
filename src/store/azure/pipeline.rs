//! How the Azure backend's requests travel: the HTTP client, the azure_core pipeline, and the time
//! limits and retries every request runs under.
//!
//! * Requests share one pooled HTTP client ([`http_client`]): azure_core's default opens a new
//!   connection per request, which costs a handshake on every small request and caps throughput.
//! * azure_core's own retry policy is switched off, and this backend retries nothing itself:
//!   [`AzureStore::call`] gives each attempt a time limit that grows with the bytes it carries
//!   and reports running out of it as a transient error; the retries are
//!   [`RetryingStore`](crate::store::retrying::RetryingStore)'s, the same for every backend.
//! * One pipeline policy of ours, [`CaptureContentRange`], drops a header Azurite refuses and hands
//!   the `Content-Range` of responses to ranged reads (the crate parses it but does not hand it out
//!   in full).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::headers::{CONTENT_RANGE, RANGE_GET_CONTENT_CRC64};
use azure_core::{
    ClientOptions, Context, HttpClient, Policy, PolicyResult, Request, RetryOptions,
    TransportOptions,
};

use super::errors::Op;
use super::AzureStore;
use crate::store::retry::with_timeout;
use crate::store::{Result, StoreError};

/// A request carrying data gets `request_timeout` once more for each this many bytes.
const TIMEOUT_UNIT: f64 = 4.0 * 1024.0 * 1024.0;

/// The HTTP client every request goes through: one connection pool, kept warm.
///
/// azure_core's default client sets `pool_max_idle_per_host(0)` (a workaround for an old hyper
/// hang), so every request pays a TCP (and TLS) handshake; our own time limits and retries already
/// guard against a stuck connection, so the pool is safe to keep. Nagle is off: requests are
/// small and latency-bound. An idle connection is dropped after 4 s, before a server that closes
/// idle connections after 5 s (Node's default, so Azurite's) does: reusing one the server is
/// closing at that moment fails with "connection reset".
fn http_client() -> Result<Arc<dyn HttpClient>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(4))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(|e| StoreError::Other(format!("cannot set up the HTTP client: {e}")))?;
    Ok(Arc::new(client))
}

/// The client options of every store: our HTTP client and policy, azure_core's retries off.
pub(super) fn client_options() -> Result<ClientOptions> {
    let capture: Arc<dyn Policy> = Arc::new(CaptureContentRange);
    Ok(ClientOptions::default()
        .retry(RetryOptions::none())
        .transport(TransportOptions::new(http_client()?))
        .per_call_policies(vec![capture]))
}

impl AzureStore {
    /// Time limit of one request moving `bytes` bytes.
    fn limit(&self, bytes: u64) -> Duration {
        self.opts
            .request_timeout
            .mul_f64(1.0 + bytes as f64 / TIMEOUT_UNIT)
    }

    /// Runs a request built by `f` under its time limit (once: retries are the caller's).
    pub(super) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        name: &str,
        bytes: u64,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        with_timeout(what, name, self.limit(bytes), f()).await
    }

    /// [`Self::call`] for requests whose Azure errors all map the ordinary way.
    pub(super) async fn call_az<T, F, Fut>(
        &self,
        what: &'static str,
        name: &str,
        op: Op,
        bytes: u64,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        self.call(what, name, bytes, || {
            let fut = f();
            async move { fut.await.map_err(|e| self.map_error(&e, name, what, op)) }
        })
        .await
    }
}

/// Where [`CaptureContentRange`] leaves the `Content-Range` of a response, when put in the
/// request's [`Context`].
#[derive(Clone, Default)]
pub(super) struct ContentRangeSlot(Arc<Mutex<Option<ContentRange>>>);

/// A parsed `Content-Range: bytes START-END/TOTAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ContentRange {
    pub(super) start: u64,
    /// Inclusive.
    pub(super) end: u64,
    pub(super) total: u64,
}

impl ContentRangeSlot {
    fn set(&self, v: ContentRange) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = Some(v);
        }
    }
    pub(super) fn get(&self) -> Option<ContentRange> {
        self.0.lock().ok().and_then(|g| *g)
    }
}

/// Parses `bytes START-END/TOTAL`.
fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let r = ContentRange {
        start: start.trim().parse().ok()?,
        end: end.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
    };
    (r.start <= r.end).then_some(r)
}

/// A pipeline policy (per call, so it runs before the request is signed) that
/// * drops the `x-ms-range-get-content-crc64` header the crate adds to GETs of less than 4 MiB:
///   the crate never checks the CRC, and Azurite (unless started with `--loose`) refuses any
///   request carrying it with `500 FeatureNotSupported`;
/// * copies the `Content-Range` of successful responses into the request context's
///   [`ContentRangeSlot`], if there is one.
#[derive(Debug)]
struct CaptureContentRange;

#[async_trait]
impl Policy for CaptureContentRange {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::message(
                ErrorKind::Other,
                "no policy after CaptureContentRange",
            ));
        };
        if request
            .headers()
            .get_optional_str(&RANGE_GET_CONTENT_CRC64)
            .is_some()
        {
            // `Headers` has no removal: rebuild the request without that header.
            let mut fresh = Request::new(request.url().clone(), *request.method());
            for (k, v) in request.headers().iter() {
                if *k != RANGE_GET_CONTENT_CRC64 {
                    fresh.insert_header(k.clone(), v.clone());
                }
            }
            fresh.set_body(request.body().clone());
            *request = fresh;
        }
        let response = first.send(ctx, request, rest).await?;
        if let Some(slot) = ctx.get::<ContentRangeSlot>() {
            if let Some(cr) = response
                .headers()
                .get_optional_str(&CONTENT_RANGE)
                .and_then(parse_content_range)
            {
                slot.set(cr);
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some(ContentRange {
                start: 0,
                end: 9,
                total: 100
            })
        );
        assert_eq!(parse_content_range("bytes 0--1/0"), None);
        assert_eq!(parse_content_range("bytes */0"), None);
    }
}
