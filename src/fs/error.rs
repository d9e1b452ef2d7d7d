//! Errors of the filesystem core, each knowing the errno userspace should see.

use std::sync::Arc;

use crate::index::IndexError;
use crate::layout::KeyError;
use crate::store::StoreError;
use crate::transfer::TransferError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("read-only mount")]
    ReadOnly,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("stale file handle")]
    BadHandle,
    #[error("the lock is held elsewhere")]
    WouldBlock,
    #[error("interrupted while waiting for a lock")]
    Interrupted,
    #[error("waiting for that lock would deadlock: its holder waits for a lock the caller holds")]
    Deadlock,
    #[error("no such attribute")]
    NoAttribute,
    #[error("too big: {0}")]
    TooBig(String),
    #[error(
        "a file may hold at most {} bytes (Azure's largest blob)",
        crate::fs::MAX_FILE_SIZE
    )]
    FileTooLarge,
    #[error("no space: {0}")]
    NoSpace(String),
    #[error("the lock this file was written under is lost (its lease ran out or was broken): the write is refused, and the unsaved changes made under it are dropped")]
    LockLost,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("local I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
    #[error("a background task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    /// A broken invariant of remotedict itself (a bug), reported rather than panicking.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for FsError {
    fn from(e: tokio::task::JoinError) -> Self {
        FsError::Task(Arc::new(e))
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            FsError::Store(StoreError::NoSpace(format!("local cache: {e}")))
        } else {
            FsError::Io(Arc::new(e))
        }
    }
}

/// A full disk is ENOSPC; any other local I/O failure is EIO.
fn io_errno(e: &std::io::Error) -> i32 {
    match e.kind() {
        std::io::ErrorKind::StorageFull => libc::ENOSPC,
        // A size past what the staging filesystem can hold (`truncate -s 1P`).
        std::io::ErrorKind::FileTooLarge => libc::EFBIG,
        _ => libc::EIO,
    }
}

/// The errno of a store failure reaching the user. A failed precondition is answered here only
/// when nothing above knew what it meant (an operation that lost every retry to other hosts'
/// writes): EIO, not EEXIST. Where it does mean "the name is taken", the caller says so with
/// [`FsError::Exists`].
fn store_errno(e: &StoreError) -> i32 {
    match e {
        StoreError::NotFound(_) => libc::ENOENT,
        StoreError::ContainerNotFound(_) => libc::EIO,
        StoreError::PreconditionFailed(_) => libc::EIO,
        StoreError::LeaseConflict(_) => libc::EBUSY,
        StoreError::LeaseLost(_) => libc::EIO,
        StoreError::Auth(_) => libc::EACCES,
        StoreError::NoSpace(_) => libc::ENOSPC,
        StoreError::InvalidName { .. } => libc::EINVAL,
        StoreError::Transient { .. }
        | StoreError::BlockListInvalid(_)
        | StoreError::BlobFull(_)
        | StoreError::Other(_) => libc::EIO,
    }
}

impl FsError {
    /// The store's answer behind this error, if it is one (directly or through a transfer).
    pub fn store_cause(&self) -> Option<&StoreError> {
        match self {
            FsError::Store(e) | FsError::Transfer(TransferError::Store(e)) => Some(e),
            _ => None,
        }
    }

    /// The errno this error is reported as.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::ReadOnly => libc::EROFS,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::BadHandle => libc::EBADF,
            FsError::WouldBlock => libc::EWOULDBLOCK,
            FsError::Interrupted => libc::EINTR,
            FsError::Deadlock => libc::EDEADLK,
            FsError::NoAttribute => libc::ENODATA,
            FsError::TooBig(_) => libc::E2BIG,
            FsError::FileTooLarge => libc::EFBIG,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::LockLost => libc::EIO,
            FsError::Key(KeyError::TooLong(_)) => libc::ENAMETOOLONG,
            FsError::Key(_) => libc::EINVAL,
            FsError::Store(e) => store_errno(e),
            FsError::Index(IndexError::Store(e)) => store_errno(e),
            FsError::Index(_) => libc::EIO,
            FsError::Transfer(TransferError::Store(e)) => store_errno(e),
            FsError::Transfer(TransferError::Io(e)) | FsError::Io(e) => io_errno(e),
            FsError::Transfer(_) | FsError::Task(_) | FsError::Internal(_) => libc::EIO,
        }
    }

    /// Whether this is an expected answer (ENOENT on lookup, EEXIST…) rather than a failure
    /// worth a log line.
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            FsError::NotFound
                | FsError::WouldBlock
                | FsError::Interrupted
                | FsError::NoAttribute
                | FsError::Exists
                | FsError::NotDir
                | FsError::IsDir
                | FsError::NotEmpty
                | FsError::Key(_)
        )
    }
}

pub type FsResult<T> = Result<T, FsError>;
