//! Uploading a file while it is being written: for a large file written front to back, the
//! compression and the staging of its blocks run alongside the writes, so that the close only
//! stages the last blocks and commits. Nothing becomes visible before the commit, which happens
//! only when the writer saves (close, fsync) and only if the file is exactly what was streamed.
//!
//! An [`EarlyUpload`] reads the file by position as it grows ([`EarlyUpload::grew`]), never past
//! what has been written. It is given up (dropped: the reading thread stops, the staged blocks
//! are never committed, the blob service discards them) as soon as the file changes any other
//! way; the save then uploads the file from its start as it always did. At most
//! [`MAX_EARLY`] run at once in a process, so memory stays bounded however many files are
//! being written (the caller's semaphore hands out the slots).

use std::future::Future;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use super::upload::upload_once;
use super::{with_new_value_id, TransferConfig, TransferError, Uploaded};
use crate::store::{BlobStore, PutOptions};

/// Early uploads to run at once in a process (each holds up to the blocks in flight): the
/// permits of the semaphore given to [`EarlyUpload::start`].
pub const MAX_EARLY: usize = 2;

/// How far the file has been written, and whether the upload should end or stop.
#[derive(Default)]
struct Tail {
    len: u64,
    /// The file's final length (the writer saves).
    end: Option<u64>,
    /// Given up: the reading thread stops.
    dropped: bool,
}

type Shared = Arc<(Mutex<Tail>, Condvar)>;

/// Reads a growing file by position, waiting at what has been written so far.
struct Follow {
    file: std::fs::File,
    pos: u64,
    tail: Shared,
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = {
            let (m, cv) = &*self.tail;
            let mut t = crate::mutex::lock(m);
            loop {
                if t.dropped {
                    return Err(io::Error::other("the early upload was given up"));
                }
                let limit = t.end.unwrap_or(t.len);
                if limit > self.pos || t.end.is_some() {
                    break limit;
                }
                t = cv.wait(t).unwrap_or_else(|p| p.into_inner());
            }
        };
        if limit <= self.pos {
            return Ok(0);
        }
        let n = buf.len().min((limit - self.pos) as usize);
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::other("the file shrank under its early upload"));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// An upload of a file that runs while the file is written (see the module's doc).
pub struct EarlyUpload {
    blob: String,
    lease: Option<String>,
    tail: Shared,
    opts: Option<oneshot::Sender<PutOptions>>,
    task: Option<tokio::task::JoinHandle<Result<Uploaded, TransferError>>>,
}

impl EarlyUpload {
    /// Starts uploading `file` (already `len` bytes long) to `blob`, staging under `lease`;
    /// `None` when `slots` has no permit left (the upload holds one until its task ends).
    pub fn start(
        store: &Arc<dyn BlobStore>,
        blob: &str,
        file: &std::fs::File,
        len: u64,
        lease: Option<String>,
        cfg: &TransferConfig,
        slots: &Arc<tokio::sync::Semaphore>,
    ) -> Option<Self> {
        let permit = slots.clone().try_acquire_owned().ok()?;
        let file = file.try_clone().ok()?;
        let tail: Shared = Arc::new((
            Mutex::new(Tail {
                len,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let reader = Box::new(BufReader::with_capacity(
            1 << 20,
            Follow {
                file,
                pos: 0,
                tail: tail.clone(),
            },
        ));
        let (tx, rx) = oneshot::channel::<PutOptions>();
        let opts = async move {
            let opts = rx.await.map_err(|_| {
                TransferError::from(io::Error::other("the early upload was given up"))
            })?;
            Ok(PutOptions {
                metadata: with_new_value_id(opts.metadata),
                ..opts
            })
        };
        let (store, name, cfg, staging) =
            (store.clone(), blob.to_string(), cfg.clone(), lease.clone());
        let task = tokio::spawn(async move {
            let _slot = permit;
            let _pending = crate::metrics::PendingUpload::start();
            upload_once(&store, &name, reader, staging, opts, &cfg).await
        });
        log::debug!("{blob:?}: uploading while it is written");
        Some(EarlyUpload {
            blob: blob.to_string(),
            lease,
            tail,
            opts: Some(tx),
            task: Some(task),
        })
    }

    /// The file is now `len` bytes long: everything before that is written for good.
    pub fn grew(&self, len: u64) {
        let (m, cv) = &*self.tail;
        crate::mutex::lock(m).len = len;
        cv.notify_all();
    }

    /// Whether this upload can stand for a save of `blob` at `len` bytes under `lease`: the
    /// same name, every byte streamed from the file as written, the same lease.
    pub fn fits(&self, blob: &str, len: u64, lease: &Option<String>) -> bool {
        self.blob == blob && &self.lease == lease && crate::mutex::lock(&self.tail.0).len == len
    }

    /// Ends the upload at the file's length and commits it with `opts` (conditions and
    /// metadata, as for `upload_file`); check [`Self::fits`] first.
    pub fn finish(
        mut self,
        opts: PutOptions,
    ) -> impl Future<Output = Result<Uploaded, TransferError>> {
        {
            let (m, cv) = &*self.tail;
            let mut t = crate::mutex::lock(m);
            t.end = Some(t.len);
            cv.notify_all();
        }
        let sent = self.opts.take().map(|tx| tx.send(opts));
        // A save given up before the commit gives the upload up with it.
        let task = self.task.take().map(AbortOnDrop);
        async move {
            // If the options could not be sent, the task ended already: its error says why.
            let _ = sent;
            match task {
                Some(mut t) => (&mut t.0).await?,
                None => Err(io::Error::other("the early upload ended before its commit").into()),
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<Uploaded, TransferError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for EarlyUpload {
    fn drop(&mut self) {
        let (m, cv) = &*self.tail;
        let mut t = crate::mutex::lock(m);
        if t.end.is_none() {
            // Given up before its commit: the reading thread stops, the task ends.
            t.dropped = true;
            cv.notify_all();
            drop(t);
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }
}
