//! Reference-model property tests of the index: random sequences of changes, applied through the
//! real rules (`index::apply`) and through `SharedIndex` over a store, agree after every step
//! with a plain `BTreeMap` that follows the rules as documented on `Change`; every index reached
//! survives `encode` → `decode` unchanged.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use remotedict::index::apply::{apply_change, apply_changes, saved_check};
use remotedict::index::meta::entry_from_props;
use remotedict::index::{decode, encode, Change, Entry, EntryKind, Index, SharedIndex};
use remotedict::store::{self, BlobStore, PutOptions};

/// Few keys (some nested) and few etags, so changes collide and conditions both hold and fail.
const KEYS: &[&str] = &["a", "b", "d", "d/a", "d/b"];
const ETAGS: &[&str] = &["\"e0\"", "\"e1\"", "\"e2\""];

/// What the store says, at commit time, of the blob a [`Change::Saved`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlobNow {
    /// Still the version the save wrote.
    Ours,
    /// Rewritten by another writer since.
    Other,
    /// Deleted since.
    Missing,
}

/// The entry the store's description of another writer's newer blob gives, in the pure tests
/// (the tests over a store read it from the blob itself).
fn other_entry() -> Entry {
    Entry::file(9, 9, 0, "\"other\"")
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(String::from)
}

fn etag() -> impl Strategy<Value = String> {
    prop::sample::select(ETAGS).prop_map(String::from)
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop_oneof![
            Just(EntryKind::File),
            Just(EntryKind::Dir),
            Just(EntryKind::Symlink),
            Just(EntryKind::Special)
        ],
        0u64..3,
        0u64..3,
        prop_oneof![Just(0i64), any::<i64>()],
        prop_oneof![Just(0i64), any::<i64>()],
        etag(),
        prop_oneof![Just(0u32), Just(0o644), 0u32..0o7777],
        0u32..3,
        prop::sample::select(&["", "a", "../b", "/x/y", "fifo", "char 1:3"][..]),
        prop_oneof![Just(None), any::<i64>().prop_map(Some)],
        prop_oneof![
            Just(vec![]),
            Just(vec![("a".to_string(), vec![1u8, 2])]),
            Just(vec![
                ("a".to_string(), vec![]),
                ("b".to_string(), b"x".to_vec())
            ])
        ],
    )
        .prop_map(
            |(
                kind,
                size,
                stored_size,
                mtime_ns,
                ctime_ns,
                etag,
                mode,
                id,
                target,
                atime_ns,
                xattrs,
            )| {
                Entry {
                    kind,
                    size,
                    stored_size,
                    mtime_ns,
                    ctime_ns,
                    etag,
                    mode,
                    uid: id,
                    gid: id * 7,
                    // Only links and special files have a target (the format stores it for them only).
                    target: if kind.has_target() {
                        target.to_string()
                    } else {
                        String::new()
                    },
                    atime_ns,
                    xattrs,
                }
            },
        )
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (key(), entry()).prop_map(|(key, entry)| Change::Put { key, entry }),
        (key(), entry()).prop_map(|(key, entry)| Change::Insert { key, entry }),
        (key(), etag(), entry()).prop_map(|(key, if_etag, entry)| Change::Update {
            key,
            if_etag,
            entry
        }),
        (key(), prop::option::of(etag()))
            .prop_map(|(key, if_etag)| Change::Remove { key, if_etag }),
        (key(), entry(), prop::option::of(etag())).prop_map(|(key, entry, replaces)| {
            Change::Saved {
                blob: format!("folder/{key}"),
                key,
                entry,
                replaces,
            }
        }),
    ]
}

fn step() -> impl Strategy<Value = (Change, BlobNow)> {
    (
        change(),
        prop_oneof![
            Just(BlobNow::Ours),
            Just(BlobNow::Other),
            Just(BlobNow::Missing)
        ],
    )
}

type Model = BTreeMap<String, Entry>;

/// The model's rules, from the documentation of [`Change`]; `saved_ours` says whether the store
/// still holds a `Saved` change's version, and is `None` where a `Saved` is a plain put (the
/// view of submitted changes); `newer` is the entry of another writer's blob now under the
/// name, if there is one. Returns whether the model changed.
fn model_apply(m: &mut Model, c: &Change, saved_ours: Option<bool>, newer: Option<&Entry>) -> bool {
    let before = m.clone();
    match c {
        Change::Put { key, entry } => {
            m.insert(key.clone(), entry.clone());
        }
        Change::Insert { key, entry } => {
            m.entry(key.clone()).or_insert_with(|| entry.clone());
        }
        Change::Update {
            key,
            if_etag,
            entry,
        } => {
            if m.get(key).is_some_and(|e| &e.etag == if_etag) {
                m.insert(key.clone(), entry.clone());
            }
        }
        Change::Remove { key, if_etag } => {
            if m.get(key)
                .is_some_and(|e| if_etag.as_ref().is_none_or(|t| &e.etag == t))
            {
                m.remove(key);
            }
        }
        Change::Saved {
            key,
            entry,
            replaces,
            ..
        } => {
            let listed = m.get(key).map(|e| e.etag.clone());
            // Lands when the listing is what the write replaced, already names this version,
            // or the store confirms the blob is still this version.
            let lands = saved_ours.is_none_or(|ours| {
                ours || listed == *replaces || listed.as_ref() == Some(&entry.etag)
            });
            if lands {
                m.insert(key.clone(), entry.clone());
            } else if let (None, Some(newer)) = (&listed, newer) {
                // Overtaken by another writer's value while the name was unlisted: the name is
                // listed with that newer value, never left out.
                m.insert(key.clone(), newer.clone());
            }
        }
    }
    *m != before
}

fn as_map(index: &Index) -> Model {
    index
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect()
}

/// A commit's resolution of a batch, as `SharedIndex` does it, with the store's answers given.
fn commit_apply(index: &mut Index, batch: &[(Change, BlobNow)]) -> bool {
    let mut changed = false;
    for (c, now) in batch {
        if let Some(check) = saved_check(index, c) {
            let Change::Saved {
                key, blob, entry, ..
            } = c
            else {
                panic!("only a Saved change is checked: {c:?}");
            };
            assert_eq!(
                (check.key, check.blob, check.etag),
                (key.as_str(), blob.as_str(), entry.etag.as_str())
            );
            match now {
                BlobNow::Ours => {}
                BlobNow::Other if !index.entries.contains_key(key) => {
                    index.entries.insert(key.clone(), other_entry());
                    changed = true;
                    continue;
                }
                BlobNow::Other | BlobNow::Missing => continue,
            }
        }
        changed |= apply_change(index, c);
    }
    changed
}

fn assert_round_trips(index: &Index) -> Result<(), TestCaseError> {
    let back = decode(&encode(index)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, index);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The view of submitted changes: every change as documented, a `Saved` as a put.
    #[test]
    fn applied_changes_follow_the_model(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..4), 0..30)
    ) {
        let mut index = Index::default();
        let mut model = Model::new();
        for batch in &batches {
            let changed = apply_changes(&mut index, batch);
            let mut model_changed = false;
            for c in batch {
                model_changed |= model_apply(&mut model, c, None, None);
            }
            prop_assert_eq!(changed, model_changed, "after {:?}", batch);
            prop_assert_eq!(as_map(&index), model.clone(), "after {:?}", batch);
        }
        assert_round_trips(&index)?;
    }

    /// A commit's resolution: a late `Saved` lands only if the store still holds its version;
    /// overtaken by another writer while the name is unlisted, the name lists the newer value.
    #[test]
    fn committed_changes_follow_the_model(
        batches in prop::collection::vec(prop::collection::vec(step(), 1..4), 0..30)
    ) {
        let mut index = Index::default();
        let mut model = Model::new();
        for batch in &batches {
            let changed = commit_apply(&mut index, batch);
            let mut model_changed = false;
            for (c, now) in batch {
                let newer = (*now == BlobNow::Other).then(other_entry);
                model_changed |=
                    model_apply(&mut model, c, Some(*now == BlobNow::Ours), newer.as_ref());
            }
            prop_assert_eq!(changed, model_changed, "after {:?}", batch);
            prop_assert_eq!(as_map(&index), model.clone(), "after {:?}", batch);
        }
        assert_round_trips(&index)?;
    }
}

// ---- SharedIndex over a store ----

/// The store the `SharedIndex` tests run on (one function, so another backend can be swapped in).
async fn test_store() -> (tempfile::TempDir, Arc<dyn BlobStore>) {
    common::local_store().await
}

const INDEX_BLOB: &str = "folder/.remotedict-index";

fn shared(store: &Arc<dyn BlobStore>) -> Arc<SharedIndex> {
    // A long TTL: a writer's copy goes stale when the other writer commits.
    SharedIndex::new(store.clone(), INDEX_BLOB.into(), Duration::from_secs(3600))
}

/// Makes the store say `now` of each `Saved` change's blob: `Ours` writes the blob and lists its
/// real etag, `Other` writes it with a different etag, `Missing` names a blob never written.
/// Each change comes with the entry the store's description of an `Other` blob gives.
async fn stage(
    store: &Arc<dyn BlobStore>,
    batch: &[(Change, BlobNow)],
    serial: &mut u32,
) -> Vec<(Change, BlobNow, Option<Entry>)> {
    let mut out = Vec::new();
    for (c, now) in batch {
        let mut c = c.clone();
        let mut newer = None;
        if let Change::Saved { blob, entry, .. } = &mut c {
            *serial += 1;
            *blob = format!("blobs/{serial}");
            if *now != BlobNow::Missing {
                let etag = store
                    .put(blob, Bytes::from_static(b"v"), &PutOptions::default())
                    .await
                    .expect("put a value blob");
                if *now == BlobNow::Ours {
                    entry.etag = etag;
                } else {
                    let props = store.head(blob).await.expect("head a value blob");
                    newer = Some(entry_from_props(&props));
                }
            }
        }
        out.push((c, *now, newer));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Commit,
    SubmitThenFlush,
}

#[derive(Clone, Debug)]
struct Op {
    /// Which of the two writers (separate caches, as two hosts) makes the change.
    writer: usize,
    via: Via,
    /// Whether the writer first forgets its copy's freshness (else it commits from a copy that
    /// may be stale, and the If-Match loop has to catch up).
    invalidate: bool,
    batch: Vec<(Change, BlobNow)>,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0usize..2,
        prop_oneof![Just(Via::Commit), Just(Via::SubmitThenFlush)],
        any::<bool>(),
        prop::collection::vec(step(), 1..4),
    )
        .prop_map(|(writer, via, invalidate, batch)| Op {
            writer,
            via,
            invalidate,
            batch,
        })
}

async fn shared_index_follows_the_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_dir, store) = test_store().await;
    let writers = [shared(&store), shared(&store)];
    let mut model = Model::new();
    let mut serial = 0;
    for op in &ops {
        let w = &writers[op.writer];
        if op.invalidate {
            w.invalidate();
        }
        let batch = stage(&store, &op.batch, &mut serial).await;
        let changes: Vec<Change> = batch.iter().map(|(c, _, _)| c.clone()).collect();
        match op.via {
            Via::Commit => w.commit(changes).await,
            Via::SubmitThenFlush => {
                w.submit(changes);
                w.flush().await
            }
        }
        .map_err(|e| TestCaseError::fail(format!("commit failed: {e}")))?;
        for (c, now, newer) in &batch {
            model_apply(&mut model, c, Some(*now == BlobNow::Ours), newer.as_ref());
        }
        prop_assert_eq!(w.unsettled(), 0);
        prop_assert_eq!(
            as_map(&w.cached()),
            model.clone(),
            "writer's copy after {:?}",
            op
        );
        let fresh = shared(&store)
            .current()
            .await
            .map_err(|e| TestCaseError::fail(format!("read back: {e}")))?;
        prop_assert_eq!(as_map(&fresh), model.clone(), "read back after {:?}", op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn shared_index_over_a_store_follows_the_model(ops in prop::collection::vec(op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(shared_index_follows_the_model(ops))?;
    }
}

/// A writer whose copy is stale (another writer listed `k` after it last looked) removes `k`: in
/// its own copy `k` is not listed, so the commit is a no-op there and nothing is written, and
/// `k` stays listed in the index blob. The same goes for an `Update` of a key the stale copy
/// lacks, and for a `Put` equal to the stale copy's entry over another writer's newer one.
/// In the filesystem a stale copy rarely issues such changes (it removes only keys it lists, and
/// puts carry new etags), but `commit` promises the change lands against the newest index.
#[tokio::test]
async fn a_stale_writers_no_op_commit_drops_a_change() {
    let (_dir, store) = test_store().await;
    let (a, b) = (shared(&store), shared(&store));
    b.current().await.unwrap(); // b's copy: empty, fresh for an hour.
    a.commit(vec![Change::Put {
        key: "k".into(),
        entry: Entry::file(1, 1, 0, "\"e1\""),
    }])
    .await
    .unwrap();
    b.commit(vec![Change::Remove {
        key: "k".into(),
        if_etag: None,
    }])
    .await
    .unwrap();
    let now = shared(&store).current().await.unwrap();
    assert!(
        !now.entries.contains_key("k"),
        "b's remove of k was dropped: {:?}",
        now.entries.get("k")
    );
}

/// A store whose next write of the index blob waits until told to go on (the test then makes
/// other requests overtake it).
struct HeldPut {
    inner: Arc<dyn BlobStore>,
    hold: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl BlobStore for HeldPut {
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
        range: Option<std::ops::Range<u64>>,
        if_none_match: Option<&str>,
    ) -> store::Result<store::GetResult> {
        self.inner.get(name, range, if_none_match).await
    }
    async fn head(&self, name: &str) -> store::Result<store::BlobProps> {
        self.inner.head(name).await
    }
    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> store::Result<String> {
        let held = if name == INDEX_BLOB {
            self.hold.lock().expect("hold").take()
        } else {
            None
        };
        if let Some(go) = held {
            let _ = go.await;
        }
        self.inner.put(name, data, opts).await
    }
    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> store::Result<()> {
        self.inner.put_block(name, block_id, data, lease_id).await
    }
    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> store::Result<String> {
        self.inner.commit_blocks(name, block_ids, opts).await
    }
    async fn delete(&self, name: &str, conditions: &store::Conditions) -> store::Result<()> {
        self.inner.delete(name, conditions).await
    }
    async fn create_append(&self, name: &str, opts: &PutOptions) -> store::Result<String> {
        self.inner.create_append(name, opts).await
    }
    async fn append(&self, name: &str, data: Bytes, at: u64) -> store::Result<u64> {
        // (In format 2 a commit is an append to the journal.)
        let held = if name.starts_with(INDEX_BLOB) {
            self.hold.lock().expect("hold").take()
        } else {
            None
        };
        if let Some(go) = held {
            let _ = go.await;
        }
        self.inner.append(name, data, at).await
    }
    async fn list(&self, prefix: &str, marker: Option<String>) -> store::Result<store::ListPage> {
        self.inner.list(prefix, marker).await
    }
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &store::Metadata,
        conditions: &store::Conditions,
    ) -> store::Result<String> {
        self.inner.set_metadata(name, metadata, conditions).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        duration: store::LeaseDuration,
        proposed_id: Option<&str>,
    ) -> store::Result<String> {
        self.inner.acquire_lease(name, duration, proposed_id).await
    }
    async fn renew_lease(&self, name: &str, lease_id: &str) -> store::Result<()> {
        self.inner.renew_lease(name, lease_id).await
    }
    async fn release_lease(&self, name: &str, lease_id: &str) -> store::Result<()> {
        self.inner.release_lease(name, lease_id).await
    }
    async fn break_lease(&self, name: &str) -> store::Result<()> {
        self.inner.break_lease(name).await
    }
}

/// A revalidation sent while this process's own commit is being written can be answered with
/// the index from before that commit; it is a newer request, so its (older) copy wins and the
/// commit's own result is not installed: for up to a TTL this process does not see the change it
/// just committed, and submitted changes the commit settled vanish from its view. (Found by
/// `tests/model_fs.rs`, where a close's submitted entry and a TTL-expired lookup raced: a later
/// unlink's commit, made against that stale copy, then changed nothing there and was not written.)
#[tokio::test]
async fn a_commit_stays_visible_when_a_revalidation_overtakes_it() {
    let (_dir, inner) = test_store().await;
    // A folder already in format 2: the commit below is one append.
    SharedIndex::new(inner.clone(), INDEX_BLOB.into(), Duration::ZERO)
        .commit(vec![Change::Put {
            key: "first".into(),
            entry: Entry::file(1, 1, 0, "\"e0\""),
        }])
        .await
        .unwrap();
    let (go, held) = tokio::sync::oneshot::channel();
    let store: Arc<dyn BlobStore> = Arc::new(HeldPut {
        inner,
        hold: std::sync::Mutex::new(Some(held)),
    });
    let ttl = Duration::from_millis(200);
    let idx = SharedIndex::new(store, INDEX_BLOB.into(), ttl);
    idx.current().await.unwrap();
    let commit = {
        let idx = idx.clone();
        tokio::spawn(async move {
            idx.commit(vec![Change::Put {
                key: "k".into(),
                entry: Entry::file(1, 1, 0, "\"e1\""),
            }])
            .await
        })
    };
    // The commit's write is held; the copy goes past its TTL.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let (read, ()) = tokio::join!(idx.current(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = go.send(());
    });
    assert!(
        !read.unwrap().entries.contains_key("k"),
        "sent before the write"
    );
    commit.await.unwrap().unwrap();
    assert!(
        idx.current().await.unwrap().entries.contains_key("k"),
        "this process's own commit returned, yet its copy does not list k"
    );
}
