//! Shared locks across hosts. Azure leases are exclusive, so a host holding a file shared holds a
//! lease on a *reader slot* of its own instead: a small blob
//! `.remotedict/readers/<hash of the key>/<token>` (docs/FORMAT.md) naming the host, the process
//! and since when. Any number of hosts can hold slots of one file at once.
//!
//! - A reader writes its slot and leases it, *then* reads the file's lease state: if the file is
//!   leased (a writer holds it, or waits for the readers to go), the reader deletes its slot and
//!   waits.
//! - A writer leases the file, *then* lists its slots: while one is leased, a reader holds the
//!   file and the writer waits, keeping the file's lease (so no new reader comes in and writers
//!   are not starved). A slot whose lease ran out is a reader that is gone (a crash, a host cut
//!   off): the writer deletes it, and a slot that cannot be deleted without its lease id is still
//!   held.
//!
//! Each side writes first and reads second, on a store whose operations take effect in one
//! order, so at least one of them sees the other: a reader and a writer never both hold.

use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Fs, FsError, FsResult};
use crate::layout::RESERVED_DIR;
use crate::lock::LeaseKeeper;
use crate::store::{list_all, Conditions, LeaseState, PutOptions, StoreError};

/// What a reader slot (or a writer's holder record) says about its holder (its content, JSON).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SlotInfo {
    /// `shared` (a reader slot) or `exclusive` (the holder record of the file's lease).
    #[serde(default)]
    pub mode: String,
    /// The host holding the lock (its host name).
    pub host: String,
    /// The first process on that host that took it.
    pub pid: u32,
    pub command: Option<String>,
    /// When the host took it (RFC 3339).
    pub since: String,
}

impl SlotInfo {
    /// A record of this host's process `pid`, from now on, in `mode`.
    pub(super) fn here(mode: &str, pid: u32) -> Self {
        SlotInfo {
            mode: mode.into(),
            host: host_name(),
            pid,
            command: super::locks::command_of(pid),
            since: crate::time::fmt_time(crate::time::to_ns(SystemTime::now())),
        }
    }
}

/// This machine's host name, as slots record it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether a blob's lease state means someone holds (or is giving up) its lease.
fn held(state: LeaseState) -> bool {
    matches!(state, LeaseState::Leased | LeaseState::Breaking)
}

impl Fs {
    /// The folder of the reader slots of `key`.
    fn reader_prefix(&self, key: &str) -> String {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        format!(
            "{}{RESERVED_DIR}/readers/{}/",
            self.layout.prefix(),
            &hash[..32]
        )
    }

    /// Whether the blob of `key` is leased (a writer holds it or waits for readers).
    async fn file_leased(&self, key: &str) -> FsResult<bool> {
        match self.store.head(&self.layout.blob_name(key)).await {
            Ok(p) => Ok(held(p.lease_state)),
            Err(StoreError::NotFound(_)) => Err(FsError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// A shared lock on `key` for this host while no writer holds or waits for it: its new
    /// reader slot, leased, or `None` when a writer is there (the slot is deleted again).
    pub(super) async fn take_slot(
        &self,
        key: &str,
        pid: u32,
        duration: crate::store::LeaseDuration,
        renew: bool,
    ) -> FsResult<Option<LeaseKeeper>> {
        if self.file_leased(key).await? {
            // A writer is there: no slot yet (one look costs less than writing one to find out).
            return Ok(None);
        }
        let blob = format!(
            "{}{}",
            self.reader_prefix(key),
            uuid::Uuid::new_v4().simple()
        );
        let body = serde_json::to_vec(&SlotInfo::here("shared", pid)).unwrap_or_default();
        let opts = PutOptions {
            conditions: Conditions::if_absent(),
            ..Default::default()
        };
        match self.store.put(&blob, Bytes::from(body), &opts).await {
            // (An answer lost after the slot was written: it is ours all the same.)
            Ok(_) | Err(StoreError::PreconditionFailed(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let slot = match LeaseKeeper::acquire(&self.store, &blob, duration, renew).await {
            Ok(l) => l.deleting_blob(),
            Err(StoreError::NotFound(_)) => {
                // A writer took it for a dead reader's and deleted it: a writer is there.
                return Ok(None);
            }
            Err(e) => {
                let _ = self.store.delete(&blob, &Conditions::default()).await;
                return Err(e.into());
            }
        };
        // Written and leased: from here on every writer sees it. Now is a writer already there?
        let writer = self.file_leased(key).await;
        match writer {
            Ok(false) => Ok(Some(slot)),
            other => {
                if let Err(e) = slot.release().await {
                    log::debug!("deleting reader slot {blob:?}: {e}");
                }
                other.map(|_| None)
            }
        }
    }

    /// Whether another host holds `key` shared (a live reader slot other than `own`). Slots
    /// whose lease ran out are deleted on the way (their readers are gone); with `clean` false
    /// they are only passed over (a look that changes nothing, for `F_GETLK`).
    pub(super) async fn readers_present(
        &self,
        key: &str,
        own: Option<&str>,
        clean: bool,
    ) -> FsResult<bool> {
        let slots = list_all(self.store.as_ref(), &self.reader_prefix(key)).await?;
        for s in slots {
            if Some(s.name.as_str()) == own {
                continue;
            }
            if held(s.lease_state) {
                return Ok(true);
            }
            if !clean {
                continue;
            }
            // Not leased when listed; deleting it without its lease id fails if it is leased
            // again since (a renewal that was late), so that reader holds after all.
            match self.store.delete(&s.name, &Conditions::default()).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {
                    log::info!("{key:?}: removed the slot of a shared holder that is gone");
                }
                Err(StoreError::LeaseConflict(_)) => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// The holder record of `key`'s lease: which host and process took it, since when.
    fn holder_blob(&self, key: &str) -> String {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        format!(
            "{}{RESERVED_DIR}/holders/{}",
            self.layout.prefix(),
            &hash[..32]
        )
    }

    /// Records, in the background, that this host took `key`'s lease for process `pid` (for
    /// other hosts' `getfattr`); the next holder's record replaces it.
    pub(super) fn record_holder(self: &std::sync::Arc<Self>, key: &str, pid: u32) {
        let info = SlotInfo::here("exclusive", pid);
        let (fs, key) = (self.clone(), key.to_string());
        tokio::spawn(async move {
            let body = Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
            let blob = fs.holder_blob(&key);
            if let Err(e) = fs.store.put(&blob, body, &PutOptions::default()).await {
                log::debug!("recording the holder of {key:?}: {e}");
            }
        });
    }

    /// Who holds `key` across hosts, for `getfattr -n user.remotedict.holders`: the holder of
    /// its lease (as its record says; `host` is `unknown` without one), the live reader slots,
    /// and the requests that have waited long enough on another host to leave a waiter marker.
    pub(super) async fn holders(&self, key: &str) -> FsResult<Vec<SlotInfo>> {
        let mut out = Vec::new();
        if self.file_leased(key).await? {
            let record = match self.store.get(&self.holder_blob(key), None, None).await {
                Ok(crate::store::GetResult::Found { data, .. }) => {
                    serde_json::from_slice::<SlotInfo>(&data).ok()
                }
                Ok(_) | Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            out.push(record.unwrap_or(SlotInfo {
                mode: "exclusive".into(),
                host: "unknown".into(),
                pid: 0,
                command: None,
                since: String::new(),
            }));
        }
        out.extend(self.shared_holders(key).await?);
        out.extend(self.waiting_for(key).await?);
        Ok(out)
    }

    /// Who holds `key` shared across hosts: the live reader slots.
    async fn shared_holders(&self, key: &str) -> FsResult<Vec<SlotInfo>> {
        let slots = list_all(self.store.as_ref(), &self.reader_prefix(key)).await?;
        let mut out = Vec::new();
        for s in slots.into_iter().filter(|s| held(s.lease_state)) {
            let data = match self.store.get(&s.name, None, None).await {
                Ok(crate::store::GetResult::Found { data, .. }) => data,
                Ok(_) | Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Ok(info) = serde_json::from_slice::<SlotInfo>(&data) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.since.cmp(&b.since));
        Ok(out)
    }

    /// Whether `key` is leased by a writer: a new shared grant under this host's slot waits
    /// then, so that readers coming and going here do not starve a writer elsewhere.
    pub(super) async fn writer_waiting(&self, key: &str) -> FsResult<bool> {
        self.file_leased(key).await
    }
}
