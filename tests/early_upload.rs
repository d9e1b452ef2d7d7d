//! A large new file written front to back is uploaded while it is written (its blocks staged
//! as the writes arrive, committed at close), and any other change to it gives that upload up:
//! the close then saves the file exactly as written.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use remotedict::fs::{Fs, SetAttr};
use remotedict::layout::Layout;
use remotedict::store::testing::{Fault, FaultStore, Op, When};
use remotedict::store::BlobStore;

const ROOT: u64 = 1;
const MIB: usize = 1 << 20;

fn host(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    let cfg = common::fs_config(cache, 64 << 20);
    Fs::new(
        store.clone(),
        Layout::new("folder").unwrap(),
        Duration::from_millis(1),
        cfg,
    )
    .unwrap()
}

fn stores() -> (Arc<FaultStore>, Arc<dyn BlobStore>) {
    let faults = Arc::new(FaultStore::new(common::mem_store()));
    let store: Arc<dyn BlobStore> = faults.clone();
    (faults, store)
}

/// Writes `data[from..to]` at `from` in 1 MiB writes.
async fn write_span(fs: &Fs, fh: u64, data: &[u8], from: usize, to: usize) {
    let mut at = from;
    while at < to {
        let end = (at + MIB).min(to);
        fs.write(fh, at as u64, &data[at..end]).await.unwrap();
        at = end;
    }
}

/// Waits until `n` blocks have been staged.
async fn staged_at_least(faults: &FaultStore, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let staged = faults.calls(Op::PutBlock);
        if staged >= n || Instant::now() > deadline {
            return staged;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What another host reads under `name`.
async fn read_elsewhere(store: &Arc<dyn BlobStore>, name: &str) -> Vec<u8> {
    let cache = tempfile::tempdir().unwrap();
    let other = host(store, cache.path());
    let attr = other.lookup(ROOT, name).await.unwrap();
    other.read_all(attr.ino).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_file_written_front_to_back_is_staged_while_it_is_written() {
    let (faults, store) = stores();
    let cache = tempfile::tempdir().unwrap();
    let fs = host(&store, cache.path());
    let data = common::mount::pseudo_random(40 * MIB, 3);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let (_, fh) = fs.create(ROOT, "big", 0o644, flags).await.unwrap();
    faults.reset_calls();
    write_span(&fs, fh, &data, 0, data.len()).await;
    // Before any close: most of the file is staged already.
    let before = staged_at_least(&faults, 40).await;
    assert!(before >= 40, "{before} blocks staged while writing 40 MiB");
    assert_eq!(
        faults.calls(Op::CommitBlocks),
        0,
        "committed before the close"
    );
    fs.flush(fh).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    // Each block staged once (blocks of 256 KiB here): not staged again at the close.
    let staged = faults.calls(Op::PutBlock);
    let once = (data.len() / (256 << 10)) as u64 + 2;
    assert!(staged <= once, "{staged} blocks staged for {once} at most");
    assert!(
        read_elsewhere(&store, "big").await == data,
        "the value differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_behind_the_end_or_a_truncation_gives_the_early_upload_up() {
    let (faults, store) = stores();
    let cache = tempfile::tempdir().unwrap();
    let fs = host(&store, cache.path());
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

    // A rewrite of bytes the upload has read already, then more at the end.
    let mut data = common::mount::pseudo_random(40 * MIB, 5);
    let (_, fh) = fs.create(ROOT, "rewritten", 0o644, flags).await.unwrap();
    write_span(&fs, fh, &data, 0, 32 * MIB).await;
    staged_at_least(&faults, 40).await;
    let patch = common::mount::pseudo_random(MIB, 6);
    data[MIB..2 * MIB].copy_from_slice(&patch);
    fs.write(fh, MIB as u64, &patch).await.unwrap();
    write_span(&fs, fh, &data, 32 * MIB, 40 * MIB).await;
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    assert!(
        read_elsewhere(&store, "rewritten").await == data,
        "a rewrite inside the file was lost"
    );

    // A truncation to less than was streamed, then more writes at the new end.
    let full = common::mount::pseudo_random(30 * MIB, 7);
    let (attr, fh) = fs.create(ROOT, "cut", 0o644, flags).await.unwrap();
    write_span(&fs, fh, &full, 0, 24 * MIB).await;
    staged_at_least(&faults, 80).await;
    let set = SetAttr {
        size: Some(20 * MIB as u64),
        ..Default::default()
    };
    fs.setattr(attr.ino, Some(fh), set).await.unwrap();
    write_span(&fs, fh, &full, 20 * MIB, 30 * MIB).await;
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    assert!(
        read_elsewhere(&store, "cut").await == full,
        "a truncation under an early upload was lost"
    );
}

/// A host that wrote 24 MiB to a new file "big" front to back, staged early, still open.
async fn written_unclosed(
    seed: u64,
) -> (
    Arc<FaultStore>,
    Arc<dyn BlobStore>,
    Fs,
    u64,
    Vec<u8>,
    tempfile::TempDir,
) {
    let (faults, store) = stores();
    let cache = tempfile::tempdir().unwrap();
    let fs = host(&store, cache.path());
    let data = common::mount::pseudo_random(24 * MIB, seed);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let (_, fh) = fs.create(ROOT, "big", 0o644, flags).await.unwrap();
    faults.reset_calls();
    write_span(&fs, fh, &data, 0, data.len()).await;
    staged_at_least(&faults, 20).await;
    (faults, store, fs, fh, data, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_early_commit_is_followed_by_a_whole_upload_and_the_close_succeeds() {
    let (faults, store, fs, fh, data, _cache) = written_unclosed(9).await;
    // The early upload's commit fails (its staged blocks discarded by another commit, say).
    faults.plan(
        Op::CommitBlocks,
        When::NthWithPrefix("folder/big".into(), 1),
        Fault::Status(500),
    );
    fs.flush(fh).await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(faults.calls(Op::CommitBlocks), 2, "no second, whole upload");
    assert!(
        read_elsewhere(&store, "big").await == data,
        "the value differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_early_commit_fails_the_close_without_uploading_again() {
    let (faults, _store, fs, fh, data, _cache) = written_unclosed(10).await;
    // Another host holds the blob's lease: the commit is refused, and would be again.
    faults.plan(
        Op::CommitBlocks,
        When::NthWithPrefix("folder/big".into(), 1),
        Fault::Status(409),
    );
    assert!(
        fs.flush(fh).await.is_err(),
        "a refused commit went unreported"
    );
    assert_eq!(
        faults.calls(Op::CommitBlocks),
        1,
        "the refused file was uploaded again"
    );
    let staged = faults.calls(Op::PutBlock);
    assert!(
        staged <= (data.len() / (256 << 10)) as u64 + 2,
        "{staged} blocks staged"
    );
    let _ = fs.release(fh).await;
}
