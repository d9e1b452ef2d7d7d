//! The Azure Blob Storage backend of [`BlobStore`].
//!
//! [`AzureStore`] talks to one container through the `azure_storage_blobs` crate. Its job, beyond
//! issuing the requests, is to give Azure's answers the meaning the upper layers expect:
//!
//! * every request runs under a time limit, and transient failures (time-outs, connection errors,
//!   HTTP 408/429/5xx) are reported as such; azure_core's own retry policy is switched off: the
//!   retries are [`super::retrying`]'s, the same for every backend ([`pipeline`]);
//! * requests share one pooled HTTP client ([`pipeline`]): azure_core's default opens a new
//!   connection per request, which costs a handshake on every small request and caps throughput;
//! * Azure errors are mapped onto [`StoreError`] (missing blob or container, failed precondition,
//!   lease held by someone else, lease lost, authorization, transient) ([`errors`]);
//! * reads are done in chunks pinned to the etag of the first one, so a blob overwritten during a
//!   long read is never returned torn ([`read`]);
//! * etags are normalised to the quoted form Azure uses in headers (listings return them
//!   unquoted), so an etag from `list` compares equal to one from `get` or `put` ([`convert`]);
//! * names Azure would alter are refused ([`names`]);
//! * credentials never appear in errors or logs: messages are built from status codes and error
//!   codes, URLs lose their query string, and the key and SAS are redacted from any text that
//!   leaves this module ([`credentials`], [`redact`]).
//!
//! This file holds the store itself and its [`BlobStore`] implementation, which hands reads
//! ([`read`]), writes ([`write`]) and leases ([`leases`]) to the methods beside it.

mod convert;
mod credentials;
mod errors;
mod leases;
mod names;
mod pipeline;
mod read;
mod redact;
mod write;

use std::num::NonZeroU32;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::prelude::NextMarker;
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::prelude::{BlobClient, ClientBuilder, ContainerClient};
use bytes::Bytes;
use futures::StreamExt;

use self::convert::props_from_blob;
use self::errors::{http_status, Op};
pub use self::names::check_container_name;
use self::names::check_name;
use self::redact::Redactor;
use super::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata, PutOptions,
    Result, StoreError,
};

/// Page size of listings (Azure's maximum).
const LIST_PAGE: u32 = 5000;

/// Tuning of the requests an [`AzureStore`] makes.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    /// Time limit of one request (one attempt). Requests carrying data get it once more per
    /// 4 MiB they carry.
    pub request_timeout: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A container of an Azure storage account, as a [`BlobStore`].
pub struct AzureStore {
    container: ContainerClient,
    account: String,
    container_name: String,
    endpoint: String,
    opts: AzureOptions,
    /// Credential strings to redact from any text we pass on (defence in depth).
    redactor: Redactor,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore")
            .field("account", &self.account)
            .field("container", &self.container_name)
            .field("endpoint", &self.endpoint)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl AzureStore {
    /// The store of `container` at `endpoint`, signing with `creds`; `secrets` are the credential
    /// strings to redact. No request is made.
    fn build(
        account: String,
        endpoint: String,
        creds: StorageCredentials,
        container: &str,
        opts: AzureOptions,
        secrets: Vec<String>,
    ) -> Result<Self> {
        check_container_name(container)?;
        let location = CloudLocation::Custom {
            account: account.clone(),
            uri: endpoint.clone(),
        };
        let client = ClientBuilder::with_location(location, creds)
            .client_options(pipeline::client_options()?)
            .container_client(container);
        log::debug!("azure store: account {account}, container {container}, endpoint {endpoint}");
        Ok(AzureStore {
            container: client,
            account,
            container_name: container.to_string(),
            endpoint,
            opts,
            redactor: Redactor::new(secrets),
        })
    }

    /// The blob service endpoint (no credentials in it).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn blob(&self, name: &str) -> BlobClient {
        self.container.blob_client(name)
    }
}

#[async_trait]
impl BlobStore for AzureStore {
    fn describe(&self) -> String {
        format!("azure://{}/{}", self.account, self.container_name)
    }

    async fn check_container(&self) -> Result<()> {
        let name = self.container_name.clone();
        let outcome = self
            .call_az("check container", &name, Op::Container, 0, || {
                self.container.get_properties().into_future()
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(StoreError::Auth(reason)) => {
                // A SAS may allow listing and reading but not the container's properties.
                log::debug!("container properties refused ({reason}); trying a listing instead");
                self.call("check container", &name, 0, || {
                    let mut stream = self
                        .container
                        .list_blobs()
                        .max_results(NonZeroU32::MIN)
                        .into_stream();
                    let name = name.as_str();
                    async move {
                        match stream.next().await {
                            Some(Err(e)) => {
                                Err(self.map_error(&e, name, "check container", Op::Container))
                            }
                            _ => Ok(()),
                        }
                    }
                })
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn create_container(&self) -> Result<()> {
        let name = self.container_name.clone();
        let created = self
            .call("create container", &name, 0, || {
                let fut = self.container.create().into_future();
                let name = name.as_str();
                async move {
                    match fut.await {
                        Ok(()) => Ok(true),
                        Err(e)
                            if http_status(&e) == Some((409, Some("ContainerAlreadyExists"))) =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(self.map_error(&e, name, "create container", Op::Container)),
                    }
                }
            })
            .await?;
        if created {
            log::info!("created container {}", self.describe());
        }
        Ok(())
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        self.read(name, range, if_none_match).await
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        check_name(name)?;
        let blob = self.blob(name);
        let response = self
            .call_az("head", name, Op::Blob, 0, || {
                blob.get_properties().into_future()
            })
            .await?;
        let size = response.blob.properties.content_length;
        Ok(props_from_blob(name, &response.blob, size))
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        self.put_blob(name, data, opts).await
    }

    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()> {
        self.stage_block(name, block_id, data, lease_id).await
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        self.commit_block_list(name, block_ids, opts).await
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        self.delete_blob(name, conditions).await
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        self.create_append_blob(name, opts).await
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        self.append_block(name, data, at).await
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        let page_size = NonZeroU32::new(LIST_PAGE).unwrap_or(NonZeroU32::MIN);
        let response = self
            .call_az("list", prefix, Op::Container, 0, || {
                let mut builder = self
                    .container
                    .list_blobs()
                    .include_metadata(true)
                    .max_results(page_size);
                if !prefix.is_empty() {
                    builder = builder.prefix(prefix.to_string());
                }
                if let Some(m) = &marker {
                    builder = builder.marker(NextMarker::new(m.clone()));
                }
                async move {
                    match builder.into_stream().next().await {
                        Some(r) => r.map(Some),
                        None => Ok(None),
                    }
                }
            })
            .await?;
        let Some(response) = response else {
            return Ok(ListPage::default());
        };
        let items = response
            .blobs
            .blobs()
            .map(|b| props_from_blob(&b.name, b, b.properties.content_length))
            .collect();
        let next = response
            .next_marker
            .map(|m| m.as_str().to_string())
            .filter(|m| !m.is_empty());
        Ok(ListPage { items, next })
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        self.replace_metadata(name, metadata, conditions).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        self.lease(name, duration, proposed_id).await
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.renew(name, lease_id).await
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.release(name, lease_id).await
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        self.break_now(name).await
    }
}
