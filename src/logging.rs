//! The process's logger: `env_logger` filtered by `RUST_LOG`, written to stderr (the journal
//! under systemd, the log file of a daemonized mount, the terminal in the foreground), with two
//! additions for a long-running mount:
//!
//! - **Journal priorities.** When stderr is the journal's stream (`JOURNAL_STREAM` names it, as
//!   systemd sets it for a unit's output), each line starts with its syslog priority (`<3>` for
//!   errors … `<7>` for debug, see sd-daemon(3)) and carries no timestamp of its own, so
//!   `journalctl -p warning` filters by level.
//! - **Debug on demand.** [`toggle_debug`] (SIGUSR2 on a mount) switches this crate's debug
//!   lines on and off without a restart; `RUST_LOG` still decides everything else.
//! - **Request ids.** A line logged while serving a FUSE request (inside [`in_request`]) starts
//!   with `req=N`, so the lines of one `open` or `flock` can be picked out of a busy mount's log.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

tokio::task_local! {
    /// The number of the FUSE request the current task serves.
    static REQUEST: u64;
}

/// Runs `fut` as the serving of request `id`: its log lines carry `req=ID`.
pub fn in_request<F: std::future::Future>(
    id: u64,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    REQUEST.scope(id, fut)
}

/// `req=N ` inside a request, else nothing.
fn request_prefix() -> String {
    REQUEST
        .try_with(|id| format!("req={id} "))
        .unwrap_or_default()
}

/// The installed logger (for [`toggle_debug`]).
static LOGGER: OnceLock<&'static Switch> = OnceLock::new();

/// Two loggers: the one `RUST_LOG` asks for, and the same with this crate's debug lines on.
struct Switch {
    normal: env_logger::Logger,
    debug: env_logger::Logger,
    debug_on: AtomicBool,
}

impl Switch {
    fn active(&self) -> &env_logger::Logger {
        if self.debug_on.load(Ordering::Relaxed) {
            &self.debug
        } else {
            &self.normal
        }
    }
}

impl Log for Switch {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.active().enabled(metadata)
    }

    fn log(&self, record: &Record) {
        self.active().log(record)
    }

    fn flush(&self) {
        self.active().flush()
    }
}

/// The syslog priority of a level (sd-daemon(3)'s `<N>` prefixes).
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether stderr is the journal stream systemd connected it to (`JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream; a child whose stderr was redirected elsewhere inherits the
/// variable, so the descriptor itself is compared).
fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM")
        .is_some_and(|want| is_stream(&want.to_string_lossy(), std::io::stderr().as_raw_fd()))
}

/// Whether descriptor `fd` is the file `DEVICE:INODE` names.
fn is_stream(want: &str, fd: std::os::fd::RawFd) -> bool {
    // SAFETY: fstat into a zeroed, writable struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    want == format!("{}:{}", st.st_dev, st.st_ino)
}

/// A builder for `default` (used when `RUST_LOG` is unset), formatting for the journal or not.
fn builder(default: &str, journal: bool) -> env_logger::Builder {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if journal {
        b.format(|buf, record| {
            writeln!(
                buf,
                "<{}>{}: {}{}",
                priority(record.level()),
                record.target(),
                request_prefix(),
                record.args()
            )
        });
    } else {
        b.format(|buf, record| {
            writeln!(
                buf,
                "[{} {:<5} {}] {}{}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                request_prefix(),
                record.args()
            )
        });
    }
    b
}

/// Installs the logger; `default` is the filter when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let journal = stderr_is_journal();
    let normal = builder(default, journal).build();
    let debug = builder(default, journal)
        .filter_module("remotedict", LevelFilter::Debug)
        .build();
    let switch: &'static Switch = Box::leak(Box::new(Switch {
        normal,
        debug,
        debug_on: AtomicBool::new(false),
    }));
    if log::set_logger(switch).is_ok() {
        log::set_max_level(switch.normal.filter());
        let _ = LOGGER.set(switch);
    }
}

/// Switches this crate's debug lines on (or back off); returns whether they are on now.
pub fn toggle_debug() -> bool {
    let Some(switch) = LOGGER.get() else {
        return false;
    };
    let on = !switch.debug_on.fetch_xor(true, Ordering::Relaxed);
    log::set_max_level(if on {
        switch.debug.filter()
    } else {
        switch.normal.filter()
    });
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
    }

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        let fd = f.as_raw_fd();
        assert!(is_stream(&format!("{}:{}", m.dev(), m.ino()), fd));
        assert!(!is_stream(&format!("{}:{}", m.dev(), m.ino() + 1), fd));
        assert!(!is_stream("garbage", fd));
    }
}
