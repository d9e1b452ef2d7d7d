//! Index format 2 (snapshot + journal) in the core, over `MemStore`/`FaultStore`: the upgrade of
//! a format-1 folder in place, commits from several writers with compactions racing them,
//! answers lost after the store acted, a compaction cut off at every step (a crash there), and
//! an independent Python reader of the blobs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remotedict::index::{Change, Entry, IndexError, IndexFormatError, SharedIndex};
use remotedict::store::retry::Backoff;
use remotedict::store::retrying::RetryingStore;
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::{BlobStore, GetResult, PutOptions};

const HEAD: &str = "folder/.remotedict/index";

fn put(key: &str, n: u64) -> Change {
    Change::Put {
        key: key.to_string(),
        entry: Entry::file(n, n, n as i64, format!("\"0x{n:016X}\"")),
    }
}

fn index_on(store: &Arc<dyn BlobStore>) -> Arc<SharedIndex> {
    SharedIndex::new(store.clone(), HEAD.to_string(), Duration::ZERO)
}

/// Grace period of replaced generations in these tests.
const GRACE: Duration = Duration::from_millis(300);

/// An index that compacts its journal from `bytes` on and removes replaced generations soon.
fn compacting(store: &Arc<dyn BlobStore>, bytes: u64) -> Arc<SharedIndex> {
    let idx = index_on(store);
    idx.set_compaction(bytes, GRACE);
    idx
}

fn retrying(inner: Arc<dyn BlobStore>) -> Arc<dyn BlobStore> {
    let backoff = Backoff {
        max_retries: 4,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    Arc::new(RetryingStore::new(inner, backoff))
}

async fn keys_of(store: &Arc<dyn BlobStore>) -> Vec<String> {
    let fresh = index_on(store);
    let idx = fresh.current().await.unwrap();
    idx.entries.keys().collect()
}

async fn bytes_of(store: &dyn BlobStore, name: &str) -> Bytes {
    match store.get(name, None, None).await.unwrap() {
        GetResult::Found { data, .. } => data,
        GetResult::NotModified => unreachable!(),
    }
}

/// A folder with a format-1 index is upgraded on its first write: every entry is kept, the
/// head then names a generation, and a build that knows only format 1 refuses it (version 2)
/// instead of overwriting it.
#[tokio::test]
async fn a_format_1_index_is_upgraded_in_place_and_old_readers_refuse_it() {
    let store: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let mut old = remotedict::index::Index::default();
    for i in 0..50u64 {
        old.entries.insert(
            format!("old/{i:02}"),
            Entry::file(i, i, 0, format!("\"e{i}\"")),
        );
    }
    store
        .put(
            HEAD,
            Bytes::from(remotedict::index::encode(&old)),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let idx = index_on(&store);
    assert_eq!(idx.current().await.unwrap().entries.len(), 50);
    assert_eq!(idx.format(), Some(1));
    idx.commit(vec![put("new", 1)]).await.unwrap();
    assert_eq!(idx.format(), Some(2));
    let head = bytes_of(store.as_ref(), HEAD).await;
    assert_eq!(
        remotedict::index::decode(&head),
        Err(IndexFormatError::Corrupt(
            "a format-2 head where an entry list was expected".into()
        ))
    );
    // What a format-1 build does with it: it reads the version byte and refuses.
    let body = lz4_flex::frame::FrameDecoder::new(&head[..]);
    let body: Vec<u8> = std::io::Read::bytes(body).map(Result::unwrap).collect();
    assert_eq!(&body[..5], b"RDIX\x02");
    let keys = keys_of(&store).await;
    assert_eq!(keys.len(), 51);
    assert!(keys.contains(&"old/07".to_string()) && keys.contains(&"new".to_string()));
    // A second writer that read format 1 before the upgrade does not write format 1 over it.
    let late = index_on(&store);
    late.commit(vec![put("late", 2)]).await.unwrap();
    assert_eq!(keys_of(&store).await.len(), 52);
}

/// Four writers, each with its own copy (four hosts), commit 150 keys each while the journal is
/// compacted every 2 KiB: every key is listed by a fresh reader, compactions happened, and the
/// replaced generations are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_racing_compactions_lose_nothing() {
    let mem = Arc::new(MemStore::new());
    let store: Arc<dyn BlobStore> = mem.clone();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let idx = compacting(&store, 2048);
            tokio::spawn(async move {
                for i in 0..150u64 {
                    idx.commit(vec![put(&format!("w{w}/k{i:03}"), i)])
                        .await
                        .unwrap();
                    if i % 50 == 7 {
                        idx.commit(vec![Change::Remove {
                            key: format!("w{w}/k{:03}", i - 1),
                            if_etag: None,
                        }])
                        .await
                        .unwrap();
                    }
                }
                idx.generation()
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Past the grace period, one more compaction removes what was replaced.
    tokio::time::sleep(GRACE * 2).await;
    compacting(&store, u64::MAX).compact_now().await.unwrap();
    let keys = keys_of(&store).await;
    assert_eq!(keys.len(), 4 * 147, "{keys:?}");
    for w in 0..4 {
        for i in 0..150u64 {
            let removed = i % 50 == 6;
            let k = format!("w{w}/k{i:03}");
            assert_eq!(keys.contains(&k), !removed, "{k}");
        }
    }
    let generations: std::collections::BTreeSet<String> = mem
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("folder/.remotedict/index-")
                .map(str::to_string)
        })
        .filter_map(|n| n.split('.').next().map(str::to_string))
        .collect();
    let reader = index_on(&store);
    reader.current().await.unwrap();
    let current = reader.generation().expect("format 2");
    assert!(
        generations.len() <= 3,
        "replaced generations stay: {generations:?}"
    );
    assert!(generations.contains(&current));
    // A reader that kept its copy since the start catches up through every seal.
    let head = bytes_of(store.as_ref(), HEAD).await;
    assert!(!head.is_empty());
}

/// A reader holding a copy revalidates with one request: nothing new is "not modified", a new
/// batch is just the tail.
#[tokio::test]
async fn a_current_copy_is_validated_by_one_request_and_grows_by_its_tail() {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store: Arc<dyn BlobStore> = faults.clone();
    let writer = index_on(&store);
    for i in 0..20u64 {
        writer.commit(vec![put(&format!("k{i}"), i)]).await.unwrap();
    }
    let reader = index_on(&store);
    assert_eq!(reader.revalidate().await.unwrap().entries.len(), 20);
    let gets = faults.calls(Op::Get);
    reader.revalidate().await.unwrap();
    assert_eq!(faults.calls(Op::Get), gets + 1, "one GET to validate");
    let journal = mem
        .names()
        .into_iter()
        .find(|n| n.ends_with(".journal"))
        .unwrap();
    let before = mem.head(&journal).await.unwrap().size;
    writer.commit(vec![put("k20", 20)]).await.unwrap();
    let after = mem.head(&journal).await.unwrap().size;
    assert!(
        after - before < 200,
        "one small batch appended {} bytes",
        after - before
    );
    assert_eq!(reader.revalidate().await.unwrap().entries.len(), 21);
}

/// A commit that lost the race to another host's append lands even while its own host keeps
/// forgetting how fresh its copy is (the daemon does on every read that finds a value rewritten
/// elsewhere): the copy its revalidation reads still comes in, so the retry appends at the new
/// end instead of at the old one until it gives up.
#[tokio::test]
async fn a_commit_that_lost_a_race_lands_while_its_host_keeps_invalidating() {
    let mem: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let a_store: Arc<dyn BlobStore> = faults.clone();
    let a = index_on(&a_store);
    let b = index_on(&mem);
    a.commit(vec![put("first", 1)]).await.unwrap();
    b.commit(vec![put("from-b", 2)]).await.unwrap();
    // Every read of the journal by host A is preceded by a reader of A invalidating its copy.
    let slot: Arc<std::sync::OnceLock<Arc<SharedIndex>>> = Default::default();
    let in_rule = slot.clone();
    faults.plan(
        Op::Get,
        When::matching(move |name| {
            if name.ends_with(".journal") {
                if let Some(a) = in_rule.get() {
                    a.invalidate();
                }
            }
            false
        }),
        Fault::Timeout,
    );
    let _ = slot.set(a.clone());
    // A's copy still ends before B's append: its first append is refused.
    a.commit(vec![put("from-a", 3)])
        .await
        .expect("the commit lands after reading B's append");
    assert_eq!(
        keys_of(&mem).await,
        vec!["first", "from-a", "from-b"],
        "both hosts' entries are listed"
    );
    assert!(a.conflicts() >= 1, "A's first append lost the race");
}

/// Azurite answers a read of an append blob with the etag it has once the body is read: an
/// append landing meanwhile shows in the etag but not in the bytes. A reader (and a writer) whose
/// read of the journal was answered so still finds that append: the next revalidation reads it
/// (not "not modified" forever), and a commit appends after it instead of giving up.
#[tokio::test]
async fn a_tail_read_answered_with_a_later_etag_still_finds_the_later_append() {
    let mem: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let reader_store: Arc<dyn BlobStore> = faults.clone();
    let writer = index_on(&mem);
    writer.commit(vec![put("k0", 0)]).await.unwrap();
    let reader = index_on(&reader_store);
    let w = writer.clone();
    faults.plan(
        Op::Get,
        When::matching(|name| name.ends_with(".journal")),
        Fault::etag_after(move || async move { w.commit(vec![put("k1", 1)]).await.unwrap() }),
    );
    let first = reader.revalidate().await.unwrap();
    assert!(first.entries.contains_key("k0"));
    assert!(!first.entries.contains_key("k1"), "the read missed k1");
    let next = reader.revalidate().await.unwrap();
    assert!(
        next.entries.contains_key("k1"),
        "the next revalidation reads k1"
    );
    // The same, then a commit from the reader: it lands after the append its copy missed.
    writer.commit(vec![put("k2", 2)]).await.unwrap();
    let w = writer.clone();
    faults.plan(
        Op::Get,
        When::matching(|name| name.ends_with(".journal")),
        Fault::etag_after(move || async move { w.commit(vec![put("k3", 3)]).await.unwrap() }),
    );
    assert!(!reader
        .revalidate()
        .await
        .unwrap()
        .entries
        .contains_key("k3"));
    reader
        .commit(vec![put("k4", 4)])
        .await
        .expect("the commit lands after the append its copy missed");
    assert_eq!(keys_of(&mem).await, vec!["k0", "k1", "k2", "k3", "k4"]);
}

/// Every append's answer is lost once (the store appended, the writer does not know): with the
/// retrying store, as the daemon composes it, no batch lands twice and none is lost; without
/// it, the writer finds its own batch in the tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_of_appends_and_seals_lose_and_repeat_nothing() {
    for with_retries in [true, false] {
        let mem = Arc::new(MemStore::new());
        let faults = Arc::new(FaultStore::new(mem.clone()));
        let inner: Arc<dyn BlobStore> = faults.clone();
        let store = if with_retries { retrying(inner) } else { inner };
        let a = compacting(&store, 1024);
        let b = compacting(&store, 1024);
        faults.plan(Op::Append, When::Always, Fault::LoseAnswer);
        let mut failures = 0;
        for i in 0..60u64 {
            let idx = if i % 2 == 0 { &a } else { &b };
            // Without retries the lost answer is an error; the batch stays queued (submitted
            // changes are retried), and a flush finds it landed.
            let key = format!("k{i:02}");
            idx.submit(vec![put(&key, i)]);
            while idx.flush().await.is_err() {
                failures += 1;
                assert!(failures < 1000);
            }
        }
        faults.clear();
        let keys = keys_of(&store).await;
        assert_eq!(keys.len(), 60, "retries={with_retries}: {keys:?}");
        // The journal holds each batch once.
        let mut appended = 0;
        for name in mem.names() {
            if name.ends_with(".journal") {
                let data = bytes_of(&*mem, &name).await;
                let (recs, _) = remotedict::index::records::decode_records(&data).unwrap();
                appended += recs.iter().filter(|(r, _)| r.seal().is_none()).count();
            }
        }
        assert!(appended >= 1);
        eprintln!("retries={with_retries}: {appended} records, {failures} failed flushes");
    }
}

/// The first commit of a folder writes a generation, then the head naming it; the head's answer
/// is lost after the store wrote it (an outage, every retry timing out). The commit fails, but
/// the generation the head now names must stay: the folder is read by a fresh reader, and the
/// writer (and another host) go on committing. (CI saw the head name a generation its writer
/// had removed: "the generation it names has no snapshot or journal" until fsck.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_the_first_head_keeps_the_generation_it_names() {
    for with_retries in [true, false] {
        let mem = Arc::new(MemStore::new());
        let faults = Arc::new(FaultStore::new(mem.clone()));
        let inner: Arc<dyn BlobStore> = faults.clone();
        let store = if with_retries { retrying(inner) } else { inner };
        let a = index_on(&store);
        faults.plan(Op::Put, When::matching(|n| n == HEAD), Fault::LoseAnswer);
        a.submit(vec![put("first", 1)]);
        let first = a.flush().await;
        eprintln!("retries={with_retries}: {first:?}");
        assert!(first.is_err(), "retries={with_retries}: {first:?}");
        faults.clear();
        let fresh = index_on(&store);
        let listed = fresh.current().await;
        assert!(
            listed.is_ok(),
            "retries={with_retries}: a fresh reader: {listed:?}"
        );
        // The change stays submitted: the next flush lands it.
        a.flush().await.unwrap();
        a.commit(vec![put("second", 2)]).await.unwrap();
        let b = index_on(&store);
        b.commit(vec![put("third", 3)]).await.unwrap();
        let keys = keys_of(&store).await;
        for k in ["first", "second", "third"] {
            assert!(
                keys.contains(&k.to_string()),
                "retries={with_retries}: {k} missing from {keys:?}"
            );
        }
    }
}

/// A compaction cut off at each of its steps (the writer's machine dies there): the folder is
/// still read whole by a fresh reader, and the next writer goes on from where it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_cut_off_at_any_step_loses_nothing() {
    for (step, op) in [
        (1, Op::Put),          // the new snapshot
        (2, Op::CreateAppend), // the new journal
        (3, Op::Append),       // the seal
        (4, Op::Put),          // the head
        (5, Op::Delete),       // the old generations
    ] {
        let mem = Arc::new(MemStore::new());
        let faults = Arc::new(FaultStore::new(mem.clone()));
        let store: Arc<dyn BlobStore> = faults.clone();
        let a = compacting(&store, u64::MAX);
        for i in 0..30u64 {
            a.commit(vec![put(&format!("k{i:02}"), i)]).await.unwrap();
        }
        // The next commit compacts first (with the first generation past its grace period, so
        // its removal is a step too); it dies at `op`'s next call (that call never ends).
        tokio::time::sleep(GRACE).await;
        a.set_compaction(1, GRACE);
        let nth = match step {
            4 => faults.calls(op) + 2,
            _ => faults.calls(op) + 1,
        };
        faults.plan(
            op,
            When::Nth(nth),
            Fault::DelayBefore(Duration::from_secs(3600)),
        );
        let dying = {
            let a = a.clone();
            tokio::spawn(async move { a.commit(vec![put("dying", 99)]).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        dying.abort();
        let _ = dying.await;
        faults.clear();
        let keys = keys_of(&store).await;
        assert!(keys.len() >= 30, "step {step}: {} keys", keys.len());
        assert!(
            (0..30).all(|i| keys.contains(&format!("k{i:02}"))),
            "step {step}: lost entries"
        );
        let b = compacting(&store, 1);
        b.commit(vec![put("after", 1)]).await.unwrap();
        b.commit(vec![put("after2", 2)]).await.unwrap();
        let keys = keys_of(&store).await;
        assert!(
            keys.contains(&"after".to_string()) && keys.contains(&"after2".to_string()),
            "step {step}"
        );
        assert!((0..30).all(|i| keys.contains(&format!("k{i:02}"))));
        // The host that died comes back (a new process) and goes on too.
        drop(a);
        let back = compacting(&store, 1);
        back.commit(vec![put("back", 3)]).await.unwrap();
        assert!(
            keys_of(&store).await.contains(&"back".to_string()),
            "step {step}"
        );
    }
}

/// A compaction that dies before its seal leaves a generation nothing leads to: once it is past
/// the grace period, the next compaction removes it (with the replaced ones), and the chain
/// that is in use stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_that_never_took_over_is_removed_after_the_grace_period() {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store: Arc<dyn BlobStore> = faults.clone();
    let a = compacting(&store, u64::MAX);
    for i in 0..10u64 {
        a.commit(vec![put(&format!("k{i}"), i)]).await.unwrap();
    }
    let snapshots = || -> Vec<String> {
        mem.names()
            .into_iter()
            .filter(|n| n.ends_with(".snapshot"))
            .collect()
    };
    let before = snapshots();
    // The next commit compacts first and dies at its seal (that append never ends).
    a.set_compaction(1, GRACE);
    faults.plan(
        Op::Append,
        When::Nth(faults.calls(Op::Append) + 1),
        Fault::DelayBefore(Duration::from_secs(3600)),
    );
    let dying = {
        let a = a.clone();
        tokio::spawn(async move { a.commit(vec![put("dying", 99)]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    dying.abort();
    let _ = dying.await;
    faults.clear();
    let leftover: Vec<String> = snapshots()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(leftover.len(), 1, "the dead compaction left its generation");
    let leftover_journal = leftover[0].replace(".snapshot", ".journal");
    assert!(mem.names().contains(&leftover_journal));
    // Young, it stays (it could be a compaction still on its way to the seal).
    let b = compacting(&store, 1);
    b.commit(vec![put("young", 1)]).await.unwrap();
    assert!(mem.names().contains(&leftover[0]), "removed while young");
    tokio::time::sleep(GRACE + Duration::from_millis(100)).await;
    b.commit(vec![put("after", 2)]).await.unwrap();
    b.commit(vec![put("after2", 3)]).await.unwrap();
    let names = mem.names();
    assert!(
        !names.contains(&leftover[0]) && !names.contains(&leftover_journal),
        "the generation that never took over is still there: {names:?}"
    );
    let keys = keys_of(&store).await;
    assert!((0..10).all(|i| keys.contains(&format!("k{i}"))));
    for k in ["young", "after", "after2"] {
        assert!(keys.contains(&k.to_string()), "{k} lost");
    }
}

/// A corrupt journal record is reported (naming the blob), not skipped.
#[tokio::test]
async fn a_corrupt_journal_is_an_error_naming_the_blob() {
    let mem = Arc::new(MemStore::new());
    let store: Arc<dyn BlobStore> = mem.clone();
    let idx = index_on(&store);
    idx.commit(vec![put("a", 1)]).await.unwrap();
    let journal = mem
        .names()
        .into_iter()
        .find(|n| n.ends_with(".journal"))
        .unwrap();
    let len = mem.head(&journal).await.unwrap().size;
    mem.append(
        &journal,
        Bytes::from_static(b"RDJR\x01\0\0\0\0\0\0\0x"),
        len,
    )
    .await
    .unwrap();
    let r = index_on(&store).current().await;
    match r {
        Err(IndexError::Format { blob, .. }) => assert_eq!(blob, journal),
        other => panic!("{other:?}"),
    }
}

/// The independent Python reader (scripts/index-reader.py, written from docs/FORMAT.md) lists
/// exactly what the mount lists, across compactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_reader_lists_what_remotedict_lists() {
    let mem = Arc::new(MemStore::new());
    let store: Arc<dyn BlobStore> = mem.clone();
    let idx = compacting(&store, 600);
    idx.set_compaction(600, Duration::from_secs(3600));
    let mut first_head = None;
    for i in 0..40u64 {
        if i == 1 {
            // The head as it was then names the first generation: the reader then follows
            // every seal from there.
            first_head = Some(bytes_of(&*mem, HEAD).await);
        }
        let mut change = put(&format!("d/f{i:02}"), i);
        if let Change::Put { entry, .. } = &mut change {
            // Special files and access times set apart (kind 3, the atime flag) among them.
            if i % 7 == 3 {
                entry.kind = remotedict::index::EntryKind::Special;
                entry.target = format!("char 1:{i}");
            }
            if i % 6 == 1 {
                entry.atime_ns = Some(-(i as i64) * 1_000_000_007);
            }
            if i % 4 == 2 {
                entry.xattrs = vec![("tag".into(), vec![i as u8, 0xff])];
            }
        }
        let mut c = vec![change];
        if i % 5 == 4 {
            c.push(Change::Remove {
                key: format!("d/f{:02}", i - 2),
                if_etag: None,
            });
        }
        idx.commit(c).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for name in mem.names() {
        if let Some(last) = name.strip_prefix("folder/.remotedict/") {
            std::fs::write(dir.path().join(last), bytes_of(&*mem, &name).await).unwrap();
        }
    }
    std::fs::write(dir.path().join("index"), first_head.unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/index-reader.py"
        ))
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.starts_with("format 2, generations "), "{stderr}");
    assert!(
        stderr.split_whitespace().count() > 4,
        "no compaction happened: {stderr}"
    );
    type Listed = (
        String,
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let listed: Vec<Listed> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["etag"].as_str().unwrap().to_string(),
                v["kind"].as_str().unwrap().to_string(),
                v["target"].as_str().map(str::to_string),
                v["atime_ns"].as_i64(),
                v["xattrs"]["user.tag"].as_str().map(str::to_string),
            )
        })
        .collect();
    let ours: Vec<Listed> = index_on(&store)
        .current()
        .await
        .unwrap()
        .entries
        .iter()
        .map(|(k, e)| {
            let special = e.kind == remotedict::index::EntryKind::Special;
            (
                k.clone(),
                e.etag.clone(),
                if special { "special" } else { "file" }.to_string(),
                special.then(|| e.target.clone()),
                e.atime_ns,
                e.xattrs.first().map(|(_, v)| hex::encode(v)),
            )
        })
        .collect();
    assert_eq!(listed, ours);
    assert_eq!(ours.len(), 32);
    assert!(ours.iter().any(|l| l.3.is_some()) && ours.iter().any(|l| l.4.is_some()));
    assert!(ours.iter().any(|l| l.5.is_some()));
}

/// A journal record corrupted in the store: every reader reports it; `fsck --repair` rebuilds
/// the index from the blobs as a new generation and seals every journal into it, and a reader
/// that was following the broken journal lists the repaired index at its next revalidation.
#[tokio::test]
async fn fsck_repairs_a_corrupt_journal_and_followers_move_on() {
    let mem = Arc::new(MemStore::new());
    let store: Arc<dyn BlobStore> = mem.clone();
    let layout = remotedict::layout::Layout::new("folder").unwrap();
    for k in ["a", "b"] {
        store
            .put(
                &layout.blob_name(k),
                Bytes::from_static(b"value"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let writer = index_on(&store);
    writer.commit(vec![put("a", 1)]).await.unwrap();
    let follower = index_on(&store);
    assert_eq!(follower.current().await.unwrap().entries.len(), 1);
    let journal = mem
        .names()
        .into_iter()
        .find(|n| n.ends_with(".journal"))
        .unwrap();
    let len = mem.head(&journal).await.unwrap().size;
    mem.append(
        &journal,
        Bytes::from_static(b"RDJR\x01\0\0\0\0\0\0\0x"),
        len,
    )
    .await
    .unwrap();
    assert!(
        follower.revalidate().await.is_err(),
        "the corruption is reported"
    );
    let (report, blobs) = remotedict::fsck::check(&store, &layout).await.unwrap();
    assert!(report.index_error.is_some());
    let n = remotedict::fsck::repair(&store, &layout, &report, &blobs)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let seen = follower.revalidate().await.expect("the follower moves on");
    assert_eq!(seen.entries.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(keys_of(&store).await, ["a", "b"]);
    // And writing goes on in the new generation.
    follower.commit(vec![put("c", 3)]).await.unwrap();
    assert_eq!(writer.revalidate().await.unwrap().entries.len(), 3);
}
