//! Writes of blobs: whole-blob puts, staged blocks and their commit, deletes and metadata updates,
//! each under the caller's [`Conditions`] (If-Match / If-None-Match and the lease id).
//!
//! Every answer's etag is returned in the quoted form ([`quote_etag`]), as `get` and `list` give
//! it.

use azure_core::prelude::{IfMatchCondition, LeaseId};
use azure_storage_blobs::blob::{BlobBlockType, BlockList};
use azure_storage_blobs::prelude::BlockId;
use bytes::Bytes;

use super::convert::{parse_lease_id, quote_etag, to_azure_metadata};
use super::errors::Op;
use super::names::{check_block_id, check_name};
use super::AzureStore;
use crate::store::{Conditions, Metadata, PutOptions, Result, StoreError};

/// Sets the optional `If-Match` / `If-None-Match` condition, lease id and metadata of a request
/// builder (azure_storage_blobs' builders share these setters, not a trait).
macro_rules! with_conditions {
    ($builder:expr, $condition:expr, $lease:expr $(, $metadata:expr)?) => {{
        let mut builder = $builder;
        if let Some(c) = $condition {
            builder = builder.if_match(c.clone());
        }
        if let Some(l) = $lease {
            builder = builder.lease_id(l);
        }
        $(
            if let Some(m) = $metadata {
                builder = builder.metadata(m.clone());
            }
        )?
        builder
    }};
}

/// The condition header and lease id of `c`.
fn write_conditions(
    name: &str,
    c: &Conditions,
) -> Result<(Option<IfMatchCondition>, Option<LeaseId>)> {
    let condition = match (&c.if_match, c.if_none_match_any) {
        // "exists with this etag" and "does not exist" cannot both hold.
        (Some(_), true) => return Err(StoreError::PreconditionFailed(name.to_string())),
        (Some(etag), false) => Some(IfMatchCondition::Match(quote_etag(etag))),
        (None, true) => Some(IfMatchCondition::NotMatch("*".to_string())),
        (None, false) => None,
    };
    let lease = parse_lease_id(c.lease_id.as_deref())?;
    Ok((condition, lease))
}

impl AzureStore {
    /// [`BlobStore::put`](crate::store::BlobStore::put).
    pub(super) async fn put_blob(
        &self,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<String> {
        check_name(name)?;
        let (condition, lease) = write_conditions(name, &opts.conditions)?;
        let metadata = to_azure_metadata(&opts.metadata)?;
        let blob = self.blob(name);
        log::debug!("azure put {name:?}: {} bytes", data.len());
        self.call_az("put", name, Op::Blob, data.len() as u64, || {
            let builder = with_conditions!(
                blob.put_block_blob(data.clone())
                    .content_type("application/octet-stream"),
                &condition,
                lease,
                &metadata
            );
            async move { builder.await.map(|r| quote_etag(&r.etag)) }
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
        let blob = self.blob(name);
        let id = Bytes::copy_from_slice(block_id.as_bytes());
        self.call_az("put block", name, Op::Blob, data.len() as u64, || {
            let mut builder = blob.put_block(BlockId::new(id.clone()), data.clone());
            if let Some(l) = lease {
                builder = builder.lease_id(l);
            }
            async move { builder.await.map(|_| ()) }
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
        let (condition, lease) = write_conditions(name, &opts.conditions)?;
        let metadata = to_azure_metadata(&opts.metadata)?;
        let list = BlockList {
            blocks: block_ids
                .iter()
                .map(|id| {
                    BlobBlockType::Uncommitted(BlockId::new(Bytes::copy_from_slice(id.as_bytes())))
                })
                .collect(),
        };
        let blob = self.blob(name);
        self.call_az("commit blocks", name, Op::Blob, 0, || {
            let builder = with_conditions!(
                blob.put_block_list(list.clone())
                    .content_type("application/octet-stream"),
                &condition,
                lease,
                &metadata
            );
            async move { builder.await.map(|r| quote_etag(&r.etag)) }
        })
        .await
    }

    /// [`BlobStore::delete`](crate::store::BlobStore::delete).
    pub(super) async fn delete_blob(&self, name: &str, conditions: &Conditions) -> Result<()> {
        check_name(name)?;
        let (condition, lease) = write_conditions(name, conditions)?;
        let blob = self.blob(name);
        self.call_az("delete", name, Op::Blob, 0, || {
            let builder = with_conditions!(blob.delete(), &condition, lease);
            async move { builder.await.map(|_| ()) }
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
        let (condition, lease) = write_conditions(name, conditions)?;
        let metadata = to_azure_metadata(metadata)?;
        let blob = self.blob(name);
        self.call_az("set metadata", name, Op::Blob, 0, || {
            let builder = with_conditions!(blob.set_metadata(), &condition, lease, &metadata);
            async move { builder.await.map(|r| quote_etag(&r.etag)) }
        })
        .await
    }
}

impl AzureStore {
    /// [`BlobStore::create_append`](crate::store::BlobStore::create_append).
    pub(super) async fn create_append_blob(&self, name: &str, opts: &PutOptions) -> Result<String> {
        check_name(name)?;
        let (condition, lease) = write_conditions(name, &opts.conditions)?;
        let metadata = to_azure_metadata(&opts.metadata)?;
        let blob = self.blob(name);
        log::debug!("azure create append blob {name:?}");
        self.call_az("create append blob", name, Op::Blob, 0, || {
            let builder = with_conditions!(
                blob.put_append_blob()
                    .content_type("application/octet-stream"),
                &condition,
                lease,
                &metadata
            );
            async move { builder.await.map(|r| quote_etag(&r.etag)) }
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
        let blob = self.blob(name);
        let len = data.len() as u64;
        log::debug!("azure append {name:?}: {len} bytes at {at}");
        self.call_az("append", name, Op::Blob, len, || {
            let builder = blob.append_block(data.clone()).condition_append_position(
                azure_storage_blobs::prelude::ConditionAppendPosition::new(at),
            );
            async move { builder.await.map(|_| at + len) }
        })
        .await
    }
}
