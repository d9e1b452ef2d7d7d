//! Leases as locks: `LeaseKeeper` holds one blob lease, renews it in the background well before
//! it expires, and releases it; a renewal that fails for good marks the lease lost (logged), so
//! the holder's next write fails instead of silently overwriting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{BlobStore, LeaseDuration, StoreError};

/// One held lease.
pub struct LeaseKeeper {
    store: Arc<dyn BlobStore>,
    blob: String,
    id: String,
    lost: Arc<AtomicBool>,
    /// For leases that are not renewed: when they run out.
    expires: Option<Instant>,
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
        let started = Instant::now();
        let id = store.acquire_lease(blob, duration, None).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let mut keeper = LeaseKeeper {
            store: store.clone(),
            blob: blob.to_string(),
            id,
            lost: lost.clone(),
            expires: None,
            renewer: None,
        };
        match duration.as_duration() {
            Some(d) if renew => {
                keeper.renewer = Some(tokio::spawn(renew_loop(
                    store.clone(),
                    blob.to_string(),
                    keeper.id.clone(),
                    d,
                    lost,
                )))
            }
            Some(d) => keeper.expires = Some(started + d),
            None => {}
        }
        log::debug!("lease on {blob:?} acquired ({duration:?})");
        Ok(keeper)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn blob(&self) -> &str {
        &self.blob
    }

    /// Whether the lease is still ours, as far as this host knows.
    pub fn is_live(&self) -> bool {
        !self.lost.load(Ordering::Relaxed) && self.expires.is_none_or(|e| Instant::now() < e)
    }

    /// Seconds left for a lease that is not renewed; `None` when renewed or infinite.
    pub fn remaining(&self) -> Option<Duration> {
        self.expires
            .map(|e| e.saturating_duration_since(Instant::now()))
    }

    /// Stops renewing and gives the lease back.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(r) = self.renewer.take() {
            r.abort();
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

/// Renews every third of the duration; retries sooner after a transient failure; gives up (and
/// says so) when the lease is gone or has certainly expired.
async fn renew_loop(
    store: Arc<dyn BlobStore>,
    blob: String,
    id: String,
    duration: Duration,
    lost: Arc<AtomicBool>,
) {
    let period = duration / 3;
    let mut last_ok = Instant::now();
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        match store.renew_lease(&blob, &id).await {
            Ok(()) => {
                last_ok = Instant::now();
                wait = period;
            }
            Err(e) if e.is_transient() && last_ok.elapsed() < duration => {
                log::warn!("renewing the lease on {blob:?} failed, retrying: {e}");
                wait = Duration::from_secs(1).min(period);
            }
            Err(e) => {
                log::error!("the lock on {blob:?} is lost: {e}; writes to it will fail");
                lost.store(true, Ordering::Relaxed);
                return;
            }
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
