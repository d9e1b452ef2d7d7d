//! `remotedict mount`: checks, daemonizing, running the FUSE session, clean unmount on signals.
//!
//! [`run`] takes the typed [`MountConfig`]; [`daemon`] re-runs the command line in the
//! foreground as a daemon, which then serves the mount until [`signals`] says it ends.

pub mod checks;
pub mod daemon;
pub mod mountinfo;
pub mod notify;
pub mod options;
pub mod reload;
pub mod signals;

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::{open_swappable_store, MountConfig};
use crate::fs::{Fs, FsConfig};
use crate::fuse::FuseAdapter;
use crate::layout::Layout;
use crate::transfer::TransferConfig;

/// How long a signalled daemon waits for a busy mount (operations in flight) before it detaches
/// the mount instead.
const UNMOUNT_PATIENCE: Duration = Duration::from_secs(5);
use daemon::Readiness;
pub use options::MountOptions;
use reload::{Reloader, Reread};
use signals::{Event, Signals};

/// Entry point of `remotedict mount`. `argv` is the command line (program name first), run again
/// in the foreground when daemonizing; `reread` reads the configuration again (on SIGHUP).
pub fn run(cfg: MountConfig, argv: Vec<OsString>, reread: Reread) -> Result<()> {
    raise_nofile_limit();
    let opts = MountOptions::parse(&cfg.options)?;
    let mountpoint = checks::check_mountpoint(&cfg.mountpoint)?;
    Layout::new(&cfg.store.folder)?;
    let lease_duration = crate::store::LeaseDuration::from_secs(cfg.lease_duration)
        .map_err(|e| anyhow::anyhow!("--lease-duration: {e}"))?;
    if !(cfg.index_ttl.is_finite() && cfg.index_ttl >= 0.0 && cfg.index_ttl <= 3600.0) {
        bail!("--index-ttl must be between 0 and 3600 seconds");
    }
    if cfg.foreground {
        let ready = Readiness::from_env();
        let result = serve(&cfg, &opts, lease_duration, &mountpoint, ready, reread);
        if let Err(e) = &result {
            log::error!("{e:#}");
        }
        result
    } else {
        daemon::daemonize(&argv, &cfg.cache_dir, &cfg.log_file, &mountpoint)
    }
}

/// Raises the soft limit on open descriptors to the hard limit: every open file handle of a
/// value read from a local copy holds one, and systemd starts services with a soft limit of 1,024.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::debug!(
            "RLIMIT_NOFILE: getrlimit failed: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let was = lim.rlim_cur;
    if was < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            log::debug!(
                "RLIMIT_NOFILE: raising the soft limit {was} to {} failed: {}",
                lim.rlim_max,
                std::io::Error::last_os_error()
            );
            return;
        }
    }
    log::debug!(
        "RLIMIT_NOFILE: soft limit was {was}, is {} (hard limit {})",
        lim.rlim_cur,
        lim.rlim_max
    );
}

/// The fuser options and access rule the `-o` options ask for.
fn fuse_config(opts: &MountOptions, fsname: String) -> fuser::Config {
    let mut options = vec![
        fuser::MountOption::FSName(fsname),
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
    config
}

fn serve(
    cfg: &MountConfig,
    opts: &MountOptions,
    lease_duration: crate::store::LeaseDuration,
    mountpoint: &Path,
    mut ready: Readiness,
    reread: Reread,
) -> Result<()> {
    let rt = crate::runtime::build(4)?;
    // Listening from the start: a SIGHUP while the index loads must not kill the mount.
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::new().context("listening for signals")?
    };
    let setup = rt.block_on(async {
        if let Some(addr) = cfg.metrics {
            crate::metrics::install(addr)?;
        }
        let (store, backend) = open_swappable_store(&cfg.store).await?;
        let layout = Layout::new(&cfg.store.folder)?;
        if cfg.rebuild_index {
            let (report, blobs) = crate::fsck::check(&store, &layout).await?;
            if !report.is_clean() {
                let n = crate::fsck::repair(&store, &layout, &report, &blobs).await?;
                log::info!(
                    "--rebuild-index: {n} index change(s) from {} blobs",
                    report.blobs
                );
            }
        }
        // SAFETY: plain libc getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let fs_cfg = FsConfig {
            uid: opts.uid.unwrap_or(uid),
            gid: opts.gid.unwrap_or(gid),
            read_only: opts.read_only,
            cache_dir: cfg.cache_dir.join("data"),
            cache_bytes: cfg.cache_size.saturating_mul(1 << 20),
            transfer: TransferConfig::default(),
            lease_duration,
        };
        let what = format!("{}/{}", store.describe(), layout.folder());
        let ttl = Duration::from_secs_f64(cfg.index_ttl);
        let fs = Fs::new(store, layout, ttl, fs_cfg)?;
        fs.set_index_compaction(cfg.index_compact_kib.max(1).saturating_mul(1024));
        let keys = fs.warm_up().await.context("reading the index")?;
        anyhow::Ok((Arc::new(fs), what, keys, backend))
    });
    let (fs, what, keys, backend) = setup.map_err(|e| ready.fail(e))?;
    let mut reloader = Reloader::new(reread, cfg.clone(), backend);
    if cfg.log_max_mib > 0 {
        rt.spawn(daemon::cap_log(cfg.log_max_mib));
    }

    let config = fuse_config(opts, format!("remotedict:{what}"));
    let ttl = Duration::from_secs_f64(cfg.index_ttl);
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone(), ttl);
    let tasks = adapter.tasks();
    let mut session = fuser::Session::new(adapter, mountpoint, &config)
        .with_context(|| format!("mounting on {}", mountpoint.display()))
        .map_err(|e| ready.fail(e))?;
    let notifier = session.notifier();
    fs.set_kernel_cache_invalidator(Arc::new(move |ino| {
        // ENOENT: the kernel holds nothing of it.
        if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
            log::debug!("dropping the kernel's cache of inode {ino}: {e}");
        }
    }));
    let mut unmounter = session.unmount_callable();
    let serving = format!("serving {what} ({keys} keys) on {}", mountpoint.display());
    log::info!("{serving}");
    ready.ready();
    notify::ready(&serving);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let runner = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(());
            r
        })
        .context("starting the FUSE session")?;
    rt.block_on(async {
        loop {
            match signals.next(&mut done_rx).await {
                Event::Reload => {
                    notify::reloading("SIGHUP: reloading");
                    let summary = reloader.reload().await;
                    notify::ready(&format!("{serving}; {summary}"));
                }
                Event::ToggleDebug => {
                    let on = crate::logging::toggle_debug();
                    log::info!("SIGUSR2: debug logging {}", if on { "on" } else { "off" });
                }
                Event::Unmounted => {
                    notify::stopping("unmounted");
                    log::info!("unmounted (fusermount3 -u or remotedict unmount); exiting");
                    return anyhow::Ok(());
                }
                Event::Signal(name) => {
                    notify::stopping(&format!("{name}: saving pending changes and unmounting"));
                    log::info!("{name}: saving pending changes and unmounting");
                    break;
                }
            }
        }
        // Pending changes are saved now; locks stay held while their holders may still run
        // (they are given back once the session is over, in `finish`).
        if let Err(e) = fs.save_all().await {
            log::error!("unmount: some changes could not be saved: {e}");
        }
        // Unmount once the operations in flight (an upload ending in a close) are done: while
        // the mount is busy, try again for a while, then detach it.
        if let Err(e) = unmounter.unmount() {
            log::info!("unmount: {e}; waiting for the operations in flight");
            let deadline = std::time::Instant::now() + UNMOUNT_PATIENCE;
            let fusermount = |lazy: bool| {
                let mut cmd = std::process::Command::new("fusermount3");
                cmd.arg("-u").arg("-q");
                if lazy {
                    cmd.arg("-z");
                }
                cmd.arg(mountpoint)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            loop {
                if fusermount(false) {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    log::warn!(
                        "unmount: still busy after {} s; detaching it (fusermount3 -u -z)",
                        UNMOUNT_PATIENCE.as_secs()
                    );
                    fusermount(true);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    })?;
    let ended = runner.join();
    // No request comes any more: the operations still running finish (an `rm` cut between its
    // delete and its index commit would leave a name without a value), then what they left
    // pending is saved.
    rt.block_on(crate::fuse::finish(&fs, &tasks));
    match ended {
        Ok(Ok(())) => Ok(()),
        // The session this daemon ended itself (the detach above) ends this way.
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
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
