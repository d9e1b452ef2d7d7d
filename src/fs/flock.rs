//! Locks across hosts: a lock is granted by the host's [`LockTable`] and, for the first holder
//! on a host, by a lease kept renewed until the last holder here lets go: an exclusive lock by
//! the lease on the file's blob, once no other host holds the file shared; a shared one by a
//! reader slot while no host holds or waits for the file's lease (see `fs::readers`). While a
//! host holds the file's lease, its writes to that blob carry the lease id; other hosts' writes
//! fail with EBUSY.

use std::sync::Arc;
use std::time::Duration;

use super::locks::{Grant, LockKind, LockMode, LockRequest, Segment, WHOLE};
use super::{Fs, FsError, FsResult};
use crate::index::meta::{entry_from_props, META_CLAIM};
use crate::lock::{signal_pending, LeaseKeeper};
use crate::mutex::lock;
use crate::store::{LeaseDuration, StoreError};

/// How long a `LOCK_NB` request may wait for the store before it is answered EIO: the caller
/// asked not to wait, so a store that does not answer must not hold it (or the kernel) for the
/// minutes its retries can take.
const NONBLOCKING_BOUND: Duration = Duration::from_secs(5);

/// How long an unlock waits for its lease to be given back before answering; the release goes
/// on in the background (the lock is already dropped here).
const UNLOCK_BOUND: Duration = Duration::from_secs(5);

/// How often a request waiting for an attempt looks for a signal to its process or its bound.
const ATTEMPT_POLL: Duration = Duration::from_millis(100);

/// What one try at a lock got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Got {
    /// Someone holds a conflicting lock (here or on another host).
    Busy,
    /// Granted under the lease this host already held, by this grant.
    Granted(u64),
    /// Granted with a lease just acquired (another host may have written before it).
    Lease(u64),
    /// Another request here just took the lease and is catching up: try again at once.
    CatchingUp,
}

/// What one attempt came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tried {
    /// Granted, by this grant.
    Granted(u64),
    /// Someone holds a conflicting lock.
    Busy,
    /// Another request here is catching up under a lease it just took: try again shortly
    /// (even a request that does not wait: nobody holds a conflicting lock).
    Again,
}

/// Marks a record-lock request as waiting in the lock table while it lives (deadlock detection).
struct Waiting<'a> {
    fs: &'a Fs,
    key: &'a str,
    req: &'a LockRequest,
}

impl<'a> Waiting<'a> {
    fn new(fs: &'a Fs, key: &'a str, req: &'a LockRequest) -> Self {
        if req.wait {
            fs.locks.waiting(key, req);
        }
        Waiting { fs, key, req }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.req.wait {
            self.fs.locks.done_waiting(self.key, self.req);
        }
    }
}

/// This host's waiter marker for one blocking lock request, while it waits on another host's
/// lease (see `fs::waiters`); deleted when the request ends, however it ends.
struct Marker {
    fs: Arc<Fs>,
    key: String,
    token: Option<String>,
    written: tokio::time::Instant,
    /// The waiting process and the mode it asks for (written into the marker).
    pid: u32,
    mode: LockMode,
}

impl Marker {
    /// Writes the marker the first time, and again every `MARKER_REFRESH`.
    async fn refresh(&mut self) {
        let due = self.written.elapsed() >= super::waiters::MARKER_REFRESH;
        if self.token.is_some() && !due {
            return;
        }
        let token = self
            .token
            .get_or_insert_with(|| self.fs.locks.new_marker())
            .clone();
        self.fs
            .mark_waiting(&self.key, &token, self.pid, self.mode)
            .await;
        self.written = tokio::time::Instant::now();
    }
}

/// Gives back, when a blocking exclusive request ends without its lock, the file's lease it took
/// while it waited for other hosts' shared locks to end.
struct Pending {
    fs: Arc<Fs>,
    key: String,
    req: LockRequest,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(lease) = self
            .fs
            .locks
            .take_pending(&self.key, self.req.kind, self.req.owner)
        {
            tokio::spawn(async move {
                let _ = lease.release().await;
            });
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let (fs, key) = (self.fs.clone(), std::mem::take(&mut self.key));
            tokio::spawn(async move {
                fs.unmark_waiting(&key, &token).await;
                fs.locks.drop_marker(&token);
            });
        }
    }
}

impl Fs {
    /// Takes (or converts) the lock `req` asks for on `ino`; waits while it conflicts when
    /// `req.wait`, giving up when its process gets a signal. Without `wait`, answers within a
    /// few seconds even when the store does not (EIO then).
    pub async fn lock(self: &Arc<Self>, ino: u64, req: LockRequest) -> FsResult<()> {
        self.lock_with(ino, req, self.cfg.lease_duration, true)
            .await
    }

    pub(super) async fn lock_with(
        self: &Arc<Self>,
        ino: u64,
        req: LockRequest,
        duration: LeaseDuration,
        renew: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let key = self.key_of(ino)?;
        let _waiting = Waiting::new(self, &key, &req);
        let _pending = Pending {
            fs: self.clone(),
            key: key.clone(),
            req,
        };
        let mut marker = Marker {
            fs: self.clone(),
            key: key.clone(),
            token: None,
            written: tokio::time::Instant::now(),
            pid: req.pid,
            mode: req.mode,
        };
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let notified = self.locks.changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Each attempt runs as its own task: a request given up (bound, signal) never cuts
            // an attempt off between its lease request and recording the lease.
            let attempt = tokio::spawn({
                let (fs, key) = (self.clone(), key.clone());
                async move { fs.attempt(&key, ino, &req, duration, renew).await }
            });
            let bound = (!req.wait).then(|| started + NONBLOCKING_BOUND);
            let mut tried = self.answer(attempt, &key, &req, bound).await?;
            if let Tried::Granted(grant) = tried {
                if self.locks.grant_holds(&key, req.owner, grant) {
                    log::debug!(
                        "{key:?}: {} lock granted to pid {} (grant {grant})",
                        req.mode.as_str(),
                        req.pid
                    );
                    return Ok(());
                }
                // The lease ran out between the grant and now (this host was paused, or the
                // catch-up took longer than the lease): another host may hold the lock already.
                log::warn!(
                    "locking {key:?}: the lease ran out before the grant was answered (was this \
                     host paused or cut off?); asking again"
                );
                self.give_back(&key, req.owner, grant).await;
                tried = Tried::Again;
            }
            match tried {
                Tried::Granted(_) => return Ok(()),
                Tried::Again if started.elapsed() < NONBLOCKING_BOUND || req.wait => {
                    if req.pid != 0 && signal_pending(req.pid) {
                        return Err(FsError::Interrupted);
                    }
                    // Woken when the catch-up ends.
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    continue;
                }
                Tried::Again | Tried::Busy if !req.wait => return Err(FsError::WouldBlock),
                Tried::Again | Tried::Busy => {}
            }
            if req.pid != 0 && signal_pending(req.pid) {
                return Err(FsError::Interrupted);
            }
            if self.locks.lease_id(&key).is_none() && started.elapsed() >= super::waiters::STARVING
            {
                // Waiting long on another host's lease: claim a turn.
                marker.refresh().await;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(delay) => {}
            }
            let cap = if marker.token.is_some() {
                super::waiters::MARKED_POLL
            } else {
                Duration::from_millis(500)
            };
            delay = (delay * 2).min(cap);
        }
    }

    /// Waits for one attempt at the lock `req` asks for on `key`: whether it was granted. Gives
    /// up at `bound` (EIO: the store did not answer in time) or when the requesting process
    /// gets a signal (EINTR); an attempt given up that is granted after all is given back then.
    async fn answer(
        self: &Arc<Self>,
        mut attempt: tokio::task::JoinHandle<FsResult<Tried>>,
        key: &str,
        req: &LockRequest,
        bound: Option<tokio::time::Instant>,
    ) -> FsResult<Tried> {
        loop {
            tokio::select! {
                r = &mut attempt => return r?,
                _ = tokio::time::sleep(ATTEMPT_POLL) => {}
            }
            let late = bound.is_some_and(|b| tokio::time::Instant::now() >= b);
            let signalled = req.pid != 0 && signal_pending(req.pid);
            if !late && !signalled {
                continue;
            }
            let (fs, abandoned, req) = (self.clone(), key.to_string(), *req);
            tokio::spawn(async move {
                let granted = attempt.await;
                if let Some(lease) = fs.locks.take_pending(&abandoned, req.kind, req.owner) {
                    let _ = lease.release().await;
                }
                if let Ok(Ok(Tried::Granted(grant))) = granted {
                    log::info!(
                        "{abandoned:?}: a lock granted after its request was given up goes back"
                    );
                    fs.give_back(&abandoned, req.owner, grant).await;
                }
            });
            if !late {
                return Err(FsError::Interrupted);
            }
            log::warn!(
                "locking {key:?}: the store did not answer within {}s; LOCK_NB answers EIO",
                NONBLOCKING_BOUND.as_secs()
            );
            return Err(FsError::Store(StoreError::Transient {
                name: self.layout.blob_name(key),
                message: format!(
                    "take a lock: no answer within {}s",
                    NONBLOCKING_BOUND.as_secs()
                ),
            }));
        }
    }

    /// One try at the lock `req` asks for: its grant, or `None` when someone holds a
    /// conflicting lock.
    async fn attempt(
        self: &Arc<Self>,
        key: &str,
        ino: u64,
        req: &LockRequest,
        duration: LeaseDuration,
        renew: bool,
    ) -> FsResult<Tried> {
        match self.try_lock(key, ino, req, duration, renew).await? {
            Got::Busy => Ok(Tried::Busy),
            Got::CatchingUp => Ok(Tried::Again),
            // No other host can have written meanwhile, and the holder that took the lease has
            // caught up: nothing to catch up with.
            Got::Granted(grant) => Ok(Tried::Granted(grant)),
            Got::Lease(grant) => match self.catch_up(key, ino).await {
                Ok(()) => {
                    self.locks.caught_up(key, grant);
                    Ok(Tried::Granted(grant))
                }
                Err(e) => {
                    // Holding the lock on an old copy would let this holder's save undo the
                    // last holder's write: the lock is given back and the caller told.
                    log::error!("locking {key:?}: cannot read what the last holder wrote: {e}");
                    self.locks.catch_up_failed(key, grant);
                    self.give_back(key, req.owner, grant).await;
                    Err(e)
                }
            },
        }
    }

    async fn try_lock(
        self: &Arc<Self>,
        key: &str,
        ino: u64,
        req: &LockRequest,
        duration: LeaseDuration,
        renew: bool,
    ) -> FsResult<Got> {
        let _gate = self.locks.gate(key).await;
        if self.locks.closing() {
            // Unmounting: the leases were given back, and no new one may outlive the mount.
            return Err(FsError::Interrupted);
        }
        let joining = req.mode == LockMode::Shared && self.locks.slot_of(key).is_some();
        if joining && !self.locks.holds(key, req) && self.writer_waiting(key).await? {
            // Another host waits to write: it goes before new readers here.
            return Ok(Got::Busy);
        }
        let upgrade = match self.locks.try_grant(key, req) {
            Grant::Granted(grant) => return Ok(Got::Granted(grant)),
            Grant::GrantedBehind(grant) => return Ok(Got::Lease(grant)),
            Grant::CatchingUp => return Ok(Got::CatchingUp),
            Grant::Conflict => return Ok(Got::Busy),
            Grant::Deadlock => return Err(FsError::Deadlock),
            Grant::NeedLease(stale) => {
                if let Some(stale) = stale {
                    let _ = stale.release().await;
                }
                false
            }
            Grant::Upgrade => true,
        };
        if self.locks.yielding(key) || !self.ensure_blob(ino).await? {
            // Another host waits for this key (its turn first, see `fs::waiters`), or holds it:
            // a file lease this request kept while waiting for readers would stand in its way.
            if let Some(lease) = self.locks.take_pending(key, req.kind, req.owner) {
                let _ = lease.release().await;
            }
            return Ok(Got::Busy);
        }
        if req.mode == LockMode::Shared {
            let Some(slot) = self.take_slot(key, req.pid, duration, renew).await? else {
                return Ok(Got::Busy);
            };
            return Ok(Got::Lease(self.granted(key, slot, req).await?));
        }
        let lease = match self.locks.take_pending(key, req.kind, req.owner) {
            Some(lease) if lease.is_live() => lease,
            stale => {
                if let Some(stale) = stale {
                    let _ = stale.release().await;
                }
                let blob = self.layout.blob_name(key);
                match LeaseKeeper::acquire(&self.store, &blob, duration, renew).await {
                    Ok(lease) => lease,
                    Err(StoreError::LeaseConflict(_)) => {
                        if upgrade && req.wait {
                            // Another host holds or takes the file's lease: waiting for it
                            // while holding shared could wait for each other forever.
                            if let Some(slot) = self.locks.drop_for_upgrade(key, req) {
                                let _ = slot.release().await;
                            }
                        }
                        return Ok(Got::Busy);
                    }
                    Err(StoreError::NotFound(_)) => return Err(FsError::NotFound),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // The file's lease keeps new readers out; those that hold it shared already must go.
        let own = self.locks.slot_of(key);
        match self.readers_present(key, own.as_deref(), true).await {
            Ok(false) => Ok(Got::Lease(self.granted(key, lease, req).await?)),
            Ok(true) if req.wait => match self.locks.set_pending(key, req, lease) {
                Ok(()) => Ok(Got::Busy),
                Err(lease) => {
                    let _ = lease.release().await;
                    Err(FsError::Interrupted)
                }
            },
            Ok(true) => {
                let _ = lease.release().await;
                Ok(Got::Busy)
            }
            Err(e) => {
                let _ = lease.release().await;
                Err(e)
            }
        }
    }

    /// Records `lease` (just taken: the file's lease or a reader slot) and `req`'s lock under
    /// it; the lease it replaces (an upgrade's slot) is given back. The new holder must read what
    /// the previous one wrote: the index is refreshed. Returns the grant.
    async fn granted(
        self: &Arc<Self>,
        key: &str,
        lease: LeaseKeeper,
        req: &LockRequest,
    ) -> FsResult<u64> {
        let (grant, replaced) = match self.locks.install(key, lease, req) {
            Ok(installed) => installed,
            Err(lease) => {
                // Unmounting: no lease may outlive the mount.
                let _ = lease.release().await;
                return Err(FsError::Interrupted);
            }
        };
        if self.locks.lease_id(key).is_some() {
            self.record_holder(key, req.pid);
        }
        if let Some(old) = replaced {
            let _ = old.release().await;
        }
        self.index.invalidate();
        if let Err(e) = self.index.revalidate().await {
            log::warn!("refreshing the index after locking {key:?}: {e}");
        }
        Ok(grant)
    }

    /// The lock that would keep `req` from being granted (`F_GETLK`): one held on this host
    /// (with its holder's pid), or, when this host does not hold the file's lease and another
    /// holder does, the whole file (pid 0: the holder is on another host).
    pub async fn test_lock(&self, ino: u64, req: &LockRequest) -> FsResult<Option<(Segment, u32)>> {
        let key = self.key_of(ino)?;
        if let Some(found) = self.locks.conflict(&key, req) {
            return Ok(Some(found));
        }
        if self.locks.lease_id(&key).is_some() {
            return Ok(None);
        }
        let whole = |mode| {
            Some((
                Segment {
                    start: 0,
                    end: WHOLE,
                    mode,
                    handle: 0,
                },
                0,
            ))
        };
        if req.mode == LockMode::Exclusive {
            let own = self.locks.slot_of(&key);
            if self.readers_present(&key, own.as_deref(), false).await? {
                return Ok(whole(LockMode::Shared));
            }
        }
        match self.store.head(&self.layout.blob_name(&key)).await {
            Ok(p) if p.lease_state == crate::store::LeaseState::Leased => {
                Ok(whole(LockMode::Exclusive))
            }
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The new holder of a lock works on what the last one left (the blob, which its lease now
    /// guards, says what that is): the unchanged local copy of an open file (opened before the
    /// lock) is replaced by the newest version, and its handles that only read serve the newest
    /// version from their next read on. A copy with unsaved changes stays as it is (those
    /// changes were made before the lock, as on a local disk).
    async fn catch_up(&self, key: &str, ino: u64) -> FsResult<()> {
        let props = match self.store.head(&self.layout.blob_name(key)).await {
            Ok(p) if !p.metadata.contains_key(META_CLAIM) => p,
            Ok(_) | Err(StoreError::NotFound(_)) => {
                self.invalidate_kernel_cache(ino).await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let newest = entry_from_props(&props);
        // The index may not list the last holder's write yet (its commit failed or is late):
        // opens under this lock take the blob's version, not the listed one (which a cached
        // copy here would serve).
        // (`granted` has just revalidated the index: its cached copy is current.)
        let listed = self.index.cached().entries.get(key).map(|e| e.etag.clone());
        if let Some(listed) = listed.filter(|l| *l != newest.etag) {
            log::debug!("{key:?}: the index lags its blob; opens under the lock use the blob's");
            lock(&self.fresher).insert(
                key.to_string(),
                (newest.clone(), std::time::Instant::now(), listed),
            );
        }
        if let Some(f) = self.open_file(ino) {
            let mut st = f.state.lock().await;
            let current = self.locks.lease_id(key);
            let lost = st
                .dirty_under
                .as_ref()
                .is_some_and(|l| Some(l) != current.as_ref());
            if lost && st.staged.as_ref().is_some_and(|s| s.dirty) {
                // Changes made here under a lock this host lost (its lease ran out): another
                // host may have written since, so they are dropped, not saved under this lock.
                // The handles that made them fail from their next write or close on.
                log::error!(
                    "{key:?}: unsaved changes made under a lock this host lost are dropped; \
                     the new holder works on the newest value"
                );
                st.staged = None;
                (st.atime, st.xattrs) = (None, None);
                st.dirty_under = None;
                st.save_failed = false;
                st.base = Some(newest.clone());
                self.fence_unsaved(ino);
                self.ensure_staged(key, &mut st, false).await?;
            }
            let older = st.base.as_ref().is_some_and(|b| b.etag != newest.etag);
            if older && st.staged.as_ref().is_some_and(|s| !s.dirty) {
                log::debug!("{key:?} changed before this host locked it; using the newest value");
                let kept = (st.staged.take(), st.base.replace(newest.clone()));
                if let Err(e) = self.ensure_staged(key, &mut st, false).await {
                    (st.staged, st.base) = kept;
                    return Err(e);
                }
            }
        }
        for h in lock(&self.handles).values_mut() {
            if h.ino == ino && !h.write && h.etag.as_deref() != Some(&newest.etag) {
                h.etag = Some(newest.etag.clone());
                h.sizes = Some((newest.size, newest.stored_size));
                h.value = None;
            }
        }
        // The kernel may hold the size and pages of an older version (read before the lock):
        // a read would stop at the old size (a counter at 99 read as "10" once it is 100).
        self.invalidate_kernel_cache(ino).await;
        Ok(())
    }

    /// A lock needs a blob to lease: a file created here and not yet saved is saved first
    /// (whether the blob then exists, the lease request itself tells). Other unsaved changes
    /// wait for the close, under the lock. `false` when another host's lease refused the save
    /// (its holder created the name meanwhile): the lock is busy.
    async fn ensure_blob(&self, ino: u64) -> FsResult<bool> {
        let Some(f) = self.open_file(ino) else {
            return Ok(true);
        };
        if f.state.lock().await.base.is_some() {
            return Ok(true);
        }
        match self.save(ino).await {
            Err(e) if matches!(e.store_cause(), Some(StoreError::LeaseConflict(_))) => Ok(false),
            r => r.map(|()| true),
        }
    }

    /// Unlocks bytes `start..=end` of `owner`'s locks of `kind` on `ino` (`LOCK_UN`, `F_UNLCK`): whether
    /// it held any of them. The last holder on this host gives the lease back (the answer waits
    /// a bounded time for that: the lock is dropped here at once).
    pub async fn unlock(
        self: &Arc<Self>,
        ino: u64,
        kind: LockKind,
        owner: u64,
        start: u64,
        end: u64,
    ) -> FsResult<bool> {
        let Ok(key) = self.key_of(ino) else {
            return Ok(false);
        };
        let (had, lease) = self.locks.unlock(&key, kind, owner, start, end);
        self.let_go(&key, lease).await?;
        Ok(had)
    }

    /// Drops every lock `owner` holds on `ino`: a POSIX lock owner (a process) closed a
    /// descriptor of the file (`flush`), or the xattr lock is removed. Whether it held any.
    pub async fn unlock_owner(self: &Arc<Self>, ino: u64, owner: u64) -> FsResult<bool> {
        let Ok(key) = self.key_of(ino) else {
            return Ok(false);
        };
        let (had, lease) = self.locks.drop_owner(&key, owner);
        self.let_go(&key, lease).await?;
        Ok(had)
    }

    /// Open file `fh` of `ino` is released: the flock and OFD locks taken through it end.
    pub async fn unlock_handle(self: &Arc<Self>, ino: u64, fh: u64) -> FsResult<()> {
        let Ok(key) = self.key_of(ino) else {
            return Ok(());
        };
        let (_, lease) = self.locks.drop_handle(&key, fh);
        self.let_go(&key, lease).await
    }

    /// Releases `lease` (if the last holder here let go of it), waiting for that a bounded time.
    async fn let_go(self: &Arc<Self>, key: &str, lease: Option<LeaseKeeper>) -> FsResult<()> {
        let Some(lease) = lease else {
            return Ok(());
        };
        let release = tokio::spawn({
            let (fs, key) = (self.clone(), key.to_string());
            async move { fs.release_lease(&key, lease).await }
        });
        match tokio::time::timeout(UNLOCK_BOUND, release).await {
            Ok(r) => r?,
            Err(_) => {
                log::warn!(
                    "unlocking {key:?}: the store has not answered yet; the lease is given back \
                     when it does (or runs out)"
                );
                Ok(())
            }
        }
    }

    /// Undoes `grant` of `owner`'s locks on `key` (if it is still the last change to them), and
    /// gives back the lease when no holder is left here; failures are logged.
    async fn give_back(&self, key: &str, owner: u64, grant: u64) {
        if let (_, Some(lease)) = self.locks.give_back(key, owner, grant) {
            let _ = self.release_lease(key, lease).await;
        }
    }

    /// Gives back the lease of `key`, which no holder here uses any more: its unsaved writes are
    /// saved and the files this host closed are listed in the index blob first (the next holder, on any host, must read what
    /// this one wrote). Wakes the waiters here once it is back.
    async fn release_lease(&self, key: &str, lease: LeaseKeeper) -> FsResult<()> {
        // What was written under the lock and not saved yet (a program that unlocks before it
        // closes) is saved first, under the lease, which no other host can take meanwhile.
        // (Only while the file still has this name: one renamed meanwhile saves under its new
        // name, with that name's lease.)
        // (A reader slot guards no write: nothing to save under it.)
        let ino = lock(&self.inodes).get(key).filter(|_| !lease.is_slot());
        let ino = ino.filter(|i| self.key_of(*i).is_ok_and(|k| k == key));
        if let Some(ino) = ino {
            if let Err(e) = self.save_under(ino, Some(lease.id().to_string())).await {
                log::error!("unlocking {key:?}: saving what was written under the lock: {e}");
            }
        }
        if let Err(e) = self.sync_index().await {
            log::error!(
                "unlocking {key:?}: this host's last changes are not listed yet ({e}); \
                 the next holder may not see them until they land"
            );
        }
        let released = lease.release().await;
        if released.is_ok() {
            self.look_for_waiters(key).await;
        }
        self.locks.notify();
        released.inspect_err(|e| log::warn!("releasing the lease on {key:?}: {e}"))?;
        Ok(())
    }

    /// Releases every lease this host holds (at unmount).
    pub async fn release_all_locks(&self) {
        for (key, lease) in self.locks.drain() {
            if let Err(e) = lease.release().await {
                log::warn!("releasing the lease on {key:?}: {e}");
            }
        }
    }
}
