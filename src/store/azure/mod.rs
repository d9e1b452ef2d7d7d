//! The Azure Blob Storage backend of [`BlobStore`].
//!
//! [`AzureStore`] talks to one container through the maintained Azure SDK (`azure_storage_blob`,
//! `azure_core`, `azure_identity`). Its job, beyond issuing the requests, is to give Azure's
//! answers the meaning the upper layers expect:
//!
//! * it signs in one of six ways ([`AuthMode`]): a SAS given or signed here from an account key
//!   ([`sas`]), or an Entra ID token ([`auth`]);
//! * requests go through our HTTP client ([`transport`]): the system's CAs, `SSL_CERT_FILE`,
//!   `ca_file` and proxies;
//! * every request runs under a time limit, and transient failures (time-outs, connection errors,
//!   HTTP 408/429/5xx) are reported as such; the SDK's own retries are off: the retries are
//!   [`super::retrying`]'s, the same for every backend ([`pipeline`]);
//! * Azure errors are mapped onto [`StoreError`] (missing blob or container, failed precondition,
//!   lease held by someone else, lease lost, authorization, transient) ([`errors`]);
//! * reads are done in chunks pinned to the etag of the first one, so a blob overwritten during a
//!   long read is never returned torn ([`read`]);
//! * etags are normalised to the quoted form Azure uses in headers (listings return them
//!   unquoted), so an etag from `list` compares equal to one from `get` or `put` ([`convert`]);
//! * names Azure would alter are refused ([`names`]);
//! * credentials never appear in errors or logs: messages are built from status codes and error
//!   codes, the transport drops URLs (and their SAS) from its errors, and keys, SAS and client
//!   secrets are redacted from any text that leaves this module ([`credentials`], [`redact`]).
//!
//! This file holds the store itself and its [`BlobStore`] implementation, which hands reads
//! ([`read`]), writes ([`write`]) and leases ([`leases`]) to the methods beside it.
//!
//! Every operation of [`BlobStore`] has its SDK call; the SDK's managed download and upload are
//! not used (a ranged GET is one `download` with one partition; a put is one `upload` whose
//! partition is the whole body), so each operation stays one request with one time limit.

mod auth;
mod convert;
mod credentials;
mod errors;
mod leases;
mod names;
mod pipeline;
mod read;
mod redact;
mod sas;
mod transport;
mod write;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_core::http::Url;
use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::StreamExt;

pub use self::auth::{AuthMode, MsiId, TokenSpec};
use self::convert::{props_from_headers, props_from_item};
use self::errors::{http_status, Op};
pub use self::names::check_container_name;
use self::names::check_name;
use self::redact::Redactor;
use self::sas::SasSource;
pub use self::transport::TlsOptions;
use self::transport::Transport;
use super::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata, PutOptions,
    Result, StoreError,
};

/// Page size of listings (Azure's maximum).
const LIST_PAGE: i32 = 5000;

/// The service version of our requests: the newest that Azurite 3.35 also accepts (the SDK's
/// default, 2026-04-06, it refuses).
const API_VERSION: &str = "2025-11-05";

/// Tuning of the requests an [`AzureStore`] makes.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    /// Time limit of one request (one attempt). Requests carrying data get it once more per
    /// 4 MiB they carry.
    pub request_timeout: Duration,
    /// Whom the HTTP client trusts.
    pub tls: TlsOptions,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            request_timeout: Duration::from_secs(30),
            tls: TlsOptions::default(),
        }
    }
}

/// Which blob service: its endpoint (no trailing `/`, no query) and its account's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureTarget {
    pub account: String,
    pub endpoint: String,
}

/// How a store signs in.
#[derive(Clone, Debug)]
pub enum AzureAuth {
    /// An account key (base64): an account SAS is signed with it.
    Key { key: Secret },
    /// A SAS token (query string without `?`).
    Sas { token: Secret },
    /// An Entra ID token of `mode`.
    Token { mode: AuthMode, spec: TokenSpec },
}

impl AzureAuth {
    pub fn mode(&self) -> AuthMode {
        match self {
            AzureAuth::Key { .. } => AuthMode::Key,
            AzureAuth::Sas { .. } => AuthMode::Sas,
            AzureAuth::Token { mode, .. } => *mode,
        }
    }
}

/// A container of an Azure storage account, as a [`BlobStore`].
pub struct AzureStore {
    container: BlobContainerClient,
    account: String,
    container_name: String,
    endpoint: String,
    mode: AuthMode,
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
            .field("auth", &self.mode)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl AzureStore {
    /// The store of `container` at `target`, signing in with `auth`. No request is made.
    pub fn open(
        target: AzureTarget,
        auth: AzureAuth,
        container: &str,
        opts: AzureOptions,
    ) -> Result<Self> {
        check_container_name(container)?;
        let mode = auth.mode();
        let mut secrets = Vec::new();
        let transport = Transport::new(&opts.tls)?;
        let url = Url::parse(&format!("{}/", target.endpoint))
            .and_then(|u| u.join(container))
            .map_err(|_| {
                StoreError::Other(format!(
                    "the blob endpoint {} and container {container:?} make no URL",
                    target.endpoint
                ))
            })?;
        let (sas, credential) = match &auth {
            AzureAuth::Key { key } => {
                secrets.push(key.secret().to_string());
                let allow_http = url.scheme() == "http";
                let source = SasSource::account_key(&target.account, key.secret(), allow_http)?;
                (Some(Arc::new(source)), None)
            }
            AzureAuth::Sas { token } => {
                credentials::push_sas_secrets(&mut secrets, token.secret());
                (Some(Arc::new(SasSource::Fixed(token.clone()))), None)
            }
            AzureAuth::Token { mode, spec } => {
                if url.scheme() != "https" {
                    return Err(StoreError::Other(format!(
                        "--auth {mode} sends a bearer token, which needs an https endpoint, not {}",
                        target.endpoint
                    )));
                }
                if let Some(s) = &spec.client_secret {
                    secrets.push(s.secret().to_string());
                }
                let redactor = Redactor::new(secrets.clone());
                let credential = auth::token_credential(
                    *mode,
                    spec,
                    &transport,
                    opts.request_timeout,
                    redactor,
                )?;
                (None, Some(credential))
            }
        };
        let options = BlobContainerClientOptions {
            client_options: pipeline::client_options(&transport, sas),
            version: API_VERSION.to_string(),
        };
        let container_client =
            BlobContainerClient::new(url, credential, Some(options)).map_err(|e| {
                StoreError::Other(format!(
                    "cannot set up the Azure client for {}: {e}",
                    target.endpoint
                ))
            })?;
        log::debug!(
            "azure store: account {}, container {container}, endpoint {}, auth {mode}",
            target.account,
            target.endpoint
        );
        Ok(AzureStore {
            container: container_client,
            account: target.account,
            container_name: container.to_string(),
            endpoint: target.endpoint,
            mode,
            opts,
            redactor: Redactor::new(secrets),
        })
    }

    /// The blob service endpoint (no credentials in it).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How the store signs in.
    pub fn auth_mode(&self) -> AuthMode {
        self.mode
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
                self.container.get_properties(None)
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(StoreError::Auth(reason)) if self.mode == AuthMode::Sas => {
                // A SAS may allow listing and reading but not the container's properties.
                log::debug!("container properties refused ({reason}); trying a listing instead");
                self.list_page("", None, 1).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    async fn create_container(&self) -> Result<()> {
        let name = self.container_name.clone();
        let created = self
            .call("create container", &name, 0, || async {
                match self.container.create(None).await {
                    Ok(_) => Ok(true),
                    Err(e) if http_status(&e) == Some((409, Some("ContainerAlreadyExists"))) => {
                        Ok(false)
                    }
                    Err(e) => Err(self.map_error(&e, &name, "create container", Op::Container)),
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
            .call_az("head", name, Op::Blob, 0, || blob.get_properties(None))
            .await?;
        let h = response.headers();
        let size = h
            .get_optional_str(&convert::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(props_from_headers(name, h, size))
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
        self.list_page(prefix, marker, LIST_PAGE).await
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

impl AzureStore {
    /// One page of at most `max` blobs under `prefix`, with their metadata.
    async fn list_page(&self, prefix: &str, marker: Option<String>, max: i32) -> Result<ListPage> {
        let page = self
            .call_az("list", prefix, Op::Container, 0, || {
                let options = BlobContainerClientListBlobsOptions {
                    include: Some(vec![ListBlobsIncludeItem::Metadata]),
                    marker: marker.clone(),
                    maxresults: Some(max),
                    prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                    ..Default::default()
                };
                async move {
                    let mut pages = self.container.list_blobs(Some(options))?.into_pages();
                    match pages.next().await {
                        Some(page) => page?.into_model().map(Some),
                        None => Ok(None),
                    }
                }
            })
            .await?;
        let Some(page) = page else {
            return Ok(ListPage::default());
        };
        let items = page.blob_items.iter().filter_map(props_from_item).collect();
        let next = page.next_marker.filter(|m| !m.is_empty());
        Ok(ListPage { items, next })
    }
}
