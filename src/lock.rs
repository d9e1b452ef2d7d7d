//! Leases as locks: `LeaseKeeper` holds one blob lease, renews it in the background well before
//! it expires, and releases it. A lease counts as held only until its *deadline*: the start of
//! the last successful acquire or renewal plus its duration, less a margin, on a clock that keeps
//! counting while the machine is suspended (`CLOCK_BOOTTIME`). Renewals are bounded by that
//! deadline; once it passes without one, the lease is lost (logged) and no lock is granted on it,
//! and the holder's next write, still carrying the lease id, fails instead of overwriting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use crate::store::{BlobStore, LeaseDuration, StoreError};

/// Taken off a lease's duration: the server counts it from when the request arrived, a little
/// after it was sent, and clocks drift.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Milliseconds on `CLOCK_BOOTTIME` (monotonic, and it counts suspend).
fn boot_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// When a lease taken (or renewed) by a request sent at `sent_ms` certainly still holds.
fn deadline_after(sent_ms: u64, duration: Duration) -> u64 {
    sent_ms + duration.saturating_sub(LEASE_MARGIN).as_millis() as u64
}

/// One held lease.
pub struct LeaseKeeper {
    store: Arc<dyn BlobStore>,
    blob: String,
    id: String,
    lost: Arc<AtomicBool>,
    /// `CLOCK_BOOTTIME` ms until which the lease certainly holds; `u64::MAX` for an infinite one.
    deadline: Arc<AtomicU64>,
    /// Whether it is kept renewed (else it simply runs out at its deadline).
    renewed: bool,
    /// Whether the blob exists only to hold this lease (a shared lock's reader slot): giving the
    /// lease back deletes it.
    slot: bool,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Tries once to take the lease on `blob`. With `renew`, a fixed lease is kept alive until
    /// released; without, it simply runs out after its duration (like `lock_item(duration)`).
    pub async fn acquire(
        store: &Arc<dyn BlobStore>,
        blob: &str,
        duration: LeaseDuration,
        renew: bool,
    ) -> Result<LeaseKeeper, StoreError> {
        let sent = boot_ms();
        // Our own id, so a retry after a lost answer is recognised as ours.
        let proposed = uuid::Uuid::new_v4().to_string();
        let id = match store.acquire_lease(blob, duration, Some(&proposed)).await {
            Ok(id) => {
                metrics::lease_acquire("ok");
                id
            }
            Err(e) => {
                metrics::lease_acquire(match e {
                    StoreError::LeaseConflict(_) => "busy",
                    _ => "error",
                });
                if e.is_transient() {
                    // The request may still reach the server (held up on the way) and take a
                    // lease nobody knows: it is given back if it does.
                    tokio::spawn(release_orphan(store.clone(), blob.to_string(), proposed));
                }
                return Err(e);
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        let deadline = Arc::new(AtomicU64::new(
            duration
                .as_duration()
                .map_or(u64::MAX, |d| deadline_after(sent, d)),
        ));
        let mut keeper = LeaseKeeper {
            store: store.clone(),
            blob: blob.to_string(),
            id,
            lost: lost.clone(),
            deadline: deadline.clone(),
            renewed: renew,
            slot: false,
            renewer: None,
        };
        if let (Some(d), true) = (duration.as_duration(), renew) {
            keeper.renewer = Some(tokio::spawn(renew_loop(
                store.clone(),
                blob.to_string(),
                keeper.id.clone(),
                d,
                lost,
                deadline,
            )));
        }
        log::debug!("lease on {blob:?} acquired ({duration:?})");
        Ok(keeper)
    }

    /// Marks the blob as one that exists only for this lease: [`LeaseKeeper::release`] deletes it.
    pub fn deleting_blob(mut self) -> Self {
        self.slot = true;
        self
    }

    /// Whether this lease is on a blob of its own (a reader slot), not on a file's blob.
    pub fn is_slot(&self) -> bool {
        self.slot
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn blob(&self) -> &str {
        &self.blob
    }

    /// Whether the lease certainly still holds: not lost, and its deadline not passed.
    pub fn is_live(&self) -> bool {
        !self.lost.load(Ordering::Relaxed) && boot_ms() < self.deadline.load(Ordering::Relaxed)
    }

    /// Whether it is kept renewed until released.
    pub fn renewed(&self) -> bool {
        self.renewed && self.deadline.load(Ordering::Relaxed) != u64::MAX
    }

    /// Time left on a lease that is not renewed; `None` when renewed or infinite.
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline.load(Ordering::Relaxed);
        (!self.renewed && deadline != u64::MAX)
            .then(|| Duration::from_millis(deadline.saturating_sub(boot_ms())))
    }

    /// Stops renewing and gives the lease back (deleting a slot's blob with it).
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if self.slot {
            // Presenting the id while it may still hold; a slot that ran out is deleted all the
            // same (nobody else ever leases it).
            let lease = self.is_live().then(|| self.id.clone());
            let cond = crate::store::Conditions::default().with_lease(lease);
            return match self.store.delete(&self.blob, &cond).await {
                Ok(()) | Err(StoreError::LeaseLost(_)) | Err(StoreError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            };
        }
        if !self.is_live() {
            return Ok(());
        }
        match self.store.release_lease(&self.blob, &self.id).await {
            Ok(()) | Err(StoreError::LeaseLost(_)) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// Renews every third of the duration, each attempt bounded by the lease's deadline (a store
/// that hangs cannot keep the lease "held" past it); after a failure tries again sooner; gives
/// up (and says so) when the lease is gone or the deadline passed.
async fn renew_loop(
    store: Arc<dyn BlobStore>,
    blob: String,
    id: String,
    duration: Duration,
    lost: Arc<AtomicBool>,
    deadline: Arc<AtomicU64>,
) {
    let period = duration / 3;
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        let sent = boot_ms();
        let left = Duration::from_millis(deadline.load(Ordering::Relaxed).saturating_sub(sent));
        let result = match tokio::time::timeout(left, store.renew_lease(&blob, &id)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Transient {
                name: blob.clone(),
                message: "renew lease: no answer before the lease's deadline".into(),
            }),
        };
        metrics::lease_renewal(result.is_ok());
        match result {
            Ok(()) => {
                deadline.store(deadline_after(sent, duration), Ordering::Relaxed);
                wait = period;
            }
            Err(e) if e.is_transient() && boot_ms() < deadline.load(Ordering::Relaxed) => {
                log::warn!("renewing the lease on {blob:?} failed, retrying: {e}");
                wait = Duration::from_secs(1).min(period);
            }
            Err(e) => {
                metrics::lease_lost();
                log::error!("the lock on {blob:?} is lost: {e}; writes to it will fail");
                lost.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// After an acquire that failed without a clear answer: tries, for a minute, to release the
/// lease under the id it proposed, in case the request took effect after all (late, held up on
/// the way). Nobody else knows that id, so the lease would keep every host out until it ran
/// out (forever, for an infinite one).
async fn release_orphan(store: Arc<dyn BlobStore>, blob: String, id: String) {
    for wait in [1, 2, 4, 8, 15, 30] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if store.release_lease(&blob, &id).await.is_ok() {
            log::info!("released a lease on {blob:?} taken by a request given up earlier");
            return;
        }
    }
}

/// Whether process `pid` has a signal waiting that it does not block (or is gone): a lock
/// request it is blocked in should then give up, so Ctrl-C on a waiting `flock` returns.
pub fn signal_pending(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (field("SigPnd:") | field("ShdPnd:")) & !field("SigBlk:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_no_pending_signal_and_missing_one_counts_as_gone() {
        assert!(!signal_pending(std::process::id()));
        assert!(signal_pending(u32::MAX - 1));
    }
}
