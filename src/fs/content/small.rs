//! Small values held in memory: one GET of the whole blob, decoded at once. They need no local
//! file, so however many are cached they hold no descriptor.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::*;
use crate::codec;
use crate::store::StoreError;

/// Values at most this large (decoded, and stored) are held in memory, not on disk.
pub const SMALL_MAX: u64 = 256 << 10;
/// Most bytes the small values in memory take, whatever the disk cache's size.
pub(super) const SMALL_BUDGET: u64 = 64 << 20;

/// Whether a value of these (value, stored) sizes is held in memory.
pub(super) fn is_small(sizes: Option<(u64, u64)>) -> bool {
    sizes.is_some_and(|(size, stored)| size <= SMALL_MAX && stored <= SMALL_MAX + 64)
}

/// `Some` once fetched: the value, or why it could not be had.
pub(super) type Small = watch::Receiver<Option<Result<Bytes, FsError>>>;

/// Starts fetching a small value in the background (readers of it share the one GET).
pub(super) fn start(store: &Arc<dyn BlobStore>, blob: &str, etag: &str) -> Small {
    let (tx, rx) = watch::channel(None);
    let (store, blob, etag) = (store.clone(), blob.to_string(), etag.to_string());
    tokio::spawn(async move {
        let got = fetch(&store, &blob, &etag).await;
        // A value rewritten or removed meanwhile is the reader's to handle (it reads the
        // newest version, or reports the name gone); anything else (corrupt data, a store
        // failure) is logged here, naming the blob.
        if let Err(e) = &got {
            let theirs = matches!(e, FsError::Transfer(TransferError::Changed(_)))
                || matches!(e.store_cause(), Some(StoreError::NotFound(_)));
            if theirs {
                log::debug!("reading {blob:?}: {e}");
            } else {
                log::error!("reading {blob:?}: {e}");
            }
        }
        let _ = tx.send(Some(got));
    });
    rx
}

/// The value once fetched.
pub(super) async fn wait(small: &Small) -> FsResult<Bytes> {
    let mut rx = small.clone();
    let got = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| FsError::Internal("a download task ended without its result".into()))?;
    match &*got {
        Some(r) => r.clone(),
        None => Err(FsError::Internal(
            "a download task ended without its result".into(),
        )),
    }
}

/// Whether fetching it failed.
pub(super) fn failed(small: &Small) -> bool {
    matches!(&*small.borrow(), Some(Err(_)))
}

/// GETs version `etag` of `blob` whole and decodes it.
async fn fetch(store: &Arc<dyn BlobStore>, blob: &str, etag: &str) -> FsResult<Bytes> {
    let stored = match store.get(blob, None, None).await? {
        GetResult::Found { props, data } if props.etag == etag => data,
        _ => return Err(TransferError::Changed(blob.to_string()).into()),
    };
    let value = codec::decompress(&stored).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::Other => TransferError::Corrupt {
            blob: blob.to_string(),
            message: e.to_string(),
        },
        _ => TransferError::from(e),
    })?;
    Ok(value.into())
}
