//! The index blob under concurrency, on both backends: writers with separate caches (as two hosts
//! would have) never lose each other's entries; commits are coalesced; reads revalidate by etag.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remotedict::index::{Change, Entry, SharedIndex};
use remotedict::layout::Layout;
use remotedict::store::{BlobStore, PutOptions};

fn put(key: String, n: u64) -> Change {
    Change::Put {
        key,
        entry: Entry::file(n, n, 0, format!("\"etag-{n}\"")),
    }
}

fn index_for(store: &Arc<dyn BlobStore>, ttl: Duration) -> Arc<SharedIndex> {
    SharedIndex::new(
        store.clone(),
        Layout::new("folder").unwrap().index_blob(),
        ttl,
    )
}

async fn two_writers_each_adding_200_keys_end_with_400(store: Arc<dyn BlobStore>) {
    let a = index_for(&store, Duration::from_secs(1));
    let b = index_for(&store, Duration::from_secs(1));
    let writer = |idx: Arc<SharedIndex>, host: &'static str| {
        tokio::spawn(async move {
            for i in 0..200u64 {
                idx.commit(vec![put(format!("{host}/key{i:03}"), i)])
                    .await
                    .unwrap();
            }
        })
    };
    let (ra, rb) = tokio::join!(writer(a.clone(), "a"), writer(b.clone(), "b"));
    ra.unwrap();
    rb.unwrap();
    let reader = index_for(&store, Duration::from_secs(1));
    let idx = reader.current().await.unwrap();
    assert_eq!(idx.entries.len(), 400);
    assert!(
        (0..200).all(|i| idx.entries.contains_key(&format!("a/key{i:03}"))
            && idx.entries.contains_key(&format!("b/key{i:03}")))
    );
    eprintln!(
        "index writes: a={} b={}, conflicts redone: a={} b={}",
        a.writes(),
        b.writes(),
        a.conflicts(),
        b.conflicts()
    );
}

async fn concurrent_commits_are_coalesced(store: Arc<dyn BlobStore>) {
    let idx = index_for(&store, Duration::from_secs(1));
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let idx = idx.clone();
            tokio::spawn(async move { idx.commit(vec![put(format!("k{i}"), i)]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(idx.current().await.unwrap().entries.len(), 100);
    assert!(
        idx.writes() < 50,
        "100 concurrent commits took {} index writes",
        idx.writes()
    );
}

async fn removal_only_drops_the_version_it_names(store: Arc<dyn BlobStore>) {
    let idx = index_for(&store, Duration::from_secs(1));
    idx.commit(vec![put("k".into(), 1)]).await.unwrap();
    // Another writer replaced the value; a delete of the old version must keep the new entry.
    idx.commit(vec![Change::Remove {
        key: "k".into(),
        if_etag: Some("\"etag-0\"".into()),
    }])
    .await
    .unwrap();
    assert!(idx.current().await.unwrap().entries.contains_key("k"));
    idx.commit(vec![Change::Remove {
        key: "k".into(),
        if_etag: Some("\"etag-1\"".into()),
    }])
    .await
    .unwrap();
    assert!(!idx.current().await.unwrap().entries.contains_key("k"));
}

async fn readers_see_other_writers_within_the_ttl(store: Arc<dyn BlobStore>) {
    let ttl = Duration::from_millis(300);
    let writer = index_for(&store, ttl);
    let reader = index_for(&store, ttl);
    assert!(reader.current().await.unwrap().entries.is_empty());
    writer.commit(vec![put("new".into(), 5)]).await.unwrap();
    // Within the TTL the cached copy may still be served; after it, the change is visible.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(
        reader
            .current()
            .await
            .unwrap()
            .entries
            .get("new")
            .map(|e| e.size),
        Some(5)
    );
    // An unchanged index is revalidated (not re-read), and stays identical.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let again = reader.current().await.unwrap();
    assert_eq!(again.entries.len(), 1);
}

async fn corrupt_or_newer_index_is_never_overwritten(store: Arc<dyn BlobStore>) {
    let idx = index_for(&store, Duration::from_millis(1));
    store
        .put(
            idx.blob(),
            Bytes::from_static(b"garbage"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let err = idx.commit(vec![put("k".into(), 1)]).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    let (data, _) = match store.get(idx.blob(), None, None).await.unwrap() {
        remotedict::store::GetResult::Found { props, data } => (data, props),
        _ => panic!(),
    };
    assert_eq!(
        &data[..],
        b"garbage",
        "a corrupt index must be left for fsck, not replaced"
    );
    assert!(idx.current().await.is_err());
}

on_both_backends!(
    two_writers_each_adding_200_keys_end_with_400,
    concurrent_commits_are_coalesced,
    removal_only_drops_the_version_it_names,
    readers_see_other_writers_within_the_ttl,
    corrupt_or_newer_index_is_never_overwritten,
);
