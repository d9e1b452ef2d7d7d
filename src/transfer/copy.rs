//! Copy: a blob's stored bytes (no decoding, no re-compression) under a new name, in ranged GETs
//! and staged blocks for large values, with block ids of its own ([`BlockIds`]). Used by rename;
//! a copy that another upload of the target overtakes fails (`BlockListInvalid`), whole.

use super::{TransferConfig, TransferError};
use crate::store::{BlobProps, BlobStore, BlockIds, GetResult, PutOptions, StoreError};

/// What [`copy_stored`] copied.
#[derive(Clone, Debug)]
pub struct Copied {
    /// The source as it was: every byte copied is of this version (its etag).
    pub source: BlobProps,
    /// The etag of the copy.
    pub etag: String,
}

/// Copies blob `from` to `to` with its metadata, presenting `lease` (the target's lease id, when
/// the caller holds it). The copy is of one version of `from`, the one returned: it fails with
/// [`TransferError::Changed`] if `from` is rewritten while it is copied (then nothing was
/// written to `to`).
pub async fn copy_stored(
    store: &dyn BlobStore,
    from: &str,
    to: &str,
    lease: Option<String>,
    cfg: &TransferConfig,
) -> Result<Copied, TransferError> {
    let props = store.head(from).await?;
    let opts = PutOptions {
        metadata: props.metadata.clone(),
        conditions: crate::store::Conditions::default().with_lease(lease.clone()),
    };
    let step = cfg.block_size as u64;
    if props.size <= step {
        let data = match store.get(from, None, None).await? {
            GetResult::Found { data, props: p } if p.etag == props.etag => data,
            GetResult::Found { .. } => return Err(TransferError::Changed(from.to_string())),
            GetResult::NotModified => {
                return Err(StoreError::Other(format!(
                    "{from:?}: an unconditional read answered 304"
                ))
                .into())
            }
        };
        let etag = store.put(to, data, &opts).await?;
        return Ok(Copied {
            source: props,
            etag,
        });
    }
    let block_ids = BlockIds::new();
    let mut ids = Vec::new();
    let mut offset = 0;
    while offset < props.size {
        let end = (offset + step).min(props.size);
        let data = match store.get(from, Some(offset..end), None).await? {
            GetResult::Found { data, props: p } if p.etag == props.etag => data,
            _ => return Err(TransferError::Changed(from.to_string())),
        };
        let id = block_ids.id(ids.len());
        store.put_block(to, &id, data, lease.as_deref()).await?;
        ids.push(id);
        offset = end;
    }
    let etag = store.commit_blocks(to, &ids, &opts).await?;
    Ok(Copied {
        source: props,
        etag,
    })
}
