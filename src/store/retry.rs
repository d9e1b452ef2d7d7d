//! Retrying of transient storage failures, and per-attempt timeouts.
//!
//! [`with_retry`] runs one storage request again, with exponential backoff and jitter, as long as
//! it fails with an error for which [`StoreError::is_transient`] holds (timeouts, connection
//! errors, HTTP 408/429/5xx), up to a number of retries. Every other error, and success, ends it at
//! once. [`with_timeout`] bounds one attempt and reports running out of time as a transient error,
//! so the two compose: `with_retry(what, n, || with_timeout(what, name, limit, request()))`.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use super::{Result, StoreError};

/// Delay before the first retry; each further one doubles it (with jitter).
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// Longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// How to space out retries.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Retries after the first attempt (so at most `max_retries + 1` attempts in all).
    pub max_retries: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Backoff {
    pub fn new(max_retries: u32) -> Self {
        Backoff {
            max_retries,
            first_delay: FIRST_DELAY,
            max_delay: MAX_DELAY,
        }
    }

    /// The delays before each retry, in order: `max_retries` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send {
        self.builder().build()
    }

    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_retries as usize)
    }
}

/// Runs `f` until it succeeds, fails with a non-transient error, or has been retried
/// `max_retries` times; returns the last outcome. `what` names the operation in the log
/// (it must not contain secrets).
pub async fn with_retry<T, F, Fut>(what: &str, max_retries: u32, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    with_backoff(what, Backoff::new(max_retries), f).await
}

/// [`with_retry`] with explicit delays.
pub async fn with_backoff<T, F, Fut>(what: &str, backoff: Backoff, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    f.retry(backoff.builder())
        .when(StoreError::is_transient)
        .notify(|err: &StoreError, delay: Duration| {
            crate::metrics::store_retry();
            log::warn!("{what}: {err}; retrying in {} ms", delay.as_millis());
        })
        .await
}

/// Runs one attempt with a time limit; running out of time is a [`StoreError::Transient`] error
/// naming `name` (the blob or container concerned).
pub async fn with_timeout<T, Fut>(what: &str, name: &str, limit: Duration, fut: Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(outcome) => outcome,
        Err(_) => Err(StoreError::Transient {
            name: name.to_string(),
            message: format!("{what} timed out after {:.1} s", limit.as_secs_f64()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast(max_retries: u32) -> Backoff {
        Backoff {
            max_retries,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    fn transient() -> StoreError {
        StoreError::Transient {
            name: "b".into(),
            message: "503".into(),
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let calls = AtomicU32::new(0);
        let out = with_backoff("op", fast(4), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(transient())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = with_backoff("op", fast(3), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(transient())
        })
        .await;
        assert!(matches!(out, Err(StoreError::Transient { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn does_not_retry_other_errors() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = with_backoff("op", fast(3), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::PreconditionFailed("b".into()))
        })
        .await;
        assert!(matches!(out, Err(StoreError::PreconditionFailed(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn timeout_is_transient() {
        let out: Result<()> = with_timeout("get", "b", Duration::from_millis(5), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
        assert!(matches!(out, Err(ref e) if e.is_transient()));
    }
}
