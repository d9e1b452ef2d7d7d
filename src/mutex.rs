//! Poison-tolerant locking of `std::sync::Mutex`: a panic in one request must not wedge every
//! later request that needs the same table, so a poisoned lock is taken over as it is.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking over the data of a holder that panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
