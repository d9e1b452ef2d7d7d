//! The core's vocabulary: what a node is, its attributes as `stat` shows them, directory entries
//! and `setattr` changes.

use std::time::SystemTime;

use crate::index::{Entry, EntryKind};

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// Attributes of a node, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    /// Bytes stored in the container (compressed), for `st_blocks`.
    pub stored_size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// One directory entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: NodeKind,
}

/// Attribute changes of `setattr`.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The kind of node an index entry stands for.
pub fn kind_of(e: &Entry) -> NodeKind {
    match e.kind {
        EntryKind::File => NodeKind::File,
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink => NodeKind::Symlink,
    }
}
