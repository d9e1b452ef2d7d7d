//! Two hosts (two `Fs` over one store) acting on the same names, without a kernel: a stale
//! host's `rm`/`mv`, `mkdir -p` and other creates that lose a race, claims of `O_EXCL` creates
//! whose writer is gone, and a handle that adopts another host's value at its first save.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use remotedict::fs::{Fs, FsError, NodeKind};
use remotedict::index::meta::META_CLAIM;
use remotedict::layout::Layout;
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::{BlobStore, Metadata, PutOptions, StoreError};

use common::hosts::{consistent as assert_consistent, open_write, read, write_file, ROOT};

/// How old a claim's heartbeat must be before it may be taken over, in these tests.
const STALE_SECS: u64 = 2;

fn host(store: &Arc<dyn BlobStore>, cache: &std::path::Path, ttl: Duration) -> Fs {
    // The same value in every test of this binary (they share the environment).
    std::env::set_var("REMOTEDICT_CLAIM_STALE_SECS", STALE_SECS.to_string());
    let cfg = common::fs_config(cache, 64 << 20);
    Fs::new(store.clone(), Layout::new("folder").unwrap(), ttl, cfg).unwrap()
}

/// A host whose index copy stays trusted for 30 s (`--index-ttl 30`): it acts on a stale view.
fn stale_host(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    host(store, cache, Duration::from_secs(30))
}

fn fresh_host(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    host(store, cache, Duration::from_millis(1))
}

fn mem() -> Arc<dyn BlobStore> {
    Arc::new(MemStore::new())
}

/// Case 2: C's index copy still lists v1 when B has written v2; C's `rm` removes the name as it
/// is now — the blob and the index agree afterwards, and no host lists a value without a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_rm_removes_the_name_as_it_is_now() {
    let store = mem();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b, c) = (fresh_host(&store, cb.path()), stale_host(&store, cc.path()));
    write_file(&b, "f", b"v1").await;
    assert_eq!(read(&c, "f").await.unwrap(), b"v1"); // C's copy lists v1 for 30 s
    write_file(&b, "f", b"version 2").await;
    c.unlink(ROOT, "f").await.unwrap();
    assert_eq!(assert_consistent(&store, "f").await, None);
    assert!(matches!(b.lookup(ROOT, "f").await, Err(FsError::NotFound)));
}

/// Case 2: C's `mv` of a name B rewrote meanwhile moves the newest value, whole, and leaves no
/// listed name without a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_mv_moves_the_newest_value() {
    let store = mem();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b, c) = (fresh_host(&store, cb.path()), stale_host(&store, cc.path()));
    write_file(&b, "f", b"v1").await;
    assert_eq!(read(&c, "f").await.unwrap(), b"v1");
    write_file(&b, "f", b"version 2").await;
    c.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    assert_eq!(assert_consistent(&store, "f").await, None);
    assert_eq!(
        assert_consistent(&store, "g").await.as_deref(),
        Some(&b"version 2"[..])
    );
}

/// C's index copy was taken before B created `f`; C creates `f` too (without `O_EXCL`, which
/// asks the store nothing yet), writes, and removes it before closing: the name goes as it is
/// now, B's value with it, as a stale `rm` of a listed file does (B's value used to stay, and
/// C read it back after its own write and `rm`: found by scripts/torture).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rm_of_a_file_created_here_removes_the_name_as_it_is_now() {
    let store = mem();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b, c) = (fresh_host(&store, cb.path()), stale_host(&store, cc.path()));
    assert!(matches!(c.lookup(ROOT, "f").await, Err(FsError::NotFound)));
    write_file(&b, "f", b"B's value").await;
    let fh = open_write(&c, "f").await;
    c.write(fh, 0, b"C's value").await.unwrap();
    c.unlink(ROOT, "f").await.unwrap();
    c.flush(fh).await.unwrap();
    c.release(fh).await.unwrap();
    c.sync_index().await.unwrap();
    assert_eq!(assert_consistent(&store, "f").await, None);
}

/// As above, but B's listing of its value lands after C's `rm` (B's index appends are slow): C
/// removed the value, and the late listing would name a blob that is gone. C looks for it again
/// and unlists it (it used to stay listed until a reader found the blob gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_landing_after_the_rm_of_its_value_is_taken_back() {
    let mem = mem();
    let slow = Arc::new(FaultStore::new(mem.clone()));
    let slow_store: Arc<dyn BlobStore> = slow.clone();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b, c) = (
        fresh_host(&slow_store, cb.path()),
        stale_host(&mem, cc.path()),
    );
    write_file(&b, "other", b"the index exists").await;
    assert!(matches!(c.lookup(ROOT, "f").await, Err(FsError::NotFound)));
    slow.plan(
        Op::Append,
        When::Always,
        Fault::DelayBefore(Duration::from_millis(1500)),
    );
    let fb = open_write(&b, "f").await;
    b.write(fb, 0, b"B's value").await.unwrap();
    b.release(fb).await.unwrap(); // uploaded; its listing is on its way
    let fc = open_write(&c, "f").await;
    c.write(fc, 0, b"C's value").await.unwrap();
    c.unlink(ROOT, "f").await.unwrap();
    c.release(fc).await.unwrap();
    b.sync_index().await.unwrap();
    slow.clear();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(assert_consistent(&mem, "f").await, None);
}

/// B creates `f` with `O_EXCL` and is still writing it; C, whose copy does not list `f`, creates
/// and removes its own `f`: B's claim stays (an exclusive create in progress is not a value to
/// remove), so a third host's `O_EXCL` create still meets EEXIST and B's close saves B's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rm_of_a_file_created_here_leaves_another_hosts_claim() {
    let store = mem();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let c = stale_host(&store, dirs[0].path());
    let (a, b) = (
        fresh_host(&store, dirs[1].path()),
        fresh_host(&store, dirs[2].path()),
    );
    assert!(matches!(c.lookup(ROOT, "f").await, Err(FsError::NotFound)));
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, fb) = b.create(ROOT, "f", 0o644, excl).await.unwrap();
    b.write(fb, 0, b"B's value").await.unwrap();
    let fc = open_write(&c, "f").await;
    c.unlink(ROOT, "f").await.unwrap();
    c.release(fc).await.unwrap();
    assert!(matches!(
        a.create(ROOT, "f", 0o644, excl).await,
        Err(FsError::Exists)
    ));
    b.fsync(fb).await.unwrap();
    b.release(fb).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "f").await.as_deref(),
        Some(&b"B's value"[..])
    );
}

/// A's `rm` of a file A is saving (another process of A closes it) comes while the upload is
/// on its way: the `rm` decides after the save, so the name goes (it used to find the file not
/// listed yet, delete nothing, and let the save list it: the name stayed after `rm` returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rm_during_the_save_of_a_new_file_removes_it() {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let ca = tempfile::tempdir().unwrap();
    let a = Arc::new(fresh_host(&store, ca.path()));
    let fh = open_write(&a, "f").await;
    a.write(fh, 0, b"being saved").await.unwrap();
    let rm = Arc::new(std::sync::Mutex::new(None));
    let (a2, rm2) = (a.clone(), rm.clone());
    faults.plan(
        Op::Put,
        When::Prefix("folder/f".into()),
        Fault::hook(move || async move {
            let a3 = a2.clone();
            let task = tokio::spawn(async move { a3.unlink(ROOT, "f").await });
            *rm2.lock().unwrap() = Some(task);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }),
    );
    a.flush(fh).await.unwrap();
    faults.clear();
    let task = rm.lock().unwrap().take().expect("the save uploaded");
    task.await.unwrap().unwrap();
    a.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    assert!(matches!(a.lookup(ROOT, "f").await, Err(FsError::NotFound)));
    assert_eq!(assert_consistent(&store, "f").await, None);
}

/// Hosts B and C over one store with faults, and `f` = `v1` written by B and seen by C: the
/// faults, the store, B, C and their caches (to keep).
async fn writer_and_mover() -> (
    Arc<FaultStore>,
    Arc<dyn BlobStore>,
    Arc<Fs>,
    Fs,
    (tempfile::TempDir, tempfile::TempDir),
) {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Arc::new(fresh_host(&store, cb.path()));
    let c = fresh_host(&store, cc.path());
    write_file(&b, "f", b"v1").await;
    assert_eq!(read(&c, "f").await.unwrap(), b"v1");
    (faults, store, b, c, (cb, cc))
}

/// Case 2, at the worst moment: B rewrites `f` between C's copy and C's delete of the old
/// blob. B's acknowledged write survives under `f`; `g` holds the version C copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rewrite_during_mv_is_not_undone() {
    let (faults, store, b, c, _caches) = writer_and_mover().await;
    let b2 = b.clone();
    faults.plan(
        Op::Delete,
        When::Prefix("folder/f".into()),
        Fault::hook(move || async move { write_file(&b2, "f", b"version 2").await }),
    );
    c.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    faults.clear();
    assert_eq!(
        assert_consistent(&store, "g").await.as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        assert_consistent(&store, "f").await.as_deref(),
        Some(&b"version 2"[..])
    );
}

/// Host B locks `f` between host C's copy of it and C's delete (`mv f g` on C): C's `mv` fails
/// EBUSY and changes nothing. `f` stays listed with its value and `g` does not appear (the move
/// used to be undone only halfway: `f` was left unlisted, its value reachable under no name).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_taken_during_mv_leaves_the_file_where_it_was() {
    use remotedict::fs::{LockMode, LockRequest};
    let (faults, store, b, c, _caches) = writer_and_mover().await;
    let ino_b = b.lookup(ROOT, "f").await.unwrap().ino;
    let b2 = b.clone();
    faults.plan(
        Op::Delete,
        When::Prefix("folder/f".into()),
        Fault::hook(move || async move {
            b2.lock(
                ino_b,
                LockRequest::whole(1, 1, LockMode::Exclusive, false, 0),
            )
            .await
            .unwrap();
        }),
    );
    let r = c.rename(ROOT, "f", ROOT, "g", false).await;
    faults.clear();
    assert!(
        matches!(&r, Err(e) if e.errno() == libc::EBUSY),
        "the rename of a file locked meanwhile: {r:?}"
    );
    assert_eq!(
        assert_consistent(&store, "f").await.as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(assert_consistent(&store, "g").await, None);
    assert_eq!(read(&c, "f").await.unwrap(), b"v1");
    assert!(matches!(c.lookup(ROOT, "g").await, Err(FsError::NotFound)));
}

/// Case 3: `mkdir -p run/a` on A, then `mkdir -p run/b` on B (whose index copy predates A's):
/// B's mkdir of `run` is EEXIST and `run` is at once a directory on B, so `run/b` follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mkdir_p_on_two_hosts() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fresh_host(&store, ca.path()), stale_host(&store, cb.path()));
    assert!(matches!(
        b.lookup(ROOT, "run").await,
        Err(FsError::NotFound)
    ));
    let run = a.mkdir(ROOT, "run", 0o755).await.unwrap();
    a.mkdir(run.ino, "a", 0o755).await.unwrap();
    // `mkdir -p run/b` on B: mkdir run, and on EEXIST stat it.
    assert!(matches!(
        b.mkdir(ROOT, "run", 0o755).await,
        Err(FsError::Exists)
    ));
    let seen = b
        .lookup(ROOT, "run")
        .await
        .expect("run exists on B at once");
    assert_eq!(seen.kind, NodeKind::Dir);
    b.mkdir(seen.ino, "b", 0o755).await.unwrap();
    let names: Vec<String> = {
        let c = tempfile::tempdir().unwrap();
        let fs = fresh_host(&store, c.path());
        let run = fs.lookup(ROOT, "run").await.unwrap();
        let mut n = Vec::new();
        for x in ["a", "b"] {
            if fs.lookup(run.ino, x).await.is_ok() {
                n.push(x.to_string());
            }
        }
        n
    };
    assert_eq!(names, ["a", "b"]);
}

/// Case 3: a symlink and an `O_EXCL` create that lose the race to another host's value answer
/// EEXIST and show that value at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_create_shows_the_winner() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fresh_host(&store, ca.path()), stale_host(&store, cb.path()));
    b.lookup(ROOT, "x").await.unwrap_err(); // B's copy of the index is taken now
    a.symlink(ROOT, "l", "target/there").await.unwrap();
    write_file(&a, "x", b"A's value").await;
    assert!(matches!(
        b.symlink(ROOT, "l", "mine").await,
        Err(FsError::Exists)
    ));
    let l = b.lookup(ROOT, "l").await.expect("the link is visible on B");
    assert_eq!(b.readlink(l.ino).await.unwrap(), "target/there");
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    assert!(matches!(
        b.create(ROOT, "x", 0o644, excl).await,
        Err(FsError::Exists)
    ));
    assert_eq!(read(&b, "x").await.unwrap(), b"A's value");
}

/// Case 4: `open(O_CREAT|O_EXCL)`, `unlink`, `close`: both succeed, and the name is free on
/// every host afterwards (no claim is left behind, nothing is brought back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlink_before_the_first_save_removes_the_claim() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fresh_host(&store, ca.path()), fresh_host(&store, cb.path()));
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, fh) = a.create(ROOT, "x", 0o644, excl).await.unwrap();
    a.write(fh, 0, b"unsaved").await.unwrap();
    a.unlink(ROOT, "x").await.unwrap();
    a.flush(fh).await.unwrap();
    a.release(fh).await.unwrap();
    assert!(matches!(
        store.head("folder/x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(a.lookup(ROOT, "x").await, Err(FsError::NotFound)));
    let (_, fh) = b.create(ROOT, "x", 0o644, excl).await.unwrap();
    b.write(fh, 0, b"B").await.unwrap();
    b.fsync(fh).await.unwrap();
    b.release(fh).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "x").await.as_deref(),
        Some(&b"B"[..])
    );
}

/// Case 4: a close whose upload failed leaves no claim: `cp` to that name works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_close_leaves_no_claim() {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fresh_host(&store, ca.path()), fresh_host(&store, cb.path()));
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, fh) = a.create(ROOT, "x", 0o644, excl).await.unwrap();
    a.write(fh, 0, b"data").await.unwrap();
    faults.plan(
        Op::Put,
        When::Prefix("folder/x".into()),
        Fault::Fail(StoreError::Auth("refused (injected)".into())),
    );
    assert!(
        a.release(fh).await.is_err(),
        "the failed upload fails the close"
    );
    faults.clear();
    let (_, fh) = b.create(ROOT, "x", 0o644, excl).await.unwrap();
    b.write(fh, 0, b"B").await.unwrap();
    b.fsync(fh).await.unwrap();
    b.release(fh).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "x").await.as_deref(),
        Some(&b"B"[..])
    );
}

/// Case 4: the claim of a writer that is gone (`kill -9`: its `Fs` dropped with the file open)
/// is taken over once its heartbeat is older than the bound — by exactly one of two racing
/// hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_writers_claim_is_taken_over_by_one_host() {
    let store = mem();
    let (ca, cb, cc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    {
        let a = fresh_host(&store, ca.path());
        let (_, fh) = a.create(ROOT, "x", 0o644, excl).await.unwrap();
        a.write(fh, 0, b"never saved").await.unwrap();
        // Dropped without a close: the process is gone.
    }
    let (b, c) = (fresh_host(&store, cb.path()), fresh_host(&store, cc.path()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (rb, rc) = loop {
        let (rb, rc) = tokio::join!(
            b.create(ROOT, "x", 0o644, excl),
            c.create(ROOT, "x", 0o644, excl)
        );
        if rb.is_ok() || rc.is_ok() {
            break (rb, rc);
        }
        assert!(
            Instant::now() < deadline,
            "the dead writer's claim was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        rb.is_ok() != rc.is_ok(),
        "exactly one host wins: {:?} {:?}",
        rb.as_ref().err(),
        rc.as_ref().err()
    );
    let (winner, fh) = match (rb, rc) {
        (Ok((_, fh)), Err(FsError::Exists)) => (&b, fh),
        (Err(FsError::Exists), Ok((_, fh))) => (&c, fh),
        other => panic!("{:?}", other.0.err().or(other.1.err())),
    };
    winner.write(fh, 0, b"winner").await.unwrap();
    winner.fsync(fh).await.unwrap();
    winner.release(fh).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "x").await.as_deref(),
        Some(&b"winner"[..])
    );
}

/// Case 4: a live writer keeps its claim well past the staleness bound (its heartbeat), and
/// its file is listed when it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_writers_claim_is_never_taken() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fresh_host(&store, ca.path()), fresh_host(&store, cb.path()));
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, fh) = a.create(ROOT, "x", 0o644, excl).await.unwrap();
    // A long copy: writes go on for three times the bound.
    let until = Instant::now() + Duration::from_secs(3 * STALE_SECS);
    let mut off = 0u64;
    while Instant::now() < until {
        a.write(fh, off, b"chunk").await.unwrap();
        off += 5;
        assert!(matches!(
            b.create(ROOT, "x", 0o644, excl).await,
            Err(FsError::Exists)
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a.fsync(fh).await.unwrap();
    a.release(fh).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "x").await.map(|v| v.len() as u64),
        Some(off)
    );
}

/// A claim left by a writer that died long ago (its mark's heartbeat is old) — written here
/// directly — does not wedge the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_leftover_claim_does_not_wedge_the_name() {
    let store = mem();
    let mut metadata = Metadata::new();
    metadata.insert(META_CLAIM.into(), "deadbeef 1000".into());
    let empty = bytes::Bytes::from(remotedict::codec::compress(b""));
    store
        .put(
            "folder/x",
            empty,
            &PutOptions {
                metadata,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ca = tempfile::tempdir().unwrap();
    let a = fresh_host(&store, ca.path());
    assert!(matches!(a.lookup(ROOT, "x").await, Err(FsError::NotFound)));
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, fh) = a.create(ROOT, "x", 0o644, excl).await.unwrap();
    a.write(fh, 0, b"new").await.unwrap();
    a.fsync(fh).await.unwrap();
    a.release(fh).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "x").await.as_deref(),
        Some(&b"new"[..])
    );
}

/// Case 8: a handle opened with `O_CREAT` (no `O_TRUNC`) on a stale view adopts B's value at its
/// first save (fsync); its later writes apply to that value, as if the open had found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handle_that_adopted_another_hosts_value_keeps_working() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (stale_host(&store, ca.path()), fresh_host(&store, cb.path()));
    a.lookup(ROOT, "f").await.unwrap_err();
    let (_, fh) = a
        .create(ROOT, "f", 0o644, libc::O_RDWR | libc::O_CREAT)
        .await
        .unwrap();
    write_file(&b, "f", b"B's value").await;
    a.fsync(fh).await.unwrap(); // adopts B's value
    a.write(fh, 0, b"A")
        .await
        .expect("the handle keeps working");
    assert_eq!(a.read(fh, 0, 100).await.unwrap().as_ref(), b"A's value");
    a.fsync(fh).await.unwrap();
    a.release(fh).await.unwrap();
    assert_eq!(
        assert_consistent(&store, "f").await.as_deref(),
        Some(&b"A's value"[..])
    );
}

/// The `flock x.lock -c 'echo >> log'` pattern: the next holder of a lock, on another host,
/// reads what the last holder wrote and closed (without `fsync`) before unlocking. Before, the
/// lease was released while the closed file's listing still waited for the group commit, and
/// the next holder appended to the older value: the previous append was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_lock_holder_reads_what_the_last_one_wrote() {
    use remotedict::fs::{LockMode, LockRequest};
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(host(&store, ca.path(), Duration::from_secs(30)));
    let b = Arc::new(host(&store, cb.path(), Duration::from_secs(30)));
    write_file(&a, "x.lock", b"").await;
    write_file(&a, "log", b"0\n").await;
    read(&b, "log").await.unwrap(); // b's index copy: trusted for 30 s
    let lock_a = a.lookup(ROOT, "x.lock").await.unwrap().ino;
    let lock_b = b.lookup(ROOT, "x.lock").await.unwrap().ino;
    for round in 1..=3u8 {
        for (fs, lock_ino, owner) in [(&a, lock_a, 1u64), (&b, lock_b, 2u64)] {
            fs.lock(
                lock_ino,
                LockRequest::whole(owner, owner, LockMode::Exclusive, true, 0),
            )
            .await
            .unwrap();
            let ino = fs.lookup(ROOT, "log").await.unwrap().ino;
            let fh = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await.unwrap();
            fs.write(fh, 0, format!("{round}.{owner}\n").as_bytes())
                .await
                .unwrap();
            fs.release(fh).await.unwrap(); // a close, no fsync
            assert!(fs.unlock_owner(lock_ino, owner).await.unwrap());
        }
    }
    let expected = "0\n1.1\n1.2\n2.1\n2.2\n3.1\n3.2\n";
    let cache = tempfile::tempdir().unwrap();
    let c = fresh_host(&store, cache.path());
    assert_eq!(
        String::from_utf8(read(&c, "log").await.unwrap()).unwrap(),
        expected
    );
}

/// Host B rewrites `f` (closed, its listing still waiting for B's group commit) while C runs
/// `chmod` on it: the blob is no longer the version C's index lists, and C used to give up with
/// EIO after three tries. `chmod` changes the value that is there now, as on a local disk, and
/// that value keeps the new mode on every host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chmod_racing_another_hosts_write_changes_the_newest_value() {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Arc::new(fresh_host(&store, cb.path()));
    let c = fresh_host(&store, cc.path());
    write_file(&b, "f", b"old").await;
    let ino = c.lookup(ROOT, "f").await.unwrap().ino;
    let b2 = b.clone();
    faults.plan(
        Op::Head,
        When::Prefix("folder/f".into()),
        Fault::hook(move || async move {
            let (_, fh) = b2
                .create(ROOT, "f", 0o644, libc::O_WRONLY | libc::O_TRUNC)
                .await
                .unwrap();
            b2.write(fh, 0, b"the newer value").await.unwrap();
            b2.release(fh).await.unwrap();
        }),
    );
    let set = remotedict::fs::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    let attr = c
        .setattr(ino, None, set)
        .await
        .expect("chmod while B writes");
    faults.clear();
    assert_eq!(attr.perm, 0o600);
    assert_eq!(read(&c, "f").await.unwrap(), b"the newer value");
    b.sync_index().await.unwrap();
    assert_eq!(
        assert_consistent(&store, "f").await.as_deref(),
        Some(&b"the newer value"[..])
    );
    let cache = tempfile::tempdir().unwrap();
    let d = fresh_host(&store, cache.path());
    assert_eq!(d.lookup(ROOT, "f").await.unwrap().perm, 0o600);
}

/// A name listed without its blob (a host died between an `rm`'s delete and its index commit):
/// the first host that finds the blob gone while reading unlists the name, so it stops being a
/// file no host can read (it used to stay listed until someone ran `rm` or `fsck --repair`).
#[tokio::test]
async fn a_name_whose_blob_is_gone_is_unlisted_by_its_first_reader() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fresh_host(&store, ca.path());
    let b = fresh_host(&store, cb.path());
    write_file(&a, "f", b"a value").await;
    write_file(&a, "g", b"another").await;
    // Both are listed (the premise: a listed name).
    a.sync_index().await.unwrap();
    // The delete of `rm f` reached the store; its host died before the index commit.
    store
        .delete("folder/f", &remotedict::store::Conditions::default())
        .await
        .unwrap();
    let gone = read(&b, "f").await.expect_err("its blob is gone");
    assert_eq!(gone.errno(), libc::ENOENT, "{gone}");
    b.sync_index().await.unwrap();
    // (A's copy may be served for its TTL, 1 ms: with appends to the journal this all takes
    // less.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(a.lookup(ROOT, "f").await, Err(FsError::NotFound)));
    assert_eq!(assert_consistent(&store, "f").await, None);
    assert_eq!(read(&a, "g").await.unwrap(), b"another");
}

/// A close whose upload failed (EIO to the program) leaves no value to be uploaded later by the
/// kernel's `release`: found by the torture, where such a value landed after another host's
/// newer acknowledged write and replaced it (the store was restarting when the close failed).
#[tokio::test]
async fn a_failed_close_is_not_uploaded_later_by_release() {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fresh_host(&store, ca.path());
    let b = fresh_host(&store, cb.path());
    let (_, fh) = a
        .create(
            ROOT,
            "f",
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        )
        .await
        .unwrap();
    a.write(fh, 0, b"told it failed").await.unwrap();
    for op in [Op::Put, Op::PutBlock, Op::CommitBlocks] {
        faults.plan(op, When::Prefix("folder/f".into()), Fault::Status(503));
    }
    a.flush(fh).await.expect_err("the store refuses the upload");
    faults.clear();
    // Another host writes the name after the failed close, then the kernel releases A's handle.
    write_file(&b, "f", b"newer").await;
    a.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(
        assert_consistent(&store, "f").await.as_deref(),
        Some(&b"newer"[..])
    );
}

/// Host A has read the log (its cache keeps that version, and its index copy still lists it);
/// host B appends a line. A appends too, from its copy of the older version: A's line goes after
/// B's, not over it (A's save used to replace the blob unconditionally, undoing B's
/// acknowledged append; found by scripts/torture on Azurite).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_from_a_stale_copy_lands_after_the_newer_write() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = stale_host(&store, ca.path());
    let b = fresh_host(&store, cb.path());
    write_file(&b, "log", b"one\n").await;
    assert_eq!(read(&a, "log").await.unwrap(), b"one\n");
    let ino_b = b.lookup(ROOT, "log").await.unwrap().ino;
    let fh = b
        .open(ino_b, libc::O_WRONLY | libc::O_APPEND)
        .await
        .unwrap();
    b.write(fh, 0, b"two\n").await.unwrap();
    b.release(fh).await.unwrap();
    let ino_a = a.lookup(ROOT, "log").await.unwrap().ino;
    let fh = a
        .open(ino_a, libc::O_WRONLY | libc::O_APPEND)
        .await
        .unwrap();
    a.write(fh, 0, b"three\n").await.unwrap();
    a.flush(fh).await.expect("the append lands");
    a.release(fh).await.unwrap();
    assert_eq!(read(&b, "log").await.unwrap(), b"one\ntwo\nthree\n");
}

/// The same race with an overwrite in place (not an append): A's save would undo B's write, so
/// it fails loudly and B's value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overwrite_of_a_stale_copy_fails_instead_of_undoing_a_newer_write() {
    let store = mem();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = stale_host(&store, ca.path());
    let b = fresh_host(&store, cb.path());
    write_file(&b, "f", b"aaaa").await;
    assert_eq!(read(&a, "f").await.unwrap(), b"aaaa");
    write_file(&b, "f", b"bbbbbbbb").await;
    let ino_a = a.lookup(ROOT, "f").await.unwrap().ino;
    let fh = a.open(ino_a, libc::O_RDWR).await.unwrap();
    a.write(fh, 0, b"A").await.unwrap();
    assert!(a.flush(fh).await.is_err(), "the stale overwrite is refused");
    let _ = a.release(fh).await;
    assert_eq!(read(&b, "f").await.unwrap(), b"bbbbbbbb");
}

/// Requests a new file costs on its own blob: one (the upload, If-None-Match) for a create
/// without `O_EXCL`; two for `O_EXCL`, whose claim makes the name taken for every host at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_file_costs_one_request_without_o_excl_and_two_with_it() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let faults = Arc::new(FaultStore::new(mem()));
    let store: Arc<dyn BlobStore> = faults.clone();
    let seen: Arc<Mutex<HashMap<String, Vec<Op>>>> = Arc::default();
    for op in Op::ALL {
        let seen = seen.clone();
        faults.plan(
            op,
            When::matching(move |name| {
                seen.lock()
                    .unwrap()
                    .entry(name.to_string())
                    .or_default()
                    .push(op);
                false
            }),
            Fault::DelayBefore(Duration::ZERO),
        );
    }
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fresh_host(&store, ca.path()), fresh_host(&store, cb.path()));
    let plain = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    for (name, flags) in [("plain", plain), ("excl", excl)] {
        let (_, fh) = a.create(ROOT, name, 0o644, flags).await.unwrap();
        a.write(fh, 0, &[7u8; 4096]).await.unwrap();
        a.flush(fh).await.unwrap();
        a.release(fh).await.unwrap();
    }
    let ops = |name: &str| seen.lock().unwrap().get(&format!("folder/{name}")).cloned();
    assert_eq!(ops("plain"), Some(vec![Op::Put]), "a create without O_EXCL");
    assert_eq!(
        ops("excl"),
        Some(vec![Op::Put, Op::Put]),
        "an O_EXCL create"
    );
    // Both are values every host reads once the index lists them (a group commit, after close).
    for name in ["plain", "excl"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            match read(&b, name).await {
                Err(FsError::NotFound) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => break other,
            }
        };
        assert_eq!(got.unwrap(), vec![7u8; 4096], "{name} on another host");
    }
}
