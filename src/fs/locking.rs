//! Locks across hosts: `flock` and the `user.remotedict.lock` attribute, mapped onto blob leases.
//!
//! Within a host, the `LockTable` keeps flock semantics between lock owners (open file
//! descriptions): shared locks coexist, an exclusive one excludes all others. Across hosts, the
//! first holder on a host takes a lease on the file's blob and keeps it renewed until the last
//! holder on the host lets go. Leases are exclusive, so across hosts every lock — shared or
//! exclusive — excludes every other host's locks (docs/SEMANTICS.md). While a host holds a
//! lease, its writes to that blob carry the lease id; other hosts' writes fail with EBUSY.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use super::{lock, Fs, FsError, FsResult};
use crate::lock::{signal_pending, LeaseKeeper};
use crate::store::{LeaseDuration, StoreError};

/// Lock owner of locks taken through the `user.remotedict.lock` attribute.
pub const XATTR_OWNER: u64 = u64::MAX;

/// Attribute names.
pub const XATTR_LOCK: &str = "user.remotedict.lock";
pub const XATTR_ETAG: &str = "user.remotedict.etag";
pub const XATTR_LEASE: &str = "user.remotedict.lease";
pub const XATTR_COMPRESSED: &str = "user.remotedict.compressed_size";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

#[derive(Default)]
struct KeyLocks {
    holders: HashMap<u64, LockMode>,
    lease: Option<LeaseKeeper>,
}

/// Locks this host holds, per key.
#[derive(Default)]
pub struct LockTable {
    keys: Mutex<HashMap<String, KeyLocks>>,
    changed: Notify,
    /// Serializes lease acquisition and release on this host.
    gate: tokio::sync::Mutex<()>,
}

impl LockTable {
    /// The lease id writes to `key` must carry, if this host holds its lease.
    pub fn lease_id(&self, key: &str) -> Option<String> {
        let keys = lock(&self.keys);
        let lease = keys.get(key)?.lease.as_ref()?;
        // A lease that ran out by design (xattr locks) is no longer presented; one whose renewal
        // failed still is, so the write fails loudly instead of overwriting.
        (lease.is_live() || lease.remaining().is_none()).then(|| lease.id().to_string())
    }

    /// Keys this host holds a lease on.
    pub fn held_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.keys)
            .iter()
            .filter(|(_, k)| k.lease.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }
}

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
    /// Takes (or converts) `owner`'s lock on `ino`; waits while it conflicts when `wait`, giving
    /// up when process `pid` gets a signal.
    pub async fn lock(
        &self,
        ino: u64,
        owner: u64,
        mode: LockMode,
        wait: bool,
        pid: u32,
    ) -> FsResult<()> {
        self.lock_with(ino, owner, mode, wait, pid, self.cfg.lease_duration, true)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn lock_with(
        &self,
        ino: u64,
        owner: u64,
        mode: LockMode,
        wait: bool,
        pid: u32,
        duration: LeaseDuration,
        renew: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let key = self.key_of(ino)?;
        let mut delay = Duration::from_millis(20);
        loop {
            let notified = self.locks.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .try_lock(&key, ino, owner, mode, duration, renew)
                .await?
            {
                return Ok(());
            }
            if !wait {
                return Err(FsError::WouldBlock);
            }
            if pid != 0 && signal_pending(pid) {
                return Err(FsError::Interrupted);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn try_lock(
        &self,
        key: &str,
        ino: u64,
        owner: u64,
        mode: LockMode,
        duration: LeaseDuration,
        renew: bool,
    ) -> FsResult<bool> {
        let _gate = self.locks.gate.lock().await;
        let stale = {
            let mut keys = lock(&self.locks.keys);
            let mut stale = None;
            if let Some(k) = keys.get_mut(key) {
                if k.lease.as_ref().is_some_and(|l| !l.is_live()) {
                    // The lease ran out or was lost: nobody here holds the lock any more.
                    stale = keys.remove(key).and_then(|k| k.lease);
                } else {
                    let conflict = k.holders.iter().any(|(o, m)| {
                        *o != owner && (mode == LockMode::Exclusive || *m == LockMode::Exclusive)
                    });
                    if conflict {
                        return Ok(false);
                    }
                    if k.lease.is_some() {
                        k.holders.insert(owner, mode);
                        return Ok(true);
                    }
                }
            }
            stale
        };
        if let Some(l) = stale {
            let _ = l.release().await;
        }
        self.ensure_blob(ino).await?;
        let blob = self.layout.blob_name(key);
        match LeaseKeeper::acquire(&self.store, &blob, duration, renew).await {
            Ok(keeper) => {
                {
                    let mut keys = lock(&self.locks.keys);
                    let k = keys.entry(key.to_string()).or_default();
                    k.lease = Some(keeper);
                    k.holders.insert(owner, mode);
                }
                // The new holder must read what the previous one wrote.
                self.index.invalidate();
                if let Err(e) = self.index.revalidate().await {
                    log::warn!("refreshing the index after locking {key:?}: {e}");
                }
                Ok(true)
            }
            Err(StoreError::LeaseConflict(_)) => Ok(false),
            Err(StoreError::NotFound(_)) => Err(FsError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// A lock needs a blob to lease: a file created here and not yet saved is saved first
    /// (whether the blob then exists, the lease request itself tells).
    async fn ensure_blob(&self, ino: u64) -> FsResult<()> {
        if self.open_file(ino).is_some() {
            self.save(ino).await?;
        }
        Ok(())
    }

    /// Drops `owner`'s lock on `ino`; the last holder on this host releases the lease.
    pub async fn unlock(&self, ino: u64, owner: u64) -> FsResult<bool> {
        let Ok(key) = self.key_of(ino) else {
            return Ok(false);
        };
        let _gate = self.locks.gate.lock().await;
        let (had, lease) = {
            let mut keys = lock(&self.locks.keys);
            let Some(k) = keys.get_mut(&key) else {
                return Ok(false);
            };
            let had = k.holders.remove(&owner).is_some();
            let lease = if k.holders.is_empty() {
                keys.remove(&key).and_then(|k| k.lease)
            } else {
                None
            };
            (had, lease)
        };
        let released = match lease {
            Some(l) => l.release().await,
            None => Ok(()),
        };
        self.locks.changed.notify_waiters();
        released.inspect_err(|e| log::warn!("releasing the lease on {key:?}: {e}"))?;
        Ok(had)
    }

    /// Releases every lease this host holds (at unmount).
    pub async fn release_all_locks(&self) {
        let _gate = self.locks.gate.lock().await;
        let all: Vec<(String, KeyLocks)> = lock(&self.locks.keys).drain().collect();
        for (key, k) in all {
            if let Some(l) = k.lease {
                if let Err(e) = l.release().await {
                    log::warn!("releasing the lease on {key:?}: {e}");
                }
            }
        }
        self.locks.changed.notify_waiters();
    }

    /// Sets an extended attribute: only `user.remotedict.lock` (takes a lease).
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], pid: u32) -> FsResult<()> {
        match name {
            XATTR_LOCK => {
                let (duration, wait) = parse_lock_value(value).map_err(|e| {
                    log::warn!("setfattr -n {XATTR_LOCK}: {e}");
                    FsError::Invalid(e)
                })?;
                self.lock_with(
                    ino,
                    XATTR_OWNER,
                    LockMode::Exclusive,
                    wait,
                    pid,
                    duration,
                    false,
                )
                .await
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
    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        match name {
            XATTR_LOCK => {
                if self.unlock(ino, XATTR_OWNER).await? {
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
        let entry = self.index.current().await?.entries.get(&key).cloned();
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
            XATTR_LOCK => {
                let keys = lock(&self.locks.keys);
                let k = keys
                    .get(&key)
                    .filter(|k| k.holders.contains_key(&XATTR_OWNER));
                let lease = k.and_then(|k| k.lease.as_ref()).filter(|l| l.is_live());
                match lease.map(|l| l.remaining()) {
                    Some(Some(left)) => left.as_secs().to_string(),
                    Some(None) => "-1".to_string(),
                    None => return Err(FsError::NoAttribute),
                }
            }
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
        let mut names = vec![XATTR_ETAG, XATTR_LEASE, XATTR_COMPRESSED];
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
