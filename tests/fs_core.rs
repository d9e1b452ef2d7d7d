//! The filesystem core without a kernel mount, on both backends.

mod common;

use std::sync::Arc;
use std::time::Duration;

use remotedict::fs::{Fs, FsError, NodeKind, SetAttr};
use remotedict::layout::Layout;
use remotedict::store::BlobStore;

const ROOT: u64 = 1;

fn fs_on(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    fs_on_sized(store, cache, 64 << 20)
}

/// An `Fs` whose disk cache holds `cache_bytes`: values over an eighth of it are streamed (kept
/// in memory by block, not on disk).
fn fs_on_sized(store: &Arc<dyn BlobStore>, cache: &std::path::Path, cache_bytes: u64) -> Fs {
    fs_with(store, cache, cache_bytes, Duration::from_millis(200))
}

/// An `Fs` with a cache of `cache_bytes` and an index TTL of `ttl`.
fn fs_with(
    store: &Arc<dyn BlobStore>,
    cache: &std::path::Path,
    cache_bytes: u64,
    ttl: Duration,
) -> Fs {
    let cfg = common::fs_config(cache, cache_bytes);
    Fs::new(store.clone(), Layout::new("folder").unwrap(), ttl, cfg).unwrap()
}

async fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create(parent, name, 0o644, libc::O_WRONLY | libc::O_CREAT)
        .await
        .unwrap();
    fs.write(fh, 0, data).await.unwrap();
    // fsync: uploaded and listed in the index blob, so another `Fs` (host) finds it at once.
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    attr.ino
}

async fn append(fs: &Fs, ino: u64, data: &[u8]) {
    let fh = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await.unwrap();
    fs.write(fh, 0, data).await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
}

async fn write_read_append_truncate(store: Arc<dyn BlobStore>) {
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(&store, cache.path());
    let ino = write_file(&fs, ROOT, "a.txt", b"hello\n").await;
    assert_eq!(fs.read_all(ino).await.unwrap(), b"hello\n");
    append(&fs, ino, b"more\n").await;
    assert_eq!(fs.read_all(ino).await.unwrap(), b"hello\nmore\n");
    assert_eq!(fs.getattr(ino).await.unwrap().size, 11);
    fs.setattr(
        ino,
        None,
        SetAttr {
            size: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(fs.read_all(ino).await.unwrap(), b"hel");
    // A large value crosses several blocks and ranges.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let big_ino = write_file(&fs, ROOT, "big", &big).await;
    let other = fs_on(&store, cache.path());
    let attr = other.lookup(ROOT, "big").await.unwrap();
    assert_eq!(attr.size, big.len() as u64);
    assert_eq!(other.read_all(attr.ino).await.unwrap(), big);
    assert_eq!(fs.read_all(big_ino).await.unwrap(), big);
}

async fn directories_and_rename(store: Arc<dyn BlobStore>) {
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(&store, cache.path());
    let d = fs.mkdir(ROOT, "d", 0o755).await.unwrap();
    assert_eq!(d.kind, NodeKind::Dir);
    assert!(matches!(
        fs.mkdir(ROOT, "d", 0o755).await,
        Err(FsError::Exists)
    ));
    let e = fs.mkdir(d.ino, "e", 0o755).await.unwrap();
    write_file(&fs, e.ino, "f", b"data").await;
    assert!(matches!(fs.rmdir(ROOT, "d").await, Err(FsError::NotEmpty)));
    fs.rename(ROOT, "d", ROOT, "moved", false).await.unwrap();
    let fresh = fs_on(&store, cache.path());
    assert!(matches!(
        fresh.lookup(ROOT, "d").await,
        Err(FsError::NotFound)
    ));
    let m = fresh.lookup(ROOT, "moved").await.unwrap();
    let me = fresh.lookup(m.ino, "e").await.unwrap();
    let f = fresh.lookup(me.ino, "f").await.unwrap();
    assert_eq!(fresh.read_all(f.ino).await.unwrap(), b"data");
    // Replacing rename of a file, and RENAME_NOREPLACE.
    write_file(&fs, ROOT, "x", b"new").await;
    write_file(&fs, ROOT, "y", b"old").await;
    assert!(matches!(
        fs.rename(ROOT, "x", ROOT, "y", true).await,
        Err(FsError::Exists)
    ));
    fs.rename(ROOT, "x", ROOT, "y", false).await.unwrap();
    let y = fs.lookup(ROOT, "y").await.unwrap();
    assert_eq!(fs.read_all(y.ino).await.unwrap(), b"new");
    assert!(matches!(fs.lookup(ROOT, "x").await, Err(FsError::NotFound)));
    // An empty explicit directory persists; unlink removes the blob.
    fs.mkdir(ROOT, "empty", 0o755).await.unwrap();
    fs.unlink(ROOT, "y").await.unwrap();
    let fresh = fs_on(&store, cache.path());
    assert_eq!(
        fresh.lookup(ROOT, "empty").await.unwrap().kind,
        NodeKind::Dir
    );
    assert!(matches!(
        fresh.lookup(ROOT, "y").await,
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        store.head("folder/y").await,
        Err(remotedict::store::StoreError::NotFound(_))
    ));
    let fh = fresh.opendir(ROOT).await.unwrap();
    let names: Vec<String> = fresh
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(
        names,
        vec![".", "..", "a.txt", "empty", "moved"]
            .into_iter()
            .filter(|n| *n != "a.txt")
            .collect::<Vec<_>>()
    );
}

async fn random_reads_fetch_only_the_blocks_they_need(store: Arc<dyn BlobStore>) {
    // A 24 MiB value, streamed (64 MiB cache) and kept on disk (1 GiB cache).
    for cache_bytes in [64 << 20, 1 << 30] {
        random_reads_with_cache(&store, cache_bytes).await;
    }
}

/// readdirplus resumes where the last reply stopped, whatever it took, even when entries were
/// removed after opendir (by another host) — including a whole slice of them.
async fn readdir_plus_resumes_where_the_reply_stopped(store: Arc<dyn BlobStore>) {
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fs_on(&store, ca.path()), fs_on(&store, cb.path()));
    let names: Vec<String> = (0..150).map(|i| format!("k{i:03}")).collect();
    for n in &names {
        let (_, fh) = a.create(ROOT, n, 0o644, libc::O_WRONLY).await.unwrap();
        a.release(fh).await.unwrap();
    }
    a.sync_index().await.unwrap();
    let dir = b.opendir(ROOT).await.unwrap();
    // Another host removes k020..k089 (more than a slice) and every tenth of the rest.
    let gone = |i: usize| (20..90).contains(&i) || i % 10 == 5;
    for (_, n) in names.iter().enumerate().filter(|(i, _)| gone(*i)) {
        a.unlink(ROOT, n).await.unwrap();
    }
    a.sync_index().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // past B's index TTL
                                                          // A kernel whose buffer takes 3 entries per reply.
    let (mut listed, mut offset) = (Vec::new(), 0u64);
    loop {
        let reply = b.readdir_plus(dir, offset as usize).await.unwrap();
        if reply.is_empty() {
            break;
        }
        for (next, e, _) in reply.iter().take(3) {
            listed.push(e.name.clone());
            offset = *next;
        }
    }
    b.releasedir(dir);
    let want: Vec<String> = [".", ".."]
        .iter()
        .map(|s| s.to_string())
        .chain(
            names
                .iter()
                .enumerate()
                .filter(|(i, _)| !gone(*i))
                .map(|(_, n)| n.clone()),
        )
        .collect();
    assert_eq!(listed, want);
}

/// A block that decodes shorter than the seek table says (a damaged blob) fails the read with
/// EIO, streamed or not; it never hangs a reader or shifts the bytes after it.
async fn a_short_block_is_an_error_not_a_hang(store: Arc<dyn BlobStore>) {
    use rand::{RngCore, SeedableRng};
    use remotedict::index::{meta::blob_metadata, Change, Entry, SharedIndex};
    use remotedict::seek::SeekTable;
    use remotedict::store::{GetResult, PutOptions};
    let mut big = vec![0u8; 12 << 20];
    rand::rngs::StdRng::seed_from_u64(5).fill_bytes(&mut big);
    let cache = tempfile::tempdir().unwrap();
    let writer = fs_on(&store, cache.path());
    write_file(&writer, ROOT, "damaged", &big).await;
    // Shorten raw block 5 by one byte in its size word; relist the damaged blob.
    let GetResult::Found { data, .. } = store.get("folder/damaged", None, None).await.unwrap()
    else {
        panic!("blob missing")
    };
    let mut blob = data.to_vec();
    let table = SeekTable::from_frame(
        &blob[blob.len() - SeekTable::frame_len(big.len() as u64) as usize..],
    )
    .unwrap();
    let at = table.blocks[5] as usize;
    let word = u32::from_le_bytes(blob[at..at + 4].try_into().unwrap()) - 1;
    blob[at..at + 4].copy_from_slice(&word.to_le_bytes());
    let mut entry = Entry::file(big.len() as u64, blob.len() as u64, 0, "");
    let opts = PutOptions {
        metadata: blob_metadata(&entry),
        ..Default::default()
    };
    entry.etag = store
        .put("folder/damaged", blob.into(), &opts)
        .await
        .unwrap();
    let index = SharedIndex::new(
        store.clone(),
        "folder/.remotedict/index".into(),
        Duration::ZERO,
    );
    index
        .commit(vec![Change::Put {
            key: "damaged".into(),
            entry,
        }])
        .await
        .unwrap();
    for cache_bytes in [64 << 20, 1 << 30] {
        let reader_cache = tempfile::tempdir().unwrap();
        let reader = fs_on_sized(&store, reader_cache.path(), cache_bytes);
        let ino = reader.lookup(ROOT, "damaged").await.unwrap().ino;
        let fh = reader.open(ino, libc::O_RDONLY).await.unwrap();
        let read = async {
            let mut offset = 0u64;
            loop {
                let got = reader.read(fh, offset, 1 << 20).await?;
                if got.is_empty() {
                    return Ok(offset);
                }
                offset += got.len() as u64;
            }
        };
        let result: Result<u64, FsError> = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the read hung");
        assert!(
            result.is_err(),
            "a damaged block read as {result:?} (cache {cache_bytes})"
        );
        reader.release(fh).await.unwrap();
    }
}

/// A handle opened from an index copy older than another host's rewrite serves the new version
/// on its first read, wherever that read starts (not EIO).
async fn a_first_read_anywhere_serves_a_newer_version(store: Arc<dyn BlobStore>) {
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fs_on(&store, ca.path());
    // B trusts its index copy for a minute.
    let b = fs_with(&store, cb.path(), 64 << 20, Duration::from_secs(60));
    write_file(&a, ROOT, "k", b"old value, version one").await;
    let ino_b = b.lookup(ROOT, "k").await.unwrap().ino;
    let ino_a = a.lookup(ROOT, "k").await.unwrap().ino;
    let fh = a.open(ino_a, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    a.write(fh, 0, b"NEW VALUE, VERSION TWO").await.unwrap();
    a.fsync(fh).await.unwrap();
    a.release(fh).await.unwrap();
    let fh = b.open(ino_b, libc::O_RDONLY).await.unwrap();
    let got = b.read(fh, 4, 5).await.unwrap();
    assert_eq!(&got[..], b"VALUE");
    b.release(fh).await.unwrap();
}

/// Bytes whose upload failed are not shown to handles opened only for reading (they never reach
/// the store), while the writer still reads them back; the failed close is final.
async fn bytes_that_failed_to_upload_are_not_shown_to_readers(store: Arc<dyn BlobStore>) {
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(&store, cache.path());
    let ino = write_file(&fs, ROOT, "kept", b"readable\n").await;
    let writer = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await.unwrap();
    fs.write(writer, 0, b"more").await.unwrap();
    // Another host takes the blob's lease: the upload at close fails.
    let lease = store
        .acquire_lease(
            "folder/kept",
            remotedict::store::LeaseDuration::Seconds(15),
            None,
        )
        .await
        .unwrap();
    assert!(
        fs.flush(writer).await.is_err(),
        "the close reports the failure"
    );
    let reader = fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(&fs.read(reader, 0, 100).await.unwrap()[..], b"readable\n");
    assert_eq!(
        &fs.read(writer, 0, 100).await.unwrap()[..],
        b"readable\nmore"
    );
    fs.release(reader).await.unwrap();
    store.release_lease("folder/kept", &lease).await.unwrap();
    // The program was told its close failed: the kernel's release does not upload it after all.
    fs.release(writer).await.unwrap();
    assert_eq!(fs.read_all(ino).await.unwrap(), b"readable\n");
}

/// Reads an open file from the start to its end, `chunk` bytes per read.
async fn read_through(fs: &Fs, fh: u64, chunk: u32) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let got = fs.read(fh, all.len() as u64, chunk).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend_from_slice(&got);
    }
}

/// Bytes of values the cache holds, from the status report.
async fn held(fs: &Fs) -> u64 {
    let status: serde_json::Value =
        serde_json::from_slice(&fs.status_json().await.unwrap()).unwrap();
    status["cache"]["used_bytes"].as_u64().unwrap()
}

/// A random read inside a block stored raw (incompressible data) GETs only its bytes the first
/// time; a second read in the same block fetches the whole block.
async fn random_reads_of_raw_blocks_fetch_only_their_bytes(store: Arc<dyn BlobStore>) {
    use rand::{RngCore, SeedableRng};
    let mut big = vec![0u8; (12 << 20) + 777];
    rand::rngs::StdRng::seed_from_u64(11).fill_bytes(&mut big);
    let cache = tempfile::tempdir().unwrap();
    write_file(&fs_on(&store, cache.path()), ROOT, "noise", &big).await;
    // Streamed (64 MiB cache) and kept on disk (1 GiB cache, read a second time: the first
    // read of a large value streams it).
    for cache_bytes in [64 << 20, 1 << 30] {
        let reader_cache = tempfile::tempdir().unwrap();
        let reader = fs_on_sized(&store, reader_cache.path(), cache_bytes);
        let ino = reader.lookup(ROOT, "noise").await.unwrap().ino;
        if cache_bytes == 1 << 30 {
            let fh = reader.open(ino, libc::O_RDONLY).await.unwrap();
            assert!(reader.read(fh, 0, 4096).await.unwrap()[..] == big[..4096]);
            reader.release(fh).await.unwrap();
        }
        let fh = reader.open(ino, libc::O_RDONLY).await.unwrap();
        // First reads in blocks 4, 1 and the short last block: their bytes only.
        for offset in [(4 << 20) + 100, (1 << 20) + 5, (12 << 20) + 700] {
            let got = reader.read(fh, offset as u64, 4096).await.unwrap();
            let want = &big[offset..(offset + 4096).min(big.len())];
            assert!(got[..] == *want, "read at {offset} (cache {cache_bytes})");
        }
        assert_eq!(held(&reader).await, 0, "no whole block fetched yet");
        // A second read in block 4 fetches that block.
        let offset = (4 << 20) + 300_000;
        let got = reader.read(fh, offset as u64, 4096).await.unwrap();
        assert!(got[..] == big[offset..offset + 4096]);
        assert_eq!(
            held(&reader).await,
            1 << 20,
            "block 4 held after its second read"
        );
        let all = read_through(&reader, fh, 1 << 20).await;
        assert!(
            all == big,
            "sequential read after random reads (cache {cache_bytes})"
        );
        reader.release(fh).await.unwrap();
    }
}

async fn random_reads_with_cache(store: &Arc<dyn BlobStore>, cache_bytes: u64) {
    let cache = tempfile::tempdir().unwrap();
    let fs = fs_on(store, cache.path());
    let mut x = 7u64;
    let big: Vec<u8> = (0..24 << 20)
        .map(|i: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i.is_multiple_of(3) {
                x as u8
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let name = format!("big-{cache_bytes}");
    write_file(&fs, ROOT, &name, &big).await;
    let reader_cache = tempfile::tempdir().unwrap();
    let reader = fs_on_sized(store, reader_cache.path(), cache_bytes);
    let attr = reader.lookup(ROOT, &name).await.unwrap();
    let fh = reader.open(attr.ino, libc::O_RDONLY).await.unwrap();
    for offset in [20 << 20, 3 << 20, (5 << 20) + 12345, (24 << 20) - 4096] {
        let got = reader.read(fh, offset as u64, 4096).await.unwrap();
        assert!(got[..] == big[offset..offset + 4096], "read at {offset}");
    }
    let held = held(&reader).await;
    assert!(
        held <= 5 << 20,
        "4 random reads of 4 KiB fetched {held} bytes of a 24 MiB value (cache {cache_bytes})"
    );
    // A sequential read gets every byte right.
    assert!(read_through(&reader, fh, 128 << 10).await == big);
    reader.release(fh).await.unwrap();
    // Appending to it starts from the whole old value (streamed or not).
    append(&reader, attr.ino, b"tail").await;
    let mut want = big.clone();
    want.extend_from_slice(b"tail");
    assert!(
        reader.read_all(attr.ino).await.unwrap() == want,
        "append to a large value"
    );
}

/// A save whose index commit is still pending never puts its older value back over the newer
/// one another host saved (and listed) meanwhile.
async fn a_late_commit_never_lists_an_older_value(store: Arc<dyn BlobStore>) {
    let (ca, cb, cc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = fs_on(&store, ca.path());
    let b = fs_on(&store, cb.path());
    write_file(&a, ROOT, "k", b"v0").await;
    let ino_b = b.lookup(ROOT, "k").await.unwrap().ino;
    // A saves v1; its index entry waits for the next group commit.
    let fh = a
        .open(
            a.lookup(ROOT, "k").await.unwrap().ino,
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .await
        .unwrap();
    a.write(fh, 0, b"v1-from-a").await.unwrap();
    a.release(fh).await.unwrap();
    // B, which still lists v0, saves v2 after it and waits for its listing.
    let fh = b.open(ino_b, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    b.write(fh, 0, b"v2-from-b").await.unwrap();
    b.fsync(fh).await.unwrap();
    b.release(fh).await.unwrap();
    a.sync_index().await.unwrap();
    // The blob holds B's value, and the index names it.
    let c = fs_on(&store, cc.path());
    let ino = c.lookup(ROOT, "k").await.unwrap().ino;
    assert_eq!(c.read_all(ino).await.unwrap(), b"v2-from-b");
    let blob = store.head("folder/k").await.unwrap();
    assert_eq!(c.getattr(ino).await.unwrap().size, 9);
    let etag = String::from_utf8(c.getxattr(ino, "user.remotedict.etag").await.unwrap()).unwrap();
    assert_eq!(
        etag, blob.etag,
        "the index names the blob's current version"
    );
}

on_both_backends!(
    a_late_commit_never_lists_an_older_value,
    write_read_append_truncate,
    directories_and_rename,
    random_reads_fetch_only_the_blocks_they_need,
    random_reads_of_raw_blocks_fetch_only_their_bytes,
    readdir_plus_resumes_where_the_reply_stopped,
    a_short_block_is_an_error_not_a_hang,
    a_first_read_anywhere_serves_a_newer_version,
    bytes_that_failed_to_upload_are_not_shown_to_readers
);
