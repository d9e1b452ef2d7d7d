//! Daemonizing: re-run this binary in the foreground as a child in its own session, its stderr
//! sent to the log file, and wait on a pipe for the child to say the mount is ready (or why it
//! failed): the parent's exit code tells whether the mount worked, like mount(8).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context, Result};

/// The variable that hands the child the readiness pipe's write end.
const READY_FD_ENV: &str = "REMOTEDICT_READY_FD";
/// The variable that tells the child which log file its stderr goes to (reopened on SIGHUP).
const LOG_FILE_ENV: &str = "REMOTEDICT_LOG_FILE";

/// Points stderr (the log) at a fresh open of the daemon's log file, so a log rotated away
/// (renamed by logrotate) is let go and the file at the path is written from now on. Returns the
/// path, or `None` when this process does not log to a file (a foreground mount).
pub fn reopen_log() -> Result<Option<std::path::PathBuf>> {
    let Some(path) = std::env::var_os(LOG_FILE_ENV).map(std::path::PathBuf::from) else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("reopening the log file {}", path.display()))?;
    // SAFETY: dup2 onto stderr of a descriptor we own; log lines written meanwhile go to one file
    // or the other, whole.
    if unsafe { libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pointing the log at {}", path.display()));
    }
    Ok(Some(path))
}

/// Older log files kept by [`rotate_log`]: FILE.1 (the newest) to FILE.3.
const LOG_KEEP: u32 = 3;

/// How often a daemon looks at its log file's size.
const LOG_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Rotates the log file once the file this process writes (its stderr) has grown past
/// `max_bytes` (FILE → FILE.1 → … → FILE.3, the oldest dropped) and goes on in a fresh FILE;
/// `Ok(false)` when it is smaller, or this process does not log to a file. When FILE is no
/// longer the file written (another mount sharing the log rotated it, or it was deleted), the
/// fresh FILE is simply opened.
pub fn rotate_log(max_bytes: u64) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = std::env::var_os(LOG_FILE_ENV).map(std::path::PathBuf::from) else {
        return Ok(false);
    };
    // SAFETY: fstat of stderr into a zeroed, writable struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut st) } != 0 {
        return Ok(false);
    }
    let at_path = std::fs::metadata(&path).ok();
    let same = at_path
        .as_ref()
        .is_some_and(|m| m.dev() == st.st_dev && m.ino() == st.st_ino);
    if !same {
        reopen_log()?;
        log::info!(
            "log file {} was moved away or deleted; writing to a new one",
            path.display()
        );
        return Ok(false);
    }
    if max_bytes == 0 || (st.st_size as u64) < max_bytes {
        return Ok(false);
    }
    let numbered = |n: u32| {
        let mut p = path.clone().into_os_string();
        p.push(format!(".{n}"));
        std::path::PathBuf::from(p)
    };
    for n in (1..LOG_KEEP).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    std::fs::rename(&path, numbered(1))
        .with_context(|| format!("rotating the log file {}", path.display()))?;
    reopen_log()?;
    Ok(true)
}

/// Keeps a daemon's log file under `max_mib` MiB, looking every [`LOG_CHECK`] (runs forever;
/// spawn it).
pub async fn cap_log(max_mib: u64) {
    loop {
        tokio::time::sleep(LOG_CHECK).await;
        match rotate_log(max_mib.saturating_mul(1 << 20)) {
            Ok(true) => log::info!("log file rotated (it had reached {max_mib} MiB)"),
            Ok(false) => {}
            Err(e) => log::warn!("{e:#}"),
        }
    }
}

/// The child's end of the readiness pipe: says `ready`, or why the mount failed.
pub struct Readiness(Option<std::fs::File>);

impl Readiness {
    /// The pipe our parent opened for us, if any (taken out of the environment).
    pub fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|s| s.parse::<i32>().ok());
        // SAFETY: the fd number comes from our own parent, which opened it for us.
        let file = fd.map(|fd| unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fd)) });
        std::env::remove_var(READY_FD_ENV);
        Readiness(file)
    }

    /// Tells the parent the mount failed (and why); returns the error.
    pub fn fail(&mut self, e: anyhow::Error) -> anyhow::Error {
        if let Some(r) = self.0.as_mut() {
            let _ = writeln!(r, "{e:#}");
        }
        e
    }

    /// Tells the parent the mount is ready; the parent then exits.
    pub fn ready(&mut self) {
        if let Some(mut r) = self.0.take() {
            let _ = writeln!(r, "ready");
        }
    }
}

/// Runs `argv` (the command line, program name first) again with `--foreground` as a daemon
/// logging to `log_path`, and waits until it says the mount on `mountpoint` is ready.
pub fn daemonize(
    argv: &[OsString],
    cache_dir: &Path,
    log_path: &Path,
    mountpoint: &Path,
) -> Result<()> {
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening the log file {}", log_path.display()))?;
    let (mut reader, writer) = std::io::pipe().context("creating a pipe")?;
    let write_fd = writer.as_raw_fd();
    let exe = std::env::current_exe().context("finding the remotedict executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(argv.iter().skip(1))
        .arg("--foreground")
        .env(READY_FD_ENV, write_fd.to_string())
        .env(LOG_FILE_ENV, log_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Let the child inherit the write end of the readiness pipe.
            libc::fcntl(write_fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the remotedict daemon")?;
    drop(writer);
    let mut answer = String::new();
    let _ = reader.read_to_string(&mut answer);
    if answer.starts_with("ready") {
        println!(
            "remotedict: mounted on {} (log: {})",
            mountpoint.display(),
            log_path.display()
        );
        return Ok(());
    }
    let _ = child.wait();
    let reason = answer.trim();
    if reason.is_empty() {
        bail!(
            "the daemon exited before the mount was ready; see {}",
            log_path.display()
        );
    }
    bail!("{reason}")
}
