//! Retries that recognise their own success, and uploads that never mix (issue 14, cases 1 and 5).
//!
//! Core tests drive `Fs` over `RetryingStore(FaultStore(MemStore))`, as `open_store` composes
//! the daemon's store: a request that reached the store but whose answer was lost
//! (`Fault::LoseAnswer`) must end as the success it was. Two hosts uploading different values
//! onto one name at once (two `Fs`, then two real mounts, on the local store and on Azurite) must
//! leave exactly one of them, and a `close` that did not win must say so.

mod common;

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use common::mount::{pseudo_random, Backend, Mount};
use remotedict::fs::{Fs, FsConfig, SetAttr};
use remotedict::layout::Layout;
use remotedict::store::retry::Backoff;
use remotedict::store::retrying::RetryingStore;
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::{
    self, BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata,
    PutOptions,
};
use remotedict::transfer::TransferConfig;

const ROOT: u64 = 1;
/// Staged block size of the core tests: values of a few hundred KiB are multi-block uploads.
const BLOCK: usize = 64 << 10;

fn fs_on(store: Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    let cfg = FsConfig {
        transfer: TransferConfig {
            block_size: BLOCK,
            ..common::fs_config(cache, 64 << 20).transfer
        },
        ..common::fs_config(cache, 64 << 20)
    };
    Fs::new(
        store,
        Layout::new("folder").unwrap(),
        Duration::from_millis(200),
        cfg,
    )
    .unwrap()
}

fn fast() -> Backoff {
    Backoff {
        max_retries: 3,
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// `RetryingStore(FaultStore(MemStore))`: the faults, and the store the core uses.
fn retrying() -> (Arc<FaultStore>, Arc<dyn BlobStore>) {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(faults.clone(), fast()));
    (faults, store)
}

/// The first call on the blob of file `name` (not on the index).
fn first_on(name: &str) -> When {
    When::NthWithPrefix(format!("folder/{name}"), 1)
}

async fn write_and_close(fs: &Fs, name: &str, data: &[u8]) -> remotedict::fs::FsResult<u64> {
    let (attr, fh) = fs
        .create(
            ROOT,
            name,
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        )
        .await?;
    fs.write(fh, 0, data).await?;
    let flushed = fs.flush(fh).await;
    fs.release(fh).await?;
    flushed.map(|()| attr.ino)
}

/// The whole value of `name` as a host that never saw it being written reads it.
async fn read_fresh(store: &Arc<dyn BlobStore>, name: &str) -> Vec<u8> {
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store.clone(), cache.path());
    let attr = fs.lookup(ROOT, name).await.expect("the index lists it");
    let fh = fs.open(attr.ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(fh, out.len() as u64, 1 << 20).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(fh).await.unwrap();
    out
}

/// A block-list commit that was applied but whose answer was lost: the retry finds the blocks
/// used up (InvalidBlockList), recognises its own write, and the close succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_on_commit_blocks_still_closes_successfully() {
    let (faults, store) = retrying();
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store.clone(), cache.path());
    let value = pseudo_random(5 * BLOCK + 123, 1);
    faults.plan(Op::CommitBlocks, When::Nth(1), Fault::LoseAnswer);
    write_and_close(&fs, "big", &value)
        .await
        .expect("close succeeds: the value is in the container");
    assert_eq!(faults.calls(Op::CommitBlocks), 2, "one retry, recognised");
    fs.sync_index().await.unwrap();
    assert!(
        read_fresh(&store, "big").await == value,
        "another host reads the value"
    );
}

/// `mkdir` and an `O_EXCL` create whose If-None-Match put was applied but whose answer was lost:
/// the retry meets the blob this very request created, and succeeds instead of EEXIST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_on_an_if_none_match_put_is_not_eexist() {
    let (faults, store) = retrying();
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store.clone(), cache.path());
    faults.plan(Op::Put, first_on("d"), Fault::LoseAnswer);
    let dir = fs.mkdir(ROOT, "d", 0o755).await.expect("mkdir succeeds");
    assert_eq!(dir.kind, remotedict::fs::NodeKind::Dir);
    faults.clear();
    faults.plan(Op::Put, first_on("x"), Fault::LoseAnswer);
    let (_, fh) = fs
        .create(
            ROOT,
            "x",
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        )
        .await
        .expect("O_EXCL create succeeds");
    faults.clear();
    fs.write(fh, 0, b"mine").await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    fs.sync_index().await.unwrap();
    assert_eq!(read_fresh(&store, "x").await, b"mine");
    // A name another host holds is still EEXIST, lost answers or not.
    faults.plan(Op::Put, first_on("x"), Fault::Timeout);
    let cache2 = tempfile::tempdir().unwrap();
    let other = fs_on(store.clone(), cache2.path());
    let err = other
        .create(
            ROOT,
            "x",
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST, "{err}");
}

fn chmod(mode: u32) -> SetAttr {
    SetAttr {
        mode: Some(mode),
        ..Default::default()
    }
}

/// A Set Blob Metadata that was applied but whose answer was lost: the chmod succeeds, the index
/// lists the blob's new etag, and the next chmod works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_on_set_metadata_keeps_chmod_working() {
    let (faults, store) = retrying();
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store.clone(), cache.path());
    let ino = write_and_close(&fs, "f", b"data").await.unwrap();
    faults.plan(Op::SetMetadata, When::Nth(1), Fault::LoseAnswer);
    let attr = fs.setattr(ino, None, chmod(0o600)).await.expect("chmod");
    assert_eq!(attr.perm, 0o600);
    let attr = fs
        .setattr(ino, None, chmod(0o640))
        .await
        .expect("chmod again");
    assert_eq!(attr.perm, 0o640);
    assert_eq!(faults.calls(Op::SetMetadata), 3, "no failed rounds");
    fs.sync_index().await.unwrap();
    let cache2 = tempfile::tempdir().unwrap();
    let other = fs_on(store.clone(), cache2.path());
    assert_eq!(other.lookup(ROOT, "f").await.unwrap().perm, 0o640);
}

/// Without retries a lost Set Blob Metadata answer fails the chmod (EIO), and leaves the index
/// listing an older etag of the blob: the next chmod repairs the entry instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chmod_after_a_metadata_write_the_index_never_learnt_repairs_the_entry() {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store.clone(), cache.path());
    let ino = write_and_close(&fs, "f", b"data").await.unwrap();
    fs.sync_index().await.unwrap();
    faults.plan(Op::SetMetadata, When::Nth(1), Fault::LoseAnswer);
    let err = fs.setattr(ino, None, chmod(0o600)).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // The same change again: the blob already carries it.
    let attr = fs.setattr(ino, None, chmod(0o600)).await.expect("chmod");
    assert_eq!(attr.perm, 0o600);
    // Another change, then a touch: the entry follows the blob again.
    faults.reset_calls();
    faults.plan(Op::SetMetadata, When::Nth(1), Fault::LoseAnswer);
    assert!(fs.setattr(ino, None, chmod(0o640)).await.is_err());
    let attr = fs.setattr(ino, None, chmod(0o604)).await.expect("chmod");
    assert_eq!(attr.perm, 0o604);
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let touched = SetAttr {
        mtime: Some(t),
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, None, touched).await.unwrap().mtime, t);
    fs.sync_index().await.unwrap();
    let cache2 = tempfile::tempdir().unwrap();
    let other = fs_on(store.clone(), cache2.path());
    let seen = other.lookup(ROOT, "f").await.unwrap();
    assert_eq!((seen.perm, seen.mtime), (0o604, t));
    assert_eq!(read_fresh(&store, "f").await, b"data");
}

/// Forwards to a store, and after every successful block-list commit reads the blob back and
/// keeps its decoded value: what any reader could have seen at that moment.
struct Audit {
    inner: Arc<dyn BlobStore>,
    committed: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl BlobStore for Audit {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn check_container(&self) -> store::Result<()> {
        self.inner.check_container().await
    }
    async fn create_container(&self) -> store::Result<()> {
        self.inner.create_container().await
    }
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        inm: Option<&str>,
    ) -> store::Result<GetResult> {
        self.inner.get(name, range, inm).await
    }
    async fn head(&self, name: &str) -> store::Result<BlobProps> {
        self.inner.head(name).await
    }
    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> store::Result<String> {
        self.inner.put(name, data, opts).await
    }
    async fn put_block(
        &self,
        name: &str,
        id: &str,
        data: Bytes,
        lease: Option<&str>,
    ) -> store::Result<()> {
        self.inner.put_block(name, id, data, lease).await
    }
    async fn commit_blocks(
        &self,
        name: &str,
        ids: &[String],
        opts: &PutOptions,
    ) -> store::Result<String> {
        let etag = self.inner.commit_blocks(name, ids, opts).await?;
        if let Ok(GetResult::Found { data, .. }) = self.inner.get(name, None, None).await {
            let value = remotedict::codec::decompress(&data).unwrap_or_default();
            self.committed.lock().unwrap().push(value);
        }
        Ok(etag)
    }
    async fn delete(&self, name: &str, c: &Conditions) -> store::Result<()> {
        self.inner.delete(name, c).await
    }
    async fn create_append(&self, name: &str, opts: &PutOptions) -> store::Result<String> {
        self.inner.create_append(name, opts).await
    }
    async fn append(&self, name: &str, data: Bytes, at: u64) -> store::Result<u64> {
        self.inner.append(name, data, at).await
    }
    async fn list(&self, prefix: &str, marker: Option<String>) -> store::Result<ListPage> {
        self.inner.list(prefix, marker).await
    }
    async fn set_metadata(
        &self,
        name: &str,
        m: &Metadata,
        c: &Conditions,
    ) -> store::Result<String> {
        self.inner.set_metadata(name, m, c).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        d: LeaseDuration,
        id: Option<&str>,
    ) -> store::Result<String> {
        self.inner.acquire_lease(name, d, id).await
    }
    async fn renew_lease(&self, name: &str, id: &str) -> store::Result<()> {
        self.inner.renew_lease(name, id).await
    }
    async fn release_lease(&self, name: &str, id: &str) -> store::Result<()> {
        self.inner.release_lease(name, id).await
    }
    async fn break_lease(&self, name: &str) -> store::Result<()> {
        self.inner.break_lease(name).await
    }
}

/// Two hosts write different multi-block values onto one name at once, several rounds: every
/// value ever committed, and the value left, is exactly one of them; a close that failed lost to
/// the other, and at least one close succeeded. Staging and commits are
/// slowed so that one upload commits while the other is half-way through staging.
async fn concurrent_uploads_leave_one_whole_value(backend: Arc<dyn BlobStore>) {
    let audit = Arc::new(Audit {
        inner: backend,
        committed: Mutex::new(Vec::new()),
    });
    // Host a commits while host b is half-way through staging (b stages slowly, a waits before
    // its commit); b commits last.
    let (fa, fb) = (
        Arc::new(FaultStore::new(audit.clone())),
        Arc::new(FaultStore::new(audit.clone())),
    );
    fa.plan(
        Op::CommitBlocks,
        When::Always,
        Fault::DelayBefore(Duration::from_millis(15)),
    );
    fb.plan(
        Op::PutBlock,
        When::Always,
        Fault::DelayAfter(Duration::from_millis(10)),
    );
    let store: Arc<dyn BlobStore> = audit.clone();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fs_on(fa, ca.path()), fs_on(fb, cb.path()));
    for round in 0..4u64 {
        let x = pseudo_random(6 * BLOCK + 17, 2 * round + 10);
        let y = pseudo_random(7 * BLOCK + 5, 2 * round + 11);
        let (ra, rb) = tokio::join!(
            write_and_close(&a, "same", &x),
            write_and_close(&b, "same", &y)
        );
        assert!(ra.is_ok() || rb.is_ok(), "round {round}: {ra:?} {rb:?}");
        a.sync_index().await.unwrap();
        b.sync_index().await.unwrap();
        let got = read_fresh(&store, "same").await;
        let (is_x, is_y) = (got == x, got == y);
        assert!(
            is_x || is_y,
            "round {round}: a value of {} bytes that is neither (torn)",
            got.len()
        );
        assert!(
            ra.is_ok() || is_y,
            "round {round}: a failed, yet its value is left"
        );
        assert!(
            rb.is_ok() || is_x,
            "round {round}: b failed, yet its value is left"
        );
        let committed: Vec<Vec<u8>> = audit.committed.lock().unwrap().drain(..).collect();
        assert!(!committed.is_empty(), "round {round}: block-list uploads");
        for v in committed {
            assert!(
                v == x || v == y,
                "round {round}: a commit made a value of {} bytes that is neither (torn)",
                v.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_on_mem_store_never_mix() {
    concurrent_uploads_leave_one_whole_value(Arc::new(MemStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_on_local_store_never_mix() {
    let (_dir, store) = common::local_store().await;
    concurrent_uploads_leave_one_whole_value(store).await;
}

/// Two daemons `cp` different multi-MiB files onto one name at once: afterwards the file (seen
/// from both mounts) is byte for byte one of the two, and a `cp` that failed lost to the other.
async fn two_daemons_copying_onto_one_name(backend: Backend) {
    let work = tempfile::tempdir().unwrap();
    let (x, y) = (work.path().join("x"), work.path().join("y"));
    std::fs::write(&x, pseudo_random(9 << 20, 21)).unwrap();
    std::fs::write(&y, pseudo_random(11 << 20, 22)).unwrap();
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    for round in 0..3 {
        let script = format!(
            "cp {x} {a}/same & pa=$!; cp {y} {b}/same & pb=$!; \
             wait $pa; ra=$?; wait $pb; rb=$?; echo $ra $rb",
            x = x.display(),
            y = y.display(),
            a = a.dir.display(),
            b = b.dir.display(),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let codes = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (ok_a, ok_b) = (codes.starts_with('0'), codes.ends_with('0'));
        assert!(
            ok_a || ok_b,
            "round {round}: both cp failed: {codes} {out:?}"
        );
        // Both mounts agree once the index listing reached both.
        let same = |m: &Mount, src: &std::path::Path| {
            std::process::Command::new("cmp")
                .arg("-s")
                .arg(src)
                .arg(m.path("same"))
                .status()
                .unwrap()
                .success()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let winner = loop {
            let on_a = (same(&a, &x), same(&a, &y));
            let on_b = (same(&b, &x), same(&b, &y));
            if on_a == on_b && (on_a.0 || on_a.1) {
                break if on_a.0 { 'x' } else { 'y' };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the mounts show {on_a:?} / {on_b:?} (x, y), cp said {codes}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            ok_a || winner == 'y',
            "round {round}: a's cp failed, its value is left"
        );
        assert!(
            ok_b || winner == 'x',
            "round {round}: b's cp failed, its value is left"
        );
    }
    a.unmount();
    b.unmount();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_copying_onto_one_name_local() {
    let dir = tempfile::tempdir().unwrap();
    two_daemons_copying_onto_one_name(Backend::local(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_copying_onto_one_name_azure() {
    if let Some(backend) = Backend::azure() {
        two_daemons_copying_onto_one_name(backend).await;
    }
}
