//! One suite of blob-store semantics, run against the local backend, against Azurite and against
//! the in-memory test double (`MemStore`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remotedict::store::{
    list_all, BlobStore, BlockIds, Conditions, GetResult, LeaseDuration, LeaseState, Metadata,
    PutOptions, StoreError,
};

async fn get_all(store: &Arc<dyn BlobStore>, name: &str) -> (Bytes, String) {
    match store.get(name, None, None).await.unwrap() {
        GetResult::Found { props, data } => (data, props.etag),
        GetResult::NotModified => panic!("unconditional get answered NotModified"),
    }
}

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn put_get_head_and_ranges(store: Arc<dyn BlobStore>) {
    let opts = PutOptions {
        metadata: meta(&[("remotedict_size", "11")]),
        ..Default::default()
    };
    let e1 = store
        .put("f/a", Bytes::from_static(b"hello world"), &opts)
        .await
        .unwrap();
    let (data, etag) = get_all(&store, "f/a").await;
    assert_eq!(&data[..], b"hello world");
    assert_eq!(etag, e1);
    let head = store.head("f/a").await.unwrap();
    assert_eq!(head.size, 11);
    assert_eq!(head.etag, e1);
    assert_eq!(
        head.metadata.get("remotedict_size").map(String::as_str),
        Some("11")
    );
    assert_eq!(head.lease_state, LeaseState::Available);
    match store.get("f/a", Some(6..100), None).await.unwrap() {
        GetResult::Found { props, data } => {
            assert_eq!(&data[..], b"world");
            assert_eq!(props.size, 11, "props report the whole blob's size");
        }
        GetResult::NotModified => panic!(),
    }
    let e2 = store
        .put("f/a", Bytes::from_static(b"second"), &PutOptions::default())
        .await
        .unwrap();
    assert_ne!(e1, e2, "every write changes the etag");
    assert!(
        store.head("f/a").await.unwrap().metadata.is_empty(),
        "a put replaces metadata"
    );
}

async fn missing_blobs_are_not_found(store: Arc<dyn BlobStore>) {
    assert!(matches!(
        store.get("nope", None, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.head("nope").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete("nope", &Conditions::default()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn conditional_get_answers_not_modified(store: Arc<dyn BlobStore>) {
    let e1 = store
        .put("idx", Bytes::from_static(b"v1"), &PutOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        store.get("idx", None, Some(&e1)).await.unwrap(),
        GetResult::NotModified
    ));
    let e2 = store
        .put("idx", Bytes::from_static(b"v2"), &PutOptions::default())
        .await
        .unwrap();
    match store.get("idx", None, Some(&e1)).await.unwrap() {
        GetResult::Found { props, data } => {
            assert_eq!(&data[..], b"v2");
            assert_eq!(props.etag, e2);
        }
        GetResult::NotModified => panic!("stale etag must return data"),
    }
}

async fn conditional_writes(store: Arc<dyn BlobStore>) {
    let absent = PutOptions {
        conditions: Conditions::if_absent(),
        ..Default::default()
    };
    let e1 = store
        .put("c", Bytes::from_static(b"1"), &absent)
        .await
        .unwrap();
    assert!(matches!(
        store.put("c", Bytes::from_static(b"x"), &absent).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    let stale = PutOptions {
        conditions: Conditions::if_match("\"0x1234\""),
        ..Default::default()
    };
    assert!(matches!(
        store.put("c", Bytes::from_static(b"x"), &stale).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    let fresh = PutOptions {
        conditions: Conditions::if_match(e1.clone()),
        ..Default::default()
    };
    let e2 = store
        .put("c", Bytes::from_static(b"2"), &fresh)
        .await
        .unwrap();
    assert!(matches!(
        store.put("c", Bytes::from_static(b"3"), &fresh).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert_eq!(&get_all(&store, "c").await.0[..], b"2");
    assert!(matches!(
        store.delete("c", &Conditions::if_match(e1)).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    store.delete("c", &Conditions::if_match(e2)).await.unwrap();
    assert!(matches!(
        store.head("c").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn block_uploads_commit_atomically(store: Arc<dyn BlobStore>) {
    let upload = BlockIds::new();
    let ids: Vec<String> = (0..3).map(|i| upload.id(i)).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .put_block("big", id, Bytes::from(vec![b'a' + i as u8; 1000]), None)
            .await
            .unwrap();
    }
    assert!(
        matches!(store.head("big").await, Err(StoreError::NotFound(_))),
        "staged blocks are invisible"
    );
    let opts = PutOptions {
        metadata: meta(&[("k", "v")]),
        ..Default::default()
    };
    store.commit_blocks("big", &ids, &opts).await.unwrap();
    let (data, _) = get_all(&store, "big").await;
    assert_eq!(data.len(), 3000);
    assert_eq!((data[0], data[1500], data[2999]), (b'a', b'b', b'c'));
    assert_eq!(
        store
            .head("big")
            .await
            .unwrap()
            .metadata
            .get("k")
            .map(String::as_str),
        Some("v")
    );
    // A commit conditioned on a stale etag is refused and leaves the blob as it was.
    store
        .put_block("big", &ids[0], Bytes::from_static(b"zzz"), None)
        .await
        .unwrap();
    let stale = PutOptions {
        conditions: Conditions::if_absent(),
        ..Default::default()
    };
    assert!(matches!(
        store.commit_blocks("big", &ids[..1], &stale).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert_eq!(get_all(&store, "big").await.0.len(), 3000);
}

async fn listing_by_prefix_with_metadata(store: Arc<dyn BlobStore>) {
    let names = ["f/a", "f/b/c", "f/b/d e#%?", "f/é日本", "g/x", "fz"];
    for n in names {
        let opts = PutOptions {
            metadata: meta(&[("remotedict_size", "7")]),
            ..Default::default()
        };
        store
            .put(n, Bytes::from_static(b"1234567"), &opts)
            .await
            .unwrap();
    }
    let listed = list_all(store.as_ref(), "f/").await.unwrap();
    let got: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(got, vec!["f/a", "f/b/c", "f/b/d e#%?", "f/é日本"]);
    assert!(
        listed
            .iter()
            .all(|p| p.size == 7
                && p.metadata.get("remotedict_size").map(String::as_str) == Some("7"))
    );
    let (data, _) = get_all(&store, "f/b/d e#%?").await;
    assert_eq!(&data[..], b"1234567");
    assert_eq!(
        list_all(store.as_ref(), "").await.unwrap().len(),
        names.len()
    );
}

async fn metadata_updates_are_conditional(store: Arc<dyn BlobStore>) {
    let e1 = store
        .put("m", Bytes::from_static(b"content"), &PutOptions::default())
        .await
        .unwrap();
    let e2 = store
        .set_metadata("m", &meta(&[("a", "1")]), &Conditions::if_match(e1.clone()))
        .await
        .unwrap();
    assert_ne!(e1, e2);
    assert!(matches!(
        store
            .set_metadata("m", &meta(&[("a", "2")]), &Conditions::if_match(e1))
            .await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert_eq!(
        store
            .head("m")
            .await
            .unwrap()
            .metadata
            .get("a")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(&get_all(&store, "m").await.0[..], b"content");
}

async fn leases_exclude_other_writers(store: Arc<dyn BlobStore>) {
    store
        .put("l", Bytes::from_static(b"v"), &PutOptions::default())
        .await
        .unwrap();
    let id = store
        .acquire_lease("l", LeaseDuration::Seconds(15), None)
        .await
        .unwrap();
    let head = store.head("l").await.unwrap();
    assert_eq!(head.lease_state, LeaseState::Leased);
    assert!(matches!(
        store
            .acquire_lease("l", LeaseDuration::Seconds(15), None)
            .await,
        Err(StoreError::LeaseConflict(_))
    ));
    let no_lease = PutOptions::default();
    assert!(matches!(
        store.put("l", Bytes::from_static(b"x"), &no_lease).await,
        Err(StoreError::LeaseConflict(_))
    ));
    assert!(matches!(
        store.delete("l", &Conditions::default()).await,
        Err(StoreError::LeaseConflict(_))
    ));
    let with = PutOptions {
        conditions: Conditions::default().with_lease(Some(id.clone())),
        ..Default::default()
    };
    store
        .put("l", Bytes::from_static(b"mine"), &with)
        .await
        .unwrap();
    assert_eq!(
        store.head("l").await.unwrap().lease_state,
        LeaseState::Leased,
        "a write keeps the lease"
    );
    store.renew_lease("l", &id).await.unwrap();
    store.release_lease("l", &id).await.unwrap();
    assert!(matches!(
        store
            .renew_lease("l", "00000000-0000-0000-0000-000000000000")
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.put("l", Bytes::from_static(b"x"), &with).await,
        Err(StoreError::LeaseLost(_))
    ));
    store
        .put("l", Bytes::from_static(b"free"), &no_lease)
        .await
        .unwrap();
    // A proposed id is honoured; an infinite lease is reported as such; break frees the blob.
    let proposed = "11111111-2222-3333-4444-555555555555";
    assert_eq!(
        store
            .acquire_lease("l", LeaseDuration::Infinite, Some(proposed))
            .await
            .unwrap(),
        proposed
    );
    assert!(store.head("l").await.unwrap().lease_infinite);
    store.break_lease("l").await.unwrap();
    assert!(matches!(
        store.renew_lease("l", proposed).await,
        Err(StoreError::LeaseLost(_))
    ));
    let other = store
        .acquire_lease("l", LeaseDuration::Seconds(15), None)
        .await
        .unwrap();
    store.release_lease("l", &other).await.unwrap();
    assert!(matches!(
        store
            .acquire_lease("missing", LeaseDuration::Seconds(15), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn leases_expire(store: Arc<dyn BlobStore>) {
    store
        .put("e", Bytes::from_static(b"v"), &PutOptions::default())
        .await
        .unwrap();
    let first = store
        .acquire_lease("e", LeaseDuration::Seconds(15), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(16_500)).await;
    let head = store.head("e").await.unwrap();
    assert_eq!(head.lease_state, LeaseState::Expired);
    let second = store
        .acquire_lease("e", LeaseDuration::Seconds(15), None)
        .await
        .unwrap();
    assert_ne!(first, second);
    assert!(matches!(
        store.renew_lease("e", &first).await,
        Err(StoreError::LeaseLost(_))
    ));
    store.release_lease("e", &second).await.unwrap();
}

async fn edge_cases_answer_alike(store: Arc<dyn BlobStore>) {
    // A commit naming a block that was never staged is refused, and writes nothing.
    let never = [BlockIds::new().id(7)];
    assert!(matches!(
        store
            .commit_blocks("u", &never, &PutOptions::default())
            .await,
        Err(StoreError::BlockListInvalid(_))
    ));
    assert!(matches!(
        store.head("u").await,
        Err(StoreError::NotFound(_))
    ));
    // A range starting past the end reads nothing.
    store
        .put("r", Bytes::from_static(b"abc"), &PutOptions::default())
        .await
        .unwrap();
    match store.get("r", Some(10..20), None).await.unwrap() {
        GetResult::Found { props, data } => assert!(data.is_empty() && props.size == 3),
        GetResult::NotModified => panic!(),
    }
    // A lease id on a blob without a lease: the lease was lost.
    let stray = "11111111-2222-3333-4444-555555555555";
    assert!(matches!(
        store
            .delete("r", &Conditions::default().with_lease(Some(stray.into())))
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    // Metadata of a leased blob needs the lease; acquiring again under the same id renews.
    let id = store
        .acquire_lease("r", LeaseDuration::Seconds(15), None)
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_metadata("r", &meta(&[("a", "1")]), &Conditions::default())
            .await,
        Err(StoreError::LeaseConflict(_))
    ));
    assert_eq!(
        store
            .acquire_lease("r", LeaseDuration::Seconds(20), Some(&id))
            .await
            .unwrap(),
        id
    );
    // Breaking an unleased or broken blob is no error; the holder of a broken lease may release it.
    store.break_lease("r").await.unwrap();
    store.break_lease("r").await.unwrap();
    assert_eq!(
        store.head("r").await.unwrap().lease_state,
        LeaseState::Broken
    );
    store.release_lease("r", &id).await.unwrap();
    assert_eq!(
        store.head("r").await.unwrap().lease_state,
        LeaseState::Available
    );
}

/// Stages `n` blocks of `byte` for `name` under `upload`'s ids; returns the ids.
async fn stage(
    store: &Arc<dyn BlobStore>,
    name: &str,
    upload: &BlockIds,
    n: usize,
    byte: u8,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = upload.id(i);
        store
            .put_block(name, &id, Bytes::from(vec![byte; 100]), None)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Two uploads of one name at once: each commit holds only its own blocks, a commit discards the
/// other upload's staged blocks (so the later commit fails, whole, instead of mixing), and blocks
/// staged after a commit are kept.
async fn concurrent_uploads_never_mix(store: Arc<dyn BlobStore>) {
    let (a, b) = (BlockIds::new(), BlockIds::new());
    let a_ids = stage(&store, "same", &a, 2, b'a').await;
    let b_ids = stage(&store, "same", &b, 3, b'b').await;
    store
        .commit_blocks("same", &b_ids, &PutOptions::default())
        .await
        .unwrap();
    let r = store
        .commit_blocks("same", &a_ids, &PutOptions::default())
        .await;
    assert!(matches!(r, Err(StoreError::BlockListInvalid(_))), "{r:?}");
    let (data, _) = get_all(&store, "same").await;
    assert_eq!(
        &data[..],
        &[b'b'; 300][..],
        "the first commit's value, whole"
    );
    // The loser starts again: its new blocks, staged after that commit, are kept.
    let again = stage(&store, "same", &BlockIds::new(), 2, b'a').await;
    store
        .commit_blocks("same", &again, &PutOptions::default())
        .await
        .unwrap();
    let (data, _) = get_all(&store, "same").await;
    assert_eq!(&data[..], &[b'a'; 200][..]);
    // A commit uses up its own blocks: committing the same list again is refused.
    let r = store
        .commit_blocks("same", &again, &PutOptions::default())
        .await;
    assert!(matches!(r, Err(StoreError::BlockListInvalid(_))), "{r:?}");
}

/// Append blobs: created once, grown only at the position the writer names (so of two writers
/// appending at one position only one lands), read as a tail from an offset with one conditional
/// ranged GET, and never seen half appended.
async fn append_blobs_grow_at_the_named_position_only(store: Arc<dyn BlobStore>) {
    let name = "f/.remotedict/log";
    let e0 = store
        .create_append(
            name,
            &PutOptions {
                conditions: Conditions::if_absent(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let again = store
        .create_append(
            name,
            &PutOptions {
                conditions: Conditions::if_absent(),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::PreconditionFailed(_))),
        "{again:?}"
    );
    assert_eq!(store.head(name).await.unwrap().size, 0);
    assert_eq!(
        store
            .append(name, Bytes::from_static(b"one;"), 0)
            .await
            .unwrap(),
        4
    );
    // A second writer that still thinks the log is empty is refused.
    let late = store.append(name, Bytes::from_static(b"two;"), 0).await;
    assert!(
        matches!(late, Err(StoreError::PreconditionFailed(_))),
        "{late:?}"
    );
    let past = store.append(name, Bytes::from_static(b"two;"), 9).await;
    assert!(
        matches!(past, Err(StoreError::PreconditionFailed(_))),
        "{past:?}"
    );
    assert_eq!(
        store
            .append(name, Bytes::from_static(b"two;"), 4)
            .await
            .unwrap(),
        8
    );
    let (data, e2) = get_all(&store, name).await;
    assert_eq!(&data[..], b"one;two;");
    assert_ne!(e0, e2, "an append changes the etag");
    // The tail from an offset, validated by the etag: unchanged, then grown.
    let r = store.get(name, Some(8..u64::MAX), Some(&e2)).await.unwrap();
    assert!(matches!(r, GetResult::NotModified), "{r:?}");
    store
        .append(name, Bytes::from_static(b"three;"), 8)
        .await
        .unwrap();
    match store.get(name, Some(8..u64::MAX), Some(&e2)).await.unwrap() {
        GetResult::Found { props, data } => {
            assert_eq!(&data[..], b"three;");
            assert_eq!(props.size, 14);
            assert_ne!(props.etag, e2);
            // Nothing past the end yet: no bytes, and the same etag.
            match store.get(name, Some(14..u64::MAX), None).await.unwrap() {
                GetResult::Found { props: p2, data } => {
                    assert!(data.is_empty());
                    assert_eq!(p2.etag, props.etag);
                    assert_eq!(p2.size, 14, "the blob's size, not the answer's");
                }
                GetResult::NotModified => panic!("unconditional get answered NotModified"),
            }
        }
        GetResult::NotModified => panic!("the log grew"),
    }
    // A block blob takes no appends; a missing blob is not found.
    store
        .put("f/plain", Bytes::from_static(b"x"), &PutOptions::default())
        .await
        .unwrap();
    let r = store.append("f/plain", Bytes::from_static(b"y"), 1).await;
    assert!(r.is_err(), "{r:?}");
    let r = store.append("f/none", Bytes::from_static(b"y"), 0).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    // Many writers racing at once: every byte lands exactly once, in whole appends.
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            while mine < 10 {
                let len = store.head(name).await.unwrap().size;
                let rec = Bytes::from(vec![b'a' + w; 7]);
                match store.append(name, rec, len).await {
                    Ok(_) => mine += 1,
                    Err(StoreError::PreconditionFailed(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (data, _) = get_all(&store, name).await;
    let tail = &data[14..];
    assert_eq!(tail.len(), 4 * 10 * 7);
    for rec in tail.chunks(7) {
        assert!(rec.iter().all(|b| *b == rec[0]), "a mixed append: {rec:?}");
    }
    for w in 0..4u8 {
        assert_eq!(tail.chunks(7).filter(|r| r[0] == b'a' + w).count(), 10);
    }
    // A put replaces an append blob with an ordinary one.
    store
        .put(name, Bytes::from_static(b"new"), &PutOptions::default())
        .await
        .unwrap();
    let r = store.append(name, Bytes::from_static(b"!"), 3).await;
    assert!(r.is_err(), "{r:?}");
}

on_both_backends!(
    append_blobs_grow_at_the_named_position_only,
    concurrent_uploads_never_mix,
    put_get_head_and_ranges,
    missing_blobs_are_not_found,
    conditional_get_answers_not_modified,
    conditional_writes,
    block_uploads_commit_atomically,
    listing_by_prefix_with_metadata,
    metadata_updates_are_conditional,
    leases_exclude_other_writers,
    leases_expire,
    edge_cases_answer_alike,
);
