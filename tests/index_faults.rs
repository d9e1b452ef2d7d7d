//! The shared index under store faults produced with `FaultStore`: a commit that fails in the
//! middle must not wedge the commits after it.

use std::sync::Arc;
use std::time::Duration;

use remotedict::index::{Change, Entry, SharedIndex};
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::BlobStore;

fn put(key: &str) -> Change {
    Change::Put {
        key: key.into(),
        entry: Entry::file(1, 1, 0, format!("\"{key}\"")),
    }
}

/// A panic inside a commit (here: in the store call writing the index) fails that commit with
/// an error, and the next commit and flush still run (before: they waited forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_panics_does_not_wedge_later_commits() {
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    let store: Arc<dyn BlobStore> = faults.clone();
    let index = SharedIndex::new(store.clone(), "idx".into(), Duration::from_secs(60));
    faults.plan(
        Op::Put,
        When::NthWithPrefix("idx".into(), 1),
        Fault::hook(|| async { panic!("injected panic in the index write") }),
    );
    let first = tokio::time::timeout(Duration::from_secs(10), index.commit(vec![put("a")]))
        .await
        .expect("the panicking commit answers");
    assert!(first.is_err(), "a commit that panicked reports an error");
    let second = tokio::time::timeout(Duration::from_secs(10), index.commit(vec![put("b")]))
        .await
        .expect("a commit after the panic is not wedged");
    second.unwrap();
    index.submit(vec![put("c")]);
    tokio::time::timeout(Duration::from_secs(10), index.flush())
        .await
        .expect("a flush after the panic is not wedged")
        .unwrap();
    let fresh = SharedIndex::new(store, "idx".into(), Duration::ZERO);
    let listed = fresh.current().await.unwrap();
    assert!(listed.entries.contains_key("b") && listed.entries.contains_key("c"));
}

/// Under a steady stream of submitted entries (a copy of many files), some are always waiting,
/// so the journal is never emptied; it is rewritten instead, and stays far smaller than the
/// stream (before: it held every entry ever submitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_stays_small_under_a_steady_stream() {
    let dir = tempfile::tempdir().unwrap();
    // Each index write takes 50 ms, as over a network: entries keep arriving while one lands.
    let faults = Arc::new(FaultStore::new(Arc::new(MemStore::new())));
    faults.plan(
        Op::Put,
        When::Prefix("idx".into()),
        Fault::DelayBefore(Duration::from_millis(50)),
    );
    let store: Arc<dyn BlobStore> = faults.clone();
    let index = SharedIndex::new(store, "idx".into(), Duration::from_secs(60));
    index.attach_journal(remotedict::index::journal::Journal::create(dir.path(), "s").unwrap());
    let journal_size = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".journal"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    let total = 1000;
    let (mut largest, mut one_record) = (0, 0);
    for i in 0..total {
        index.submit(vec![put(&format!("key{i:05}"))]);
        if i == 0 {
            one_record = journal_size();
        }
        largest = largest.max(journal_size());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    index.flush().await.unwrap();
    assert!(one_record > 0);
    assert!(
        largest < one_record * total / 2,
        "the journal grew to {largest} bytes ({} records' worth)",
        largest / one_record
    );
    assert_eq!(journal_size(), 0, "emptied once everything landed");
}
