//! A value without a seek table (an LZ4 frame another tool wrote, or an old remotedict value)
//! that is too large for the disk cache, read through memory: a cursor downloads and decodes it
//! front to back (ranged GETs in parallel, `transfer::download_with`) into a window of decoded
//! chunks, a little behind the furthest read and a little ahead of it, never on disk.
//!
//! - A read inside a cursor's window is a slice of a chunk (no copy when it lies in one).
//! - A read ahead of the window waits while the cursor decodes up to it (the cursor decodes at
//!   most [`AHEAD`] past the furthest read, so memory stays bounded whatever the value's size).
//! - A read behind every window (a reader that went back, a second reader starting over) gets a
//!   cursor of its own from the start: a frame with linked blocks cannot be entered anywhere
//!   else. Beyond [`MAX_CURSORS`] per value, starting one drops the least recently used cursor
//!   that no read is waiting on (a read in progress never loses its cursor).
//! - A cursor whose download failed reports the error to the reads waiting on it and is dropped:
//!   the next read starts over.
//! - Dropping the value stops its cursors (the decoding thread sees the window closed), and so
//!   does [`IDLE`] without a read: a value left open unread holds no memory for long.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use super::{FsError, FsResult};
use crate::store::BlobStore;
use crate::transfer::{self, TransferConfig};

/// Decoded bytes per chunk (a FUSE read of up to 1 MiB at an aligned offset is one slice).
const CHUNK: usize = 1 << 20;
/// How far past the furthest read a cursor decodes.
const AHEAD: u64 = 16 << 20;
/// How much before the furthest read a cursor keeps (a reader slightly out of order, the
/// kernel's read-ahead arriving in parallel).
const BEHIND: u64 = 8 << 20;
/// How long a cursor that nobody reads on keeps its window before it stops.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// A cursor read within this long counts as in use: a read far ahead does not take it over.
const RECENT: std::time::Duration = std::time::Duration::from_secs(1);
/// Most cursors per value, unless reads are waiting on more.
const MAX_CURSORS: usize = 3;

/// A value read through memory.
pub(super) struct Streamed {
    store: Arc<dyn BlobStore>,
    blob: String,
    etag: String,
    cfg: TransferConfig,
    /// Most recently used first.
    cursors: Mutex<Vec<Arc<Cursor>>>,
}

/// What a read can do next.
enum Step {
    Done(Bytes),
    Wait,
    Restart,
    Failed(FsError),
}

/// What a cursor has decoded and what its readers want.
struct Window {
    /// Value offset of the first chunk held.
    base: u64,
    chunks: VecDeque<Bytes>,
    /// Value offset just past the last chunk held.
    end: u64,
    /// The furthest end a read asked of this cursor.
    wanted: u64,
    /// Offsets reads on this cursor are at (the chunks holding them are kept), with counts.
    waiting: std::collections::BTreeMap<u64, usize>,
    /// When a read last used this cursor.
    last_read: std::time::Instant,
    /// `Some` once the download ended: the value's size, or why it failed.
    done: Option<Result<u64, FsError>>,
    /// Set when the value is dropped: the decoding thread stops.
    closed: bool,
}

struct Cursor {
    window: Mutex<Window>,
    /// Wakes the decoding thread when a read moves `wanted` or the value closes.
    room: Condvar,
    /// Bumped whenever the window changes, for reads waiting for bytes.
    changed: watch::Sender<u64>,
    /// Reads in progress on this cursor.
    readers: AtomicUsize,
}

/// A read in progress on a cursor at an offset: counted, so that the cursor is not dropped
/// under it, and its offset kept in the window, so that its chunk is not dropped before it.
struct Reading(Arc<Cursor>, u64);

impl Reading {
    /// Counts a read at `offset` on `c`; call with the cursors' lock held, so that no trim sees
    /// it idle.
    fn new(c: &Arc<Cursor>, offset: u64) -> Self {
        c.readers.fetch_add(1, Ordering::SeqCst);
        let mut w = lock(&c.window);
        *w.waiting.entry(offset).or_default() += 1;
        w.last_read = std::time::Instant::now();
        Reading(c.clone(), offset)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut w = lock(&self.0.window);
        if let Some(n) = w.waiting.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                w.waiting.remove(&self.1);
            }
        }
        w.last_read = std::time::Instant::now();
        drop(w);
        self.0.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Cursor {
    /// Whether a read used this cursor lately (a sequential reader between two reads).
    fn in_use(&self, w: &Window) -> bool {
        self.readers.load(Ordering::SeqCst) > 0 || w.last_read.elapsed() < RECENT
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    crate::mutex::lock(m)
}

impl Cursor {
    /// The bytes `offset..end` if this window holds `offset` (a read may come back shorter than
    /// asked: up to the end of what is decoded); `None` if it does not.
    fn slice(w: &Window, offset: u64, end: u64) -> Option<Bytes> {
        if offset < w.base || offset >= w.end {
            return None;
        }
        let end = end.min(w.end);
        let mut at = w.base;
        let mut out: Option<Vec<u8>> = None;
        for c in &w.chunks {
            let (a, z) = (at, at + c.len() as u64);
            at = z;
            if z <= offset {
                continue;
            }
            if a >= end {
                break;
            }
            let part = c.slice((offset.max(a) - a) as usize..(end.min(z) - a) as usize);
            match &mut out {
                None if z >= end => return Some(part),
                None => out = Some(part.to_vec()),
                Some(v) => v.extend_from_slice(&part),
            }
        }
        out.map(Bytes::from)
    }

    /// The sink of the decoding thread: reads the decoded value in chunks into the window,
    /// waiting while it is [`AHEAD`] past the furthest read.
    fn fill(&self, dec: &mut dyn BufRead) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            // Straight from the decoder's buffer (no zeroed buffer to read into first).
            let mut chunk = Vec::with_capacity(CHUNK);
            while chunk.len() < CHUNK {
                let buf = dec.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let n = buf.len().min(CHUNK - chunk.len());
                chunk.extend_from_slice(&buf[..n]);
                dec.consume(n);
            }
            if chunk.is_empty() {
                return Ok(total);
            }
            let n = chunk.len() as u64;
            let mut w = lock(&self.window);
            while !w.closed && w.end >= w.wanted + AHEAD {
                let (g, _) = self
                    .room
                    .wait_timeout(w, IDLE)
                    .unwrap_or_else(|p| p.into_inner());
                w = g;
                if w.last_read.elapsed() >= IDLE && self.readers.load(Ordering::SeqCst) == 0 {
                    // Nobody read on: stop, and give the window's memory back.
                    w.closed = true;
                    w.chunks.clear();
                    w.base = w.end;
                }
            }
            if w.closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the value closed",
                ));
            }
            w.chunks.push_back(Bytes::from(chunk));
            w.end += n;
            total += n;
            // Keep what is at most BEHIND before the furthest read, and every chunk a read in
            // progress is at or after.
            let lowest = w.waiting.keys().next().copied().unwrap_or(u64::MAX);
            while let Some(front) = w.chunks.front() {
                let front_end = w.base + front.len() as u64;
                if front_end + BEHIND > w.wanted || front_end > lowest || w.chunks.len() == 1 {
                    break;
                }
                w.base = front_end;
                w.chunks.pop_front();
            }
            drop(w);
            self.changed.send_modify(|v| *v += 1);
        }
    }
}

impl Streamed {
    pub(super) fn new(
        store: &Arc<dyn BlobStore>,
        blob: &str,
        etag: &str,
        cfg: &TransferConfig,
    ) -> Self {
        Streamed {
            store: store.clone(),
            blob: blob.to_string(),
            etag: etag.to_string(),
            // Fewer GETs in flight than a download to disk: several cursors may run at once.
            cfg: TransferConfig {
                read_parallel: cfg.read_parallel.min(4),
                ..cfg.clone()
            },
            cursors: Mutex::new(Vec::new()),
        }
    }

    /// Reads up to `len` bytes at `offset`: all of them unless the value ends first.
    pub(super) async fn read(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(u64::from(len));
        loop {
            let reading = self.cursor_for(offset);
            let cursor = &reading.0;
            let mut changed = cursor.changed.subscribe();
            loop {
                match Self::step(cursor, offset, end) {
                    Step::Done(out) => return Ok(out),
                    Step::Wait => {}
                    Step::Restart => break,
                    Step::Failed(e) => {
                        self.drop_cursor(cursor);
                        return Err(e);
                    }
                }
                changed.changed().await.map_err(|_| {
                    FsError::Internal(format!(
                        "{}: a download ended without its result",
                        self.blob
                    ))
                })?;
            }
            // The cursor was dropped, or went on past this read (another reader of it ran
            // ahead): another cursor that holds it, or one of its own from the start.
        }
    }

    /// What a read of `offset..end` on `cursor` can do now.
    fn step(cursor: &Cursor, offset: u64, end: u64) -> Step {
        let mut w = lock(&cursor.window);
        if let Some(Err(e)) = &w.done {
            return Step::Failed(e.clone());
        }
        if w.closed || offset < w.base {
            return Step::Restart;
        }
        let finished = matches!(w.done, Some(Ok(_)));
        // Whole reads only (a short read is not the end of the value), unless the value ends.
        if end <= w.end || (finished && offset < w.end) {
            let out = Cursor::slice(&w, offset, end);
            if end > w.wanted {
                w.wanted = end;
                cursor.room.notify_all();
            }
            if let Some(out) = out {
                return Step::Done(out);
            }
        }
        if finished && offset >= w.end {
            return Step::Done(Bytes::new());
        }
        if end > w.wanted {
            w.wanted = end;
            cursor.room.notify_all();
        }
        Step::Wait
    }

    /// The cursor to read `offset` from, counted as read: the one furthest along whose window
    /// holds it or will reach it, unless that one is in use and the read is far ahead of it (a
    /// read of the value's tail must not pull a sequential reader's window away); otherwise
    /// a new one from the start.
    fn cursor_for(&self, offset: u64) -> Reading {
        let mut cursors = lock(&self.cursors);
        let mut best: Option<(usize, u64)> = None;
        for (i, c) in cursors.iter().enumerate() {
            let w = lock(&c.window);
            let busy = c.in_use(&w);
            if w.closed || w.done.as_ref().is_some_and(|d| d.is_err()) {
                continue;
            }
            if busy && offset > w.end + AHEAD {
                continue;
            }
            if w.base <= offset && best.is_none_or(|(_, b)| w.base > b) {
                best = Some((i, w.base));
            }
        }
        let cursor = match best {
            Some((i, _)) => cursors.remove(i),
            None => self.start(),
        };
        cursors.insert(0, cursor.clone());
        let reading = Reading::new(&cursor, offset);
        trim(&mut cursors);
        reading
    }

    fn drop_cursor(&self, cursor: &Arc<Cursor>) {
        close(cursor);
        lock(&self.cursors).retain(|c| !Arc::ptr_eq(c, cursor));
    }

    /// Starts a cursor at the value's start.
    fn start(&self) -> Arc<Cursor> {
        let cursor = Arc::new(Cursor {
            window: Mutex::new(Window {
                base: 0,
                chunks: VecDeque::new(),
                end: 0,
                wanted: 0,
                waiting: Default::default(),
                last_read: std::time::Instant::now(),
                done: None,
                closed: false,
            }),
            room: Condvar::new(),
            changed: watch::Sender::new(0),
            readers: AtomicUsize::new(0),
        });
        let (store, blob, etag, cfg) = (
            self.store.clone(),
            self.blob.clone(),
            self.etag.clone(),
            self.cfg.clone(),
        );
        let sink = cursor.clone();
        let c = cursor.clone();
        tokio::spawn(async move {
            let got = transfer::download_with(&store, &blob, Some(&etag), &cfg, move |dec| {
                sink.fill(dec)
            })
            .await;
            {
                let mut w = lock(&c.window);
                let done = match got {
                    Ok(d) => Ok(d.size),
                    Err(_) if w.closed => return,
                    Err(e) => {
                        log::error!("reading {blob:?}: {e}");
                        Err(FsError::from(e))
                    }
                };
                w.done = Some(done);
            }
            c.changed.send_modify(|v| *v += 1);
            // Read to the end: its window goes once nobody has read it for a while.
            loop {
                tokio::time::sleep(IDLE).await;
                let w = lock(&c.window);
                if w.closed {
                    break;
                }
                if c.readers.load(Ordering::SeqCst) == 0 && w.last_read.elapsed() >= IDLE {
                    drop(w);
                    close(&c);
                    break;
                }
            }
        });
        cursor
    }
}

/// Stops a cursor and gives its window back (reads holding slices of it keep those).
fn close(cursor: &Cursor) {
    {
        let mut w = lock(&cursor.window);
        w.closed = true;
        w.chunks.clear();
        w.base = w.end;
    }
    cursor.room.notify_all();
    cursor.changed.send_modify(|v| *v += 1);
}

/// Drops the least recently used cursors past [`MAX_CURSORS`] that no read is waiting on (never
/// the first: the one a read just chose).
fn trim(cursors: &mut Vec<Arc<Cursor>>) {
    cursors.retain(|c| {
        let w = lock(&c.window);
        c.readers.load(Ordering::SeqCst) > 0
            || !(w.closed || w.done.as_ref().is_some_and(|d| d.is_err()))
    });
    while cursors.len() > MAX_CURSORS {
        let Some(i) = cursors
            .iter()
            .skip(1)
            .rposition(|c| c.readers.load(Ordering::SeqCst) == 0)
        else {
            break;
        };
        close(&cursors.remove(i + 1));
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        for c in lock(&self.cursors).iter() {
            close(c);
        }
    }
}
