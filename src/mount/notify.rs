//! Telling systemd how the mount is doing, for `Type=notify` units: `READY=1` once the mount is
//! up, `RELOADING=1` and `READY=1` around a reload (SIGHUP), `STOPPING=1` when it ends, each with a
//! `STATUS=` line. Nothing is sent unless systemd asked for it (`NOTIFY_SOCKET` is set).

use sd_notify::NotifyState;

/// The mount is up and serving.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins.
pub fn reloading(status: &str) {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
        Err(e) => log::debug!("systemd notification: no monotonic clock: {e}"),
    }
}

/// The mount is ending.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
}
