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

/// A standard LZ4 frame as Python's `lz4.frame` writes it by default: 64 KiB blocks, each linked
/// to the ones before it (no seek table), of semi-compressible bytes.
fn foreign_frame(data: &[u8]) -> Vec<u8> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Linked)
        .content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn text(len: usize) -> Vec<u8> {
    let noise = content(len);
    (0..len)
        .map(|i| {
            if i % 4 == 0 {
                noise[i]
            } else {
                b'a' + (i % 7) as u8
            }
        })
        .collect()
}

/// Reads `len` bytes at `at` with requests of `step` bytes, each answered whole (a short read
/// before the end would be taken for the end of the file).
async fn read_range_by(
    v: &remotedict::fs::content::CachedValue,
    at: u64,
    len: usize,
    step: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let want = (len - out.len()).min(step);
        let chunk = v.read(at + out.len() as u64, want as u32).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        let short = chunk.len() < want;
        out.extend_from_slice(&chunk);
        if short {
            // Only the value's end may answer short.
            let next = at + out.len() as u64;
            let after = v.read(next, 1).await.unwrap();
            assert!(
                after.is_empty(),
                "a short read ({} of {want} bytes) before {next}",
                chunk.len()
            );
            break;
        }
    }
    out
}

async fn read_range(v: &remotedict::fs::content::CachedValue, at: u64, len: usize) -> Vec<u8> {
    read_range_by(v, at, len, 1 << 20).await
}

/// A foreign frame of `data` in a store that counts calls, and a cache of `cache_bytes`.
async fn frame_in_cache(
    data: &[u8],
    cache_bytes: u64,
) -> (
    Arc<FaultStore>,
    Arc<dyn BlobStore>,
    String,
    u64,
    ContentCache,
    tempfile::TempDir,
) {
    let faults = Arc::new(FaultStore::new(common::mem_store()));
    let store: Arc<dyn BlobStore> = faults.clone();
    let stored = foreign_frame(data);
    let n = stored.len() as u64;
    let etag = store
        .put("f.lz4", Bytes::from(stored), &PutOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ContentCache::new(
        dir.path().to_path_buf(),
        cache_bytes,
        TransferConfig::default(),
    );
    faults.reset_calls();
    (faults, store, etag, n, cache, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_without_a_seek_table_is_read_through_memory_not_disk() {
    // A 40 MiB frame from another tool, with a 64 MiB cache (values over 8 MiB do not go to
    // disk): read sequentially, it is downloaded once and nothing lands in the disk cache.
    let data = text(40 << 20);
    let (faults, store, etag, stored, cache, _dir) = frame_in_cache(&data, 64 << 20).await;
    let cfg = TransferConfig::default();
    let sizes = Some((data.len() as u64, stored));
    let v = cache.get(&store, "f.lz4", &etag, sizes).await.unwrap();
    // Reads of 10 KiB (tar's records): never short where they cross a chunk or the decoded end
    // (slow GETs, so that the reader keeps catching up with the decoder).
    faults.plan(
        FaultOp::Get,
        remotedict::store::testing::When::Always,
        remotedict::store::testing::Fault::DelayBefore(std::time::Duration::from_millis(30)),
    );
    let out = read_range_by(&v, 0, data.len() + 1, 10240).await;
    assert!(out == data, "the frame read back differs");
    assert_eq!(
        cache.used_bytes(),
        0,
        "a value too large for the disk cache was written to it"
    );
    faults.clear();
    let gets = faults.calls(FaultOp::Get);
    let once = stored.div_ceil(cfg.range_size) + 1;
    assert!(gets <= once, "{gets} GETs to read it once (at most {once})");

    // A reader going back, and two readers far apart taking turns: each gets its own bytes.
    let back = read_range(&v, 1 << 20, 4096).await;
    assert_eq!(&back[..], &data[1 << 20..(1 << 20) + 4096]);
    let (a, b) = (2u64 << 20, 30u64 << 20);
    for i in 0..6u64 {
        let (x, y) = (a + i * (1 << 20), b + i * (1 << 20));
        let got = read_range(&v, x, 1 << 20).await;
        assert!(
            got[..] == data[x as usize..x as usize + (1 << 20)],
            "reader A at {x}"
        );
        let got = read_range(&v, y, 1 << 20).await;
        assert!(
            got[..] == data[y as usize..y as usize + (1 << 20)],
            "reader B at {y}"
        );
    }
    // Past the end: nothing.
    assert!(v.read(data.len() as u64, 4096).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_get_of_a_frame_read_through_memory_fails_the_read_then_reads_again() {
    let data = text(24 << 20);
    let (faults, store, etag, stored, cache, _dir) = frame_in_cache(&data, 64 << 20).await;
    let sizes = Some((data.len() as u64, stored));
    // The second GET (the second range) fails, once.
    faults.plan(
        FaultOp::Get,
        remotedict::store::testing::When::Nth(2),
        remotedict::store::testing::Fault::Status(500),
    );
    let v = cache.get(&store, "f.lz4", &etag, sizes).await.unwrap();
    let read_all = async {
        let mut out = Vec::new();
        loop {
            match v.read(out.len() as u64, 1 << 20).await {
                Ok(c) if c.is_empty() => return Ok(out),
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return Err(e),
            }
        }
    };
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), read_all)
        .await
        .expect("a read hung after a failed GET");
    assert!(first.is_err(), "a failed GET went unnoticed");
    // The next read starts over and gets the right bytes.
    let again = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        read_range(&v, 20 << 20, 1 << 20),
    )
    .await
    .expect("a read hung after a failed download");
    assert!(again[..] == data[20 << 20..21 << 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_read_once_is_streamed_and_read_again_is_kept_on_disk() {
    // A 16 MiB raw blob (read by block) in a cache of 1 GiB that could hold it: the first read
    // passes it through memory (writing it to disk would cost more than fetching it); a second
    // read keeps it on disk, so a third costs no GET. A 12 MiB foreign frame (no seek table:
    // decoded front to back, so a read behind the decoder would start over) goes to disk at once.
    let faults = Arc::new(FaultStore::new(common::mem_store()));
    let store: Arc<dyn BlobStore> = faults.clone();
    let raw = content(16 << 20);
    let framed = text(12 << 20);
    let frame = foreign_frame(&framed);
    let raw_etag = store
        .put("raw.bin", Bytes::from(raw.clone()), &PutOptions::default())
        .await
        .unwrap();
    let frame_etag = store
        .put("f.lz4", Bytes::from(frame.clone()), &PutOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ContentCache::new(dir.path().to_path_buf(), 1 << 30, TransferConfig::default());
    let values = [
        ("raw.bin", &raw_etag, &raw, raw.len() as u64),
        ("f.lz4", &frame_etag, &framed, frame.len() as u64),
    ];
    for (blob, etag, data, stored) in values {
        let sizes = Some((data.len() as u64, stored));
        let v = cache.get(&store, blob, etag, sizes).await.unwrap();
        assert!(
            read_range(&v, 0, data.len() + 1).await == *data,
            "{blob}: first read differs"
        );
        if blob == "raw.bin" {
            assert!(!v.on_disk(), "{blob}: a first read was not streamed");
        } else {
            assert!(
                v.on_disk(),
                "{blob}: a frame without a seek table was streamed"
            );
        }
        drop(v);

        let v = cache.get(&store, blob, etag, sizes).await.unwrap();
        assert!(v.on_disk(), "{blob}: a second read was streamed again");
        assert!(
            read_range(&v, 0, data.len() + 1).await == *data,
            "{blob}: second read differs"
        );
        drop(v);

        faults.reset_calls();
        let v = cache.get(&store, blob, etag, sizes).await.unwrap();
        assert!(
            read_range(&v, 0, data.len() + 1).await == *data,
            "{blob}: third read differs"
        );
        assert_eq!(
            faults.calls(FaultOp::Get),
            0,
            "{blob}: read from the disk cache, not the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_streamed_to_its_end_keeps_only_its_last_blocks_in_memory() {
    // A 32 MiB raw blob read front to back in a 64 MiB cache (streamed): the blocks behind the
    // reader are let go as it goes (the memory is the window ahead's), so at the end only the
    // last few are held, not every block the memory could take.
    let store: Arc<dyn BlobStore> = common::mem_store();
    let data = content(32 << 20);
    let etag = store
        .put("raw.bin", Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ContentCache::new(
        dir.path().to_path_buf(),
        64 << 20,
        TransferConfig::default(),
    );
    let size = data.len() as u64;
    let v = cache
        .get(&store, "raw.bin", &etag, Some((size, size)))
        .await
        .unwrap();
    assert!(
        read_range(&v, 0, data.len() + 1).await == data,
        "the value read back differs"
    );
    let held = cache.used_bytes();
    assert!(
        held <= 9 << 20,
        "{} MiB held after reading to the end",
        held >> 20
    );
    // Going back reads the right bytes again.
    assert!(read_range(&v, 1 << 20, 4096).await[..] == data[1 << 20..(1 << 20) + 4096]);
}
