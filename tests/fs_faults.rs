//! The filesystem core under store failures, produced exactly with `FaultStore` over `MemStore`:
//! what the user is told, and what is left in the store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use remotedict::fs::{Fs, SetAttr};
use remotedict::layout::Layout;
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::{BlobStore, GetResult};

const ROOT: u64 = 1;

fn fs_on(store: Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    let cfg = common::fs_config(cache, 64 << 20);
    Fs::new(
        store,
        Layout::new("folder").unwrap(),
        Duration::from_millis(200),
        cfg,
    )
    .unwrap()
}

fn faulty() -> (Arc<FaultStore>, Arc<dyn BlobStore>) {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    (faults, store)
}

async fn write_file(fs: &Fs, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create(ROOT, name, 0o644, libc::O_WRONLY | libc::O_CREAT)
        .await
        .unwrap();
    fs.write(fh, 0, data).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    attr.ino
}

/// A `chmod` whose conditional metadata write loses every race to other hosts' writes is an
/// I/O error the user can retry, never "File exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chmod_that_loses_every_race_is_eio_not_eexist() {
    let (faults, store) = faulty();
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store, cache.path());
    let ino = write_file(&fs, "f", b"data").await;
    faults.plan(Op::SetMetadata, When::Always, Fault::Status(412));
    let err = fs
        .setattr(
            ino,
            None,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(faults.calls(Op::SetMetadata) >= 2, "the race was retried");
    faults.clear();
    let attr = fs
        .setattr(
            ino,
            None,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(attr.perm, 0o600);
}

/// An upload the store refuses fails the close loudly, and the value saved before stays whole
/// (also after the handle is released).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_upload_fails_the_close_and_keeps_the_old_value() {
    let (faults, store) = faulty();
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store.clone(), cache.path());
    let ino = write_file(&fs, "f", b"first value").await;
    let fh = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(fh, 0, b"second value").await.unwrap();
    faults.plan(Op::Put, When::Prefix("folder/f".into()), Fault::Status(503));
    let err = fs.flush(fh).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    match faults.inner().get("folder/f", None, None).await.unwrap() {
        GetResult::Found { data, .. } => {
            assert_eq!(
                remotedict::codec::decompress(&data).unwrap(),
                b"first value"
            );
        }
        GetResult::NotModified => panic!("unconditional get answered NotModified"),
    }
    faults.clear();
    // The close failed, and the program was told: the kernel's release does not upload it after
    // all (it could replace a newer value another host wrote meanwhile).
    fs.release(fh).await.unwrap();
    assert_eq!(fs.read_all(ino).await.unwrap(), b"first value");
}
