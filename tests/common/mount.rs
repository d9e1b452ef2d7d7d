//! Mounting the real binary in tests: a backend (local store or Azurite container) and a
//! foreground daemon per mount, unmounted on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remotedict::store::BlobStore;

/// The folder every test mount serves.
pub const FOLDER: &str = "data/set1";

/// Where a test's mounts keep their data.
#[derive(Clone)]
pub enum Backend {
    Local(PathBuf),
    Azure { conn: String, container: String },
}

impl Backend {
    pub fn local(dir: &Path) -> Self {
        Backend::Local(dir.join("store"))
    }

    pub fn azure() -> Option<Self> {
        let conn = super::azure_connection_string()?;
        Some(Backend::Azure {
            conn,
            container: super::unique_container(),
        })
    }

    /// The same container through the store API, with the retry layer a mount uses (a reset
    /// connection to a busy Azurite is retried, as in the daemon).
    pub async fn store(&self) -> Arc<dyn BlobStore> {
        let raw: Arc<dyn BlobStore> = match self {
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
        };
        Arc::new(remotedict::store::retrying::RetryingStore::new(
            raw,
            remotedict::store::retry::Backoff::new(4),
        ))
    }

    pub fn command(&self, mountpoint: &Path, cache: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remotedict"));
        cmd.arg("mount").arg(mountpoint).args(["--folder", FOLDER]);
        // A short index TTL unless the test passes its own.
        if !extra.contains(&"--index-ttl") {
            cmd.args(["--index-ttl", "0.5"]);
        }
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

pub fn is_mounted(path: &Path) -> bool {
    let target = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

/// A foreground daemon serving one mount; unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
    pub child: Child,
    _tmp: tempfile::TempDir,
}

impl Mount {
    pub fn start(backend: &Backend) -> Mount {
        Mount::start_with(backend, &[])
    }

    /// Mounts with extra `remotedict mount` arguments.
    pub fn start_with(backend: &Backend, extra: &[&str]) -> Mount {
        Mount::start_logged(backend, extra, None)
    }

    /// Mounts with extra arguments, sending the daemon's log (RUST_LOG=debug) to `log`.
    pub fn start_logged(backend: &Backend, extra: &[&str], log: Option<&Path>) -> Mount {
        Mount::start_full(backend, extra, log, None)
    }

    /// Mounts with the cache directory `cache` (kept across mounts).
    pub fn start_with_cache(backend: &Backend, cache: &Path) -> Mount {
        Mount::start_full(backend, &[], None, Some(cache))
    }

    fn start_full(
        backend: &Backend,
        extra: &[&str],
        log: Option<&Path>,
        cache: Option<&Path>,
    ) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let cache = cache.map_or_else(|| tmp.path().join("cache"), Path::to_path_buf);
        let mut cmd = backend.command(&dir, &cache, &[&["--foreground"], extra].concat());
        cmd.stdout(Stdio::null());
        if let Some(log) = log {
            cmd.env("RUST_LOG", "remotedict=debug")
                .stderr(std::fs::File::create(log).unwrap());
        }
        let child = cmd.spawn().expect("remotedict starts");
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

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Runs a shell command inside the mount; panics with its output if it fails.
    pub fn sh(&self, script: &str) -> String {
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

    /// Kills the daemon with SIGKILL (as a crash would) and detaches its dead mount.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.dir)
            .status();
    }

    pub fn unmount(mut self) {
        self.stop();
    }

    pub fn stop(&mut self) {
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
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&self.dir)
                    .status();
                if !std::thread::panicking() {
                    panic!("daemon did not exit after unmount");
                }
                return;
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

/// Runs each listed async test function `fn(Backend)` with mounts on the local store and on
/// Azurite; the container exists before the test starts.
#[macro_export]
macro_rules! on_both_mounts {
    ($($name:ident),* $(,)?) => {
        mod local_store { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let tmp = tempfile::tempdir().unwrap();
                let backend = $crate::common::mount::Backend::local(tmp.path());
                backend.store().await.create_container().await.unwrap();
                super::$name(backend).await;
            }
        )* }
        mod azurite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(backend) = $crate::common::mount::Backend::azure() {
                    backend.store().await.create_container().await.unwrap();
                    super::$name(backend).await;
                }
            }
        )* }
    };
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

impl Backend {
    /// `remotedict ARGS` against this backend's container and the test folder.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remotedict"));
        cmd.args(args)
            .args(["--folder", FOLDER])
            .env_remove("AZURE_STORAGE_CONNECTION_STRING");
        match self {
            Backend::Local(dir) => {
                cmd.arg("--local").arg(dir).args(["--container", "c1"]);
            }
            Backend::Azure { conn, container } => {
                cmd.env("AZURE_STORAGE_CONNECTION_STRING", conn)
                    .args(["--container", container]);
            }
        }
        cmd
    }
}
