//! Values other tools wrote (raw bytes, without LZ4), read through the content cache: a raw blob
//! is read by range, block by block, so a read far into it costs one block, not the prefix.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use remotedict::fs::content::ContentCache;
use remotedict::store::testing::{FaultStore, Op as FaultOp};
use remotedict::store::{BlobStore, PutOptions};
use remotedict::transfer::TransferConfig;

fn content(len: usize) -> Vec<u8> {
    common::mount::pseudo_random(len, 11)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_blob_is_read_by_range() {
    let faults = Arc::new(FaultStore::new(common::mem_store()));
    let store: Arc<dyn BlobStore> = faults.clone();
    let data = content(64 << 20);
    let etag = store
        .put("raw.bin", Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ContentCache::new(dir.path().to_path_buf(), 1 << 30, TransferConfig::default());
    let size = data.len() as u64;
    faults.reset_calls();
    let v = cache
        .get(&store, "raw.bin", &etag, Some((size, size)))
        .await
        .unwrap();
    let at = 60 << 20;
    let got = v.read(at, 4096).await.unwrap();
    assert_eq!(&got[..], &data[at as usize..at as usize + 4096]);
    // The first bytes (is it LZ4?) and the block holding the read: not the 60 MiB before it.
    let gets = faults.calls(FaultOp::Get);
    assert!(gets <= 3, "{gets} GETs for one 4 KiB read");
    // Everything reads back right, sequentially.
    let mut out = Vec::with_capacity(data.len());
    while out.len() < data.len() {
        let chunk = v.read(out.len() as u64, 128 << 10).await.unwrap();
        assert!(!chunk.is_empty());
        out.extend_from_slice(&chunk);
    }
    assert!(out == data, "the raw blob read back differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lz4_frame_listed_at_its_stored_size_is_still_decoded() {
    // A frame from another tool whose size the index does not know (listed at its stored size):
    // its magic sends it down the decoding path, not the raw one.
    let store = common::mem_store();
    let data = content(9 << 20);
    let stored = remotedict::codec::compress(&data);
    let etag = store
        .put(
            "frame.lz4",
            Bytes::from(stored.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ContentCache::new(dir.path().to_path_buf(), 1 << 30, TransferConfig::default());
    let n = stored.len() as u64;
    let v = cache
        .get(&store, "frame.lz4", &etag, Some((n, n)))
        .await
        .unwrap();
    let got = v.read(0, 4096).await.unwrap();
    assert_eq!(&got[..], &data[..4096]);
}
