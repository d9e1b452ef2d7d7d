//! Fairness across hosts. Leases have no queue: a host that takes and drops a lock in a loop
//! gets it back before a waiting host's next poll, every time. So a host whose blocking lock waits
//! on another host's lease leaves a *waiter marker*, an empty blob
//! `.remotedict/waiters/<hash of the key>/<token>` (docs/FORMAT.md), refreshed while it waits and
//! deleted when it stops. A host that gives a lease back looks for markers of that key; finding
//! one that is not its own and is fresh, it takes no new lease on the key for [`YIELD`], so the
//! waiter's next poll gets the lock.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Fs;
use crate::layout::RESERVED_DIR;
use crate::store::{list_all, PutOptions};

/// How long a host that saw another host waiting stays away from the key's lease: longer than a
/// waiter's longest poll interval (0.5 s).
pub(super) const YIELD: Duration = Duration::from_secs(1);

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
    pub(super) async fn mark_waiting(&self, key: &str, token: &str) {
        let blob = format!("{}{token}", self.waiter_prefix(key));
        if let Err(e) = self
            .store
            .put(&blob, Bytes::new(), &PutOptions::default())
            .await
        {
            log::warn!("waiting for {key:?}: could not leave a waiter marker: {e}");
        }
    }

    /// Deletes this host's marker `token` for `key`.
    pub(super) async fn unmark_waiting(&self, key: &str, token: &str) {
        let blob = format!("{}{token}", self.waiter_prefix(key));
        let _ = self.store.delete(&blob, &Default::default()).await;
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
        let waiting = markers.iter().any(|m| {
            let token = &m.name[prefix.len()..];
            let fresh = now
                .duration_since(m.last_modified)
                .map_or(true, |age| age < MARKER_STALE);
            fresh && !self.locks.is_own_marker(token)
        });
        if waiting {
            log::debug!("{key:?}: another host waits for it; yielding for {YIELD:?}");
            self.locks.yield_key(key, YIELD);
        }
    }
}
