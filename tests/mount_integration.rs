//! The real binary mounted with FUSE, on the local store and on Azurite, driven by real programs
//! (`cp`, `cat`, `ls`, `mv`, `rm`, `mkdir -p`, `echo >>`, `truncate`, `diff -r`), and checked
//! through the store API rather than the mount.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remotedict::index::SharedIndex;
use remotedict::layout::Layout;
use remotedict::store::{list_all, BlobStore, GetResult};

const FOLDER: &str = "data/set1";

/// Where a test's mounts keep their data.
#[derive(Clone)]
enum Backend {
    Local(PathBuf),
    Azure { conn: String, container: String },
}

impl Backend {
    fn local(dir: &Path) -> Self {
        Backend::Local(dir.join("store"))
    }

    fn azure() -> Option<Self> {
        let conn = common::azure_connection_string()?;
        Some(Backend::Azure {
            conn,
            container: common::unique_container(),
        })
    }

    /// The same container through the store API.
    async fn store(&self) -> Arc<dyn BlobStore> {
        match self {
            Backend::Local(dir) => {
                Arc::new(remotedict::store::local::LocalStore::new(dir.join("c1")))
            }
            Backend::Azure { conn, container } => Arc::new(
                remotedict::store::azure::AzureStore::from_connection_string(
                    conn,
                    container,
                    Default::default(),
                )
                .unwrap(),
            ),
        }
    }

    fn command(&self, mountpoint: &Path, cache: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remotedict"));
        cmd.arg("mount")
            .arg(mountpoint)
            .args(["--folder", FOLDER, "--index-ttl", "0.5"]);
        cmd.arg("--cache-dir").arg(cache);
        cmd.env_remove("AZURE_STORAGE_CONNECTION_STRING");
        match self {
            Backend::Local(dir) => {
                cmd.arg("--local").arg(dir).args(["--container", "c1"]);
            }
            Backend::Azure { conn, container } => {
                cmd.env("AZURE_STORAGE_CONNECTION_STRING", conn).args([
                    "--container",
                    container,
                    "--create-container",
                ]);
            }
        }
        cmd.args(extra);
        cmd
    }
}

fn is_mounted(path: &Path) -> bool {
    let target = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

/// A foreground daemon serving one mount; unmounted on drop.
struct Mount {
    dir: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl Mount {
    fn start(backend: &Backend) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let child = backend
            .command(&dir, &tmp.path().join("cache"), &["--foreground"])
            .stdout(Stdio::null())
            .spawn()
            .expect("remotedict starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&dir) {
            assert!(
                Instant::now() < deadline,
                "mount did not appear within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mount {
            dir,
            child,
            _tmp: tmp,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Runs a shell command inside the mount; panics with its output if it fails.
    fn sh(&self, script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success() || std::thread::panicking(),
                    "daemon exited with {status}"
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not exit after unmount");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) || self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

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
            idx.entries[key].etag, b.etag,
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

macro_rules! on_both {
    ($($name:ident),*) => {
        mod local_store { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let tmp = tempfile::tempdir().unwrap();
                super::$name(super::Backend::local(tmp.path())).await;
            }
        )* }
        mod azurite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(b) = super::Backend::azure() {
                    super::$name(b).await;
                }
            }
        )* }
    };
}

on_both!(
    posix_tools_work,
    tree_copy_diff_and_second_mount,
    daemon_mode_reports_readiness
);
