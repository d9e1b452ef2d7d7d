//! The real binary mounted with FUSE, on the local store and on Azurite, driven by real programs
//! (`cp`, `cat`, `ls`, `mv`, `rm`, `mkdir -p`, `echo >>`, `truncate`, `diff -r`), and checked
//! through the store API rather than the mount.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{is_mounted, pseudo_random, Backend, Mount, FOLDER};

use remotedict::index::SharedIndex;
use remotedict::layout::Layout;
use remotedict::store::{list_all, GetResult};

/// A tree of 200 small files in nested directories, plus one 50 MiB file (half compressible).
fn make_tree(root: &Path) {
    for i in 0..200u64 {
        let dir = root.join(format!("d{}/sub{}", i % 5, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let body = if i % 2 == 0 {
            format!("file {i}\n").repeat(i as usize + 1).into_bytes()
        } else {
            pseudo_random(100 + i as usize * 37, i)
        };
        std::fs::write(dir.join(format!("f{i:03}.txt")), body).unwrap();
    }
    let mut big = pseudo_random(25 << 20, 99);
    big.extend(std::iter::repeat_n(b"compressible ".as_slice(), (25 << 20) / 13).flatten());
    std::fs::write(root.join("big.bin"), big).unwrap();
}

/// A few files with distinct modes and mtimes, and an empty directory.
fn make_small_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root.join("sub/empty")).unwrap();
    for (name, mode) in [("a", 0o644), ("b", 0o600), ("sub/c", 0o755)] {
        let p = root.join(name);
        std::fs::write(&p, format!("content of {name}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(root.join("b"))
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "diff -r differs:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Each value is an LZ4 frame at `<folder>/<key>`, and the index lists exactly the keys.
async fn check_container(backend: &Backend, expected_files: &[String]) {
    let store = backend.store().await;
    let layout = Layout::new(FOLDER).unwrap();
    let index = SharedIndex::new(store.clone(), layout.index_blob(), Duration::from_secs(1));
    let idx = index.current().await.unwrap();
    let indexed_files: Vec<String> = idx
        .entries
        .iter()
        .filter(|(_, e)| e.kind == remotedict::index::EntryKind::File)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        indexed_files, expected_files,
        "the index lists exactly the files"
    );
    let blobs = list_all(store.as_ref(), layout.prefix()).await.unwrap();
    let blob_keys: Vec<String> = blobs
        .iter()
        .filter(|b| !b.metadata.contains_key("hdi_isfolder"))
        .filter_map(|b| layout.key_of(&b.name).map(str::to_string))
        .collect();
    assert_eq!(
        blob_keys, expected_files,
        "one blob per file, named <folder>/<key>"
    );
    assert!(
        blobs.iter().any(|b| b.name == layout.index_blob()),
        "the index blob is listed with the folder"
    );
    for b in blobs
        .iter()
        .filter(|b| !b.metadata.contains_key("hdi_isfolder"))
    {
        let Some(key) = layout.key_of(&b.name) else {
            continue;
        };
        let GetResult::Found { data, .. } = store.get(&b.name, Some(0..4), None).await.unwrap()
        else {
            panic!()
        };
        assert!(
            remotedict::codec::is_lz4(&data),
            "{} is not an LZ4 frame",
            b.name
        );
        assert_eq!(
            idx.entries.get(key).expect("listed").etag,
            b.etag,
            "index etag of {key} matches the blob"
        );
    }
}

async fn posix_tools_work(backend: Backend) {
    let m = Mount::start(&backend);
    m.sh("echo hello > a.txt && cat a.txt | grep -qx hello");
    m.sh("echo more >> a.txt && test \"$(cat a.txt)\" = \"$(printf 'hello\\nmore')\"");
    m.sh("truncate -s 3 a.txt && test \"$(cat a.txt)\" = hel && test $(stat -c %s a.txt) = 3");
    m.sh("mkdir -p x/y/z && cp /etc/hostname x/y/z/h && cmp /etc/hostname x/y/z/h");
    m.sh("mv x/y/z/h x/moved && test ! -e x/y/z/h && cmp /etc/hostname x/moved");
    m.sh("mv x renamed && test -d renamed/y/z && test -f renamed/moved && test ! -e x");
    let ls = m.sh("ls -l");
    assert!(ls.contains("a.txt") && ls.contains("renamed"), "{ls}");
    m.sh(
        "rm renamed/moved && test ! -e renamed/moved && rmdir renamed/y/z && test ! -e renamed/y/z",
    );
    let err = Command::new("rmdir")
        .arg(m.path("renamed"))
        .output()
        .unwrap();
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("not empty"));
    m.sh("touch empty && test -f empty && test ! -s empty");
    let long = "n".repeat(256);
    let out = Command::new("touch").arg(m.path(&long)).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("File name too long"),
        "{out:?}"
    );
    // rsync -a: modes and mtimes are kept, so a second run has nothing to transfer.
    let src = tempfile::tempdir().unwrap();
    make_small_tree(src.path());
    let rsync = |extra: &str| {
        m.sh(&format!(
            "rsync -a {extra} {}/ synced/",
            src.path().display()
        ))
    };
    rsync("");
    diff_r(src.path(), &m.path("synced"));
    assert_eq!(
        rsync("--itemize-changes").trim(),
        "",
        "second rsync -a transferred something"
    );
    m.sh("chmod 600 synced/a && test $(stat -c %a synced/a) = 600");
    m.unmount();
    // Everything survives a remount: the empty directory too.
    let m = Mount::start(&backend);
    m.sh("test \"$(cat a.txt)\" = hel && test -d renamed/y && test -f empty");
    m.sh("test $(stat -c %a synced/a) = 600");
    let want = std::fs::metadata(src.path().join("b")).unwrap();
    let got = std::fs::metadata(m.path("synced/b")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (got.mtime(), got.mode() & 0o7777),
        (want.mtime(), 0o600),
        "mtime and mode survive a remount"
    );
    assert!(
        m.path("synced/sub/empty").is_dir(),
        "an empty directory survives a remount"
    );
    m.unmount();
}

async fn tree_copy_diff_and_second_mount(backend: Backend) {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    let started = Instant::now();
    let out = Command::new("cp")
        .arg("-r")
        .arg(src.path())
        .arg(a.path("tree"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("cp -r of 200 files + 50 MiB: {:?}", started.elapsed());
    diff_r(src.path(), &a.path("tree"));
    // The second mount sees the first one's closed files within the index TTL.
    std::thread::sleep(Duration::from_millis(700));
    diff_r(src.path(), &b.path("tree"));
    a.sh("echo changed > tree/d0/sub0/f000.txt");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        std::fs::read_to_string(b.path("tree/d0/sub0/f000.txt")).unwrap(),
        "changed\n"
    );
    b.unmount();
    a.unmount();
    let expected: Vec<String> = files_under(src.path())
        .into_iter()
        .map(|f| format!("tree/{f}"))
        .collect();
    check_container(&backend, &expected).await;
    // After a remount, the tree is still identical (but for the changed file).
    std::fs::write(src.path().join("d0/sub0/f000.txt"), "changed\n").unwrap();
    let c = Mount::start(&backend);
    diff_r(src.path(), &c.path("tree"));
    c.unmount();
}

async fn daemon_mode_reports_readiness(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = backend
        .command(&dir, &tmp.path().join("cache"), &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "daemon mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(&dir),
        "the mount is ready when the command returns"
    );
    std::fs::write(dir.join("k"), b"v").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_remotedict"))
        .arg("unmount")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&dir) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second daemon on a missing mount point fails with a message and a non-zero exit code.
    let out = backend
        .command(&tmp.path().join("missing"), &tmp.path().join("cache"), &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );
}

on_both_mounts!(
    posix_tools_work,
    tree_copy_diff_and_second_mount,
    daemon_mode_reports_readiness
);

/// A listing that nothing stats (`ls -f`, a script's glob) goes on as plain readdir after its first
/// batch (`FUSE_READDIRPLUS_AUTO`): the kernel then holds no inode per name, so once the listing
/// is closed the daemon holds none either (`ls -l` still gets attributes with the names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_nobody_stats_leaves_no_inode_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::local(dir.path());
    let m = Mount::start(&backend);
    let store = backend.store().await;
    let layout = Layout::new(FOLDER).unwrap();
    let index = SharedIndex::new(store.clone(), layout.index_blob(), Duration::from_secs(1));
    let names = 2000u64;
    let changes = (0..names)
        .map(|i| remotedict::index::Change::Put {
            key: format!("many/f{i:05}"),
            entry: remotedict::index::Entry::file(1, 1, 0, format!("\"0x{:X}\"", i + 1)),
        })
        .collect();
    index.commit(changes).await.unwrap();
    // (The mount's copy of the index is at most 0.5 s old.)
    std::thread::sleep(Duration::from_millis(700));
    let inodes = |m: &Mount| -> u64 {
        let text = std::fs::read_to_string(m.path(".remotedict/status")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["inodes"].as_u64().unwrap()
    };
    let listed = m.sh("ls -f many | grep -c '^f'");
    assert_eq!(listed.trim(), names.to_string());
    // (releasedir reaches the daemon just after `ls` exits.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = inodes(&m);
    while held > names / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        held = inodes(&m);
    }
    assert!(
        held <= names / 4,
        "{held} inodes held after listing {names} names nobody stat'ed"
    );
    // `ls -l` still has every name's attributes.
    let long = m.sh("ls -l many | grep -c '^-'");
    assert_eq!(long.trim(), names.to_string());
}
