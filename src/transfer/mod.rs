//! Streaming transfers between local files and blobs, never holding a whole value in memory.
//!
//! Upload: a blocking thread reads the file and compresses it into an LZ4 frame, cut into
//! blocks that are staged in parallel and committed once (one plain put when the value fits in one
//! block). Download: ranged GETs, fetched a few ahead, feed a blocking thread that decodes and
//! writes the value to a file, publishing how far it got so readers can start before the end.
//! Copy: a blob's stored bytes under a new name, without decoding.

mod copy;
mod download;
pub mod early;
mod upload;

pub use copy::{copy_stored, Copied};
pub use download::{download_to, download_with, Downloaded};
pub use early::EarlyUpload;
pub use upload::{upload_file, Uploaded};

use std::sync::Arc;

use crate::store::{Metadata, StoreError};

/// Identifies a blob's content: a fresh random id with every upload of a value, kept by copies
/// and by attribute changes (`chmod`, `touch`), which change the etag but not the bytes. Lets a
/// host tell "someone changed its attributes" from "someone wrote another value".
pub const META_VALUE_ID: &str = "remotedict_value_id";

/// `metadata` marked as a new value (see [`META_VALUE_ID`]).
pub fn with_new_value_id(mut metadata: Metadata) -> Metadata {
    metadata.insert(
        META_VALUE_ID.to_string(),
        uuid::Uuid::new_v4().simple().to_string(),
    );
    metadata
}

/// The value id `metadata` carries, if any (blobs of other tools and older versions have none).
pub fn value_id(metadata: &Metadata) -> Option<&str> {
    metadata.get(META_VALUE_ID).map(String::as_str)
}

/// Sizes and parallelism of transfers.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// Bytes of compressed data per staged block.
    pub block_size: usize,
    /// Blocks staged at once (uploads).
    pub parallel: usize,
    /// Ranged GETs in flight at once (downloads).
    pub read_parallel: usize,
    /// Bytes per ranged GET.
    pub range_size: u64,
}

impl Default for TransferConfig {
    /// Downloads: 8 GETs of 8 MiB in flight (64 MiB). Measured on Azurite (2 cores), a 256 MiB
    /// raw blob read through a mount: 4 x 4 MiB 474 MiB/s, 8 x 8 MiB 1,130 MiB/s; a blob service
    /// serves a large range far more cheaply per byte than several small ones. Uploads: 8 blocks
    /// of 8 MiB staged at once, for the same reason (1 GiB through a mount: 4 x 4 MiB 145 MiB/s).
    fn default() -> Self {
        TransferConfig {
            block_size: 8 << 20,
            parallel: 8,
            read_parallel: 8,
            range_size: 8 << 20,
        }
    }
}

/// Why a transfer failed; clonable (a download's outcome is shared by every reader waiting on
/// it), with sources kept behind `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {blob:?} is corrupt: {message}")]
    Corrupt { blob: String, message: String },
    #[error("blob {0:?} changed while it was being read")]
    Changed(String),
    #[error("local I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
    #[error("a transfer task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

impl From<std::io::Error> for TransferError {
    fn from(e: std::io::Error) -> Self {
        TransferError::Io(Arc::new(e))
    }
}

impl From<tokio::task::JoinError> for TransferError {
    fn from(e: tokio::task::JoinError) -> Self {
        TransferError::Task(Arc::new(e))
    }
}
