//! The index blob: one per mounted folder, listing every key with its size, mtime and etag, so
//! `ls` never lists the container.
//!
//! `format` encodes and decodes it (documented in docs/FORMAT.md); `apply` holds the changes and
//! the pure rules of applying them; `shared` keeps an etag-validated cached copy and commits
//! changes without ever losing another writer's entry; `journal` keeps submitted entries on
//! local disk until they land.

pub mod apply;
pub mod entries;
pub mod format;
pub mod generations;
pub mod journal;
pub mod meta;
pub mod records;
pub mod shared;

pub use apply::Change;
pub use format::{
    decode, encode, Entry, EntryKind, Index, IndexFormatError, SpecialKind, FORMAT_VERSION,
};
pub use shared::{IndexError, SharedIndex};
