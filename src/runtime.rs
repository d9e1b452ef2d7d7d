//! The one tokio runtime builder: commands and the mount daemon all start their runtime here.

use anyhow::{Context, Result};

/// A multi-threaded runtime with `workers` worker threads, IO and timers enabled.
pub fn build(workers: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("remotedict")
        .build()
        .context("starting the async runtime")
}

/// Hands the allocator's free pages back to the system (glibc keeps freed small allocations
/// mapped; elsewhere nothing to do).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; any argument is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}
