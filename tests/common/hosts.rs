//! Helpers of the multi-host core tests: hosts are `Fs` instances over one store, on the folder
//! `folder`, acting at the root.

use std::sync::Arc;
use std::time::Duration;

use remotedict::fs::{Fs, FsError};
use remotedict::layout::Layout;
use remotedict::store::{BlobStore, StoreError};

pub const ROOT: u64 = 1;

/// A host whose index copy stays trusted for `ttl` (`--index-ttl`).
pub fn host_with_ttl(store: &Arc<dyn BlobStore>, cache: &std::path::Path, ttl: Duration) -> Fs {
    let cfg = super::fs_config(cache, 64 << 20);
    Fs::new(store.clone(), Layout::new("folder").unwrap(), ttl, cfg).unwrap()
}

/// Opens `name` for writing (created, truncated); returns the handle.
pub async fn open_write(fs: &Fs, name: &str) -> u64 {
    let (_, fh) = fs
        .create(
            ROOT,
            name,
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        )
        .await
        .unwrap();
    fh
}

/// Writes `name` whole and waits until it is listed for every host.
pub async fn write_file(fs: &Fs, name: &str, data: &[u8]) {
    let fh = open_write(fs, name).await;
    fs.write(fh, 0, data).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
}

pub async fn read(fs: &Fs, name: &str) -> Result<Vec<u8>, FsError> {
    let attr = fs.lookup(ROOT, name).await?;
    fs.read_all(attr.ino).await
}

/// The name is either listed and readable on a new host, or neither listed nor in the store.
pub async fn consistent(store: &Arc<dyn BlobStore>, name: &str) -> Option<Vec<u8>> {
    let cache = tempfile::tempdir().unwrap();
    let fs = host_with_ttl(store, cache.path(), Duration::from_millis(1));
    let blob = store.head(&format!("folder/{name}")).await;
    match fs.lookup(ROOT, name).await {
        Ok(_) => Some(read(&fs, name).await.expect("listed, so readable")),
        Err(FsError::NotFound) => {
            assert!(
                matches!(blob, Err(StoreError::NotFound(_))),
                "{name}: not listed, but its blob is there: {blob:?}"
            );
            None
        }
        Err(e) => panic!("{name}: {e}"),
    }
}
