//! `remotedict mount`: checks, daemonizing, running the FUSE session, clean unmount on signals.
//!
//! Daemon mode re-runs this binary in the foreground as a child in its own session, with its
//! stderr sent to the log file, and waits on a pipe for the child to say the mount is ready (or
//! why it failed): the parent's exit code tells whether the mount worked, like mount(8).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::{default_cache_dir, open_store, MountArgs, MountOptions};
use crate::fs::{Fs, FsConfig};
use crate::fuse::FuseAdapter;
use crate::layout::Layout;
use crate::transfer::TransferConfig;

const READY_FD_ENV: &str = "REMOTEDICT_READY_FD";

/// Checks the mount point before anything else, with messages that say what to fix.
fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "mount point {} does not exist or cannot be reached (create it with mkdir -p)",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", path.display());
    }
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        let target = abs.to_string_lossy();
        if mounts.lines().any(|l| l.split(' ').nth(4) == Some(&target)) {
            if let Some(line) = mounts
                .lines()
                .find(|l| l.split(' ').nth(4) == Some(&target))
            {
                if line.contains(" remotedict:") {
                    bail!(
                        "{} is already a remotedict mount (unmount it with: remotedict unmount {})",
                        abs.display(),
                        abs.display()
                    );
                }
            }
            bail!("{} is already a mount point", abs.display());
        }
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse");
    }
    Ok(abs)
}

/// Entry point of `remotedict mount`.
pub fn run(args: MountArgs) -> Result<()> {
    let opts = MountOptions::parse(&args.options)?;
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    Layout::new(&args.store.folder)?;
    let lease_duration = crate::store::LeaseDuration::from_secs(args.lease_duration)
        .map_err(|e| anyhow::anyhow!("--lease-duration: {e}"))?;
    if !(args.index_ttl.is_finite() && args.index_ttl >= 0.0 && args.index_ttl <= 3600.0) {
        bail!("--index-ttl must be between 0 and 3600 seconds");
    }
    if args.foreground {
        let ready = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|s| s.parse::<i32>().ok());
        // SAFETY: the fd number comes from our own parent, which opened it for us.
        let ready = ready.map(|fd| unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fd)) });
        std::env::remove_var(READY_FD_ENV);
        let result = serve(&args, &opts, lease_duration, &mountpoint, ready);
        if let Err(e) = &result {
            log::error!("{e:#}");
        }
        result
    } else {
        daemonize(&args, &mountpoint)
    }
}

fn daemonize(args: &MountArgs, mountpoint: &Path) -> Result<()> {
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| cache_dir.join("remotedict.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening the log file {}", log_path.display()))?;
    let (mut reader, writer) = std::io::pipe().context("creating a pipe")?;
    let write_fd = writer.as_raw_fd();
    let exe = std::env::current_exe().context("finding the remotedict executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(
        crate::cli::mount_helper_args(std::env::args_os().collect())
            .into_iter()
            .skip(1),
    )
    .arg("--foreground")
    .env(READY_FD_ENV, write_fd.to_string())
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

fn serve(
    args: &MountArgs,
    opts: &MountOptions,
    lease_duration: crate::store::LeaseDuration,
    mountpoint: &Path,
    mut ready: Option<std::fs::File>,
) -> Result<()> {
    let fail = |ready: &mut Option<std::fs::File>, e: anyhow::Error| -> anyhow::Error {
        if let Some(r) = ready.as_mut() {
            let _ = writeln!(r, "{e:#}");
        }
        e
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("remotedict")
        .build()
        .context("starting the async runtime")?;
    let setup = rt.block_on(async {
        let store = open_store(&args.store).await?;
        let layout = Layout::new(&args.store.folder)?;
        if args.rebuild_index {
            let (report, blobs) = crate::fsck::check(&store, &layout).await?;
            if !report.is_clean() {
                let n = crate::fsck::repair(&store, &layout, &report, &blobs).await?;
                log::info!(
                    "--rebuild-index: {n} index change(s) from {} blobs",
                    report.blobs
                );
            }
        }
        let cache_dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(default_cache_dir)
            .join("data");
        // SAFETY: plain libc getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let cfg = FsConfig {
            uid: opts.uid.unwrap_or(uid),
            gid: opts.gid.unwrap_or(gid),
            read_only: opts.read_only,
            cache_dir,
            cache_bytes: args.cache_size.saturating_mul(1 << 20),
            transfer: TransferConfig::default(),
            lease_duration,
        };
        let what = format!("{}/{}", store.describe(), layout.folder());
        let fs = Fs::new(store, layout, Duration::from_secs_f64(args.index_ttl), cfg)?;
        let keys = fs.warm_up().await.context("reading the index")?;
        anyhow::Ok((Arc::new(fs), what, keys))
    });
    let (fs, what, keys) = setup.map_err(|e| fail(&mut ready, e))?;

    let mut options = vec![
        fuser::MountOption::FSName(format!("remotedict:{what}")),
        fuser::MountOption::Subtype("remotedict".into()),
        fuser::MountOption::NoAtime,
    ];
    if opts.default_permissions {
        options.push(fuser::MountOption::DefaultPermissions);
    }
    options.push(if opts.read_only {
        fuser::MountOption::RO
    } else {
        fuser::MountOption::RW
    });
    if opts.auto_unmount {
        options.push(fuser::MountOption::AutoUnmount);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else if opts.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(2);
    let ttl = Duration::from_secs_f64(args.index_ttl);
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone(), ttl);
    let mut session = fuser::Session::new(adapter, mountpoint, &config)
        .with_context(|| format!("mounting on {}", mountpoint.display()))
        .map_err(|e| fail(&mut ready, e))?;
    let mut unmounter = session.unmount_callable();
    log::info!("serving {what} ({keys} keys) on {}", mountpoint.display());
    if let Some(mut r) = ready.take() {
        let _ = writeln!(r, "ready");
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runner = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(());
            r
        })
        .context("starting the FUSE session")?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::select! {
            _ = done_rx => { log::info!("unmounted (fusermount3 -u or remotedict unmount); exiting"); return anyhow::Ok(()); }
            _ = term.recv() => log::info!("SIGTERM: saving pending changes and unmounting"),
            _ = int.recv() => log::info!("SIGINT: saving pending changes and unmounting"),
            _ = hup.recv() => log::info!("SIGHUP: saving pending changes and unmounting"),
        }
        if let Err(e) = fs.save_all().await {
            log::error!("some changes could not be saved before unmounting: {e}");
        }
        fs.release_all_locks().await;
        // Wait for in-flight operations (an upload ending in a close) to finish, then unmount.
        if let Err(e) = unmounter.unmount() {
            log::warn!("unmount failed: {e}; trying fusermount3 -u");
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(mountpoint)
                .status();
        }
        Ok(())
    })?;
    match runner.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("FUSE session"),
        Err(_) => bail!("the FUSE session thread panicked"),
    }
}

/// `remotedict unmount MOUNTPOINT`.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .status()
        .context("running fusermount3 (install the fuse3 package)")?;
    if !status.success() {
        bail!("fusermount3 -u {} failed", mountpoint.display());
    }
    Ok(())
}
