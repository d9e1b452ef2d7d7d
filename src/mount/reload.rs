//! SIGHUP (`systemctl reload`, logrotate): reopen the log file, read the configuration file and
//! the credential again, and put a new credential to use without remounting.
//!
//! What a reload can change is the credential (the connection-string file's contents, or
//! `connection_string` in the configuration file) and `request_timeout`: a new backend is built
//! with them and, once it has shown it can read the container, swapped in under the retry layer
//! ([`SwappableStore`]); until then, and if it cannot, the mount keeps the one it has. Every other
//! setting that differs is named in the log as taking a remount, and keeps its old value.
//! Environment variables are the process's own: they cannot change under a running mount.

use std::sync::Arc;

use anyhow::Result;

use super::daemon;
use crate::config::{reopen_backend, Backend, Credential, MountConfig};
use crate::store::swappable::SwappableStore;

/// Reads the configuration again, as the command line that started the mount would.
pub type Reread = Box<dyn Fn() -> Result<MountConfig> + Send + Sync>;

/// What a reload needs: how to read the configuration, what is in use, and where a new backend
/// goes.
pub struct Reloader {
    reread: Reread,
    applied: MountConfig,
    backend: Arc<SwappableStore>,
}

impl Reloader {
    pub fn new(reread: Reread, applied: MountConfig, backend: Arc<SwappableStore>) -> Self {
        Reloader {
            reread,
            applied,
            backend,
        }
    }

    /// One reload; logs what it did. Returns a one-line summary (for systemd's `STATUS=`).
    pub async fn reload(&mut self) -> String {
        match daemon::reopen_log() {
            Ok(Some(path)) => log::info!("SIGHUP: log file {} reopened", path.display()),
            Ok(None) => log::debug!("SIGHUP: logging to stderr, no log file to reopen"),
            Err(e) => log::warn!("SIGHUP: {e:#}"),
        }
        let new = match (self.reread)() {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "SIGHUP: configuration not reloaded, the mount goes on as it was: {e:#}"
                );
                return "reload failed: the configuration cannot be read".into();
            }
        };
        for what in needs_remount(&self.applied, &new) {
            log::warn!("SIGHUP: {what} changed: that takes a remount; the mount goes on with the old value");
        }
        let (old_store, new_store) = (&self.applied.store, &new.store);
        let credential = match (&old_store.backend, &new_store.backend) {
            (Backend::Azure { .. }, Backend::Azure { credential, .. })
                if old_store.container == new_store.container =>
            {
                credential
            }
            _ => {
                log::info!("SIGHUP: no credential to reload; the mount goes on");
                return "reloaded: nothing to change".into();
            }
        };
        // A file's contents may have changed; a value from the environment cannot have.
        let may_differ = matches!(credential, Credential::ConnectionStringFile(_))
            || new_store.backend != old_store.backend
            || new_store.request_timeout != old_store.request_timeout;
        if !may_differ {
            log::info!("SIGHUP: the credential is unchanged; the mount goes on");
            return "reloaded: nothing changed".into();
        }
        let mut cfg = old_store.clone();
        cfg.backend = new_store.backend.clone();
        cfg.request_timeout = new_store.request_timeout;
        match reopen_backend(&cfg).await {
            Ok(backend) => {
                self.backend.swap(backend);
                self.applied.store = cfg;
                log::info!(
                    "SIGHUP: credential re-read ({}); new requests use it",
                    credential.describe()
                );
                "reloaded: credential re-read".into()
            }
            Err(e) => {
                log::error!(
                    "SIGHUP: the credential was not changed, the mount goes on with the old one: {e:#}"
                );
                "reload failed: the new credential cannot read the container".into()
            }
        }
    }
}

/// The settings that differ between `old` and `new` and that only a remount can change.
fn needs_remount(old: &MountConfig, new: &MountConfig) -> Vec<&'static str> {
    let (os, ns) = (&old.store, &new.store);
    let same_backend_kind = matches!(
        (&os.backend, &ns.backend),
        (Backend::Azure { .. }, Backend::Azure { .. })
    ) || os.backend == ns.backend;
    [
        ("the backend (local store or Azure)", !same_backend_kind),
        ("container", os.container != ns.container),
        ("folder", os.folder != ns.folder),
        (
            "create_container",
            os.create_container != ns.create_container,
        ),
        ("retries", os.retries != ns.retries),
        ("options (-o)", old.options != new.options),
        ("index_ttl", old.index_ttl != new.index_ttl),
        (
            "index_compact_kib",
            old.index_compact_kib != new.index_compact_kib,
        ),
        ("cache_dir", old.cache_dir != new.cache_dir),
        ("cache_size", old.cache_size != new.cache_size),
        ("lease_duration", old.lease_duration != new.lease_duration),
        ("log_file", old.log_file != new.log_file),
        ("log_max_mib", old.log_max_mib != new.log_max_mib),
        ("metrics", old.metrics != new.metrics),
    ]
    .into_iter()
    .filter_map(|(what, differs)| differs.then_some(what))
    .collect()
}
