//! `flock` in the core, without a kernel (two `Fs` over one store = two hosts): converting a
//! shared lock, and the open-then-lock idiom
//! (`with open(p, 'r+') as f: fcntl.flock(f, LOCK_EX)`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use remotedict::fs::{Fs, FsError, LockKind, LockMode, LockRequest};
use remotedict::store::retry::Backoff;
use remotedict::store::retrying::RetryingStore;
use remotedict::store::testing::{FaultStore, MemStore};
use remotedict::store::BlobStore;

use common::hosts::{host_with_ttl, read, write_file, ROOT};

fn host(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Arc<Fs> {
    Arc::new(host_with_ttl(store, cache, Duration::from_millis(1)))
}

/// `RetryingStore(FaultStore(MemStore))`, as the daemon composes its store.
fn retrying() -> (Arc<FaultStore>, Arc<dyn BlobStore>) {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let backoff = Backoff {
        max_retries: 3,
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    let store: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(faults.clone(), backoff));
    (faults, store)
}

/// Two owners on one host hold `LOCK_SH` and both ask for `LOCK_EX`: as on Linux, a conversion
/// drops the held lock first, so one gets it, then the other (it used to hang both forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shared_holders_both_upgrading_do_not_deadlock() {
    let (_, store) = retrying();
    let cache = tempfile::tempdir().unwrap();
    let fs = host(&store, cache.path());
    write_file(&fs, "f", b"x").await;
    let ino = fs.lookup(ROOT, "f").await.unwrap().ino;
    fs.lock(ino, LockRequest::whole(1, 1, LockMode::Shared, false, 0))
        .await
        .unwrap();
    fs.lock(ino, LockRequest::whole(2, 2, LockMode::Shared, false, 0))
        .await
        .unwrap();
    let upgrade = |owner: u64| {
        let fs = fs.clone();
        tokio::spawn(async move {
            fs.lock(
                ino,
                LockRequest::whole(owner, owner, LockMode::Exclusive, true, 0),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            fs.unlock_owner(ino, owner).await.unwrap();
        })
    };
    let (a, b) = (upgrade(1), upgrade(2));
    let both = async {
        a.await.unwrap();
        b.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("both upgrades finish, one after the other");
}

/// Host B holds the lock and appends; host A opened the file for writing before, then locks:
/// the open does not fail because B holds the lock (flock is advisory), and once A holds it,
/// its handle works on the value B left (it used to fail EBUSY at open, and a handle opened
/// earlier kept the old copy, so B's line was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_then_lock_sees_the_last_holders_write() {
    let (_, store) = retrying();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&store, ca.path());
    let b = host(&store, cb.path());
    write_file(&b, "log", b"one\n").await;
    let ino_b = b.lookup(ROOT, "log").await.unwrap().ino;
    b.lock(
        ino_b,
        LockRequest::whole(7, 7, LockMode::Exclusive, false, 0),
    )
    .await
    .unwrap();
    let ino_a = a.lookup(ROOT, "log").await.unwrap().ino;
    let fh = a
        .open(ino_a, libc::O_RDWR)
        .await
        .expect("opening never fails because another host holds a lock");
    let a2 = a.clone();
    let locker = tokio::spawn(async move {
        a2.lock(
            ino_a,
            LockRequest::whole(fh, fh, LockMode::Exclusive, true, 0),
        )
        .await
    });
    // B appends under its lock, then lets go.
    let bfh = b
        .open(ino_b, libc::O_WRONLY | libc::O_APPEND)
        .await
        .unwrap();
    b.write(bfh, 0, b"two\n").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 7).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), locker)
        .await
        .expect("A gets the lock once B lets go")
        .unwrap()
        .unwrap();
    let seen = a.read(fh, 0, 100).await.unwrap();
    assert_eq!(&seen[..], b"one\ntwo\n", "A's handle reads what B wrote");
    a.write(fh, seen.len() as u64, b"three\n").await.unwrap();
    a.release(fh).await.unwrap();
    a.unlock_owner(ino_a, fh).await.unwrap();
    assert_eq!(read(&b, "log").await.unwrap(), b"one\ntwo\nthree\n");
}

/// A process on host A opens the counter for writing and waits for the lock while host B
/// increments it; meanwhile another process on A opens it for reading (`cat` under `flock -s`,
/// say), which sees B's newer value. When A's writer gets the lock it reads B's value and its
/// write works (the reader's open used to drop the writer's local copy under it: the writer read
/// the old value, and its write failed EBADF, or landed on a copy staged since: a lost increment;
/// found by scripts/lock-torture).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_readers_open_keeps_a_waiting_writers_copy() {
    let (a, b, ino_a, ino_b, _caches) = two_hosts_with(b"1\n").await;
    let fh = a.open(ino_a, libc::O_RDWR).await.unwrap();
    b.lock(ino_b, flock(2, LockMode::Exclusive, false))
        .await
        .unwrap();
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"2\n").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await; // past A's index TTL
    let rfh = a.open(ino_a, libc::O_RDONLY).await.unwrap();
    assert_eq!(&a.read(rfh, 0, 10).await.unwrap()[..], b"2\n");
    a.lock(ino_a, flock(fh, LockMode::Exclusive, false))
        .await
        .unwrap();
    assert_eq!(
        &a.read(fh, 0, 10).await.unwrap()[..],
        b"2\n",
        "the writer reads B's value"
    );
    a.write(fh, 0, b"3\n")
        .await
        .expect("the writer's copy is still there");
    a.release(fh).await.unwrap();
    a.release(rfh).await.unwrap();
    a.unlock_owner(ino_a, fh).await.unwrap();
    assert_eq!(read(&b, "f").await.unwrap(), b"3\n");
}

/// Host A opened the file for writing before B's last write; when A locks, its copy cannot be
/// brought up to date (the store fails the download): the lock is refused and given back,
/// rather than granted on the old copy (whose save would undo B's write), and A's handle keeps
/// working (it used to lose its copy: EBADF on the next write).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_whose_catch_up_fails_is_given_back() {
    let (faults, store) = retrying();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&store, ca.path());
    let b = host(&store, cb.path());
    write_file(&b, "f", b"one").await;
    let ino_a = a.lookup(ROOT, "f").await.unwrap().ino;
    let fh = a.open(ino_a, libc::O_RDWR).await.unwrap();
    write_file(&b, "f", b"one, two").await;
    faults.plan(
        remotedict::store::testing::Op::Get,
        remotedict::store::testing::When::Prefix("folder/f".into()),
        remotedict::store::testing::Fault::Status(500),
    );
    let locked = a
        .lock(
            ino_a,
            LockRequest::whole(fh, fh, LockMode::Exclusive, false, 0),
        )
        .await;
    faults.clear();
    assert!(locked.is_err(), "granted on a copy older than B's write");
    let ino_b = b.lookup(ROOT, "f").await.unwrap().ino;
    b.lock(
        ino_b,
        LockRequest::whole(9, 9, LockMode::Exclusive, false, 0),
    )
    .await
    .expect("A gave the lease back");
    b.unlock_owner(ino_b, 9).await.unwrap();
    a.write(fh, 0, b"ONE")
        .await
        .expect("A's handle still works");
}

/// The holder's path to the store hangs (every renewal waits for minutes): its lease counts as
/// lost at its deadline, the start of the last good acquire or renewal plus the duration less a
/// margin, before the server can give it to another host. It used to count as held until a
/// renewal attempt gave up, long after the server had let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_renewals_hang_is_lost_at_its_deadline() {
    let (faults, store) = retrying();
    let cache = tempfile::tempdir().unwrap();
    let a = host(&store, cache.path());
    write_file(&a, "f", b"x").await;
    let ino = a.lookup(ROOT, "f").await.unwrap().ino;
    a.lock(ino, LockRequest::whole(1, 1, LockMode::Exclusive, false, 0))
        .await
        .unwrap();
    let held = |status: Vec<u8>| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
        serde_json::from_value(v["leases_held"].clone()).unwrap()
    };
    assert_eq!(held(a.status_json().await.unwrap()), ["f"]);
    faults.plan(
        remotedict::store::testing::Op::RenewLease,
        remotedict::store::testing::When::Always,
        remotedict::store::testing::Fault::DelayBefore(Duration::from_secs(300)),
    );
    // The lease lasts 15 s on the server from the acquire on: held here for less than that.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(
        held(a.status_json().await.unwrap()).is_empty(),
        "still counted as held with no renewal for 14 s of a 15 s lease"
    );
    faults.clear();
}

/// Whether `owner` gets a non-blocking lock on `ino` within `limit`, trying every 100 ms.
async fn locks_within(fs: &Arc<Fs>, ino: u64, owner: u64, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if fs
            .lock(
                ino,
                LockRequest::whole(owner, owner, LockMode::Exclusive, false, 0),
            )
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Host A's path to the store hangs while host B's works: `(A over faults, B, faults)`.
fn two_hosts_one_cut_off() -> (Arc<FaultStore>, Arc<dyn BlobStore>, Arc<dyn BlobStore>) {
    let mem: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let backoff = Backoff {
        max_retries: 3,
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    let a: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(faults.clone(), backoff));
    let b: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(mem, backoff));
    (faults, a, b)
}

/// [`two_hosts_one_cut_off`] as hosts A and B, with `f` written by A: the faults of A's path,
/// the hosts, `f`'s inode on each, and their caches (to keep).
async fn cut_off_hosts_with_f() -> (
    Arc<FaultStore>,
    Arc<Fs>,
    Arc<Fs>,
    u64,
    u64,
    (tempfile::TempDir, tempfile::TempDir),
) {
    let (faults, store_a, store_b) = two_hosts_one_cut_off();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&store_a, ca.path());
    let b = host(&store_b, cb.path());
    write_file(&a, "f", b"x").await;
    let ino_a = a.lookup(ROOT, "f").await.unwrap().ino;
    let ino_b = b.lookup(ROOT, "f").await.unwrap().ino;
    (faults, a, b, ino_a, ino_b, (ca, cb))
}

/// `flock -n` while the store takes 8 s to answer the lease request (granted at once, the answer
/// late): the request is answered
/// EIO within the bound (it used to wait for the store, minutes with retries, stuck in the
/// kernel where not even `timeout` could end it), and the lease granted after all, with nobody
/// left to hold it, is given back: another host gets the lock soon after, not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nonblocking_lock_answers_when_the_store_does_not() {
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    faults.plan(
        remotedict::store::testing::Op::AcquireLease,
        remotedict::store::testing::When::Always,
        remotedict::store::testing::Fault::DelayAfter(Duration::from_secs(8)),
    );
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        a.lock(
            ino_a,
            LockRequest::whole(1, 1, LockMode::Exclusive, false, 0),
        ),
    )
    .await
    .expect("LOCK_NB answers");
    let took = started.elapsed();
    let err = answer.expect_err("no lock was taken in time");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(took < Duration::from_secs(7), "answered after {took:?}");
    // The late grant goes back: B gets the lock once A's acquire has landed and been undone.
    assert!(
        locks_within(&b, ino_b, 2, Duration::from_secs(10)).await,
        "the lease granted after the request was given up was kept"
    );
    assert!(started.elapsed() >= Duration::from_secs(8));
    faults.clear();
}

/// A blocking `flock` waits on a store that does not answer; its process is killed: the wait
/// ends at once (EINTR) instead of when the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_lock_on_a_hung_store_ends_when_its_process_does() {
    let (faults, store_a, _) = two_hosts_one_cut_off();
    let cache = tempfile::tempdir().unwrap();
    let a = host(&store_a, cache.path());
    write_file(&a, "f", b"x").await;
    let ino = a.lookup(ROOT, "f").await.unwrap().ino;
    faults.plan(
        remotedict::store::testing::Op::AcquireLease,
        remotedict::store::testing::When::Always,
        remotedict::store::testing::Fault::DelayBefore(Duration::from_secs(600)),
    );
    let mut child = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = child.id();
    let a2 = a.clone();
    let waiter = tokio::spawn(async move {
        a2.lock(
            ino,
            LockRequest::whole(1, 1, LockMode::Exclusive, true, pid),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "the lock cannot be granted yet");
    child.kill().unwrap();
    child.wait().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the wait ends with its process")
        .unwrap();
    assert!(
        matches!(r, Err(remotedict::fs::FsError::Interrupted)),
        "{r:?}"
    );
    faults.clear();
}

/// Unlocking while the store does not answer the lease release: the unlock answers within a
/// bound (the lock is dropped here at once) and the release goes on behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unlock_answers_when_the_store_does_not() {
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    a.lock(
        ino_a,
        LockRequest::whole(1, 1, LockMode::Exclusive, false, 0),
    )
    .await
    .unwrap();
    faults.plan(
        remotedict::store::testing::Op::ReleaseLease,
        remotedict::store::testing::When::Always,
        remotedict::store::testing::Fault::DelayBefore(Duration::from_secs(10)),
    );
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), a.unlock_owner(ino_a, 1))
        .await
        .expect("unlock answers");
    assert!(r.unwrap(), "the lock was held");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The release lands after the delay: B gets the lock then.
    assert!(
        locks_within(&b, ino_b, 2, Duration::from_secs(15)).await,
        "the release that went on in the background never landed"
    );
    faults.clear();
}

/// Two hosts over one store, with `f` holding `data`: the hosts, `f`'s inode on each, and their
/// caches (to keep).
async fn two_hosts_with(
    data: &[u8],
) -> (
    Arc<Fs>,
    Arc<Fs>,
    u64,
    u64,
    (tempfile::TempDir, tempfile::TempDir),
) {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (host(&store, ca.path()), host(&store, cb.path()));
    write_file(&a, "f", data).await;
    let ino = a.lookup(ROOT, "f").await.unwrap().ino;
    let ino_b = b.lookup(ROOT, "f").await.unwrap().ino;
    (a, b, ino, ino_b, (ca, cb))
}

fn range(owner: u64, start: u64, end: u64, mode: LockMode) -> LockRequest {
    LockRequest {
        kind: LockKind::Record,
        owner,
        handle: owner,
        start,
        end,
        mode,
        wait: false,
        pid: owner as u32,
    }
}

/// Record locks (`fcntl`, `lockf`) on one host keep their byte ranges: disjoint ranges of two
/// owners coexist, an overlapping one waits, unlocking part of a range keeps the rest, and a
/// non-blocking conversion that fails keeps the lock held (it used to drop it, as a waiting
/// flock conversion does, so the owner went on unprotected). Another host is kept out of the
/// whole file while any range is held here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_locks_keep_their_ranges_on_a_host_and_the_whole_file_elsewhere() {
    let (a, b, ino, ino_b, _caches) = two_hosts_with(b"0123456789abcdefghij").await;
    use LockMode::{Exclusive, Shared};
    a.lock(ino, range(1, 0, 9, Exclusive)).await.unwrap();
    a.lock(ino, range(2, 10, 19, Exclusive)).await.unwrap();
    assert!(a.lock(ino, range(3, 5, 12, Exclusive)).await.is_err());
    a.unlock(ino, LockKind::Record, 1, 0, 4).await.unwrap();
    assert!(a.lock(ino, range(3, 0, 4, Exclusive)).await.is_ok());
    assert!(
        a.lock(ino, range(4, 5, 5, Shared)).await.is_err(),
        "5..9 is still held"
    );
    let found = a.test_lock(ino, &range(4, 7, 7, Shared)).await.unwrap();
    assert_eq!(found.map(|(s, pid)| (s.start, s.end, pid)), Some((5, 9, 1)));
    let elsewhere = b.test_lock(ino_b, &range(9, 0, 0, Shared)).await.unwrap();
    assert!(elsewhere.is_some(), "F_GETLK on another host saw no lock");
    assert!(b.lock(ino_b, range(9, 30, 40, Exclusive)).await.is_err());
    for owner in [1, 2, 3] {
        a.unlock_owner(ino, owner).await.unwrap();
    }
    assert!(b
        .test_lock(ino_b, &range(9, 0, 0, Shared))
        .await
        .unwrap()
        .is_none());

    // A failed non-blocking conversion keeps the shared lock.
    a.lock(ino, range(5, 0, u64::MAX >> 1, Shared))
        .await
        .unwrap();
    a.lock(ino, range(6, 0, u64::MAX >> 1, Shared))
        .await
        .unwrap();
    assert!(a
        .lock(ino, range(5, 0, u64::MAX >> 1, Exclusive))
        .await
        .is_err());
    a.unlock_owner(ino, 6).await.unwrap();
    assert!(
        a.lock(ino, range(7, 0, 0, Exclusive)).await.is_err(),
        "the owner whose conversion failed lost its shared lock"
    );
    assert!(!locks_within(&b, ino_b, 8, Duration::from_millis(300)).await);
    a.unlock_owner(ino, 5).await.unwrap();
    assert!(locks_within(&b, ino_b, 8, Duration::from_secs(5)).await);
}

/// The kernel's lock owner of a flock is the address of its open file description, which a new
/// open can reuse before the old one's release arrives: that late release drops only what was
/// locked through the released handle, not the new open's lock (another host stays out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_release_of_a_reused_lock_owner_keeps_the_new_lock() {
    let (a, b, ino, ino_b, _caches) = two_hosts_with(b"x").await;
    let owner = 0xdead_beef;
    a.lock(
        ino,
        LockRequest::whole(owner, 1, LockMode::Exclusive, false, 0),
    )
    .await
    .unwrap();
    // Handle 1 was closed; a new open (handle 2) got the same owner and locks.
    a.lock(
        ino,
        LockRequest::whole(owner, 2, LockMode::Exclusive, false, 0),
    )
    .await
    .unwrap();
    a.unlock_handle(ino, 1).await.unwrap();
    assert!(
        !locks_within(&b, ino_b, 9, Duration::from_millis(300)).await,
        "the late release of the old handle dropped the new open's lock"
    );
    a.unlock_handle(ino, 2).await.unwrap();
    assert!(locks_within(&b, ino_b, 9, Duration::from_secs(5)).await);
}

/// flock and record locks are independent on a host, as on Linux (a flock holder's child that
/// takes a record lock on the same file does not wait forever for its parent), but share the
/// lease across hosts, so another host gets neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flock_and_record_locks_are_independent_here_and_exclusive_elsewhere() {
    let (a, b, ino, ino_b, _caches) = two_hosts_with(b"x").await;
    a.lock(ino, LockRequest::whole(1, 1, LockMode::Exclusive, false, 0))
        .await
        .unwrap();
    a.lock(ino, range(2, 0, 9, LockMode::Exclusive))
        .await
        .expect("a record lock waited for a flock");
    assert!(b
        .lock(ino_b, range(3, 0, 9, LockMode::Shared))
        .await
        .is_err());
    assert!(!locks_within(&b, ino_b, 4, Duration::from_millis(300)).await);
    a.unlock_owner(ino, 1).await.unwrap();
    assert!(!locks_within(&b, ino_b, 4, Duration::from_millis(300)).await);
    a.unlock_owner(ino, 2).await.unwrap();
    assert!(locks_within(&b, ino_b, 4, Duration::from_secs(5)).await);
}

/// Two processes each hold a record lock and each wait for the other's: the second wait fails
/// EDEADLK at once (POSIX) instead of both waiting forever; the first is served once the other
/// lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_lock_wait_that_would_deadlock_fails() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let cache = tempfile::tempdir().unwrap();
    let a = host(&store, cache.path());
    write_file(&a, "f", b"0123456789abcdefghij").await;
    let ino = a.lookup(ROOT, "f").await.unwrap().ino;
    a.lock(ino, range(1, 0, 9, LockMode::Exclusive))
        .await
        .unwrap();
    a.lock(ino, range(2, 10, 19, LockMode::Exclusive))
        .await
        .unwrap();
    let first = {
        let a = a.clone();
        tokio::spawn(async move {
            let req = LockRequest {
                wait: true,
                ..range(1, 10, 19, LockMode::Exclusive)
            };
            a.lock(ino, req).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = LockRequest {
        wait: true,
        ..range(2, 0, 9, LockMode::Exclusive)
    };
    let r = tokio::time::timeout(Duration::from_secs(5), a.lock(ino, second))
        .await
        .expect("a deadlocked wait did not end");
    assert!(matches!(r, Err(remotedict::fs::FsError::Deadlock)), "{r:?}");
    a.unlock_owner(ino, 2).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first waiter was not served")
        .unwrap()
        .unwrap();
}

/// Host A takes and drops the lock in a tight loop for 8 s while host B waits for it: B is
/// served while A's loop still runs (it used to wait until A stopped: A got the lease back
/// before B's next poll, every time), and A's loop goes on after B's turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_locking_in_a_loop_does_not_starve_a_waiting_host() {
    let (a, b, ino, ino_b, _caches) = two_hosts_with(b"x").await;
    let looping = {
        let a = a.clone();
        tokio::spawn(async move {
            let end = std::time::Instant::now() + Duration::from_secs(8);
            let mut rounds = 0u32;
            while std::time::Instant::now() < end {
                a.lock(ino, LockRequest::whole(1, 1, LockMode::Exclusive, true, 0))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                a.unlock_owner(ino, 1).await.unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(6),
        b.lock(
            ino_b,
            LockRequest::whole(2, 2, LockMode::Exclusive, true, 0),
        ),
    )
    .await
    .expect("the waiting host was not served while the other one locked in a loop")
    .unwrap();
    let waited = started.elapsed();
    b.unlock_owner(ino_b, 2).await.unwrap();
    let rounds = looping.await.unwrap();
    assert!(rounds > 10, "A's loop stalled: {rounds} rounds");
    eprintln!("B waited {waited:?}; A locked {rounds} times in 8 s");
}

/// Three hosts over one in-memory store (`f` written by the first): the store, the hosts, `f`'s
/// inode on each, and their caches (to keep).
async fn three_hosts_with_f() -> (
    Arc<MemStore>,
    [Arc<Fs>; 3],
    [u64; 3],
    Vec<tempfile::TempDir>,
) {
    let mem = Arc::new(MemStore::new());
    let store: Arc<dyn BlobStore> = mem.clone();
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hosts = [0, 1, 2].map(|i| host(&store, caches[i].path()));
    write_file(&hosts[0], "f", b"x").await;
    let mut inos = [0; 3];
    for (i, h) in hosts.iter().enumerate() {
        inos[i] = h.lookup(ROOT, "f").await.unwrap().ino;
    }
    (mem, hosts, inos, caches)
}

/// Host A locks `f` exclusively through open file `holder` (owner 1); A's lease renewals then
/// hang until the lease runs out, and host B takes the lock (owner 2): A's holder lost its lock
/// without letting go.
async fn a_loses_its_lock_to_b(
    faults: &FaultStore,
    a: &Arc<Fs>,
    b: &Arc<Fs>,
    (ino_a, ino_b): (u64, u64),
    holder: u64,
) {
    use remotedict::store::testing::{Fault, Op, When};
    a.lock(
        ino_a,
        LockRequest::whole(1, holder, LockMode::Exclusive, false, 0),
    )
    .await
    .unwrap();
    faults.plan(
        Op::RenewLease,
        When::Always,
        Fault::DelayBefore(Duration::from_secs(300)),
    );
    tokio::time::sleep(Duration::from_millis(15_500)).await;
    b.lock(ino_b, flock(2, LockMode::Exclusive, false))
        .await
        .expect("A's lease ran out");
}

fn flock(owner: u64, mode: LockMode, wait: bool) -> LockRequest {
    LockRequest::whole(owner, owner, mode, wait, 0)
}

/// `LOCK_SH` is held on two hosts at once, and `LOCK_EX` on a third host waits for both (it
/// used to be refused on the second host: every lock across hosts was exclusive). `F_GETLK` on
/// the third host names the shared lock; once both readers let go the writer holds the file and
/// keeps new readers out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_locks_are_held_on_several_hosts_at_once() {
    let (_, [a, b, c], [ia, ib, ic], _caches) = three_hosts_with_f().await;
    a.lock(ia, flock(1, LockMode::Shared, false)).await.unwrap();
    b.lock(ib, flock(2, LockMode::Shared, false))
        .await
        .expect("a second host can hold the file shared too");
    let r = c.lock(ic, flock(3, LockMode::Exclusive, false)).await;
    assert!(matches!(r, Err(FsError::WouldBlock)), "{r:?}");
    let (seg, pid) = c
        .test_lock(ic, &flock(3, LockMode::Exclusive, false))
        .await
        .unwrap()
        .expect("F_GETLK names the readers elsewhere");
    assert_eq!((seg.mode, pid), (LockMode::Shared, 0));
    assert!(c
        .test_lock(ic, &flock(3, LockMode::Shared, false))
        .await
        .unwrap()
        .is_none());
    a.unlock_owner(ia, 1).await.unwrap();
    let r = c.lock(ic, flock(3, LockMode::Exclusive, false)).await;
    assert!(
        matches!(r, Err(FsError::WouldBlock)),
        "one reader left: {r:?}"
    );
    b.unlock_owner(ib, 2).await.unwrap();
    c.lock(ic, flock(3, LockMode::Exclusive, false))
        .await
        .expect("no reader left: the writer gets it");
    for (h, i) in [(&a, ia), (&b, ib)] {
        let r = h.lock(i, flock(9, LockMode::Shared, false)).await;
        assert!(matches!(r, Err(FsError::WouldBlock)), "{r:?}");
    }
    c.unlock_owner(ic, 3).await.unwrap();
    a.lock(ia, flock(1, LockMode::Shared, false)).await.unwrap();
}

/// Two hosts keep the file shared without a gap (each takes it again before the other lets
/// go, and two owners on one host do the same) while a third waits for `LOCK_EX`: the writer is
/// served within seconds, and no reader holds while it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_writer_is_not_starved_by_readers() {
    let (_, [a, b, c], [ia, ib, ic], _caches) = three_hosts_with_f().await;
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overlaps = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let reader = |h: Arc<Fs>, ino: u64, owner: u64, offset: u64| {
        let (writing, overlaps) = (writing.clone(), overlaps.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(offset)).await;
            let end = std::time::Instant::now() + Duration::from_secs(8);
            while std::time::Instant::now() < end {
                h.lock(ino, flock(owner, LockMode::Shared, true))
                    .await
                    .unwrap();
                if writing.load(std::sync::atomic::Ordering::SeqCst) {
                    overlaps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
                h.unlock_owner(ino, owner).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Two readers on each of two hosts, out of step: the file is never without a reader.
    let readers = [
        reader(a.clone(), ia, 1, 0),
        reader(a.clone(), ia, 2, 30),
        reader(b.clone(), ib, 3, 15),
        reader(b.clone(), ib, 4, 45),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(6),
        c.lock(ic, flock(5, LockMode::Exclusive, true)),
    )
    .await
    .expect("the writer was starved by readers taking turns")
    .unwrap();
    writing.store(true, std::sync::atomic::Ordering::SeqCst);
    let waited = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    c.unlock_owner(ic, 5).await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(overlaps.load(std::sync::atomic::Ordering::SeqCst), 0);
    eprintln!("the writer waited {waited:?}");
}

/// A host holding the file shared crashes (its slot's lease is no longer renewed): a writer
/// elsewhere gets the lock once that lease has run out, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_holder_that_is_gone_stops_blocking_after_its_lease() {
    let (mem, [a, b, _], [ia, ib, _], _caches) = three_hosts_with_f().await;
    a.lock(ia, flock(1, LockMode::Shared, false)).await.unwrap();
    drop(a); // the daemon dies: nothing is given back, nothing renewed
    let r = b.lock(ib, flock(2, LockMode::Exclusive, false)).await;
    assert!(matches!(r, Err(FsError::WouldBlock)), "{r:?}");
    mem.advance(Duration::from_secs(61));
    b.lock(ib, flock(2, LockMode::Exclusive, false))
        .await
        .expect("the dead reader's slot ran out");
}

/// Every answer of the shared-lock protocol lost once after the store acted (the slot's put,
/// its lease, the file's head, the slot's delete): retries recognise their own success, the
/// lock is held and given back, and a writer gets the file afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_locks_survive_lost_answers() {
    use remotedict::store::testing::{Fault, Op, When};
    let (faults, store) = retrying();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (host(&store, ca.path()), host(&store, cb.path()));
    write_file(&a, "f", b"x").await;
    let (ia, ib) = (
        a.lookup(ROOT, "f").await.unwrap().ino,
        b.lookup(ROOT, "f").await.unwrap().ino,
    );
    let slots = "folder/.remotedict/readers/";
    for op in [Op::Put, Op::AcquireLease, Op::Delete] {
        faults.plan(op, When::NthWithPrefix(slots.into(), 1), Fault::LoseAnswer);
    }
    faults.plan(
        Op::Head,
        When::NthWithPrefix("folder/f".into(), 1),
        Fault::LoseAnswer,
    );
    a.lock(ia, flock(1, LockMode::Shared, false)).await.unwrap();
    b.lock(ib, flock(2, LockMode::Shared, false)).await.unwrap();
    a.unlock_owner(ia, 1).await.unwrap();
    b.unlock_owner(ib, 2).await.unwrap();
    a.lock(ia, flock(1, LockMode::Exclusive, false))
        .await
        .expect("no slot was left behind");
    let left = remotedict::store::list_all(faults.inner().as_ref(), slots)
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

/// Host A writes under its lock, then its path to the store hangs: its lease is lost, host B
/// takes the lock and writes. When A's path works again and another process on A locks the
/// file, A's unsaved changes made under the lost lock are dropped (B's value stays), and the
/// handle that made them fails from then on (it used to save them under the new lease, undoing
/// B's acknowledged write; found by scripts/lock-torture).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_made_under_a_lost_lock_never_land_under_a_later_one() {
    use remotedict::store::testing::{Fault, Op, When};
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    a.lock(ino_a, flock(1, LockMode::Exclusive, false))
        .await
        .unwrap();
    let fh = a.open(ino_a, libc::O_RDWR).await.unwrap();
    a.write(fh, 0, b"A").await.unwrap();
    faults.plan(
        Op::RenewLease,
        When::Always,
        Fault::DelayBefore(Duration::from_secs(300)),
    );
    faults.plan(
        Op::Put,
        When::Always,
        Fault::DelayBefore(Duration::from_secs(300)),
    );
    // Past the server's 15 s: the lease is free for B.
    tokio::time::sleep(Duration::from_millis(15_500)).await;
    b.lock(ino_b, flock(2, LockMode::Exclusive, false))
        .await
        .expect("A's lease ran out");
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"B").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 2).await.unwrap();
    faults.clear();
    // A's first holder still holds its (lost) lock here: another process on A waits for it to
    // let go, as it would for any holder on the host.
    let r = a.lock(ino_a, flock(3, LockMode::Exclusive, false)).await;
    assert!(
        r.is_err(),
        "a lock granted beside a holder that can still act: {r:?}"
    );
    let r = a.write(fh, 1, b"A").await;
    assert!(matches!(r, Err(FsError::LockLost)), "{r:?}");
    let r = a.flush(fh).await;
    assert!(matches!(r, Err(FsError::LockLost)), "{r:?}");
    let _ = a.release(fh).await;
    a.unlock_owner(ino_a, 1).await.unwrap();
    a.lock(ino_a, flock(3, LockMode::Exclusive, false))
        .await
        .expect("A locks anew once its first holder let go");
    a.unlock_owner(ino_a, 3).await.unwrap();
    assert_eq!(read(&b, "f").await.unwrap(), b"B", "B's write was undone");
    assert_eq!(read(&a, "f").await.unwrap(), b"B");
}

/// A process on host A takes a shared lock (its host catches up with B's last write, slowly:
/// the store takes a second to answer) while another process on A, which opened the file
/// before B wrote, asks for a shared lock too: it is granted only once A has caught up, and
/// reads B's value (it used to be granted under the new lease at once and read the old value;
/// found by scripts/lock-torture).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_granted_beside_a_new_holder_waits_for_its_catch_up() {
    use remotedict::store::testing::{Fault, Op, When};
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    let early = a.open(ino_a, libc::O_RDONLY).await.unwrap();
    assert_eq!(&a.read(early, 0, 10).await.unwrap()[..], b"x");
    b.lock(ino_b, flock(9, LockMode::Exclusive, false))
        .await
        .unwrap();
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"y").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 9).await.unwrap();
    // The first lock's catch-up (its third look at the blob) waits a second for the store.
    faults.plan(
        Op::Head,
        When::NthWithPrefix("folder/f".into(), 3),
        Fault::DelayBefore(Duration::from_secs(1)),
    );
    let first = {
        let a = a.clone();
        tokio::spawn(async move { a.lock(ino_a, flock(1, LockMode::Shared, false)).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.lock(
        ino_a,
        LockRequest::whole(2, early, LockMode::Shared, false, 0),
    )
    .await
    .unwrap();
    assert_eq!(
        &a.read(early, 0, 10).await.unwrap()[..],
        b"y",
        "a lock skipped the catch-up"
    );
    first.await.unwrap().unwrap();
}

/// Host A holds a record lock, and its path to the store then hangs: a flock on the same file
/// (independent of record locks on one host) is granted at once under the lease A holds, while
/// that lease certainly holds, and refused (EIO within the LOCK_NB bound) once it may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_host_grants_under_its_live_lease_until_its_deadline() {
    use remotedict::store::testing::{Fault, Op, When};
    let (faults, a, _b, ino_a, _ino_b, _caches) = cut_off_hosts_with_f().await;
    a.lock(ino_a, range(1, 0, 0, LockMode::Exclusive))
        .await
        .unwrap();
    for op in Op::ALL {
        faults.plan(
            op,
            When::Always,
            Fault::DelayBefore(Duration::from_secs(300)),
        );
    }
    let started = std::time::Instant::now();
    let mut last_grant = None;
    while started.elapsed() < Duration::from_secs(16) {
        let t = std::time::Instant::now();
        let r = a.lock(ino_a, flock(2, LockMode::Exclusive, false)).await;
        if r.is_ok() {
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "a grant waited for the store"
            );
            last_grant = Some(started.elapsed());
            a.unlock(ino_a, LockKind::Flock, 2, 0, remotedict::fs::WHOLE)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last = last_grant.expect("no grant under the live lease");
    assert!(
        last > Duration::from_secs(8),
        "stopped granting after {last:?}"
    );
    assert!(
        last < Duration::from_secs(13),
        "granted {last:?} into a 15 s lease"
    );
    faults.clear();
}

/// On host A one process holds `g` shared and another holds `f` exclusive, then renames `f`
/// onto `g`: the exclusive lock keeps holding on `g` across hosts (host B can neither lock `g`
/// shared nor write it). The move used to put the exclusive lock under `g`'s reader slot and give
/// back the lease it took on `g`: B got `LOCK_SH` beside A's `LOCK_EX`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exclusive_lock_moved_onto_a_name_held_shared_stays_exclusive() {
    let (a, b, ino_f, _, _caches) = two_hosts_with(b"f").await;
    write_file(&a, "g", b"g").await;
    let ino_g = a.lookup(ROOT, "g").await.unwrap().ino;
    a.lock(ino_g, flock(1, LockMode::Shared, false))
        .await
        .unwrap();
    a.lock(ino_f, flock(2, LockMode::Exclusive, false))
        .await
        .unwrap();
    a.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await; // past B's index TTL
    let ino_b = b.lookup(ROOT, "g").await.unwrap().ino;
    let r = b.lock(ino_b, flock(3, LockMode::Shared, false)).await;
    assert!(
        matches!(r, Err(FsError::WouldBlock)),
        "B locked g beside A's LOCK_EX: {r:?}"
    );
    let fh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(fh, 0, b"B").await.unwrap();
    assert!(
        b.flush(fh).await.is_err(),
        "B's write went through A's lock"
    );
    let _ = b.release(fh).await;
    assert_eq!(read(&a, "g").await.unwrap(), b"f");
}

/// Like `changes_made_under_a_lost_lock_never_land_under_a_later_one`, but A renames the file
/// after its lease was lost and B wrote: A's stale changes do not follow the file under the
/// lease the rename takes on the new name (they used to be rebound to it and saved over B's
/// value).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_does_not_carry_changes_made_under_a_lost_lock() {
    use remotedict::store::testing::{Fault, Op, When};
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    a.lock(ino_a, flock(1, LockMode::Exclusive, false))
        .await
        .unwrap();
    let fh = a.open(ino_a, libc::O_RDWR).await.unwrap();
    a.write(fh, 0, b"A").await.unwrap();
    faults.plan(
        Op::RenewLease,
        When::Always,
        Fault::DelayBefore(Duration::from_secs(300)),
    );
    faults.plan(
        Op::Put,
        When::Always,
        Fault::DelayBefore(Duration::from_secs(300)),
    );
    tokio::time::sleep(Duration::from_millis(15_500)).await;
    b.lock(ino_b, flock(2, LockMode::Exclusive, false))
        .await
        .unwrap();
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"B").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 2).await.unwrap();
    faults.clear();
    let _ = a.rename(ROOT, "f", ROOT, "g", false).await;
    assert!(a.flush(fh).await.is_err(), "A's stale changes were saved");
    let _ = a.release(fh).await;
    for name in ["f", "g"] {
        if let Ok(v) = read(&b, name).await {
            assert_eq!(v, b"B", "{name} holds A's stale change");
        }
    }
}

/// A grant whose lease runs out before it is answered (the host was paused, or its catch-up
/// stalled on the store past the lease's deadline) is not given: host B, which took the lock
/// once A's lease ran out, must not share it with A. Seen in lock torture: a daemon stopped
/// between taking the lease and answering granted `flock` on resuming, beside another host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_whose_lease_ran_out_before_its_answer_is_not_given() {
    use remotedict::store::testing::{Fault, Op, When};
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    let blob_f = |n: &str| n == "folder/f";
    let planner = faults.clone();
    faults.plan(
        Op::AcquireLease,
        When::From(faults.calls(Op::AcquireLease) + 1),
        Fault::hook(move || async move {
            // Once A holds the lease: its catch-up's look at the file stalls past the lease's
            // deadline, and no renewal gets through.
            planner.clear();
            planner.plan(
                Op::Head,
                When::Matching(Arc::new(blob_f)),
                Fault::DelayBefore(Duration::from_secs(18)),
            );
            planner.plan(
                Op::RenewLease,
                When::Always,
                Fault::DelayBefore(Duration::from_secs(300)),
            );
        }),
    );
    let a2 = a.clone();
    let waiting =
        tokio::spawn(async move { a2.lock(ino_a, flock(1, LockMode::Exclusive, true)).await });
    tokio::time::sleep(Duration::from_secs(16)).await;
    b.lock(ino_b, flock(2, LockMode::Exclusive, false))
        .await
        .expect("B did not get the lock once A's lease ran out");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !waiting.is_finished(),
        "A was granted the lock B holds: {:?}",
        waiting.await
    );
    faults.clear();
    b.unlock(ino_b, LockKind::Flock, 2, 0, remotedict::fs::WHOLE)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("A never got the lock B let go")
        .unwrap()
        .unwrap();
}

/// Host A's holder writes under its lock, but its write reaches the daemon only after the lease
/// ran out, B took the lock, and another process on A asked for it (A was paused: SIGSTOP, a
/// suspended VM): the write is refused (EIO), and a process on A that opened the file before
/// and locks it after B reads B's value, not A's late bytes (the write used to be taken as one
/// made without a lock, kept in A's copy through its failed save, read by the next holder there
/// and saved under its new lease, undoing B's write; found by scripts/lock-torture).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_arriving_after_its_lock_was_lost_is_refused() {
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    let later = a.open(ino_a, libc::O_RDWR).await.unwrap();
    let first = a.open(ino_a, libc::O_RDWR).await.unwrap();
    a_loses_its_lock_to_b(&faults, &a, &b, (ino_a, ino_b), first).await;
    // Another process on A asks meanwhile (and is refused: B holds the lock).
    let r = a
        .lock(
            ino_a,
            LockRequest::whole(3, later, LockMode::Exclusive, false, 0),
        )
        .await;
    assert!(r.is_err(), "A granted a lock B holds: {r:?}");
    // The holder's write arrives only now (A was paused before it reached the daemon).
    let r = a.write(first, 0, b"A").await;
    assert!(r.is_err(), "a write under a lost lock was taken: {r:?}");
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"B").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 2).await.unwrap();
    faults.clear();
    let _ = a.flush(first).await;
    let _ = a.release(first).await;
    a.unlock_owner(ino_a, 1).await.unwrap();
    a.lock(
        ino_a,
        LockRequest::whole(3, later, LockMode::Exclusive, false, 0),
    )
    .await
    .expect("A locks anew");
    let seen = a.read(later, 0, 16).await.unwrap();
    assert_eq!(
        &seen[..],
        b"B",
        "the next holder on A read A's refused bytes"
    );
    a.write(later, 0, b"C").await.unwrap();
    a.release(later).await.unwrap();
    a.unlock_owner(ino_a, 3).await.unwrap();
    assert_eq!(read(&b, "f").await.unwrap(), b"C");
}

/// Host B read the counter (its copy of version 1 stays in its cache); host A increments it
/// under the lock, but the index commit listing A's write fails, so A lets go with the index
/// still listing version 1. When B takes the lock, it reads A's value, not its cached copy of
/// the listed one (it used to serve the copy: a stale read and then a lost increment, found by
/// scripts/lock-torture on Azurite when a delayed proxy made an index commit fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_holder_reads_the_last_write_even_when_its_listing_failed() {
    let (faults, store) = retrying();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&store, ca.path());
    let b = host(&store, cb.path());
    write_file(&a, "n", b"1\n").await;
    assert_eq!(read(&b, "n").await.unwrap(), b"1\n");
    let ino_a = a.lookup(ROOT, "n").await.unwrap().ino;
    a.lock(ino_a, flock(1, LockMode::Exclusive, false))
        .await
        .unwrap();
    let index_writes =
        || remotedict::store::testing::When::Prefix("folder/.remotedict/index".into());
    for op in [
        remotedict::store::testing::Op::Put,
        remotedict::store::testing::Op::Append,
        remotedict::store::testing::Op::CreateAppend,
    ] {
        faults.plan(
            op,
            index_writes(),
            remotedict::store::testing::Fault::Status(500),
        );
    }
    let fh = a.open(ino_a, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    a.write(fh, 0, b"2\n").await.unwrap();
    a.release(fh).await.unwrap();
    let _ = a.unlock_owner(ino_a, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // past B's index TTL
    let ino_b = b.lookup(ROOT, "n").await.unwrap().ino;
    for mode in [LockMode::Shared, LockMode::Exclusive] {
        b.lock(ino_b, flock(2, mode, false))
            .await
            .expect("A let go");
        let rfh = b.open(ino_b, libc::O_RDONLY).await.unwrap();
        assert_eq!(
            &b.read(rfh, 0, 10).await.unwrap()[..],
            b"2\n",
            "the new holder ({mode:?}) reads what the last one wrote"
        );
        b.release(rfh).await.unwrap();
        b.unlock_owner(ino_b, 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faults.clear();
}

/// `flock f sh -c 'n=$(cat f); echo $((n+1)) | dd of=f'` on host A, cut off past its lease: the
/// holder's child `dd` opens `f` with `O_TRUNC` only once A's lock table has dropped the lease
/// (another request asked meanwhile), with no copy of `f` staged yet. The truncation is refused,
/// like every write while that holder has not let go, and the next holder on A reads B's value.
/// (It used to stage an empty copy bound to no lease; the next lock on A adopted it as changes
/// made before the lock, read an empty counter and saved its increment of it: the counter went
/// from 131 back to 1, found by scripts/lock-torture.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncating_open_by_a_lost_holders_process_is_refused() {
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    // flock(1) opens read-only and locks; another process waits with its own read-only open.
    let holder = a.open(ino_a, libc::O_RDONLY).await.unwrap();
    let other = a.open(ino_a, libc::O_RDONLY).await.unwrap();
    a_loses_its_lock_to_b(&faults, &a, &b, (ino_a, ino_b), holder).await;
    let r = a
        .lock(
            ino_a,
            LockRequest::whole(3, other, LockMode::Exclusive, false, 0),
        )
        .await;
    assert!(r.is_err(), "A granted a lock B holds: {r:?}");
    // The holder's `dd` arrives only now.
    let r = a.open(ino_a, libc::O_WRONLY | libc::O_TRUNC).await;
    assert!(
        matches!(r, Err(FsError::LockLost)),
        "a truncating open under a lost lock was taken: {r:?}"
    );
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"B").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 2).await.unwrap();
    faults.clear();
    // The holder lets go (its command failed); then a process on A locks and increments.
    a.unlock_handle(ino_a, holder).await.unwrap();
    a.release(holder).await.unwrap();
    let next = a.open(ino_a, libc::O_RDWR).await.unwrap();
    a.lock(
        ino_a,
        LockRequest::whole(4, next, LockMode::Exclusive, false, 0),
    )
    .await
    .expect("A locks anew");
    let seen = a.read(next, 0, 16).await.unwrap();
    assert_eq!(
        &seen[..],
        b"B",
        "the next holder on A did not read B's value"
    );
    a.write(next, 0, b"C").await.unwrap();
    a.release(next).await.unwrap();
    a.unlock_owner(ino_a, 4).await.unwrap();
    a.release(other).await.unwrap();
    assert_eq!(read(&b, "f").await.unwrap(), b"C");
}

/// `flock f sh -c 'n=$(cat f); echo $((n+1)) > f.tmp; mv f.tmp f'` on host A, cut off past its
/// lease while host B increments: A's `mv` (and an `rm f`) reaching the daemon once A's lock
/// table has dropped the lost lease are refused, and B's value stays. (They used to land: the
/// rename copied A's stale increment over B's newer value.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_or_unlink_by_a_lost_holders_process_is_refused() {
    let (faults, a, b, ino_a, ino_b, _caches) = cut_off_hosts_with_f().await;
    let holder = a.open(ino_a, libc::O_RDONLY).await.unwrap();
    let other = a.open(ino_a, libc::O_RDONLY).await.unwrap();
    // The holder's child writes its increment beside the file, under the lock.
    write_file(&a, "f.tmp", b"A").await;
    a_loses_its_lock_to_b(&faults, &a, &b, (ino_a, ino_b), holder).await;
    let bfh = b.open(ino_b, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    b.write(bfh, 0, b"B").await.unwrap();
    b.release(bfh).await.unwrap();
    b.unlock_owner(ino_b, 2).await.unwrap();
    faults.clear();
    // Another process on A asks for the lock: A's table drops the lost lease.
    let r = a
        .lock(
            ino_a,
            LockRequest::whole(3, other, LockMode::Exclusive, false, 0),
        )
        .await;
    assert!(r.is_err(), "granted beside a lost holder: {r:?}");
    // Only now does the holder's `mv f.tmp f` arrive, and an `rm f`.
    let r = a.rename(ROOT, "f.tmp", ROOT, "f", false).await;
    assert!(
        matches!(r, Err(FsError::LockLost)),
        "a rename onto a name under a lost lock was taken: {r:?}"
    );
    let r = a.unlink(ROOT, "f").await;
    assert!(
        matches!(r, Err(FsError::LockLost)),
        "an unlink of a name under a lost lock was taken: {r:?}"
    );
    assert_eq!(read(&b, "f").await.unwrap(), b"B");
    // Once the holder has let go, the name is A's processes' again.
    a.unlock_handle(ino_a, holder).await.unwrap();
    a.release(holder).await.unwrap();
    a.release(other).await.unwrap();
    a.rename(ROOT, "f.tmp", ROOT, "f", false)
        .await
        .expect("a rename after the holder let go");
    // (Listed for every host once A's index commit is in, and B's copy of the index is older
    // than its TTL: 1 ms here, which MemStore can be faster than.)
    a.sync_index().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(read(&b, "f").await.unwrap(), b"A");
}

/// A lock taken with a duration (`setfattr -n user.remotedict.lock -v 15`) simply ends when its
/// lease runs out: it leaves nothing behind that fences the file on its host. (It used to count
/// as a lost lock whose holder may still act: every later flock on the host waited forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_with_a_duration_that_ran_out_leaves_no_fence() {
    let (_faults, a, _b, ino_a, _ino_b, _caches) = cut_off_hosts_with_f().await;
    a.setxattr(ino_a, "user.remotedict.lock", b"15,nowait", 0, 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(15_500)).await;
    let fh = a.open(ino_a, libc::O_RDWR).await.unwrap();
    a.lock(
        ino_a,
        LockRequest::whole(5, fh, LockMode::Exclusive, false, 0),
    )
    .await
    .expect("a lock after the timed lock ran out");
    let t = a.open(ino_a, libc::O_WRONLY | libc::O_TRUNC).await;
    assert!(t.is_ok(), "a truncation under a live lock: {t:?}");
    let t = t.unwrap();
    a.write(t, 0, b"after").await.unwrap();
    a.release(t).await.unwrap();
    a.release(fh).await.unwrap();
    a.unlock_owner(ino_a, 5).await.unwrap();
    assert_eq!(read(&a, "f").await.unwrap(), b"after");
}
