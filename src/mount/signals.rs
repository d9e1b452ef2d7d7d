//! What a running mount waits for: an unmount from outside (the FUSE session ends), a SIGTERM or
//! SIGINT asking us to save and unmount, a SIGHUP (logrotate, `systemctl reload`), which asks
//! for a reload and never ends the mount, or a SIGUSR2, which switches debug logging.

use anyhow::Result;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The session ended: the kernel unmounted us (`fusermount3 -u`, `umount`).
    Unmounted,
    /// A signal asked us to unmount.
    Signal(&'static str),
    /// SIGHUP: reload, then go on.
    Reload,
    /// SIGUSR2: switch debug logging on or off.
    ToggleDebug,
}

/// The signals and the session's end, listened to from mount to exit.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    /// Starts listening (from now on these signals no longer kill the process; one that comes
    /// before [`Signals::next`] is asked is kept for it). Needs a tokio runtime context.
    pub fn new() -> Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next event; `session_done` fires when the FUSE session ends.
    pub async fn next(&mut self, session_done: &mut tokio::sync::oneshot::Receiver<()>) -> Event {
        tokio::select! {
            _ = session_done => Event::Unmounted,
            _ = self.term.recv() => Event::Signal("SIGTERM"),
            _ = self.int.recv() => Event::Signal("SIGINT"),
            _ = self.hup.recv() => Event::Reload,
            _ = self.usr2.recv() => Event::ToggleDebug,
        }
    }
}
