//! An index entry's attributes as blob metadata, both ways: every upload carries them, so an
//! index can be rebuilt from a container listing (`fsck --repair`) and other tools can read them.

use super::format::{Entry, EntryKind, SpecialKind};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::codec::{META_ENCODING, META_SIZE};
use crate::store::{BlobProps, Metadata};

pub const META_MODE: &str = "remotedict_mode";
pub const META_UID: &str = "remotedict_uid";
pub const META_GID: &str = "remotedict_gid";
pub const META_MTIME: &str = "remotedict_mtime_ns";
pub const META_CTIME: &str = "remotedict_ctime_ns";
/// An access time set explicitly (absent: the access time is the modification time).
pub const META_ATIME: &str = "remotedict_atime_ns";
/// Marks a symbolic link: the blob's content is the link target, raw.
pub const META_SYMLINK: &str = "remotedict_symlink";
/// Marks a FIFO, socket or device node: the value says which (`fifo`, `socket`,
/// `char MAJOR:MINOR`, `block MAJOR:MINOR`), as does the blob's content.
pub const META_SPECIAL: &str = "remotedict_special";
/// The id of the write that produced the blob's current state, set by the retry layer so that a
/// retried write recognises its own earlier success (see `store::retrying`).
pub use crate::store::retrying::META_WRITE_ID;
/// Identifies the content (kept by copies and attribute changes; see `transfer`).
pub use crate::transfer::META_VALUE_ID;
/// Marks the empty blob of an `O_EXCL` create not yet saved (a claim of the name): the writer's
/// token and the Unix time of its last heartbeat. Never listed as a value.
pub const META_CLAIM: &str = "remotedict_claim";
/// Prefix of a `user.*` extended attribute's metadata name: `remotedict_x_` then the hex of its
/// name after `user.` (Azure metadata names must be identifiers and are case-insensitive); the
/// value is the attribute's bytes in standard base64.
pub const META_XATTR_PREFIX: &str = "remotedict_x_";
/// What Azure allows a blob's metadata to hold, names and values together.
pub const METADATA_LIMIT: usize = 8192;
/// Marks a directory (the convention of ADLS Gen2 and blobfuse).
pub const META_IS_FOLDER: &str = "hdi_isfolder";

/// The metadata a blob carries for `entry` (size and encoding of values are added by the upload).
pub fn blob_metadata(entry: &Entry) -> Metadata {
    let mut m = Metadata::new();
    match entry.kind {
        EntryKind::File => {
            m.insert(META_SIZE.into(), entry.size.to_string());
            m.insert(META_ENCODING.into(), "lz4".into());
        }
        EntryKind::Dir => {
            m.insert(META_IS_FOLDER.into(), "true".into());
        }
        EntryKind::Symlink => {
            m.insert(META_SYMLINK.into(), "true".into());
        }
        EntryKind::Special => {
            m.insert(META_SPECIAL.into(), entry.target.clone());
        }
    }
    if entry.mode != 0 {
        m.insert(META_MODE.into(), format!("{:o}", entry.mode));
        m.insert(META_UID.into(), entry.uid.to_string());
        m.insert(META_GID.into(), entry.gid.to_string());
    }
    m.insert(META_MTIME.into(), entry.mtime_ns.to_string());
    m.insert(META_CTIME.into(), entry.ctime_ns.to_string());
    if let Some(atime) = entry.atime_ns {
        m.insert(META_ATIME.into(), atime.to_string());
    }
    for (name, value) in &entry.xattrs {
        m.insert(xattr_meta_name(name), BASE64.encode(value));
    }
    m
}

/// The metadata name holding attribute `user.<name>`.
pub fn xattr_meta_name(name: &str) -> String {
    format!("{META_XATTR_PREFIX}{}", hex::encode(name.as_bytes()))
}

/// Bytes a blob's metadata takes against [`METADATA_LIMIT`].
pub fn metadata_size(m: &Metadata) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The entry a blob stands for, from its properties (for a symlink, `target` must be filled in by
/// the caller from the content; a special file's is in its metadata).
pub fn entry_from_props(props: &BlobProps) -> Entry {
    let get = |k: &str| props.metadata.get(k);
    let modified = crate::time::to_ns(props.last_modified).max(0);
    let kind = if get(META_IS_FOLDER).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        EntryKind::Dir
    } else if get(META_SYMLINK).is_some() {
        EntryKind::Symlink
    } else if get(META_SPECIAL).is_some_and(|v| SpecialKind::parse(v).is_some()) {
        EntryKind::Special
    } else {
        EntryKind::File
    };
    let size = match kind {
        EntryKind::File => get(META_SIZE)
            .and_then(|v| v.parse().ok())
            .unwrap_or(props.size),
        EntryKind::Dir | EntryKind::Special => 0,
        EntryKind::Symlink => props.size,
    };
    let mut e = Entry::file(size, props.size, modified, props.etag.clone());
    e.kind = kind;
    if kind == EntryKind::Special {
        e.target = get(META_SPECIAL).cloned().unwrap_or_default();
    }
    e.mtime_ns = get(META_MTIME)
        .and_then(|v| v.parse().ok())
        .unwrap_or(modified);
    e.ctime_ns = get(META_CTIME)
        .and_then(|v| v.parse().ok())
        .unwrap_or(e.mtime_ns);
    e.atime_ns = get(META_ATIME).and_then(|v| v.parse().ok());
    e.xattrs = props
        .metadata
        .iter()
        .filter_map(|(k, v)| {
            let n = META_XATTR_PREFIX.len();
            let (prefix, hex_name) = (k.get(..n)?, k.get(n..)?);
            if !prefix.eq_ignore_ascii_case(META_XATTR_PREFIX) {
                return None;
            }
            let name = String::from_utf8(hex::decode(hex_name).ok()?).ok()?;
            // (Names remotedict would refuse to set are not taken from other writers either.)
            let ok = !name.is_empty() && name.len() <= 255 && !name.starts_with("remotedict.");
            ok.then_some(())?;
            Some((name, BASE64.decode(v).ok()?))
        })
        .collect();
    // Sorted, each name once (Azure ignores case in metadata names; another store may not).
    e.xattrs.sort();
    e.xattrs.dedup_by(|a, b| a.0 == b.0);
    if let Some(mode) = get(META_MODE).and_then(|v| u32::from_str_radix(v, 8).ok()) {
        e.mode = mode & 0o7777;
        e.uid = get(META_UID).and_then(|v| v.parse().ok()).unwrap_or(0);
        e.gid = get(META_GID).and_then(|v| v.parse().ok()).unwrap_or(0);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseState;

    #[test]
    fn attributes_survive_the_round_trip_through_metadata() {
        for kind in [
            EntryKind::File,
            EntryKind::Dir,
            EntryKind::Symlink,
            EntryKind::Special,
        ] {
            let mut e = Entry::file(
                if kind == EntryKind::File { 1234 } else { 0 },
                99,
                1_700_000_000_123_456_789,
                "\"0x1\"",
            );
            e.kind = kind;
            if kind == EntryKind::Special {
                e.target = "block 8:17".into();
            }
            e.ctime_ns = e.mtime_ns + 5;
            e.atime_ns = Some(1_600_000_000_000_000_042);
            e.xattrs = vec![
                ("author".into(), "Zoë".as_bytes().to_vec()),
                ("bin".into(), vec![0, 255, 10]),
            ];
            (e.mode, e.uid, e.gid) = (0o640, 1000, 50);
            let props = BlobProps {
                name: "f/k".into(),
                size: 99,
                etag: "\"0x1\"".into(),
                last_modified: std::time::UNIX_EPOCH,
                metadata: blob_metadata(&e),
                lease_state: LeaseState::Available,
                lease_infinite: false,
            };
            let mut back = entry_from_props(&props);
            if kind == EntryKind::Symlink {
                back.size = e.size;
            }
            assert_eq!(back, e, "{kind:?}");
        }
    }

    #[test]
    fn a_foreign_blob_gets_sensible_defaults() {
        let props = BlobProps {
            name: "f/k".into(),
            size: 10,
            etag: "\"0x2\"".into(),
            last_modified: std::time::UNIX_EPOCH + std::time::Duration::from_secs(5),
            metadata: Metadata::new(),
            lease_state: LeaseState::Available,
            lease_infinite: false,
        };
        let e = entry_from_props(&props);
        assert_eq!(
            (e.kind, e.size, e.stored_size, e.mode, e.mtime_ns),
            (EntryKind::File, 10, 10, 0, 5_000_000_000)
        );
    }
}
