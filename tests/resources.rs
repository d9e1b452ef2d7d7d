//! Bounded resources: the daemon's descriptors stay few however many values it has read, its
//! soft descriptor limit is raised to the hard one, and its inode table forgets what the kernel
//! forgot.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::mount::{Backend, Mount, FOLDER};
use remotedict::fs::content::{ContentCache, MAX_FILES, SMALL_MAX};
use remotedict::fs::{Fs, FsConfig, NodeKind};
use remotedict::layout::Layout;
use remotedict::store::{BlobStore, PutOptions};
use remotedict::transfer::TransferConfig;

const ROOT: u64 = 1;

fn fs_on(store: &Arc<dyn BlobStore>, cache: &std::path::Path, folder: &str) -> Fs {
    let cfg = FsConfig {
        transfer: TransferConfig::default(),
        ..common::fs_config(cache, 1 << 30)
    };
    Fs::new(
        store.clone(),
        Layout::new(folder).unwrap(),
        Duration::from_millis(200),
        cfg,
    )
    .unwrap()
}

/// The content of test file `i`: `len` bytes that differ from every other file's.
fn content(i: usize, len: usize) -> Vec<u8> {
    let line = format!("value {i:05} of a test file\n");
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

/// Writes `names` with their contents through an `Fs` on `store` (another host), listed in the
/// index when this returns.
async fn write_all(fs: &Fs, files: &[(String, Vec<u8>)]) {
    for chunk in files.chunks(64) {
        let writes = chunk.iter().map(|(name, data)| async move {
            let (_, fh) = fs
                .create(ROOT, name, 0o644, libc::O_WRONLY | libc::O_CREAT)
                .await
                .unwrap();
            fs.write(fh, 0, data).await.unwrap();
            fs.release(fh).await.unwrap();
        });
        futures::future::join_all(writes).await;
    }
    fs.sync_index().await.unwrap();
}

/// The daemon starts with systemd's default soft limit on descriptors (1,024), as a service
/// would: its children inherit this process's limits.
fn systemd_like_soft_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_max > 1024 {
            lim.rlim_cur = lim.rlim_cur.min(1024);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// (soft, hard) "Max open files" of process `pid`.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_string(), words[4].to_string())
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Reading thousands of small files (and hundreds of larger ones) through a mount leaves the
/// daemon with few descriptors, and every value read is right.
async fn reading_many_files_holds_few_descriptors(backend: Backend) {
    systemd_like_soft_limit();
    let store = backend.store().await;
    let cache = tempfile::tempdir().unwrap();
    let writer = fs_on(&store, cache.path(), FOLDER);
    let medium = SMALL_MAX as usize + (44 << 10);
    let files: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| (format!("s{i:05}.txt"), content(i, 100 + i % 2000)))
        .chain((0..(MAX_FILES * 3)).map(|i| (format!("m{i:05}.txt"), content(i, medium))))
        .collect();
    write_all(&writer, &files).await;

    let m = Mount::start(&backend);
    let pid = m.child.id();
    for (name, data) in &files {
        let got = std::fs::read(m.path(name)).unwrap();
        assert!(&got == data, "{name}: wrong value read back");
    }
    let fds = descriptors(pid);
    assert!(
        fds < 200,
        "the daemon holds {fds} descriptors after reading {} files",
        files.len()
    );
    // Values dropped from the cache are fetched again, right.
    for (name, data) in files.iter().step_by(97) {
        assert!(&std::fs::read(m.path(name)).unwrap() == data, "{name}");
    }
    m.unmount();
}

/// The daemon raises its soft limit on open descriptors to the hard limit.
async fn the_daemon_raises_its_descriptor_limit(backend: Backend) {
    systemd_like_soft_limit();
    let m = Mount::start(&backend);
    let (soft, hard) = nofile_limits(m.child.id());
    assert_eq!(
        soft, hard,
        "the daemon's soft NOFILE limit is its hard limit"
    );
    m.unmount();
}

on_both_mounts!(
    reading_many_files_holds_few_descriptors,
    the_daemon_raises_its_descriptor_limit,
);

/// The content cache keeps at most `MAX_FILES` files open for values nobody reads, small values
/// none; a value a reader holds keeps its file; values dropped are fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_cache_bounds_its_open_files() {
    let store = common::mem_store();
    let dir = tempfile::tempdir().unwrap();
    let cache = ContentCache::new(dir.path().to_path_buf(), 1 << 30, TransferConfig::default());
    let mut blobs = Vec::new();
    for (i, len) in (0..200)
        .map(|i| (i, 1000))
        .chain((200..400).map(|i| (i, 300 << 10)))
    {
        let data = content(i, len);
        let stored = remotedict::codec::compress(&data);
        let name = format!("b{i}");
        let etag = store
            .put(&name, Bytes::from(stored.clone()), &PutOptions::default())
            .await
            .unwrap();
        blobs.push((name, etag, data, stored.len() as u64));
    }
    let read = |v: Arc<remotedict::fs::content::CachedValue>, len: usize| async move {
        let mut out = Vec::new();
        while out.len() < len {
            let chunk = v.read(out.len() as u64, 128 << 10).await.unwrap();
            assert!(!chunk.is_empty());
            out.extend_from_slice(&chunk);
        }
        out
    };
    let mut held = None;
    for (name, etag, data, stored) in &blobs {
        let sizes = Some((data.len() as u64, *stored));
        let v = cache.get(&store, name, etag, sizes).await.unwrap();
        assert!(read(v.clone(), data.len()).await == *data, "{name}");
        if held.is_none() && data.len() > SMALL_MAX as usize {
            held = Some((v, data.clone()));
        }
        assert!(
            cache.open_files() <= MAX_FILES,
            "{} open",
            cache.open_files()
        );
    }
    // The value held all along still reads right from its file.
    let (v, data) = held.unwrap();
    assert!(read(v, data.len()).await == data);
    for (name, etag, data, stored) in &blobs {
        let v = cache
            .get(&store, name, etag, Some((data.len() as u64, *stored)))
            .await
            .unwrap();
        assert!(read(v, data.len()).await == *data, "{name} read again");
    }
    assert!(cache.open_files() <= MAX_FILES);
}

/// Names looked up (and listed by readdirplus) are forgotten once the kernel forgets them; a
/// name looked up again gets a working inode; an open file keeps its inode until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inode_table_forgets_what_the_kernel_forgot() {
    let store = common::mem_store();
    let (cache, other_cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let other = fs_on(&store, other_cache.path(), "folder");
    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("f{i:02}"), content(i, 10 + i)))
        .collect();
    write_all(&other, &files).await;

    let fs = fs_on(&store, cache.path(), "folder");
    let base = fs.inode_count();
    assert_eq!(base, 1, "only the root");
    let mut inos = Vec::new();
    for (name, _) in &files {
        let a = fs.lookup_entry(ROOT, name).await.unwrap();
        // Looked up twice: the kernel holds two references.
        assert_eq!(fs.lookup_entry(ROOT, name).await.unwrap().ino, a.ino);
        inos.push(a.ino);
    }
    assert_eq!(fs.inode_count(), base + files.len());
    for &ino in &inos {
        fs.forget(ino, 1);
    }
    assert_eq!(fs.inode_count(), base + files.len(), "one lookup each left");
    for &ino in &inos {
        fs.forget(ino, 1);
    }
    assert_eq!(fs.inode_count(), base, "the table shrank back");
    assert!(fs.getattr(inos[0]).await.is_err(), "a forgotten number");

    // Looked up again: a new, working inode.
    let again = fs.lookup_entry(ROOT, &files[0].0).await.unwrap();
    assert_ne!(again.ino, inos[0]);
    assert_eq!(
        fs.getattr(again.ino).await.unwrap().size,
        files[0].1.len() as u64
    );
    assert_eq!(fs.read_all(again.ino).await.unwrap(), files[0].1);
    fs.forget(again.ino, 1);
    assert_eq!(fs.inode_count(), base);

    // readdirplus hands out every entry but `.` and `..`; a listing pins what it names until
    // it is closed.
    let fh = fs.opendir(ROOT).await.unwrap();
    assert_eq!(fs.inode_count(), base + files.len());
    let mut listed = Vec::new();
    while listed.len() < files.len() + 2 {
        let part = fs.readdir_plus(fh, listed.len()).await.unwrap();
        assert!(!part.is_empty());
        listed.extend(part);
    }
    fs.releasedir(fh);
    assert_eq!(
        fs.inode_count(),
        base + files.len(),
        "the kernel holds them"
    );
    // The kernel took only the first ten entries of the last reply, say.
    let (sent, unsent) = listed.split_at(10);
    fs.readdir_plus_unsent(unsent);
    assert_eq!(fs.inode_count(), base + 8, "ten entries, less `.` and `..`");
    for (_, e, _) in sent {
        if e.name != "." && e.name != ".." {
            assert_eq!(e.kind, NodeKind::File);
            fs.forget(e.ino, 1);
        }
    }
    assert_eq!(fs.inode_count(), base);
    // A listing closed without readdirplus leaves nothing behind.
    let fh = fs.opendir(ROOT).await.unwrap();
    fs.releasedir(fh);
    assert_eq!(fs.inode_count(), base);

    // An open file keeps its inode after the kernel forgot the name, until it closes.
    let a = fs.lookup_entry(ROOT, &files[1].0).await.unwrap();
    let fh = fs.open(a.ino, libc::O_RDONLY).await.unwrap();
    fs.forget(a.ino, 1);
    assert_eq!(fs.inode_count(), base + 1);
    assert_eq!(
        fs.getattr(a.ino).await.unwrap().size,
        files[1].1.len() as u64
    );
    assert_eq!(&fs.read(fh, 0, 4096).await.unwrap()[..], &files[1].1[..]);
    fs.release(fh).await.unwrap();
    // The next forget (of anything) looks at it again.
    fs.forget(ROOT, 1);
    assert_eq!(fs.inode_count(), base);
}
