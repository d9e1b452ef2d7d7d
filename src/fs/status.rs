//! The status file: `MOUNTPOINT/.remotedict/status`, a read-only JSON snapshot of what the
//! daemon is doing (index size and age, cache use, leases held, uploads pending, errors), read by
//! `remotedict status`. `.remotedict` is a reserved key name, so it never hides a user's file, and
//! it is not listed by `readdir`.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{lock, Attr, DirEntry, Fs, FsError, FsResult, NodeKind};
use crate::layout::RESERVED_DIR;

/// Inode of the virtual `.remotedict` directory.
pub const STATUS_DIR_INO: u64 = u64::MAX - 1;
/// Inode of the virtual `.remotedict/status` file.
pub const STATUS_INO: u64 = u64::MAX - 2;
/// Name of the status file.
pub const STATUS_NAME: &str = "status";
/// How many of the last failures the status file shows.
const LAST_ERRORS: usize = 5;

impl Fs {
    /// The virtual node `name` under `parent`, if it is one.
    pub(super) fn virtual_lookup(&self, parent: u64, name: &str) -> Option<u64> {
        match (parent, name) {
            (super::ROOT_INO, RESERVED_DIR) => Some(STATUS_DIR_INO),
            (STATUS_DIR_INO, STATUS_NAME) => Some(STATUS_INO),
            _ => None,
        }
    }

    pub(super) fn virtual_attr(&self, ino: u64) -> Option<Attr> {
        let (kind, perm, size) = match ino {
            STATUS_DIR_INO => (NodeKind::Dir, 0o555, 0),
            STATUS_INO => (NodeKind::File, 0o444, 0),
            _ => return None,
        };
        Some(Attr {
            ino,
            kind,
            size,
            stored_size: 0,
            mtime: SystemTime::now(),
            ctime: SystemTime::now(),
            atime: SystemTime::now(),
            perm,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            rdev: 0,
            nlink: if kind == NodeKind::Dir { 2 } else { 1 },
        })
    }

    pub(super) fn virtual_dir(&self, ino: u64) -> Option<Vec<DirEntry>> {
        (ino == STATUS_DIR_INO).then(|| {
            vec![
                DirEntry {
                    ino,
                    name: ".".into(),
                    kind: NodeKind::Dir,
                },
                DirEntry {
                    ino: super::ROOT_INO,
                    name: "..".into(),
                    kind: NodeKind::Dir,
                },
                DirEntry {
                    ino: STATUS_INO,
                    name: STATUS_NAME.into(),
                    kind: NodeKind::File,
                },
            ]
        })
    }

    /// Counts `e` for the status file's `errors_since_start` unless it is a routine answer
    /// (ENOENT on lookup, EEXIST ...). The adapter calls it for every failed request.
    pub fn note_failure(&self, e: &FsError) {
        if !e.is_routine() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let mut last = lock(&self.last_errors);
            if last.len() == LAST_ERRORS {
                last.pop_front();
            }
            last.push_back((SystemTime::now(), e.to_string()));
        }
    }

    /// The status snapshot, as JSON.
    pub async fn status_json(&self) -> FsResult<Vec<u8>> {
        let index = self.index.cached();
        let pending: Vec<String> = {
            let files: Vec<(u64, std::sync::Arc<super::OpenFile>)> = lock(&self.files)
                .iter()
                .map(|(i, f)| (*i, f.clone()))
                .collect();
            let mut out = Vec::new();
            for (ino, f) in files {
                if f.state
                    .lock()
                    .await
                    .staged
                    .as_ref()
                    .is_some_and(|s| s.dirty)
                {
                    if let Ok(k) = self.key_of(ino) {
                        out.push(k);
                    }
                }
            }
            out
        };
        let status = serde_json::json!({
            "store": self.store.describe(),
            "folder": self.layout.folder(),
            "mounted_since": crate::time::fmt_time(crate::time::to_ns(self.mounted_at)),
            "read_only": self.cfg.read_only,
            "index": {
                "blob": self.index.blob(),
                "keys": index.entries.len(),
                "age_seconds": self.index.age().map(|d| d.as_secs_f64()),
                "writes": self.index.writes(),
                "conflicts_redone": self.index.conflicts(),
                "changes_not_yet_written": self.index.unsettled(),
            },
            "cache": {
                "dir": self.cfg.cache_dir.display().to_string(),
                "used_bytes": self.content.used_bytes(),
                "limit_bytes": self.cfg.cache_bytes,
            },
            "leases_held": self.locks.held_keys(),
            "locks": self.locks.held(),
            "lock_waiters": self.locks.waiters(),
            "uploads_pending": pending,
            "open_handles": lock(&self.handles).len(),
            "inodes": self.inode_count(),
            "errors_since_start": self.failures.load(Ordering::Relaxed),
            "last_errors": lock(&self.last_errors)
                .iter()
                .map(|(at, what)| serde_json::json!({
                    "at": crate::time::fmt_time(crate::time::to_ns(*at)),
                    "error": what,
                }))
                .collect::<Vec<_>>(),
            "metrics": crate::metrics::served_at().map(|a| format!("http://{a}/metrics")),
        });
        let mut text = serde_json::to_vec_pretty(&status).unwrap_or_default();
        text.push(b'\n');
        Ok(text)
    }
}
