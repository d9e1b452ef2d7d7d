//! Renames and readers racing writers, without a kernel (two `Fs` over one store = two hosts):
//! found by `scripts/torture`. A rename never publishes half-written data, never loses the
//! target's value when its source vanishes after the copy, and never leaves the old name behind
//! because another host only changed its attributes; a reader on the writing host reads whole
//! saved versions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use remotedict::fs::{Fs, SetAttr};
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::BlobStore;

use common::hosts::{consistent, host_with_ttl, open_write, read, write_file, ROOT};

fn host(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    host_with_ttl(store, cache, Duration::from_millis(1))
}

fn faulty() -> (Arc<FaultStore>, Arc<dyn BlobStore>) {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    (faults, store)
}

/// Host B (whose index copy predates the move) runs `chmod` on `f` between C's copy and C's
/// delete of the old blob, and lists it again: the etag changed but the value did not, so the
/// old name still goes (it used to stay, a second copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chmod_elsewhere_during_mv_does_not_keep_the_old_name() {
    let (faults, store) = faulty();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Arc::new(host_with_ttl(&store, cb.path(), Duration::from_secs(30)));
    let c = host(&store, cc.path());
    write_file(&b, "f", b"the value").await;
    assert_eq!(read(&c, "f").await.unwrap(), b"the value");
    let ino = b.lookup(ROOT, "f").await.unwrap().ino;
    let b2 = b.clone();
    faults.plan(
        Op::Delete,
        When::Prefix("folder/f".into()),
        Fault::hook(move || async move {
            let set = SetAttr {
                mode: Some(0o600),
                ..Default::default()
            };
            b2.setattr(ino, None, set).await.unwrap();
        }),
    );
    c.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    faults.clear();
    assert_eq!(consistent(&store, "f").await, None, "the old name stays");
    assert_eq!(
        consistent(&store, "g").await.as_deref(),
        Some(&b"the value"[..])
    );
}

/// B removes `f` after C copied it (before the copy is written to `g`): the move still happens
/// (it used to fail with ENOENT after overwriting `g`'s blob, whose listing then named a
/// version that was gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_removed_after_its_copy_still_moves() {
    let (faults, store) = faulty();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Arc::new(host(&store, cb.path()));
    let c = host(&store, cc.path());
    write_file(&b, "f", b"moved value").await;
    write_file(&b, "g", b"old target").await;
    assert_eq!(read(&c, "f").await.unwrap(), b"moved value");
    let b2 = b.clone();
    faults.plan(
        Op::Put,
        When::Prefix("folder/g".into()),
        Fault::hook(move || async move { b2.unlink(ROOT, "f").await.unwrap() }),
    );
    c.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    faults.clear();
    assert_eq!(consistent(&store, "f").await, None);
    assert_eq!(
        consistent(&store, "g").await.as_deref(),
        Some(&b"moved value"[..])
    );
}

/// A handle opened for reading on the host that is rewriting the file reads the saved version,
/// whole: not the writer's staged bytes (half-written, or cut short by its `O_TRUNC`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_on_the_writing_host_reads_the_saved_version() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let cache = tempfile::tempdir().unwrap();
    let a = host(&store, cache.path());
    write_file(&a, "f", b"version one, whole").await;
    let w = open_write(&a, "f").await;
    a.write(w, 0, b"vers").await.unwrap();
    assert_eq!(read(&a, "f").await.unwrap(), b"version one, whole");
    a.write(w, 4, b"ion two").await.unwrap();
    a.release(w).await.unwrap();
    assert_eq!(read(&a, "f").await.unwrap(), b"version two");
}

/// A file being written is renamed on its host: other hosts see the last saved version under
/// the new name (never the half-written one), and the writer's close saves under the new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_being_written_moves_as_its_saved_version() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (host(&store, ca.path()), host(&store, cb.path()));
    write_file(&a, "f", b"saved").await;
    let w = open_write(&a, "f").await;
    a.write(w, 0, b"half").await.unwrap();
    a.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    assert_eq!(
        read(&b, "g").await.unwrap(),
        b"saved",
        "half-written data moved"
    );
    a.write(w, 4, b" and the rest").await.unwrap();
    a.release(w).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(
        consistent(&store, "g").await.as_deref(),
        Some(&b"half and the rest"[..])
    );
    assert_eq!(consistent(&store, "f").await, None);
}

/// A file created here and never saved, renamed while open over another host's file: the
/// target keeps its old value until the close (nothing half-written appears, and the name
/// never vanishes), and the close saves the whole file under the new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_never_saved_file_moves_by_name() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (host(&store, ca.path()), host(&store, cb.path()));
    write_file(&b, "m", b"old m").await;
    let w = open_write(&a, "n").await;
    a.write(w, 0, b"da").await.unwrap();
    a.rename(ROOT, "n", ROOT, "m", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        read(&b, "m").await.unwrap(),
        b"old m",
        "m between the rename and the close"
    );
    a.write(w, 2, b"ta").await.unwrap();
    a.release(w).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(consistent(&store, "m").await.as_deref(), Some(&b"data"[..]));
    assert_eq!(consistent(&store, "n").await, None);
}

/// C (whose index copy still lists `f`) moves `x` onto `f` after B removed `f`, and B writes
/// a new `f` just before C's listing of the move lands: C's listing finds B's newer value there
/// and lists that (its writer's own listing follows), so on C the name does not vanish (it used
/// to, until B's listing arrived).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_overtaken_by_another_write_keeps_the_name_listed() {
    let (faults, store) = faulty();
    let (cb, cc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Arc::new(host(&store, cb.path()));
    let c = host_with_ttl(&store, cc.path(), Duration::from_secs(30));
    write_file(&c, "x", b"moved").await;
    write_file(&c, "f", b"old f").await;
    b.unlink(ROOT, "f").await.unwrap();
    let b2 = b.clone();
    faults.plan(
        Op::Head,
        When::Prefix("folder/f".into()),
        Fault::hook(move || async move {
            // Closed, not fsynced: its listing waits for B's next group commit.
            let fh = open_write(&b2, "f").await;
            b2.write(fh, 0, b"newer").await.unwrap();
            b2.release(fh).await.unwrap();
        }),
    );
    c.rename(ROOT, "x", ROOT, "f", false).await.unwrap();
    faults.clear();
    assert_eq!(read(&c, "f").await.unwrap(), b"newer");
    b.sync_index().await.unwrap();
    assert_eq!(
        consistent(&store, "f").await.as_deref(),
        Some(&b"newer"[..])
    );
    assert_eq!(consistent(&store, "x").await, None);
}

/// A file being written on host A (created, not saved yet) is renamed over `f`: every other
/// host goes on reading `f`'s old value until A's close, then the new one: never no file
/// (torture, CI: `f` was deleted at the rename and read as absent elsewhere until the close).
/// Moved on again before its save, the file takes its name with it and the old value goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_renamed_over_a_value_before_its_first_save_never_leaves_a_gap() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&store, ca.path());
    let b = host(&store, cb.path());
    write_file(&b, "f", b"old value").await;
    let fh = open_write(&a, "new").await;
    a.write(fh, 0, b"new value").await.unwrap();
    a.rename(ROOT, "new", ROOT, "f", false).await.unwrap();
    a.sync_index().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(read(&b, "f").await.unwrap(), b"old value", "f vanished");
    // On A, `f` is the file being written (its handle writes on).
    a.write(fh, 9, b"!").await.unwrap();
    a.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(read(&b, "f").await.unwrap(), b"new value!");
    assert_eq!(
        consistent(&store, "f").await.as_deref(),
        Some(&b"new value!"[..])
    );
    assert_eq!(consistent(&store, "new").await, None);

    // Renamed over `g`, then on to `h` before any save: `g` is gone, `h` gets the file.
    write_file(&b, "g", b"g's value").await;
    let fh = open_write(&a, "tmp").await;
    a.write(fh, 0, b"moving").await.unwrap();
    a.rename(ROOT, "tmp", ROOT, "g", false).await.unwrap();
    a.rename(ROOT, "g", ROOT, "h", false).await.unwrap();
    a.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(consistent(&store, "g").await, None, "g's old value stayed");
    assert_eq!(
        consistent(&store, "h").await.as_deref(),
        Some(&b"moving"[..])
    );
}

/// A file being written on host A (not saved yet) is renamed to a free name: from the rename
/// on, that name is taken for every host (an `O_EXCL` create on B is EEXIST, as it would be on
/// A), and A's close saves the file there (torture on Azurite: B's `O_EXCL` create succeeded
/// between A's rename and A's close, and the two files overwrote each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_renamed_to_a_free_name_before_its_first_save_takes_the_name_at_once() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&store, ca.path());
    let b = host(&store, cb.path());
    let fh = open_write(&a, "tmp").await;
    a.write(fh, 0, b"A's file").await.unwrap();
    a.rename(ROOT, "tmp", ROOT, "x", false).await.unwrap();
    let excl = b
        .create(
            ROOT,
            "x",
            0o644,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        )
        .await;
    assert!(
        matches!(excl, Err(remotedict::fs::FsError::Exists)),
        "an O_EXCL create of a name just renamed to elsewhere: {excl:?}"
    );
    a.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(
        consistent(&store, "x").await.as_deref(),
        Some(&b"A's file"[..])
    );
    assert_eq!(consistent(&store, "tmp").await, None);
    // Renamed again before its save, and dropped without one: no claim is left behind.
    let fh = open_write(&a, "tmp2").await;
    a.rename(ROOT, "tmp2", ROOT, "y", false).await.unwrap();
    a.rename(ROOT, "y", ROOT, "z", false).await.unwrap();
    a.unlink(ROOT, "z").await.unwrap();
    a.release(fh).await.unwrap();
    for name in ["tmp2", "y", "z"] {
        assert_eq!(consistent(&store, name).await, None, "{name}");
    }
}

/// `mv f g` on the host that is saving `g` (another process closes it) while the upload is on
/// its way: the move decides after the save, so `g` ends with `f`'s value and the writer's
/// changes stay with its handle, as on a local disk. (The move's copy used to land first and
/// the save over it: `f`'s value was lost under both names.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_onto_a_file_being_saved_here_keeps_the_moved_value() {
    let (faults, store) = faulty();
    let ca = tempfile::tempdir().unwrap();
    let a = Arc::new(host(&store, ca.path()));
    write_file(&a, "f", b"moved value").await;
    let fh = open_write(&a, "g").await;
    a.write(fh, 0, b"being saved").await.unwrap();
    let mv = Arc::new(std::sync::Mutex::new(None));
    let (a2, mv2) = (a.clone(), mv.clone());
    faults.plan(
        Op::Put,
        When::NthWithPrefix("folder/g".into(), 1),
        Fault::hook(move || async move {
            let a3 = a2.clone();
            let task = tokio::spawn(async move { a3.rename(ROOT, "f", ROOT, "g", false).await });
            *mv2.lock().unwrap() = Some(task);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }),
    );
    a.flush(fh).await.unwrap();
    let task = mv.lock().unwrap().take().expect("the save uploaded");
    task.await.unwrap().unwrap();
    faults.clear();
    a.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(consistent(&store, "f").await, None);
    assert_eq!(
        consistent(&store, "g").await.as_deref(),
        Some(&b"moved value"[..])
    );
}

/// `touch s; mv s t` while `t` is a file this host created with `O_EXCL` and has not saved: `s`
/// takes over `t`'s claim, and its close lists it under `t`. (The claim used to stay behind, and
/// `s`'s save, finding the name held by a live claim, saved nothing: `t` never appeared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_file_moved_onto_a_claimed_one_takes_the_claim_over() {
    let (_faults, store) = faulty();
    let ca = tempfile::tempdir().unwrap();
    let a = host(&store, ca.path());
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, ft) = a.create(ROOT, "t", 0o644, excl).await.unwrap();
    a.write(ft, 0, b"replaced, never saved").await.unwrap();
    let (_, fs) = a
        .create(ROOT, "s", 0o644, libc::O_WRONLY | libc::O_CREAT)
        .await
        .unwrap();
    a.rename(ROOT, "s", ROOT, "t", false).await.unwrap();
    a.release(fs).await.unwrap();
    a.release(ft).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(consistent(&store, "s").await, None);
    assert_eq!(consistent(&store, "t").await.as_deref(), Some(&b""[..]));
}

/// While `k` is being saved here, `mv x k` and then `rm k` queue up behind that save (`x` is
/// open here with unsaved changes). The `rm` comes after the move, so it removes what the move
/// put there, and `x`'s writer, now writing `k`, saves nothing at its close. (The `rm` used to
/// act on the replaced file it had waited for: `x`'s changes came back under `k` at its close,
/// after `rm` had returned.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rm_queued_behind_a_move_onto_its_name_removes_the_moved_file() {
    let (faults, store) = faulty();
    let ca = tempfile::tempdir().unwrap();
    let a = Arc::new(host(&store, ca.path()));
    write_file(&a, "x", b"x saved").await;
    let fx = open_write(&a, "x").await;
    a.write(fx, 0, b"x unsaved").await.unwrap();
    let fk = open_write(&a, "k").await;
    a.write(fk, 0, b"k").await.unwrap();
    let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a2, tasks2) = (a.clone(), tasks.clone());
    faults.plan(
        Op::Put,
        When::NthWithPrefix("folder/k".into(), 1),
        Fault::hook(move || async move {
            let (a3, a4) = (a2.clone(), a2.clone());
            let mv = tokio::spawn(async move { a3.rename(ROOT, "x", ROOT, "k", false).await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let rm = tokio::spawn(async move { a4.unlink(ROOT, "k").await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            tasks2.lock().unwrap().extend([mv, rm]);
        }),
    );
    a.flush(fk).await.unwrap();
    let done: Vec<_> = tasks.lock().unwrap().drain(..).collect();
    assert_eq!(done.len(), 2, "the save uploaded");
    for t in done {
        t.await.unwrap().unwrap();
    }
    faults.clear();
    a.release(fk).await.unwrap();
    a.release(fx).await.unwrap();
    a.sync_index().await.unwrap();
    assert_eq!(consistent(&store, "x").await, None);
    assert_eq!(consistent(&store, "k").await, None);
}
