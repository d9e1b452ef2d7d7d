//! Extended attributes. A file's own `user.*` attributes are stored in its blob's metadata
//! (encoded: `index::meta`) and mirrored in its index entry, so reading and listing them needs
//! no request; changing one rewrites the metadata like `chmod` does. The `user.remotedict.*`
//! names are remotedict's own, read by name and never listed (so copies do not carry them):
//! `user.remotedict.lock` takes a lease for a chosen duration (a lock that outlives the process
//! that set it); `etag`, `lease` and `compressed_size` are read-only views of the blob,
//! `holders` says who holds a lock on the file on any host.

use super::locks::{LockMode, LockRequest};
use super::{Fs, FsError, FsResult};
use crate::index::meta::{blob_metadata, metadata_size, METADATA_LIMIT};
use crate::index::Entry;
use crate::store::LeaseDuration;

/// `setxattr` flags: fail if the attribute exists / does not exist.
pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;

/// How a file's own attribute is changed.
#[derive(Clone, Debug)]
pub enum XattrChange {
    Set {
        value: Vec<u8>,
        /// `XATTR_CREATE` / `XATTR_REPLACE` flags.
        flags: i32,
    },
    Remove,
}

/// Applies `change` to `name` among `xattrs` (kept sorted by name), checking the flags.
pub fn apply_xattr(
    xattrs: &mut Vec<(String, Vec<u8>)>,
    name: &str,
    change: &XattrChange,
) -> FsResult<()> {
    let at = xattrs.binary_search_by(|(n, _)| n.as_str().cmp(name));
    match (change, at) {
        (XattrChange::Set { flags, .. }, Ok(_)) if flags & XATTR_CREATE != 0 => {
            Err(FsError::Exists)
        }
        (XattrChange::Set { flags, .. }, Err(_)) if flags & XATTR_REPLACE != 0 => {
            Err(FsError::NoAttribute)
        }
        (XattrChange::Set { value, .. }, Ok(i)) => {
            xattrs[i].1 = value.clone();
            Ok(())
        }
        (XattrChange::Set { value, .. }, Err(i)) => {
            xattrs.insert(i, (name.to_string(), value.clone()));
            Ok(())
        }
        (XattrChange::Remove, Ok(i)) => {
            xattrs.remove(i);
            Ok(())
        }
        (XattrChange::Remove, Err(_)) => Err(FsError::NoAttribute),
    }
}

/// Whether `entry`'s attributes fit in a blob's metadata with everything else it carries
/// (ENOSPC otherwise, as a local filesystem whose attribute space is full; E2BIG for one value
/// that could never fit).
fn check_fits(entry: &Entry, name: &str, value_len: usize) -> FsResult<()> {
    if value_len.div_ceil(3) * 4 + 2 * name.len() + 13 > METADATA_LIMIT - 1024 {
        return Err(FsError::TooBig(format!(
            "an attribute value of {value_len} bytes does not fit in a blob's metadata (8 KiB \
             in all, base64-encoded)"
        )));
    }
    // (Room for the attributes remotedict adds at an upload: write id, value id, sizes.)
    if metadata_size(&blob_metadata(entry)) + 256 > METADATA_LIMIT {
        return Err(FsError::NoSpace(
            "the file's extended attributes would pass the 8 KiB Azure allows a blob's metadata"
                .into(),
        ));
    }
    Ok(())
}

/// Lock owner of locks taken through the `user.remotedict.lock` attribute.
pub const XATTR_OWNER: u64 = u64::MAX;

/// Attribute names.
pub const XATTR_LOCK: &str = "user.remotedict.lock";
pub const XATTR_ETAG: &str = "user.remotedict.etag";
pub const XATTR_LEASE: &str = "user.remotedict.lease";
pub const XATTR_COMPRESSED: &str = "user.remotedict.compressed_size";
pub const XATTR_HOLDERS: &str = "user.remotedict.holders";

/// Parses the value of `user.remotedict.lock`: `SECONDS` (15–60, or -1 for infinite), optionally
/// followed by `,wait` (the default: wait until the lock is free) or `,nowait` (fail at once).
pub fn parse_lock_value(value: &[u8]) -> Result<(LeaseDuration, bool), String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value must be text".to_string())?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let (secs, mode) = text
        .split_once(',')
        .map_or((text, "wait"), |(a, b)| (a.trim(), b.trim()));
    let wait = match mode {
        "wait" => true,
        "nowait" => false,
        _ => {
            return Err(format!(
                "unknown mode {mode:?}: use SECONDS, SECONDS,wait or SECONDS,nowait"
            ))
        }
    };
    let secs: i64 = secs.parse().map_err(|_| {
        format!("{secs:?} is not a number of seconds (15 to 60, or -1 for infinite)")
    })?;
    Ok((LeaseDuration::from_secs(secs)?, wait))
}

impl Fs {
    /// Sets an extended attribute: a file's own `user.*` one, or `user.remotedict.lock` (takes a
    /// lease).
    pub async fn setxattr(
        self: &std::sync::Arc<Self>,
        ino: u64,
        name: &str,
        value: &[u8],
        flags: i32,
        pid: u32,
    ) -> FsResult<()> {
        if let Some(own) = own_xattr(name) {
            let change = XattrChange::Set {
                value: value.to_vec(),
                flags,
            };
            return self.change_xattr(ino, own, change).await;
        }
        match name {
            XATTR_LOCK => {
                let (duration, wait) = parse_lock_value(value).map_err(|e| {
                    log::warn!("setfattr -n {XATTR_LOCK}: {e}");
                    FsError::Invalid(e)
                })?;
                let req = LockRequest::whole(XATTR_OWNER, 0, LockMode::Exclusive, wait, pid);
                self.lock_with(ino, req, duration, false).await
            }
            XATTR_ETAG | XATTR_LEASE | XATTR_COMPRESSED => {
                Err(FsError::NotPermitted("this attribute is read-only"))
            }
            _ => Err(FsError::Unsupported(
                "only user.* extended attributes are stored",
            )),
        }
    }

    /// Changes a file's own attribute `user.<name>`: in its unsaved state while it has unsaved
    /// content (recorded at the next upload), else in its blob's metadata and index entry.
    async fn change_xattr(&self, ino: u64, name: &str, change: XattrChange) -> FsResult<()> {
        let key = self.key_of(ino)?;
        if key.is_empty() {
            return Err(FsError::NotPermitted(
                "the mount's root has no blob to hold attributes",
            ));
        }
        self.writable()?;
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::Invalid(
                "an attribute name is user. and 1 to 255 bytes".into(),
            ));
        }
        let value_len = match &change {
            XattrChange::Set { value, .. } => value.len(),
            XattrChange::Remove => 0,
        };
        if let Some(f) = self.open_file(ino) {
            let mut st = f.state.lock().await;
            if st.staged.as_ref().is_some_and(|s| s.dirty) {
                let mut entry = st.base.clone().unwrap_or_else(|| Entry::file(0, 0, 0, ""));
                if let Some(x) = &st.xattrs {
                    entry.xattrs = x.clone();
                }
                apply_xattr(&mut entry.xattrs, name, &change)?;
                check_fits(&entry, name, value_len)?;
                st.xattrs = Some(entry.xattrs);
                return Ok(());
            }
        }
        let attr = self.attr_of(&key, ino).await?;
        // Refused (flags, size) against the entry as listed, before anything is written.
        let mut probe = self
            .entry_of(&key)
            .await?
            .unwrap_or_else(|| Entry::file(0, 0, 0, ""));
        apply_xattr(&mut probe.xattrs, name, &change)?;
        check_fits(&probe, name, value_len)?;
        // Applied again to the newest entry when another host changed it meanwhile; refused
        // then if the flags no longer hold there (the attempt that was written decides).
        let refused = std::sync::Mutex::new(None);
        let entry = self
            .update_entry(&key, attr.kind, |e| {
                let mut next = e.xattrs.clone();
                let applied = apply_xattr(&mut next, name, &change);
                if applied.is_ok() {
                    e.xattrs = next;
                }
                *crate::mutex::lock(&refused) = applied.err();
            })
            .await?;
        if let Some(f) = self.open_file(ino) {
            // An open copy now starts from this version (as after `chmod`): its next save
            // replaces it, with these attributes.
            let mut st = f.state.lock().await;
            if st.base.is_some() {
                st.base = Some(entry);
            }
        }
        let refused = crate::mutex::lock(&refused).take();
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A file's own attribute `user.<name>`, from its unsaved state or its index entry.
    async fn own_xattr_value(&self, ino: u64, key: &str, name: &str) -> FsResult<Vec<u8>> {
        let xattrs = self.own_xattrs(ino, key).await?;
        xattrs
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoAttribute)
    }

    async fn own_xattrs(&self, ino: u64, key: &str) -> FsResult<Vec<(String, Vec<u8>)>> {
        if let Some(f) = self.open_file(ino) {
            let st = f.state.lock().await;
            if let (Some(x), true) = (&st.xattrs, st.staged.as_ref().is_some_and(|s| s.dirty)) {
                return Ok(x.clone());
            }
        }
        Ok(self
            .entry_of(key)
            .await?
            .map(|e| e.xattrs)
            .unwrap_or_default())
    }

    /// Removes an extended attribute: a file's own, or `user.remotedict.lock` (releases the
    /// lease).
    pub async fn removexattr(self: &std::sync::Arc<Self>, ino: u64, name: &str) -> FsResult<()> {
        if let Some(own) = own_xattr(name) {
            return self.change_xattr(ino, own, XattrChange::Remove).await;
        }
        match name {
            XATTR_LOCK => {
                if self.unlock_owner(ino, XATTR_OWNER).await? {
                    Ok(())
                } else {
                    Err(FsError::NoAttribute)
                }
            }
            XATTR_ETAG | XATTR_LEASE | XATTR_COMPRESSED => {
                Err(FsError::NotPermitted("this attribute is read-only"))
            }
            _ => Err(FsError::NoAttribute),
        }
    }

    /// The answer to reading attribute `name`, when it does not depend on the file: only
    /// `user.*` attributes exist. Other namespaces (`security.*` labels, `system.posix_acl_*`)
    /// are not supported (EOPNOTSUPP), which tells `ls -l` to stop asking for them on this mount
    /// after the first file.
    pub fn xattr_answer_for_any_file(name: &str) -> Option<FsError> {
        if name.starts_with("user.") {
            None
        } else {
            Some(FsError::Unsupported(
                "only user.* extended attributes exist here",
            ))
        }
    }

    /// Reads an extended attribute.
    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        let key = self.key_of(ino)?;
        if key.is_empty() {
            return Err(FsError::NoAttribute);
        }
        if let Some(own) = own_xattr(name) {
            return self.own_xattr_value(ino, &key, own).await;
        }
        if !name.starts_with("user.remotedict.") {
            return Err(FsError::NoAttribute);
        }
        let entry = self.index.current().await?.entries.get(&key);
        let value = match name {
            XATTR_ETAG => entry.ok_or(FsError::NoAttribute)?.etag,
            XATTR_COMPRESSED => entry.ok_or(FsError::NoAttribute)?.stored_size.to_string(),
            XATTR_LEASE => {
                let props = self.store.head(&self.layout.blob_name(&key)).await?;
                let held = self.locks.lease_id(&key).is_some();
                let duration = match props.lease_state {
                    crate::store::LeaseState::Leased if props.lease_infinite => ",infinite",
                    crate::store::LeaseState::Leased => ",fixed",
                    _ => "",
                };
                let here = if held { ",held-here" } else { "" };
                format!("{}{duration}{here}", props.lease_state.as_str())
            }
            XATTR_HOLDERS => {
                let holders = self.holders(&key).await?;
                serde_json::to_string(&holders).unwrap_or_default()
            }
            XATTR_LOCK => match self.locks.time_left(&key, XATTR_OWNER) {
                Some(Some(left)) => left.as_secs().to_string(),
                Some(None) => "-1".to_string(),
                None => return Err(FsError::NoAttribute),
            },
            _ => return Err(FsError::NoAttribute),
        };
        Ok(value.into_bytes())
    }

    /// Names of a file's own extended attributes (`user.remotedict.*` are read by name only:
    /// listed, `cp --preserve=xattr` and `rsync -X` would copy them onto other files).
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        let key = self.key_of(ino)?;
        if key.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .own_xattrs(ino, &key)
            .await?
            .into_iter()
            .map(|(n, _)| format!("user.{n}"))
            .collect())
    }
}

/// The name after `user.` of a file's own attribute (not one of remotedict's).
fn own_xattr(name: &str) -> Option<&str> {
    name.strip_prefix("user.")
        .filter(|_| !name.starts_with("user.remotedict."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_values() {
        assert_eq!(
            parse_lock_value(b"30").unwrap(),
            (LeaseDuration::Seconds(30), true)
        );
        assert_eq!(
            parse_lock_value(b"-1,nowait").unwrap(),
            (LeaseDuration::Infinite, false)
        );
        assert_eq!(
            parse_lock_value(b" 15 , wait\n").unwrap(),
            (LeaseDuration::Seconds(15), true)
        );
        for bad in [&b"10"[..], b"61", b"abc", b"30,maybe", b"", b"0"] {
            assert!(parse_lock_value(bad).is_err(), "{bad:?}");
        }
        assert!(parse_lock_value(b"90").unwrap_err().contains("15 to 60"));
    }
}
