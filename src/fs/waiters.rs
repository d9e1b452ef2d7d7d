//! Fairness across hosts. Leases have no queue: a host that takes and drops a lock in a loop
//! gets it back before a waiting host's next poll, every time. So a host whose blocking lock has
//! waited [`STARVING`] on another host's lease leaves a *waiter marker*, a blob
//! `.remotedict/waiters/<hash of the key>/<token>` (docs/FORMAT.md), refreshed while it waits and
//! deleted when it stops. A host that gives a lease back looks for markers of that key; finding
//! one that is not its own and is fresh, it takes no new lease on the key for [`YIELD`]; a
//! marked waiter polls every [`MARKED_POLL`], so its next poll gets the lock.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Fs;
use crate::layout::RESERVED_DIR;
use crate::store::{list_all, PutOptions};

/// How long a host that saw another host waiting stays away from the key's lease: three of a
/// marked waiter's poll intervals ([`MARKED_POLL`]), so the waiter's next poll finds it free,
/// while a host that waits in turn is not kept out for long.
pub(super) const YIELD: Duration = Duration::from_millis(300);

/// How long a blocking request waits on another host's lease before it leaves a marker: short
/// waits stay first come, first served by polling (fast handoffs), only a waiter kept out this
/// long claims a turn.
pub(super) const STARVING: Duration = Duration::from_secs(1);

/// How often a waiter that left a marker tries the lease (its turn is short).
pub(super) const MARKED_POLL: Duration = Duration::from_millis(100);

/// How often a waiter rewrites its marker, and after how long without a rewrite a marker counts
/// as left behind by a waiter that is gone.
pub(super) const MARKER_REFRESH: Duration = Duration::from_secs(20);
const MARKER_STALE: Duration = Duration::from_secs(60);

impl Fs {
    /// The folder of the waiter markers of `key`.
    fn waiter_prefix(&self, key: &str) -> String {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        format!(
            "{}{RESERVED_DIR}/waiters/{}/",
            self.layout.prefix(),
            &hash[..32]
        )
    }

    /// Writes (or refreshes) this host's marker `token` for `key`; failures are logged (the
    /// wait goes on, only without its claim to a turn).
    pub(super) async fn mark_waiting(
        &self,
        key: &str,
        token: &str,
        pid: u32,
        mode: super::locks::LockMode,
    ) {
        let blob = format!("{}{token}", self.waiter_prefix(key));
        let info = super::readers::SlotInfo::here(&format!("waiting ({})", mode.as_str()), pid);
        let body = Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
        if let Err(e) = self.store.put(&blob, body, &PutOptions::default()).await {
            log::warn!("waiting for {key:?}: could not leave a waiter marker: {e}");
        }
    }

    /// Deletes this host's marker `token` for `key`.
    pub(super) async fn unmark_waiting(&self, key: &str, token: &str) {
        let blob = format!("{}{token}", self.waiter_prefix(key));
        let _ = self.store.delete(&blob, &Default::default()).await;
    }

    /// The fresh waiter markers of `key` (who waits for it, on any host), for `getfattr`.
    pub(super) async fn waiting_for(
        &self,
        key: &str,
    ) -> super::FsResult<Vec<super::readers::SlotInfo>> {
        let prefix = self.waiter_prefix(key);
        let now = SystemTime::now();
        let mut out = Vec::new();
        for m in list_all(self.store.as_ref(), &prefix).await? {
            let apart = now
                .duration_since(m.last_modified)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap_or_default();
            if apart >= MARKER_STALE {
                continue;
            }
            if let Ok(crate::store::GetResult::Found { data, .. }) =
                self.store.get(&m.name, None, None).await
            {
                if let Ok(info) = serde_json::from_slice(&data) {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    /// After giving back the lease of `key`: whether another host waits for it (a fresh marker
    /// that is not one of this host's); then this host yields the key for a while.
    pub(super) async fn look_for_waiters(&self, key: &str) {
        let prefix = self.waiter_prefix(key);
        let markers = match list_all(self.store.as_ref(), &prefix).await {
            Ok(m) => m,
            Err(e) => {
                log::debug!("looking for waiters of {key:?}: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        let mut waiting = false;
        for m in &markers {
            let token = &m.name[prefix.len()..];
            // Either way within the bound: the store's clock and this host's may differ.
            let apart = now
                .duration_since(m.last_modified)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap_or_default();
            if apart < MARKER_STALE {
                waiting |= !self.locks.is_own_marker(token);
            } else if apart > 2 * MARKER_STALE {
                // Left behind by a waiter that is gone (a crash): cleaned up.
                let _ = self.store.delete(&m.name, &Default::default()).await;
            }
        }
        if waiting {
            log::debug!("{key:?}: another host waits for it; yielding for {YIELD:?}");
            self.locks.yield_key(key, YIELD);
        }
    }
}
