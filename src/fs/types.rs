//! The core's vocabulary: what a node is, its attributes as `stat` shows them, directory entries
//! and `setattr` changes.

use std::time::SystemTime;

use crate::index::{Entry, EntryKind, SpecialKind};

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
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
    /// Access time: the modification time unless set explicitly (the mount is `noatime`).
    pub atime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a device node (`makedev(major, minor)`), else 0.
    pub rdev: u32,
    /// Names of the node: 2 for a directory, 1 for others, 0 for a file unlinked while open.
    pub nlink: u32,
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
    pub atime: Option<SystemTime>,
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
        EntryKind::Special => match SpecialKind::parse(&e.target) {
            Some(SpecialKind::Fifo) => NodeKind::Fifo,
            Some(SpecialKind::Socket) => NodeKind::Socket,
            Some(SpecialKind::Char(..)) => NodeKind::CharDevice,
            Some(SpecialKind::Block(..)) => NodeKind::BlockDevice,
            // (Not written by remotedict: shown as an empty file.)
            None => NodeKind::File,
        },
    }
}

/// The device number `stat` shows for an entry (glibc's `makedev` encoding).
pub fn rdev_of(e: &Entry) -> u32 {
    match (e.kind, SpecialKind::parse(&e.target)) {
        (
            EntryKind::Special,
            Some(SpecialKind::Char(major, minor) | SpecialKind::Block(major, minor)),
        ) => {
            // 32 bits are what FUSE carries: 12 bits of major, 20 of minor.
            ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)
        }
        _ => 0,
    }
}

/// The major and minor numbers of a device number (the inverse of [`rdev_of`]).
pub fn major_minor(rdev: u32) -> (u32, u32) {
    (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}
