//! Writes of blobs: whole-blob puts, staged blocks and their commit, deletes and metadata updates,
//! each under the caller's [`Conditions`] (If-Match / If-None-Match and the lease id).
//!
//! Every answer's etag is returned in the quoted form ([`quote_etag`]), as `get` and `list` give
//! it.

use std::num::NonZeroU64;

use azure_core::http::{Etag, RequestContent};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions, BlobClientDeleteOptions,
    BlobClientSetMetadataOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockOptions, BlockBlobClientUploadOptions, BlockLookupList,
};
use bytes::Bytes;

use super::convert::{etag, etag_of, parse_lease_id, quote_etag, to_azure_metadata};
use super::errors::Op;
use super::names::{check_block_id, check_name};
use super::AzureStore;
use crate::store::{Conditions, Metadata, PutOptions, Result, StoreError};

/// The `If-Match`, `If-None-Match` and lease id of `c`.
struct WriteConditions {
    if_match: Option<Etag>,
    if_none_match: Option<Etag>,
    lease_id: Option<String>,
}

fn write_conditions(name: &str, c: &Conditions) -> Result<WriteConditions> {
    let (if_match, if_none_match) = match (&c.if_match, c.if_none_match_any) {
        // "exists with this etag" and "does not exist" cannot both hold.
        (Some(_), true) => return Err(StoreError::PreconditionFailed(name.to_string())),
        (Some(e), false) => (Some(etag(e)), None),
        (None, true) => (None, Some(Etag::from("*"))),
        (None, false) => (None, None),
    };
    Ok(WriteConditions {
        if_match,
        if_none_match,
        lease_id: parse_lease_id(c.lease_id.as_deref())?,
    })
}

const OCTET_STREAM: &str = "application/octet-stream";

impl AzureStore {
    /// [`BlobStore::put`](crate::store::BlobStore::put): one Put Blob.
    pub(super) async fn put_blob(
        &self,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<String> {
        check_name(name)?;
        let c = write_conditions(name, &opts.conditions)?;
        let metadata = to_azure_metadata(&opts.metadata)?;
        let blob = self.blob(name);
        let len = data.len() as u64;
        log::debug!("azure put {name:?}: {len} bytes");
        self.call_az("put", name, Op::Blob, len, || {
            let options = BlockBlobClientUploadOptions {
                if_match: c.if_match.clone(),
                if_none_match: c.if_none_match.clone(),
                lease_id: c.lease_id.clone(),
                metadata: metadata.clone(),
                blob_content_type: Some(OCTET_STREAM.into()),
                // One request whatever the size: the whole body is one partition.
                partition_size: NonZeroU64::new(len.max(1)),
                parallel: Some(std::num::NonZeroUsize::MIN),
                ..Default::default()
            };
            let body: RequestContent<Bytes, _> = data.clone().into();
            let blob = &blob;
            async move {
                blob.upload(body, Some(options)).await.map(|r| {
                    r.etag
                        .as_ref()
                        .map(|e| quote_etag(e.as_ref()))
                        .unwrap_or_default()
                })
            }
        })
        .await
    }

    /// [`BlobStore::put_block`](crate::store::BlobStore::put_block).
    pub(super) async fn stage_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()> {
        check_name(name)?;
        check_block_id(name, block_id)?;
        let lease = parse_lease_id(lease_id)?;
        let blob = self.blob(name).block_blob_client();
        let len = data.len() as u64;
        self.call_az("put block", name, Op::Blob, len, || {
            let options = BlockBlobClientStageBlockOptions {
                lease_id: lease.clone(),
                ..Default::default()
            };
            let body: RequestContent<Bytes, _> = data.clone().into();
            let blob = &blob;
            async move {
                blob.stage_block(block_id.as_bytes(), len, body, Some(options))
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    /// [`BlobStore::commit_blocks`](crate::store::BlobStore::commit_blocks).
    pub(super) async fn commit_block_list(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        check_name(name)?;
        for id in block_ids {
            check_block_id(name, id)?;
        }
        let c = write_conditions(name, &opts.conditions)?;
        let metadata = to_azure_metadata(&opts.metadata)?;
        let list = BlockLookupList {
            uncommitted: Some(block_ids.iter().map(|id| id.as_bytes().to_vec()).collect()),
            ..Default::default()
        };
        let blob = self.blob(name).block_blob_client();
        self.call_az("commit blocks", name, Op::Blob, 0, || {
            let options = BlockBlobClientCommitBlockListOptions {
                if_match: c.if_match.clone(),
                if_none_match: c.if_none_match.clone(),
                lease_id: c.lease_id.clone(),
                metadata: metadata.clone(),
                blob_content_type: Some(OCTET_STREAM.into()),
                ..Default::default()
            };
            let list = list.clone();
            let blob = &blob;
            async move {
                let content = RequestContent::try_from(list)?;
                blob.commit_block_list(content, Some(options))
                    .await
                    .map(|r| etag_of(r.headers()))
            }
        })
        .await
    }

    /// [`BlobStore::delete`](crate::store::BlobStore::delete).
    pub(super) async fn delete_blob(&self, name: &str, conditions: &Conditions) -> Result<()> {
        check_name(name)?;
        let c = write_conditions(name, conditions)?;
        let blob = self.blob(name);
        self.call_az("delete", name, Op::Blob, 0, || {
            let options = BlobClientDeleteOptions {
                if_match: c.if_match.clone(),
                if_none_match: c.if_none_match.clone(),
                lease_id: c.lease_id.clone(),
                ..Default::default()
            };
            let blob = &blob;
            async move { blob.delete(Some(options)).await.map(|_| ()) }
        })
        .await
    }

    /// [`BlobStore::set_metadata`](crate::store::BlobStore::set_metadata).
    pub(super) async fn replace_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        check_name(name)?;
        let c = write_conditions(name, conditions)?;
        let metadata = to_azure_metadata(metadata)?.unwrap_or_default();
        let blob = self.blob(name);
        self.call_az("set metadata", name, Op::Blob, 0, || {
            let options = BlobClientSetMetadataOptions {
                if_match: c.if_match.clone(),
                if_none_match: c.if_none_match.clone(),
                lease_id: c.lease_id.clone(),
                ..Default::default()
            };
            let (blob, metadata) = (&blob, &metadata);
            async move {
                blob.set_metadata(metadata, Some(options))
                    .await
                    .map(|r| etag_of(r.headers()))
            }
        })
        .await
    }
}

impl AzureStore {
    /// [`BlobStore::create_append`](crate::store::BlobStore::create_append).
    pub(super) async fn create_append_blob(&self, name: &str, opts: &PutOptions) -> Result<String> {
        check_name(name)?;
        let c = write_conditions(name, &opts.conditions)?;
        let metadata = to_azure_metadata(&opts.metadata)?;
        let blob = self.blob(name).append_blob_client();
        log::debug!("azure create append blob {name:?}");
        self.call_az("create append blob", name, Op::Blob, 0, || {
            let options = AppendBlobClientCreateOptions {
                if_match: c.if_match.clone(),
                if_none_match: c.if_none_match.clone(),
                lease_id: c.lease_id.clone(),
                metadata: metadata.clone(),
                blob_content_type: Some(OCTET_STREAM.into()),
                ..Default::default()
            };
            let blob = &blob;
            async move {
                blob.create(Some(options))
                    .await
                    .map(|r| etag_of(r.headers()))
            }
        })
        .await
    }

    /// [`BlobStore::append`](crate::store::BlobStore::append): one Append Block, conditional on
    /// the append position.
    pub(super) async fn append_block(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        check_name(name)?;
        if data.len() > crate::store::MAX_APPEND_BYTES {
            return Err(StoreError::Other(format!(
                "append to {name:?}: {} bytes is more than one append takes",
                data.len()
            )));
        }
        let position = i64::try_from(at).map_err(|_| {
            StoreError::Other(format!("append to {name:?}: position {at} is too large"))
        })?;
        let blob = self.blob(name).append_blob_client();
        let len = data.len() as u64;
        log::debug!("azure append {name:?}: {len} bytes at {at}");
        self.call_az("append", name, Op::Blob, len, || {
            let options = AppendBlobClientAppendBlockOptions {
                append_position: Some(position),
                ..Default::default()
            };
            let body: RequestContent<Bytes, _> = data.clone().into();
            let blob = &blob;
            async move {
                blob.append_block(body, len, Some(options))
                    .await
                    .map(|_| at + len)
            }
        })
        .await
    }
}
