//! How the Azure backend's requests travel: the SDK's pipeline over our transport, and the time
//! limits and retries every request runs under.
//!
//! * Requests go through our HTTP client ([`super::transport`]).
//! * The SDK's own retry policy is switched off, and this backend retries nothing itself:
//!   [`AzureStore::call`] gives each attempt a time limit that grows with the bytes it carries
//!   and reports running out of it as a transient error; the retries are
//!   [`RetryingStore`](crate::store::retrying::RetryingStore)'s, the same for every backend.
//! * A store signing with a SAS adds it to each request last ([`SasPolicy`]); one signing in
//!   with a token gets the SDK's bearer policy from the client constructor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, RetryOptions};

use super::errors::Op;
use super::sas::{SasPolicy, SasSource};
use super::transport::Transport;
use super::AzureStore;
use crate::store::retry::with_timeout;
use crate::store::Result;

/// A request carrying data gets `request_timeout` once more for each this many bytes.
const TIMEOUT_UNIT: f64 = 4.0 * 1024.0 * 1024.0;

/// The client options of a store: our transport, the SDK's retries off, and the SAS policy when
/// the store signs with one.
pub(super) fn client_options(transport: &Transport, sas: Option<Arc<SasSource>>) -> ClientOptions {
    let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
    if let Some(sas) = sas {
        per_try.push(Arc::new(SasPolicy(sas)));
    }
    ClientOptions {
        transport: Some(transport.sdk()),
        retry: RetryOptions::none(),
        per_try_policies: per_try,
        ..Default::default()
    }
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
