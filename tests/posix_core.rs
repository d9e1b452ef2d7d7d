//! POSIX details in the core over `MemStore`: FIFOs, sockets and device nodes (`mknod`) — what
//! one host makes, another host lists with the same kind, device number, mode and owner; `mv`
//! and `chmod` keep the kind; an index rebuilt from the blobs alone (`fsck`) still knows them;
//! two hosts making one name race like `O_EXCL` creates — who owns new nodes, and access times
//! set apart from modification times.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use remotedict::fs::{as_caller, Attr, Caller, Fs, FsError, NodeKind, SetAttr};
use remotedict::layout::Layout;
use remotedict::store::BlobStore;

use common::hosts::{host_with_ttl, ROOT};

fn fresh(store: &Arc<dyn BlobStore>, cache: &std::path::Path) -> Fs {
    host_with_ttl(store, cache, Duration::from_millis(1))
}

/// `makedev` as glibc encodes it in 32 bits.
fn makedev(major: u32, minor: u32) -> u32 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)
}

const NODES: [(&str, u32, u32, NodeKind); 4] = [
    ("pipe", libc::S_IFIFO | 0o640, 0, NodeKind::Fifo),
    ("sock", libc::S_IFSOCK | 0o755, 0, NodeKind::Socket),
    (
        "null",
        libc::S_IFCHR | 0o666,
        1 << 8 | 3,
        NodeKind::CharDevice,
    ),
    ("disk", libc::S_IFBLK | 0o600, 0, NodeKind::BlockDevice),
];

fn rdev_of(name: &str) -> u32 {
    match name {
        "null" => makedev(1, 3),
        "disk" => makedev(259, 300_000 & 0xfffff),
        _ => 0,
    }
}

fn summary(a: &Attr) -> (NodeKind, u16, u32, u32, u32, u64) {
    (a.kind, a.perm, a.uid, a.gid, a.rdev, a.size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_listed_alike_on_every_host_and_after_a_rebuild() {
    let store = common::mem_store();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fresh(&store, ca.path());
    let b = fresh(&store, cb.path());
    let who = Caller {
        uid: 4321,
        gid: 765,
    };
    let mut made = Vec::new();
    for (name, mode, _, kind) in NODES {
        let attr = as_caller(who, a.mknod(ROOT, name, mode, rdev_of(name)))
            .await
            .unwrap();
        assert_eq!(attr.kind, kind, "{name}");
        assert_eq!(attr.perm as u32, mode & 0o7777, "{name}");
        assert_eq!(
            (attr.uid, attr.gid),
            (4321, 765),
            "{name}: the caller owns it"
        );
        assert_eq!(attr.rdev, rdev_of(name), "{name}");
        made.push((name, summary(&attr)));
    }
    // A device number with a large major and minor survives (12 and 20 bits).
    assert_eq!(
        summary(&a.lookup(ROOT, "disk").await.unwrap()).4,
        makedev(259, 300_000 & 0xfffff)
    );
    for (name, want) in &made {
        let seen = b.lookup(ROOT, name).await.unwrap();
        assert_eq!(&summary(&seen), want, "{name} on the other host");
    }
    let dh = b.opendir(ROOT).await.unwrap();
    let listing = b.readdir(dh).unwrap();
    let listed: Vec<(String, NodeKind)> = (0..listing.len())
        .map(|i| (listing.name(i).to_string(), listing.kind(i)))
        .collect();
    for (name, _, _, kind) in NODES {
        assert!(
            listed.contains(&(name.to_string(), kind)),
            "{name} {kind:?} in {listed:?}"
        );
    }
    // Making a name that exists: EEXIST, whatever kind is there.
    assert!(matches!(
        b.mknod(ROOT, "pipe", libc::S_IFIFO | 0o644, 0).await,
        Err(FsError::Exists)
    ));

    // chmod and mv keep what it is.
    let ino = b.lookup(ROOT, "null").await.unwrap().ino;
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    b.setattr(ino, None, set).await.unwrap();
    b.rename(ROOT, "null", ROOT, "null2", false).await.unwrap();
    b.sync_index().await.unwrap(); // (what fsync of the directory waits for)
                                   // (A's copy of the index is trusted for its TTL, 1 ms here; MemStore is faster than that.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let moved = a.lookup(ROOT, "null2").await.unwrap();
    assert_eq!(
        (moved.kind, moved.perm, moved.rdev),
        (NodeKind::CharDevice, 0o600, makedev(1, 3))
    );
    assert!(matches!(
        a.lookup(ROOT, "null").await,
        Err(FsError::NotFound)
    ));

    // The index is lost; fsck rebuilds it from the blobs: every node is what it was.
    let layout = Layout::new("folder").unwrap();
    let before: Vec<_> = {
        let c = tempfile::tempdir().unwrap();
        let f = fresh(&store, c.path());
        let mut v = Vec::new();
        for name in ["pipe", "sock", "null2", "disk"] {
            v.push(summary(&f.lookup(ROOT, name).await.unwrap()));
        }
        v
    };
    let prefix = format!("{}-", layout.index_blob());
    for blob in remotedict::store::list_all(store.as_ref(), &layout.index_blob())
        .await
        .unwrap()
    {
        if blob.name == layout.index_blob() || blob.name.starts_with(&prefix) {
            store.delete(&blob.name, &Default::default()).await.unwrap();
        }
    }
    let (report, blobs) = remotedict::fsck::check(&store, &layout).await.unwrap();
    remotedict::fsck::repair(&store, &layout, &report, &blobs)
        .await
        .unwrap();
    let c = tempfile::tempdir().unwrap();
    let f = fresh(&store, c.path());
    for (i, name) in ["pipe", "sock", "null2", "disk"].into_iter().enumerate() {
        assert_eq!(
            summary(&f.lookup(ROOT, name).await.unwrap()),
            before[i],
            "{name} after the rebuild"
        );
    }
}

/// Two hosts make the same name at once (one a FIFO, one a directory): exactly one wins, the
/// other gets EEXIST, and both then list the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_making_one_name_race_like_exclusive_creates() {
    for round in 0..20 {
        let store = common::mem_store();
        let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Arc::new(fresh(&store, ca.path()));
        let b = Arc::new(fresh(&store, cb.path()));
        let ta = {
            let a = a.clone();
            tokio::spawn(async move { a.mknod(ROOT, "n", libc::S_IFIFO | 0o644, 0).await })
        };
        let tb = {
            let b = b.clone();
            tokio::spawn(async move { b.mkdir(ROOT, "n", 0o755).await })
        };
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let winner = match (&ra, &rb) {
            (Ok(_), Err(FsError::Exists)) => NodeKind::Fifo,
            (Err(FsError::Exists), Ok(_)) => NodeKind::Dir,
            _ => panic!("round {round}: {ra:?} / {rb:?}"),
        };
        assert_eq!(a.lookup(ROOT, "n").await.unwrap().kind, winner);
        assert_eq!(b.lookup(ROOT, "n").await.unwrap().kind, winner);
    }
}

/// New files, directories, links and nodes belong to the caller; in a set-group-ID directory
/// they get its group, and directories made there are set-group-ID too. Outside a request they
/// belong to the mount's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_nodes_belong_to_the_caller_and_inherit_a_set_group_id_directory() {
    let store = common::mem_store();
    let c = tempfile::tempdir().unwrap();
    let fs = fresh(&store, c.path());
    let alice = Caller {
        uid: 1001,
        gid: 1001,
    };
    let shared = as_caller(alice, fs.mkdir(ROOT, "shared", 0o755))
        .await
        .unwrap();
    assert_eq!((shared.uid, shared.gid), (1001, 1001));
    let set = SetAttr {
        mode: Some(0o2775),
        gid: Some(50),
        ..Default::default()
    };
    fs.setattr(shared.ino, None, set).await.unwrap();
    let bob = Caller {
        uid: 1002,
        gid: 1002,
    };
    let (file, fh) = as_caller(
        bob,
        fs.create(
            shared.ino,
            "f",
            0o644,
            libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
        ),
    )
    .await
    .unwrap();
    fs.release(fh).await.unwrap();
    let dir = as_caller(bob, fs.mkdir(shared.ino, "d", 0o755))
        .await
        .unwrap();
    let link = as_caller(bob, fs.symlink(shared.ino, "l", "f"))
        .await
        .unwrap();
    let fifo = as_caller(bob, fs.mknod(shared.ino, "p", libc::S_IFIFO | 0o644, 0))
        .await
        .unwrap();
    for (what, a) in [
        ("file", &file),
        ("dir", &dir),
        ("link", &link),
        ("fifo", &fifo),
    ] {
        assert_eq!((a.uid, a.gid), (1002, 50), "{what}");
        // As listed by another host, after the save.
        let c2 = tempfile::tempdir().unwrap();
        let other = fresh(&store, c2.path());
        let seen = other.lookup(shared.ino, &a_name(what)).await;
        let seen = match seen {
            Ok(s) => s,
            // (The other host numbers inodes itself: look the directory up first.)
            Err(_) => {
                let d = other.lookup(ROOT, "shared").await.unwrap();
                other.lookup(d.ino, &a_name(what)).await.unwrap()
            }
        };
        assert_eq!((seen.uid, seen.gid), (1002, 50), "{what} on another host");
    }
    assert_eq!(
        dir.perm & 0o2000,
        0o2000,
        "a directory made there is setgid"
    );
    assert_eq!(file.perm & 0o2000, 0, "a file made there is not");
    // Outside a request: the mount's user.
    let plain = fs.mkdir(ROOT, "plain", 0o755).await.unwrap();
    let cfg = common::fs_config(c.path(), 1);
    assert_eq!((plain.uid, plain.gid), (cfg.uid, cfg.gid));
}

fn a_name(what: &str) -> String {
    match what {
        "file" => "f",
        "dir" => "d",
        "link" => "l",
        _ => "p",
    }
    .to_string()
}

/// `touch -a`/`utimensat`: an access time set apart from the mtime is kept (another host and an
/// index rebuilt from the blobs show it); setting only the mtime leaves the access time as it
/// was; a new value's access time follows its mtime again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_times_set_apart_from_mtimes_are_kept() {
    let store = common::mem_store();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fresh(&store, ca.path());
    let b = fresh(&store, cb.path());
    common::hosts::write_file(&a, "f", b"value").await;
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let ino = a.lookup(ROOT, "f").await.unwrap().ino;
    let set = SetAttr {
        atime: Some(at(1_900_000_000)),
        mtime: Some(at(1_950_000_000)),
        ..Default::default()
    };
    let attr = a.setattr(ino, None, set).await.unwrap();
    assert_eq!(
        (attr.atime, attr.mtime),
        (at(1_900_000_000), at(1_950_000_000))
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let seen = b.lookup(ROOT, "f").await.unwrap();
    assert_eq!(
        (seen.atime, seen.mtime),
        (at(1_900_000_000), at(1_950_000_000))
    );
    // Only the mtime: the access time stays.
    let set = SetAttr {
        mtime: Some(at(1_960_000_000)),
        ..Default::default()
    };
    let attr = b.setattr(seen.ino, None, set).await.unwrap();
    assert_eq!(
        (attr.atime, attr.mtime),
        (at(1_900_000_000), at(1_960_000_000))
    );
    // Only the access time.
    let set = SetAttr {
        atime: Some(at(100_000_000)),
        ..Default::default()
    };
    let attr = b.setattr(seen.ino, None, set).await.unwrap();
    assert_eq!(
        (attr.atime, attr.mtime),
        (at(100_000_000), at(1_960_000_000))
    );
    // The blob carries it: a rebuilt index has it too.
    let props = store.head("folder/f").await.unwrap();
    let rebuilt = remotedict::index::meta::entry_from_props(&props);
    assert_eq!(rebuilt.atime_ns, Some(100_000_000 * 1_000_000_000));
    // A new value: the access time follows the mtime again.
    let before = SystemTime::now();
    common::hosts::write_file(&b, "f", b"new value").await;
    let attr = b.lookup(ROOT, "f").await.unwrap();
    assert!(attr.mtime >= before && attr.atime == attr.mtime, "{attr:?}");
}

/// A file's own `user.*` attributes: set, read, listed (never `user.remotedict.*`), replaced and
/// removed with the `XATTR_CREATE`/`XATTR_REPLACE` rules; another host reads them; they stay
/// across a new value, a rename and an index rebuilt from the blobs; set on a file whose content
/// is not saved yet they are saved with it; past Azure's metadata room they are refused with
/// E2BIG or ENOSPC and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_attributes_are_kept_with_the_file_everywhere() {
    use remotedict::fs::xattr::{XATTR_CREATE, XATTR_REPLACE};
    let store = common::mem_store();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(fresh(&store, ca.path()));
    let b = Arc::new(fresh(&store, cb.path()));
    common::hosts::write_file(&a, "f", b"value").await;
    let ino = a.lookup(ROOT, "f").await.unwrap().ino;
    let binary = vec![0u8, 255, 10, 13, b'='];
    a.setxattr(ino, "user.mime_type", b"text/plain", 0, 0)
        .await
        .unwrap();
    a.setxattr(ino, "user.Bin ary", &binary, XATTR_CREATE, 0)
        .await
        .unwrap();
    assert!(matches!(
        a.setxattr(ino, "user.mime_type", b"x", XATTR_CREATE, 0)
            .await,
        Err(FsError::Exists)
    ));
    assert!(matches!(
        a.setxattr(ino, "user.absent", b"x", XATTR_REPLACE, 0).await,
        Err(FsError::NoAttribute)
    ));
    assert_eq!(
        a.listxattr(ino).await.unwrap(),
        vec!["user.Bin ary".to_string(), "user.mime_type".to_string()]
    );
    // Another host.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ib = b.lookup(ROOT, "f").await.unwrap().ino;
    assert_eq!(b.getxattr(ib, "user.Bin ary").await.unwrap(), binary);
    assert_eq!(
        b.getxattr(ib, "user.mime_type").await.unwrap(),
        b"text/plain"
    );
    assert!(matches!(
        b.getxattr(ib, "user.none").await,
        Err(FsError::NoAttribute)
    ));
    // Replaced there, then a new value here: the attributes stay.
    b.setxattr(ib, "user.mime_type", b"text/csv", XATTR_REPLACE, 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    common::hosts::write_file(&a, "f", b"another value").await;
    a.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    a.sync_index().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ig = b.lookup(ROOT, "g").await.unwrap().ino;
    assert_eq!(b.getxattr(ig, "user.mime_type").await.unwrap(), b"text/csv");
    assert_eq!(
        common::hosts::read(&b, "g").await.unwrap(),
        b"another value"
    );
    // Removed.
    b.removexattr(ig, "user.Bin ary").await.unwrap();
    assert!(matches!(
        b.removexattr(ig, "user.Bin ary").await,
        Err(FsError::NoAttribute)
    ));
    assert_eq!(
        b.listxattr(ig).await.unwrap(),
        vec!["user.mime_type".to_string()]
    );
    // The blob carries them: an entry rebuilt from it has them.
    let props = store.head("folder/g").await.unwrap();
    let rebuilt = remotedict::index::meta::entry_from_props(&props);
    assert_eq!(
        rebuilt.xattrs,
        vec![("mime_type".to_string(), b"text/csv".to_vec())]
    );

    // Set while the content is not saved yet: saved with it.
    let (attr, fh) = a
        .create(ROOT, "new", 0o644, libc::O_CREAT | libc::O_WRONLY)
        .await
        .unwrap();
    a.write(fh, 0, b"fresh").await.unwrap();
    a.setxattr(attr.ino, "user.origin", b"here", 0, 0)
        .await
        .unwrap();
    assert_eq!(a.getxattr(attr.ino, "user.origin").await.unwrap(), b"here");
    a.fsync(fh).await.unwrap();
    a.release(fh).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let inew = b.lookup(ROOT, "new").await.unwrap().ino;
    assert_eq!(b.getxattr(inew, "user.origin").await.unwrap(), b"here");

    // Too big for a blob's metadata: refused, nothing changed.
    assert!(matches!(
        b.setxattr(inew, "user.big", &vec![7u8; 7000], 0, 0).await,
        Err(FsError::TooBig(_))
    ));
    let mut stored = 0;
    let full = loop {
        match b
            .setxattr(inew, &format!("user.n{stored}"), &[1u8; 1000], 0, 0)
            .await
        {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20);
    };
    assert!(matches!(full, FsError::NoSpace(_)), "{full:?}");
    assert!(stored >= 4, "only {stored} attributes of 1000 bytes fit");
    assert_eq!(b.listxattr(inew).await.unwrap().len(), stored + 1);
    // remotedict's own attributes are read by name, never listed.
    assert!(b.getxattr(inew, "user.remotedict.etag").await.is_ok());
    assert!(!b
        .listxattr(inew)
        .await
        .unwrap()
        .iter()
        .any(|n| n.starts_with("user.remotedict.")));
}

/// A directory's mtime and ctime move when a name in it is made, removed or renamed (as
/// `make`, `rsync` and backup tools expect), on every host; a `chmod` of the directory made
/// meanwhile on another host is not undone by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_changes_when_its_names_change() {
    let store = common::mem_store();
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fresh(&store, ca.path());
    let b = fresh(&store, cb.path());
    let d = a.mkdir(ROOT, "d", 0o755).await.unwrap();
    let other = a.mkdir(ROOT, "other", 0o755).await.unwrap();
    let mut last = d.mtime;
    let mut step = |what: &str, attr: Attr| {
        assert!(
            attr.mtime > last && attr.ctime >= attr.mtime,
            "{what}: mtime {:?} after {:?}",
            attr.mtime,
            last
        );
        last = attr.mtime;
    };
    let settle = || async {
        a.sync_index().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (f, fh) = a
        .create(d.ino, "f", 0o644, libc::O_CREAT | libc::O_WRONLY)
        .await
        .unwrap();
    a.write(fh, 0, b"x").await.unwrap();
    a.release(fh).await.unwrap();
    settle().await;
    step("a file made", b.lookup(ROOT, "d").await.unwrap());
    a.symlink(d.ino, "l", "f").await.unwrap();
    settle().await;
    step("a link made", b.lookup(ROOT, "d").await.unwrap());
    a.rename(d.ino, "f", other.ino, "f", false).await.unwrap();
    settle().await;
    step("a name moved out", b.lookup(ROOT, "d").await.unwrap());
    let o = b.lookup(ROOT, "other").await.unwrap();
    assert!(
        o.mtime > other.mtime,
        "the directory moved into changed too"
    );
    a.unlink(d.ino, "l").await.unwrap();
    settle().await;
    step("a name removed", b.lookup(ROOT, "d").await.unwrap());
    let _ = f;
    // A chmod on b, then a change of names on a host whose copy of d is older (its index copy
    // is trusted for 30 s): the mode stays.
    let cs = tempfile::tempdir().unwrap();
    let stale = host_with_ttl(&store, cs.path(), Duration::from_secs(30));
    let sd = stale.lookup(ROOT, "d").await.unwrap();
    let bd = b.lookup(ROOT, "d").await.unwrap();
    let set = SetAttr {
        mode: Some(0o700),
        ..Default::default()
    };
    b.setattr(bd.ino, None, set).await.unwrap();
    stale.mkdir(sd.ino, "sub", 0o755).await.unwrap();
    settle().await;
    let seen = b.lookup(ROOT, "d").await.unwrap();
    assert_eq!(seen.perm, 0o700, "the chmod on the other host stays");
}

/// A size past Azure's largest blob is EFBIG, for `truncate` and for a write, and the file is
/// left as it was (never a petabyte of zeros staged, then uploaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_past_the_largest_blob_are_efbig() {
    let store = common::mem_store();
    let c = tempfile::tempdir().unwrap();
    let fs = fresh(&store, c.path());
    common::hosts::write_file(&fs, "f", b"small").await;
    let ino = fs.lookup(ROOT, "f").await.unwrap().ino;
    let set = SetAttr {
        size: Some(999_999_999_999_999),
        ..Default::default()
    };
    let e = fs.setattr(ino, None, set).await.unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG, "{e}");
    let fh = common::hosts::open_write(&fs, "f").await;
    let e = fs
        .write(fh, remotedict::fs::MAX_FILE_SIZE, b"x")
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG, "{e}");
    fs.write(fh, 0, b"still fine").await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(common::hosts::read(&fs, "f").await.unwrap(), b"still fine");
}

/// Attributes another host set are never undone by a host acting on an older copy of the index
/// (a `chmod` there applies to the newest version of the blob, attributes and all), and an
/// attribute set on a file open for writing here is kept by its next save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_survive_stale_hosts_and_open_writers() {
    let store = common::mem_store();
    let (ca, cb, cs) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = Arc::new(fresh(&store, ca.path()));
    let b = Arc::new(fresh(&store, cb.path()));
    let stale = host_with_ttl(&store, cs.path(), Duration::from_secs(30));
    common::hosts::write_file(&a, "f", b"value").await;
    let sf = stale.lookup(ROOT, "f").await.unwrap(); // its copy of the index: before the setfattr
    let bf = b.lookup(ROOT, "f").await.unwrap();
    b.setxattr(bf.ino, "user.kept", b"yes", 0, 0).await.unwrap();
    let set = SetAttr {
        atime: Some(UNIX_EPOCH + Duration::from_secs(1_000)),
        ..Default::default()
    };
    b.setattr(bf.ino, None, set).await.unwrap();
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    stale.setattr(sf.ino, None, set).await.unwrap();
    let c = tempfile::tempdir().unwrap();
    let check = fresh(&store, c.path());
    let cf = check.lookup(ROOT, "f").await.unwrap();
    assert_eq!(cf.perm, 0o600);
    assert_eq!(cf.atime, UNIX_EPOCH + Duration::from_secs(1_000));
    assert_eq!(check.getxattr(cf.ino, "user.kept").await.unwrap(), b"yes");

    // Open for writing (not truncated), saved once, then an attribute set through it, then
    // more writes and the close: the close succeeds and the attribute stays.
    let (_, fh) = a
        .create(ROOT, "g", 0o644, libc::O_CREAT | libc::O_RDWR)
        .await
        .unwrap();
    a.write(fh, 0, b"first").await.unwrap();
    a.fsync(fh).await.unwrap();
    let ino = a.lookup(ROOT, "g").await.unwrap().ino;
    a.setxattr(ino, "user.tag", b"t", 0, 0).await.unwrap();
    a.write(fh, 5, b" second").await.unwrap();
    a.fsync(fh).await.unwrap();
    a.release(fh).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let g = b.lookup(ROOT, "g").await.unwrap();
    assert_eq!(b.getxattr(g.ino, "user.tag").await.unwrap(), b"t");
    assert_eq!(common::hosts::read(&b, "g").await.unwrap(), b"first second");
}

/// The temporary-file idiom: a file unlinked while open goes on being written, read and
/// `fstat`ed through its descriptor (link count 0), while its name is free at once (a new file
/// of that name is another file) and nothing of it is saved anywhere; a descriptor open only
/// for reading `fstat`s it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_unlinked_while_open_lives_on_through_its_descriptor() {
    let store = common::mem_store();
    let c = tempfile::tempdir().unwrap();
    let fs = fresh(&store, c.path());
    let (attr, fh) = fs
        .create(ROOT, "tmp", 0o600, libc::O_CREAT | libc::O_RDWR)
        .await
        .unwrap();
    fs.write(fh, 0, b"scratch").await.unwrap();
    fs.unlink(ROOT, "tmp").await.unwrap();
    fs.write(fh, 7, b" space").await.unwrap();
    let now = fs.getattr(attr.ino).await.unwrap();
    assert_eq!((now.size, now.nlink), (13, 0));
    assert_eq!(&fs.read(fh, 0, 100).await.unwrap()[..], b"scratch space");
    // The name is free: a new file there is another one.
    common::hosts::write_file(&fs, "tmp", b"new").await;
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(common::hosts::read(&fs, "tmp").await.unwrap(), b"new");
    let c2 = tempfile::tempdir().unwrap();
    let other = fresh(&store, c2.path());
    assert_eq!(common::hosts::read(&other, "tmp").await.unwrap(), b"new");

    // Open for reading, then unlinked: fstat shows it, with no name.
    common::hosts::write_file(&fs, "r", b"read me").await;
    let ino = fs.lookup(ROOT, "r").await.unwrap().ino;
    let rh = fs.open(ino, libc::O_RDONLY).await.unwrap();
    fs.unlink(ROOT, "r").await.unwrap();
    let gone = fs.getattr(ino).await.unwrap();
    assert_eq!((gone.size, gone.nlink), (7, 0));
    fs.release(rh).await.unwrap();
    assert!(matches!(fs.lookup(ROOT, "r").await, Err(FsError::NotFound)));
}
