//! `remotedict fsck [--repair]` and `mount --rebuild-index`: a folder the index and other tools
//! disagree about is reported, repaired, and then mounts with every blob.

mod common;

use bytes::Bytes;
use common::mount::{Backend, Mount, FOLDER};
use remotedict::index::{Change, Entry, SharedIndex};
use remotedict::layout::Layout;
use remotedict::store::{Conditions, PutOptions};

fn fsck(backend: &Backend, repair: bool) -> (bool, String) {
    let mut cmd = backend.cli(&["fsck"]);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn fsck_reports_and_repairs(backend: Backend) {
    // A mount writes two files; then other tools change the container behind its back.
    let m = Mount::start(&backend);
    m.sh("echo one > kept && echo two > deleted-behind && echo three > overwritten");
    m.unmount();
    let store = backend.store().await;
    let layout = Layout::new(FOLDER).unwrap();
    store
        .delete(&layout.blob_name("deleted-behind"), &Conditions::default())
        .await
        .unwrap();
    store
        .put(
            &layout.blob_name("overwritten"),
            Bytes::from_static(b"raw from another tool\n"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    store
        .put(
            &layout.blob_name("foreign/raw.txt"),
            Bytes::from_static(b"plain text\n"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let lz4 = remotedict::codec::compress(b"compressed by another tool\n");
    store
        .put(
            &layout.blob_name("foreign/packed"),
            Bytes::from(lz4),
            &PutOptions::default(),
        )
        .await
        .unwrap();

    let (clean, out) = fsck(&backend, false);
    assert!(!clean, "{out}");
    assert!(out.contains("key without blob: deleted-behind"), "{out}");
    assert!(out.contains("blob without key: foreign/raw.txt"), "{out}");
    assert!(out.contains("blob without key: foreign/packed"), "{out}");
    assert!(out.contains("mismatch: overwritten"), "{out}");
    assert!(
        !out.contains("kept"),
        "a consistent key is not reported: {out}"
    );

    let (repaired, out) = fsck(&backend, true);
    assert!(repaired, "{out}");
    let (clean, out) = fsck(&backend, false);
    assert!(clean, "after --repair: {out}");

    let m = Mount::start(&backend);
    assert_eq!(
        m.sh("cat kept foreign/raw.txt foreign/packed overwritten"),
        "one\nplain text\ncompressed by another tool\nraw from another tool\n"
    );
    assert_eq!(m.sh("ls"), "foreign\nkept\noverwritten\n");
    assert_eq!(
        m.sh("stat -c %s foreign/packed"),
        "27\n",
        "the uncompressed size of a foreign LZ4 blob"
    );
    m.unmount();
}

async fn repair_keeps_a_concurrent_writers_entry(backend: Backend) {
    let store = backend.store().await;
    let layout = Layout::new(FOLDER).unwrap();
    store
        .put(
            &layout.blob_name("a"),
            Bytes::from_static(b"a"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let (report, blobs) = remotedict::fsck::check(&store, &layout).await.unwrap();
    assert_eq!(report.unlisted_blobs, vec!["a".to_string()]);
    // Between the check and the repair, a writer lists its own version of `a`.
    let writer = SharedIndex::new(
        store.clone(),
        layout.index_blob(),
        std::time::Duration::ZERO,
    );
    let mine = Entry::file(9, 9, 1, "\"writer-etag\"");
    writer
        .commit(vec![Change::Put {
            key: "a".into(),
            entry: mine.clone(),
        }])
        .await
        .unwrap();
    remotedict::fsck::repair(&store, &layout, &report, &blobs)
        .await
        .unwrap();
    let now = writer.revalidate().await.unwrap();
    assert_eq!(
        now.entries.get("a"),
        Some(mine),
        "the repair replaced a concurrent writer's entry"
    );
}

async fn rebuild_index_mounts_a_container_filled_by_other_tools(backend: Backend) {
    let store = backend.store().await;
    store.create_container().await.unwrap();
    let layout = Layout::new(FOLDER).unwrap();
    for i in 0..5 {
        store
            .put(
                &layout.blob_name(&format!("dir/file{i}")),
                Bytes::from(format!("content {i}\n")),
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let m = Mount::start_with(&backend, &["--rebuild-index"]);
    assert_eq!(m.sh("ls dir | wc -l").trim(), "5");
    assert_eq!(m.sh("cat dir/file3"), "content 3\n");
    m.unmount();
}

on_both_mounts!(
    fsck_reports_and_repairs,
    repair_keeps_a_concurrent_writers_entry,
    rebuild_index_mounts_a_container_filled_by_other_tools
);
