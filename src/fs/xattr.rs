//! Extended attributes: only `user.remotedict.*` exist. `user.remotedict.lock` takes a lease for a
//! chosen duration (a lock that outlives the process that set it); `etag`, `lease` and
//! `compressed_size` are read-only views of the blob, `holders` says who holds a lock on the
//! file on any host.

use super::locks::{LockMode, LockRequest};
use super::{Fs, FsError, FsResult};
use crate::store::LeaseDuration;

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
    /// Sets an extended attribute: only `user.remotedict.lock` (takes a lease).
    pub async fn setxattr(
        self: &std::sync::Arc<Self>,
        ino: u64,
        name: &str,
        value: &[u8],
        pid: u32,
    ) -> FsResult<()> {
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
                "only the user.remotedict.* attributes exist",
            )),
        }
    }

    /// Removes an extended attribute: `user.remotedict.lock` releases the lease.
    pub async fn removexattr(self: &std::sync::Arc<Self>, ino: u64, name: &str) -> FsResult<()> {
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
    /// `user.remotedict.*` attributes exist. Other `user.*` names are absent (ENODATA); other
    /// namespaces (`security.*` labels, `system.posix_acl_*`) are not supported (EOPNOTSUPP),
    /// which tells `ls -l` to stop asking for them on this mount after the first file.
    pub fn xattr_answer_for_any_file(name: &str) -> Option<FsError> {
        if name.starts_with("user.remotedict.") {
            None
        } else if name.starts_with("user.") {
            Some(FsError::NoAttribute)
        } else {
            Some(FsError::Unsupported(
                "only user.remotedict.* extended attributes exist here",
            ))
        }
    }

    /// Reads an extended attribute.
    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        let key = self.key_of(ino)?;
        if key.is_empty() || !name.starts_with("user.remotedict.") {
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

    /// Names of the extended attributes of a file.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<&'static str>> {
        let key = self.key_of(ino)?;
        if key.is_empty() || !self.index.current().await?.entries.contains_key(&key) {
            return Ok(Vec::new());
        }
        let mut names = vec![XATTR_ETAG, XATTR_LEASE, XATTR_COMPRESSED, XATTR_HOLDERS];
        if self.getxattr(ino, XATTR_LOCK).await.is_ok() {
            names.push(XATTR_LOCK);
        }
        Ok(names)
    }
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
