//! `SharedIndex`: this process's view of a folder's index blob.
//!
//! Reads come from a cached copy revalidated at most once per TTL with one conditional GET
//! (`If-None-Match`; "not modified" means the copy is current). Writes are batched: every
//! change submitted while a commit is in flight joins the next one (group commit), and each commit
//! is a read–modify–write guarded by `If-Match` on the index etag, retried from a fresh copy when
//! another writer got there first — so no writer's entry is ever lost. See docs/FORMAT.md for why
//! this is preferred to a lease.
//!
//! Changes can also be *submitted* without waiting ([`SharedIndex::submit`]): they show in this
//! process's view at once (the cached copy with the unsettled changes applied on top) and ride
//! the next group commit; a failed commit keeps them queued and is retried with backoff until it
//! lands. [`SharedIndex::flush`] waits until everything submitted before it is durable. This is
//! what lets a copy of many small files cost one index write per batch instead of one per file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::oneshot;

use super::apply::{apply_change, saved_check, SavedCheck};
use super::format::{Entry, Index};
use super::generations::Tail;
use super::journal::Journal;
use super::records;
use crate::mutex::lock;
use crate::store::{BlobStore, StoreError};

// Kept reachable here, where they were defined before `apply` held them.
pub use super::apply::{apply_changes, Change};

/// How long a failed revalidation's error is handed to further callers without asking again.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// Commits retried this many times on etag conflicts before giving up.
const MAX_CONFLICT_RETRIES: u32 = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index blob {blob:?}: {source} (it is left untouched; run `remotedict fsck`)")]
    Format {
        blob: String,
        source: super::format::IndexFormatError,
    },
    #[error("index blob {0:?}: gave up after too many concurrent updates")]
    Contention(String),
    #[error("index commit abandoned: {0}")]
    Abandoned(String),
}

/// Where the cached copy came from, and how to ask whether it is still current.
#[derive(Clone, Debug, Default)]
pub(super) enum Source {
    /// No index blob (an empty folder, or not read yet).
    #[default]
    Missing,
    /// A format-1 index blob (the whole index), with its etag.
    Whole { etag: String },
    /// Format 2: a generation's journal, read up to a position.
    Journal(JournalPos),
}

/// How far this process has read a format-2 journal.
#[derive(Clone, Debug)]
pub(super) struct JournalPos {
    pub generation: String,
    /// Bytes of the journal read and applied.
    pub len: u64,
    /// Its etag at `len`, when known (after this process's own append it is not).
    pub etag: Option<String>,
    /// Appends it holds up to `len`.
    pub appends: u32,
    /// Size of the generation's snapshot, when known.
    pub snapshot_bytes: Option<u64>,
}

impl JournalPos {
    /// The start of generation `generation`'s journal.
    pub fn start(generation: &str, snapshot_bytes: Option<u64>) -> Self {
        JournalPos {
            generation: generation.to_string(),
            len: 0,
            etag: None,
            appends: 0,
            snapshot_bytes,
        }
    }
}

struct Cached {
    index: Arc<Index>,
    /// Where `index` was read from.
    source: Source,
    /// When the copy was last known current; `None` before the first read.
    checked: Option<Instant>,
    /// Order of the request the copy came from: an answer to an older request never replaces
    /// the answer to a newer one.
    ticket: u64,
    /// Answers to requests older than this (sent before the last [`SharedIndex::invalidate`])
    /// still bring their copy in, but do not make it count as current.
    current_from: u64,
    /// Submitted changes not yet durable, in submission order, by sequence number.
    unsettled: Vec<(u64, Change)>,
    /// `index` with `unsettled` applied: what this process reads while there are any.
    view: Option<Arc<Index>>,
    /// Where submitted entries wait on local disk until they land.
    journal: Option<Journal>,
}

impl Cached {
    /// What readers in this process see.
    fn visible(&self) -> Arc<Index> {
        self.view.clone().unwrap_or_else(|| self.index.clone())
    }

    /// Forgets the submitted changes `settled` (emptying the journal once none are left);
    /// returns whether any were forgotten.
    fn drop_settled(&mut self, settled: &[u64]) -> bool {
        let before = self.unsettled.len();
        self.unsettled.retain(|(seq, _)| !settled.contains(seq));
        let dropped = self.unsettled.len() != before;
        if !dropped {
            return false;
        }
        if self.unsettled.is_empty() {
            if let Some(Err(e)) = self.journal.as_mut().map(Journal::clear) {
                log::warn!("index journal: cannot clear it: {e}");
            }
        } else if let Some(j) = self.journal.as_mut() {
            let waiting: Vec<(&str, &Entry)> = self
                .unsettled
                .iter()
                .filter_map(|(_, c)| journaled(c))
                .collect();
            if j.wants_rewrite(waiting.len()) {
                if let Err(e) = j.rewrite(waiting) {
                    log::warn!("index journal: cannot rewrite it: {e}");
                }
            }
        }
        true
    }

    /// Rebuilds the view after the base copy or the unsettled changes changed.
    fn rebuild_view(&mut self) {
        self.view = if self.unsettled.is_empty() {
            None
        } else {
            let mut v = (*self.index).clone();
            for (_, c) in &self.unsettled {
                apply_change(&mut v, c);
            }
            Some(Arc::new(v))
        };
    }
}

/// The entry a change puts in the journal: what it lists (removals need no replay).
fn journaled(c: &Change) -> Option<(&str, &Entry)> {
    match c {
        Change::Put { key, entry }
        | Change::Insert { key, entry }
        | Change::Saved { key, entry, .. } => Some((key.as_str(), entry)),
        _ => None,
    }
}

/// Changes waiting for the next commit: who to tell the outcome, or (submitted changes) their
/// sequence number, so they are kept until they land.
enum Waiting {
    Commit(Vec<Change>, oneshot::Sender<Result<(), IndexError>>),
    Submitted(u64, Vec<Change>),
}

impl Waiting {
    fn changes(&self) -> &[Change] {
        match self {
            Waiting::Commit(c, _) | Waiting::Submitted(_, c) => c,
        }
    }
}

/// Longest pause between retries of a commit of submitted changes that keeps failing.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// How long a commit of submitted changes only waits for more to join it: a burst of small
/// files (one submission each) costs one index write per this interval, not one per file.
const LINGER: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Queue {
    pending: Vec<Waiting>,
    leader_running: bool,
}

/// The cached, conflict-safe view of one index blob.
pub struct SharedIndex {
    store: Arc<dyn BlobStore>,
    blob: String,
    ttl: Duration,
    cache: Mutex<Cached>,
    refresh: tokio::sync::Mutex<()>,
    queue: Mutex<Queue>,
    writes: AtomicU64,
    conflicts: AtomicU64,
    tickets: AtomicU64,
    failure: Mutex<Option<(Instant, IndexError)>>,
    submits: AtomicU64,
    /// Wakes a lingering leader when a caller waits for a commit.
    urgent: tokio::sync::Notify,
    /// Journal length from which compaction is considered (see `generations`).
    compact_min: AtomicU64,
    /// How long replaced generations are kept.
    grace: Mutex<Duration>,
}

impl SharedIndex {
    pub fn new(store: Arc<dyn BlobStore>, blob: String, ttl: Duration) -> Arc<Self> {
        Arc::new(SharedIndex {
            store,
            blob,
            ttl,
            cache: Mutex::new(Cached {
                index: Arc::new(Index::default()),
                source: Source::Missing,
                checked: None,
                ticket: 0,
                current_from: 0,
                unsettled: Vec::new(),
                view: None,
                journal: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
            queue: Mutex::new(Queue::default()),
            writes: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            failure: Mutex::new(None),
            submits: AtomicU64::new(0),
            urgent: tokio::sync::Notify::new(),
            compact_min: AtomicU64::new(super::generations::COMPACT_MIN_BYTES),
            grace: Mutex::new(super::generations::GENERATION_GRACE),
        })
    }

    /// Compacts the journal from `min_bytes` on (and once it is half the snapshot's size), and
    /// removes replaced generations after `grace` (tests make both small).
    pub fn set_compaction(&self, min_bytes: u64, grace: Duration) {
        self.compact_min.store(min_bytes, Ordering::Relaxed);
        *lock(&self.grace) = grace;
    }

    pub(super) fn compact_min_bytes(&self) -> u64 {
        self.compact_min.load(Ordering::Relaxed)
    }

    pub(super) fn generation_grace(&self) -> Duration {
        *lock(&self.grace)
    }

    pub(super) fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// The index format of the folder as last read: 1 (one whole blob), 2 (snapshot and
    /// journal), or `None` when there is no index yet.
    pub fn format(&self) -> Option<u8> {
        match lock(&self.cache).source {
            Source::Missing => None,
            Source::Whole { .. } => Some(1),
            Source::Journal(_) => Some(2),
        }
    }

    /// Writes the index anew as the next generation (format 2; a format-1 index is upgraded),
    /// removing generations replaced long enough ago: `remotedict fsck --upgrade` and tests.
    pub async fn compact_now(&self) -> Result<(), IndexError> {
        for _ in 0..=MAX_CONFLICT_RETRIES {
            self.revalidate().await?;
            let (base, source) = {
                let c = lock(&self.cache);
                (c.index.clone(), c.source.clone())
            };
            let ticket = self.ticket();
            let started = Instant::now();
            let fresh = match &source {
                Source::Journal(pos) => self.compact(&base, pos, false).await?.map(Source::Journal),
                other => self.upgrade(&base, other).await?,
            };
            if let Some(fresh) = fresh {
                self.install(ticket, Some((base, fresh)), started, &[]);
                return Ok(());
            }
        }
        Err(IndexError::Contention(self.blob.clone()))
    }

    /// The current generation, in format 2.
    pub fn generation(&self) -> Option<String> {
        match &lock(&self.cache).source {
            Source::Journal(p) => Some(p.generation.clone()),
            _ => None,
        }
    }

    /// Name of the index blob.
    pub fn blob(&self) -> &str {
        &self.blob
    }

    /// Number of index blob writes this process made.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Number of commits that found another writer's newer index and were redone.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// The index as of at most one TTL ago: served from the cache, or revalidated with one
    /// conditional GET.
    pub async fn current(&self) -> Result<Arc<Index>, IndexError> {
        if let Some(idx) = self.fresh() {
            return Ok(idx);
        }
        let _single_flight = self.refresh.lock().await;
        if let Some(idx) = self.fresh() {
            return Ok(idx);
        }
        // While the store is failing, callers queued behind a failed revalidation get its error
        // at once instead of each waiting out another timeout. Only a transient failure (a time
        // limit, a lost connection) is remembered: a refusal (403 from an expired credential)
        // comes back at once, and the next caller's request may already carry a new credential.
        if let Some((at, e)) = lock(&self.failure).as_ref() {
            if at.elapsed() < FAILURE_MEMORY {
                return Err(e.clone());
            }
        }
        let result = self.revalidate().await;
        *lock(&self.failure) = result
            .as_ref()
            .err()
            .filter(|e| matches!(e, IndexError::Store(s) if s.is_transient()))
            .map(|e| (Instant::now(), e.clone()));
        result
    }

    /// The cached copy, without asking the store (may be older than the TTL).
    pub fn cached(&self) -> Arc<Index> {
        lock(&self.cache).visible()
    }

    /// How long ago the cached copy was last known current.
    pub fn age(&self) -> Option<Duration> {
        lock(&self.cache).checked.map(|t| t.elapsed())
    }

    /// Forgets the freshness of the cache, so the next read revalidates.
    pub fn invalidate(&self) {
        let ticket = self.ticket();
        let mut c = lock(&self.cache);
        // Answers to requests sent before now no longer count as fresh. (Their copies still come
        // in: they are newer than the cached one, and a commit that lost a race needs the copy
        // its revalidation read to append at the new end.)
        c.current_from = c.current_from.max(ticket);
        c.checked = None;
    }

    fn fresh(&self) -> Option<Arc<Index>> {
        let c = lock(&self.cache);
        c.checked
            .filter(|t| t.elapsed() < self.ttl)
            .map(|_| c.visible())
    }

    /// Keeps every entry submitted from now on in `journal` until it lands.
    pub fn attach_journal(&self, journal: Journal) {
        lock(&self.cache).journal = Some(journal);
    }

    /// Number of submitted changes not yet durable.
    pub fn unsettled(&self) -> usize {
        lock(&self.cache).unsettled.len()
    }

    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Installs a copy read (or written) by request `ticket`, unless a newer request's copy is
    /// already there, and drops the submitted changes `settled` (now durable); returns what
    /// readers see.
    fn install(
        &self,
        ticket: u64,
        fresh: Option<(Arc<Index>, Source)>,
        at: Instant,
        settled: &[u64],
    ) -> Arc<Index> {
        let mut c = lock(&self.cache);
        let mut rebuild = c.drop_settled(settled);
        if ticket >= c.ticket {
            if let Some((index, source)) = fresh {
                c.index = index;
                c.source = source;
                rebuild = true;
            }
            c.ticket = ticket;
            if ticket >= c.current_from {
                c.checked = Some(at);
            }
        }
        if rebuild {
            c.rebuild_view();
        }
        c.visible()
    }

    /// Drops the submitted changes `settled` (they landed, or were already in the index).
    fn settle(&self, settled: &[u64]) {
        let mut c = lock(&self.cache);
        if c.drop_settled(settled) {
            c.rebuild_view();
        }
    }

    /// Asks the store whether the cached copy is current (one conditional GET: of the index
    /// blob in format 1, of the journal's tail in format 2), reading what changed if not.
    pub async fn revalidate(&self) -> Result<Arc<Index>, IndexError> {
        Ok(self.revalidate_seeing().await?.0)
    }

    /// [`Self::revalidate`], with the batch ids of the journal records it read.
    async fn revalidate_seeing(&self) -> Result<(Arc<Index>, Vec<[u8; 16]>), IndexError> {
        let ticket = self.ticket();
        let (base, source) = {
            let c = lock(&self.cache);
            (c.index.clone(), c.source.clone())
        };
        let started = Instant::now();
        let whole_etag = match &source {
            Source::Journal(pos) => match self.read_tail(&base, pos).await {
                // A record that does not check out: the head may name a repaired generation
                // (`fsck --repair` seals every journal into one); if not, the error stands.
                Err(IndexError::Format { .. }) => None,
                Err(e) => return Err(e),
                Ok(tail) => match tail {
                    Tail::Same => {
                        return Ok((self.install(ticket, None, started, &[]), Vec::new()))
                    }
                    Tail::Grew(index, pos, batches) => {
                        let seen =
                            self.install(ticket, Some((index, Source::Journal(pos))), started, &[]);
                        return Ok((seen, batches));
                    }
                    Tail::Gone => None,
                },
            },
            Source::Whole { etag } => Some(etag.as_str()),
            Source::Missing => None,
        };
        let loaded = self.load_head(whole_etag).await?;
        if let Some((index, _)) = &loaded {
            log::debug!(
                "index {}: loaded {} entries",
                self.blob,
                index.entries.len()
            );
        }
        Ok((self.install(ticket, loaded, started, &[]), Vec::new()))
    }

    /// Commits `changes` to the index blob, together with whatever other changes are pending in
    /// this process; returns once they are durable in the store.
    pub async fn commit(self: &Arc<Self>, changes: Vec<Change>) -> Result<(), IndexError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Waiting::Commit(changes, tx));
        self.urgent.notify_one();
        rx.await
            .unwrap_or_else(|_| Err(IndexError::Abandoned("the commit task ended".into())))
    }

    /// Queues `changes` for the next commit without waiting for it; this process sees them at
    /// once. They are retried until they land ([`Self::flush`] waits for that).
    pub fn submit(self: &Arc<Self>, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let seq = self.submits.fetch_add(1, Ordering::Relaxed);
        {
            let mut c = lock(&self.cache);
            let mut view = c.view.take().unwrap_or_else(|| c.index.clone());
            apply_changes(Arc::make_mut(&mut view), &changes);
            c.view = Some(view);
            c.unsettled
                .extend(changes.iter().map(|ch| (seq, ch.clone())));
            if let Some(j) = c.journal.as_mut() {
                for (key, entry) in changes.iter().filter_map(journaled) {
                    if let Err(e) = j.append(key, entry) {
                        log::warn!("index journal: cannot record {key:?}: {e}");
                    }
                }
            }
        }
        self.enqueue(Waiting::Submitted(seq, changes));
    }

    /// Syncs the journal to disk, so entries submitted so far survive a crash of the machine
    /// too (off the async threads, without holding the index copy while the disk works).
    pub async fn sync_journal(&self) {
        let handle = lock(&self.cache).journal.as_ref().map(Journal::sync_handle);
        let synced = match handle {
            None => return,
            Some(Ok(file)) => tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Some(Err(e)) => Err(e),
        };
        if let Err(e) = synced {
            log::warn!("index journal: cannot sync it: {e}");
        }
    }

    /// Waits until every change submitted before this call is durable; the error of the last
    /// attempt if they could not be written (they stay queued and are retried).
    pub async fn flush(self: &Arc<Self>) -> Result<(), IndexError> {
        self.commit(Vec::new()).await
    }

    fn enqueue(self: &Arc<Self>, waiting: Waiting) {
        let start_leader = {
            let mut q = lock(&self.queue);
            q.pending.push(waiting);
            !std::mem::replace(&mut q.leader_running, true)
        };
        if start_leader {
            // The leader runs as its own task so a cancelled caller never strands the others.
            let me = self.clone();
            tokio::spawn(async move { me.lead().await });
        }
    }

    async fn lead(self: Arc<Self>) {
        let mut pause = Duration::from_millis(100);
        loop {
            let only_submitted = lock(&self.queue)
                .pending
                .iter()
                .all(|w| matches!(w, Waiting::Submitted(..)));
            if only_submitted {
                tokio::select! {
                    _ = tokio::time::sleep(LINGER) => {}
                    _ = self.urgent.notified() => {}
                }
            }
            let batch = {
                let mut q = lock(&self.queue);
                if q.pending.is_empty() {
                    q.leader_running = false;
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            let all: Vec<Change> = batch
                .iter()
                .flat_map(|w| w.changes().iter().cloned())
                .collect();
            let settled: Vec<u64> = batch
                .iter()
                .filter_map(|w| match w {
                    Waiting::Submitted(seq, _) => Some(*seq),
                    Waiting::Commit(..) => None,
                })
                .collect();
            // A panic while committing (a bug) fails this batch like a store error: waiters get
            // an error, submitted changes stay queued, and later commits still run.
            let result = AssertUnwindSafe(self.apply_batch(&all, &settled))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(IndexError::Abandoned(
                        "the index commit panicked (a bug; see the log)".into(),
                    ))
                });
            let mut kept = Vec::new();
            for w in batch {
                match w {
                    Waiting::Commit(_, tx) => {
                        let _ = tx.send(result.clone());
                    }
                    Waiting::Submitted(..) if result.is_err() => kept.push(w),
                    Waiting::Submitted(..) => {}
                }
            }
            if let Err(e) = &result {
                log::error!("index commit of {} change(s) failed: {e}", all.len());
                if !kept.is_empty() {
                    // Submitted changes were promised to land: put them back in front and try
                    // again after a pause that grows while the store keeps failing.
                    log::warn!(
                        "index: {} submitted change(s) kept; retrying in {pause:?}",
                        kept.len()
                    );
                    lock(&self.queue).pending.splice(0..0, kept);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    continue;
                }
            }
            pause = Duration::from_millis(100);
        }
    }

    /// Applies `changes` to `next`, in order; returns whether anything changed. A
    /// [`Change::Saved`] is a put, unless the entry changed since the write began and the blob
    /// is no longer the version written (another writer's is newer): then it is dropped, or, if
    /// the key is unlisted, the newer blob is listed.
    async fn apply_resolved(
        &self,
        next: &mut Index,
        changes: &[Change],
    ) -> Result<bool, IndexError> {
        let mut changed = false;
        for c in changes {
            if let Some(SavedCheck { key, blob, etag }) = saved_check(next, c) {
                match self.store.head(blob).await {
                    Ok(p) if p.etag == etag => {}
                    Ok(p) => {
                        // Another writer's newer value is there. Its writer lists it; until then
                        // the name is listed with it, not left out (this host just saved it).
                        let newer = super::meta::entry_from_props(&p);
                        let listable = !p.metadata.contains_key(super::meta::META_CLAIM)
                            && newer.kind != super::format::EntryKind::Symlink;
                        if listable && !next.entries.contains_key(key) {
                            next.entries.insert(key.to_string(), newer);
                            changed = true;
                        }
                        log::info!(
                            "index: {key:?} was rewritten elsewhere after this host's save; \
                             listing the newer value"
                        );
                        continue;
                    }
                    Err(StoreError::NotFound(_)) => {
                        log::info!("index: {key:?} was removed elsewhere after this host's save");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            changed |= apply_change(next, c);
        }
        Ok(changed)
    }

    /// One read–modify–write, redone from the newest index while another writer wins the race:
    /// in format 2 an append of the batch's changes at the journal length this copy was read
    /// at; a format-1 (or missing) index is upgraded first.
    async fn apply_batch(&self, changes: &[Change], settled: &[u64]) -> Result<(), IndexError> {
        if changes.is_empty() {
            // A flush with nothing queued: everything before it has landed.
            self.settle(settled);
            return Ok(());
        }
        let mut revalidated = false;
        if lock(&self.cache).checked.is_none() {
            self.revalidate().await?;
            revalidated = true;
        }
        for attempt in 0..=MAX_CONFLICT_RETRIES {
            let (base, source) = {
                let c = lock(&self.cache);
                (c.index.clone(), c.source.clone())
            };
            let mut next = (*base).clone();
            if !self.apply_resolved(&mut next, changes).await? {
                if !revalidated {
                    // A no-op against a copy that may be stale (another writer may have listed
                    // what this batch removes): decide again from the newest index.
                    self.revalidate().await?;
                    revalidated = true;
                    continue;
                }
                self.settle(settled);
                return Ok(());
            }
            let pos = match source {
                Source::Journal(pos) => pos,
                other => {
                    // Format 1, or no index yet: the first write makes it format 2.
                    let ticket = self.ticket();
                    let started = Instant::now();
                    match self.upgrade(&base, &other).await? {
                        Some(source) => {
                            self.install(ticket, Some((base.clone(), source)), started, &[]);
                        }
                        None => {
                            self.conflicts.fetch_add(1, Ordering::Relaxed);
                            self.revalidate().await?;
                        }
                    }
                    revalidated = true;
                    continue;
                }
            };
            let ops = records::diff(&base, &next, changes.iter().map(Change::key));
            let record = records::encode_record(records::new_batch(), &ops);
            let oversized = record.len() > crate::store::MAX_APPEND_BYTES;
            if oversized || self.due_for_compaction(&pos, base.entries.len()) {
                // (An oversized batch lands whole as the next generation's snapshot.)
                let (what, replaced) = if oversized {
                    (&next, true)
                } else {
                    (&*base, false)
                };
                let ticket = self.ticket();
                let started = Instant::now();
                let compacted = match self.compact(what, &pos, replaced).await {
                    Err(IndexError::Store(e)) if e.is_transient() => {
                        // The seal may have landed: the next round starts from what the journal
                        // says.
                        let _ = self.revalidate().await;
                        return Err(e.into());
                    }
                    r => r?,
                };
                match compacted {
                    Some(fresh) => {
                        self.writes.fetch_add(1, Ordering::Relaxed);
                        let index = Arc::new(what.clone());
                        // (The batch is settled only once it is in: at once when the new
                        // snapshot holds it, else by the append that follows.)
                        let done: &[u64] = if oversized { settled } else { &[] };
                        self.install(ticket, Some((index, Source::Journal(fresh))), started, done);
                        if oversized {
                            return Ok(());
                        }
                    }
                    None => {
                        self.conflicts.fetch_add(1, Ordering::Relaxed);
                        self.revalidate().await?;
                    }
                }
                revalidated = true;
                continue;
            }
            let started = Instant::now();
            let batch = records::batch_of(&record);
            let record_len = record.len();
            let journal = self.journal_blob(&pos.generation);
            match self
                .store
                .append(&journal, Bytes::from(record), pos.len)
                .await
            {
                Ok(len) => {
                    // The ticket is taken once the write is known to have landed: a
                    // revalidation sent before that may have been answered with the copy this
                    // write extended, and must not hide this process's own commit.
                    let ticket = self.ticket();
                    self.writes.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::index_commit(record_len);
                    log::debug!(
                        "index {}: appended {} change(s) in one commit ({record_len} bytes)",
                        self.blob,
                        ops.len()
                    );
                    let after = JournalPos {
                        len,
                        etag: None,
                        appends: pos.appends + 1,
                        ..pos
                    };
                    self.install(
                        ticket,
                        Some((Arc::new(next), Source::Journal(after))),
                        started,
                        settled,
                    );
                    return Ok(());
                }
                Err(StoreError::PreconditionFailed(_)) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::index_conflict();
                    log::debug!(
                        "index {}: another writer appended first (attempt {attempt}); retrying",
                        self.blob
                    );
                    let (_, seen) = self.revalidate_seeing().await?;
                    revalidated = true;
                    if seen.contains(&batch) {
                        // This batch landed after all (an answer lost on the way back).
                        self.settle(settled);
                        return Ok(());
                    }
                    let backoff =
                        Duration::from_millis(fastrand::u64(0..=(2 * u64::from(attempt.min(20)))));
                    tokio::time::sleep(backoff).await;
                }
                Err(StoreError::NotFound(_)) => {
                    // The journal was replaced long ago and removed: start again from the head.
                    let ticket = self.ticket();
                    let loaded = self.load_head(None).await?;
                    self.install(ticket, loaded, Instant::now(), &[]);
                    revalidated = true;
                }
                Err(e) if e.is_transient() => {
                    // The append may have landed with its answer lost: the journal says.
                    if let Ok((_, seen)) = self.revalidate_seeing().await {
                        if seen.contains(&batch) {
                            log::info!(
                                "index {}: a commit whose answer was lost had landed",
                                self.blob
                            );
                            self.settle(settled);
                            return Ok(());
                        }
                    }
                    return Err(e.into());
                }
                Err(StoreError::BlobFull(_)) => {
                    // Appends beyond what this copy counted: read them (the count then says to
                    // compact).
                    self.revalidate().await?;
                    revalidated = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IndexError::Contention(self.blob.clone()))
    }
}
