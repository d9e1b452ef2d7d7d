//! The lock table: which lock owners (open file descriptions) on this host hold which `flock`
//! locks, and the lease behind each locked key.
//!
//! Within a host it keeps flock semantics between owners: shared locks coexist, an exclusive one
//! excludes all others. Across hosts, the first holder on a host takes a lease on the file's blob
//! (see `fs::flock`) and the table keeps it until the last holder on the host lets go. It does no
//! I/O itself: callers take [`LockTable::gate`] around a decision and the lease request it leads to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::lock::LeaseKeeper;
use crate::mutex::lock;

/// A lock's mode, as `flock` asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// One owner's lock, and which grant gave it (so a grant given back later, after its request
/// was abandoned, cannot drop a lock the owner took again since).
#[derive(Clone, Copy)]
struct Hold {
    mode: LockMode,
    grant: u64,
}

#[derive(Default)]
struct KeyLocks {
    holders: HashMap<u64, Hold>,
    lease: Option<LeaseKeeper>,
}

/// What [`LockTable::try_grant`] decided.
pub enum Grant {
    /// The owner holds the lock now (this host already holds the key's lease), by this grant.
    Granted(u64),
    /// Another owner on this host holds a conflicting lock.
    Conflict,
    /// Nobody here holds the key: the lease must be acquired first ([`LockTable::install`]).
    /// Carries a lease that ran out or was lost, for the caller to release.
    NeedLease(Option<LeaseKeeper>),
}

/// Locks this host holds, per key.
#[derive(Default)]
pub struct LockTable {
    keys: Mutex<HashMap<String, KeyLocks>>,
    changed: Notify,
    /// Serializes lease acquisition and release on this host.
    gate: tokio::sync::Mutex<()>,
    /// Set when the mount ends ([`LockTable::drain`]): no new lease is taken after that.
    closing: std::sync::atomic::AtomicBool,
    /// The last grant number given.
    grants: std::sync::atomic::AtomicU64,
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

    /// Keys this host holds a live lease on (one lost, or past its deadline, is not held).
    pub fn held_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.keys)
            .iter()
            .filter(|(_, k)| k.lease.as_ref().is_some_and(|l| l.is_live()))
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Held while deciding on a lock and acquiring or releasing the lease it needs.
    pub async fn gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// A future that completes at the next change of the table (a lock let go). Enable it
    /// before trying, so a change between the try and the wait is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Wakes the waiters (a lease this host held was given back: another try may now get it).
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    fn next_grant(&self) -> u64 {
        self.grants
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Grants `owner` a `mode` lock on `key` if this host holds the key's live lease and no
    /// other owner here holds a conflicting lock.
    pub fn try_grant(&self, key: &str, owner: u64, mode: LockMode) -> Grant {
        let mut keys = lock(&self.keys);
        let Some(k) = keys.get_mut(key) else {
            return Grant::NeedLease(None);
        };
        if k.lease.as_ref().is_some_and(|l| !l.is_live()) {
            // The lease ran out or was lost: nobody here holds the lock any more.
            return Grant::NeedLease(keys.remove(key).and_then(|k| k.lease));
        }
        let conflict = k.holders.iter().any(|(o, h)| {
            *o != owner && (mode == LockMode::Exclusive || h.mode == LockMode::Exclusive)
        });
        if conflict {
            if k.holders.get(&owner).is_some_and(|h| h.mode != mode) {
                // A conversion that must wait drops the lock held first, as Linux does (flock(2):
                // not atomic), so two shared holders that both upgrade do not wait on each other.
                k.holders.remove(&owner);
                drop(keys);
                self.changed.notify_waiters();
            }
            return Grant::Conflict;
        }
        if k.lease.is_some() {
            let grant = self.next_grant();
            k.holders.insert(owner, Hold { mode, grant });
            return Grant::Granted(grant);
        }
        Grant::NeedLease(None)
    }

    /// Records the lease just acquired for `key` and `owner`'s lock under it; returns the grant.
    pub fn install(&self, key: &str, lease: LeaseKeeper, owner: u64, mode: LockMode) -> u64 {
        let grant = self.next_grant();
        let mut keys = lock(&self.keys);
        let k = keys.entry(key.to_string()).or_default();
        k.lease = Some(lease);
        k.holders.insert(owner, Hold { mode, grant });
        grant
    }

    /// Drops `owner`'s lock on `key` (with `grant`, only the lock that grant gave): whether it
    /// had one, and the key's lease when it was the last holder here (for the caller to
    /// release). Wakes waiters.
    pub fn remove_holder(
        &self,
        key: &str,
        owner: u64,
        grant: Option<u64>,
    ) -> (bool, Option<LeaseKeeper>) {
        let mut keys = lock(&self.keys);
        let Some(k) = keys.get_mut(key) else {
            return (false, None);
        };
        if grant.is_some_and(|g| k.holders.get(&owner).is_none_or(|h| h.grant != g)) {
            return (false, None);
        }
        let had = k.holders.remove(&owner).is_some();
        let lease = if k.holders.is_empty() {
            keys.remove(key).and_then(|k| k.lease)
        } else {
            None
        };
        drop(keys);
        self.changed.notify_waiters();
        (had, lease)
    }

    /// Whether the mount is ending (no new lease may be taken).
    pub fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets every lock and refuses new ones; returns the leases to release (at unmount).
    /// Wakes waiters.
    pub fn drain(&self) -> Vec<(String, LeaseKeeper)> {
        self.closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let all: Vec<(String, LeaseKeeper)> = lock(&self.keys)
            .drain()
            .filter_map(|(key, k)| k.lease.map(|l| (key, l)))
            .collect();
        self.changed.notify_waiters();
        all
    }

    /// Time left on the live lock `owner` holds on `key`: `Some(None)` when it never runs out,
    /// `None` when it holds none.
    pub fn time_left(&self, key: &str, owner: u64) -> Option<Option<Duration>> {
        let keys = lock(&self.keys);
        let k = keys.get(key).filter(|k| k.holders.contains_key(&owner))?;
        let lease = k.lease.as_ref().filter(|l| l.is_live())?;
        Some(lease.remaining())
    }
}
