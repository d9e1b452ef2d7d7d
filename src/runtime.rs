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
