//! Waiting for the end of a mount: an unmount from outside (the FUSE session ends) or a
//! SIGTERM, SIGINT or SIGHUP asking us to save and unmount.

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

/// Why the mount is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Unmounted from outside (`fusermount3 -u`, `remotedict unmount`): nothing left to do.
    Unmounted,
    /// A signal asked us to save pending changes and unmount.
    Signal(&'static str),
}

/// Waits until the session ends (`session_done` fires) or a terminating signal arrives.
pub async fn wait_for_end(session_done: tokio::sync::oneshot::Receiver<()>) -> Result<Ending> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = session_done => Ending::Unmounted,
        _ = term.recv() => Ending::Signal("SIGTERM"),
        _ = int.recv() => Ending::Signal("SIGINT"),
        _ = hup.recv() => Ending::Signal("SIGHUP"),
    })
}
