//! The lock table: which lock owners on this host hold which locks (`flock`, OFD and POSIX
//! record locks, the xattr lock), on which byte ranges, and the lease behind each locked key.
//!
//! Within a host it keeps the kernel's semantics between owners: shared locks coexist, an
//! exclusive one excludes all others on the bytes it covers (`flock` always covers the whole
//! file). Across hosts, the first holder on a host takes a lease (see `fs::flock`) and the table
//! keeps it until the last holder on the host lets go: for an exclusive lock, the lease on the
//! file's blob; for a shared one, the lease on a reader slot of its own (see `fs::readers`). It
//! does no I/O itself: callers take [`LockTable::gate`] around a decision and the lease request it
//! leads to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::lock::LeaseKeeper;
use crate::mutex::lock;

/// A lock's mode, as `flock` or `fcntl` asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }
}

/// The last byte a lock can cover (`OFFSET_MAX`): a lock to it covers the whole file.
pub const WHOLE: u64 = i64::MAX as u64;

/// Which kind of lock: Linux keeps them independent (a flock never conflicts with a record
/// lock, even on the same file), and their conversions differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// `flock(2)`, and the `user.remotedict.lock` attribute.
    Flock,
    /// POSIX record locks (`fcntl`, `lockf`) and OFD locks.
    Record,
}

/// A lock request. Owners are the kernel's lock owners: one per open file description for
/// `flock` and OFD locks, one per process for POSIX record locks (`fcntl`, `lockf`). `handle` is
/// the open file the request came through.
#[derive(Clone, Copy, Debug)]
pub struct LockRequest {
    pub kind: LockKind,
    pub owner: u64,
    pub handle: u64,
    /// First and last byte (inclusive); `0..=WHOLE` for `flock`.
    pub start: u64,
    pub end: u64,
    pub mode: LockMode,
    /// Wait while it conflicts (`flock` without `LOCK_NB`, `F_SETLKW`).
    pub wait: bool,
    /// The requesting process: a wait ends when it gets a signal.
    pub pid: u32,
}

impl LockRequest {
    /// A flock (on the whole file).
    pub fn whole(owner: u64, handle: u64, mode: LockMode, wait: bool, pid: u32) -> Self {
        LockRequest {
            kind: LockKind::Flock,
            owner,
            handle,
            start: 0,
            end: WHOLE,
            mode,
            wait,
            pid,
        }
    }
}

/// A locked byte range of one owner, and the open file it was locked through: it ends when that
/// file is released (flock and OFD locks; a released handle's lock owner may already be reused
/// by a new open file description, whose own locks stay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub mode: LockMode,
    pub handle: u64,
}

impl Segment {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

/// `segments` less the bytes `start..=end`.
fn cut(segments: &[Segment], start: u64, end: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for s in segments {
        if !s.overlaps(start, end) {
            out.push(*s);
            continue;
        }
        if s.start < start {
            out.push(Segment {
                end: start - 1,
                ..*s
            });
        }
        if s.end > end {
            out.push(Segment {
                start: end + 1,
                ..*s
            });
        }
    }
    out
}

/// One owner's locks on a key.
#[derive(Clone)]
struct Hold {
    segments: Vec<Segment>,
    /// The grant that last changed it (0 once anything else changed it since), and the
    /// segments before that grant: a grant given back after its request was abandoned restores
    /// exactly what the owner held, and never undoes a later change.
    grant: u64,
    before: Vec<Segment>,
    pid: u32,
    since: std::time::SystemTime,
}

/// A waiting request: its kind, owner and key.
type Waiter = (LockKind, u64, String);

/// Who holds a lock: its kind and its owner (a flock and an OFD lock of one open file description
/// have the same owner, and are independent).
type Holder = (LockKind, u64);

#[derive(Default)]
struct KeyLocks {
    holders: HashMap<Holder, Hold>,
    lease: Option<LeaseKeeper>,
    /// Whether the holder that took `lease` has caught up with what the last holder wrote
    /// (`fs::flock`): no other lock is granted under it while it is at it.
    catch_up: CatchUp,
    /// The grant doing the catch-up (a late report of another grant, under an earlier lease of
    /// the key, changes nothing).
    catch_up_by: u64,
}

/// Where catching up with the last holder's writes stands, under a key's lease.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum CatchUp {
    #[default]
    Done,
    /// The holder that took the lease is at it.
    Running,
    /// It failed: the next lock granted under the lease does it.
    Needed,
}

impl KeyLocks {
    /// The first lock of another owner of the same kind that conflicts with `req`, with its
    /// holder.
    fn conflict(&self, req: &LockRequest) -> Option<(Segment, u32)> {
        self.conflicting(req).map(|(_, s, pid)| (s, pid))
    }

    fn conflicting(&self, req: &LockRequest) -> Option<(Holder, Segment, u32)> {
        self.holders
            .iter()
            .filter(|((kind, o), _)| *kind == req.kind && *o != req.owner)
            .find_map(|(holder, h)| {
                h.segments
                    .iter()
                    .find(|s| {
                        s.overlaps(req.start, req.end)
                            && (req.mode == LockMode::Exclusive || s.mode == LockMode::Exclusive)
                    })
                    .map(|s| (*holder, *s, h.pid))
            })
    }

    /// Applies `req` to its owner's hold, by `grant`.
    fn apply(&mut self, req: &LockRequest, grant: u64) {
        let hold = self
            .holders
            .entry((req.kind, req.owner))
            .or_insert_with(|| Hold {
                segments: Vec::new(),
                grant,
                before: Vec::new(),
                pid: req.pid,
                since: std::time::SystemTime::now(),
            });
        hold.before = hold.segments.clone();
        hold.segments = cut(&hold.segments, req.start, req.end);
        hold.segments.push(Segment {
            start: req.start,
            end: req.end,
            mode: req.mode,
            handle: req.handle,
        });
        hold.segments.sort_by_key(|s| s.start);
        hold.grant = grant;
        hold.pid = req.pid;
    }
}

/// What [`LockTable::try_grant`] decided.
pub enum Grant {
    /// The owner holds the lock now (this host already holds the key's lease), by this grant.
    Granted(u64),
    /// Another owner on this host holds a conflicting lock.
    Conflict,
    /// Another owner here holds a conflicting record lock and waits for one this owner holds.
    Deadlock,
    /// Nobody here holds the key: the lease must be acquired first ([`LockTable::install`]).
    /// Carries a lease that ran out or was lost, for the caller to release.
    NeedLease(Option<LeaseKeeper>),
    /// Granted, by this grant, under a lease whose catching up with the last holder's writes
    /// failed before: the caller does it now ([`LockTable::caught_up`] or
    /// [`LockTable::catch_up_failed`]).
    GrantedBehind(u64),
    /// The lease was just taken and its holder is still catching up with the last holder's
    /// writes: try again in a moment.
    CatchingUp,
    /// This host holds the key shared across hosts (a reader slot) and nobody here conflicts
    /// with the exclusive lock asked for: the file's lease must be taken, and every other host's
    /// shared lock gone, before it is granted.
    Upgrade,
}

/// A lock held on this host, for `status` and `getfattr`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HeldLock {
    pub key: String,
    pub kind: &'static str,
    #[serde(skip)]
    pub owner: u64,
    /// The process that took it, and its command name (while it runs).
    pub pid: u32,
    pub command: Option<String>,
    pub mode: &'static str,
    /// First and last byte; `end` is `null` for a lock to the end of any file.
    pub start: u64,
    pub end: Option<u64>,
    /// When it was taken (RFC 3339).
    pub since: String,
    /// The lease behind it: `renewed` (kept until unlocked), `expires in N s` (the xattr lock),
    /// `infinite`, or `lost` (its renewal failed: the holder's writes fail).
    pub lease: String,
    /// How this host holds the file towards other hosts: `exclusive` (the file's lease) or
    /// `shared` (a reader slot: other hosts may hold it shared too).
    pub host_mode: &'static str,
}

/// A lock request waiting on this host, for `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WaitingLock {
    pub key: String,
    pub kind: &'static str,
    pub pid: u32,
    pub command: Option<String>,
    pub mode: &'static str,
    pub since: String,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Flock => "flock",
            LockKind::Record => "record",
        }
    }
}

/// The command name of process `pid`, while it runs.
pub(super) fn command_of(pid: u32) -> Option<String> {
    (pid != 0)
        .then(|| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .flatten()
        .map(|c| c.trim().to_string())
}

fn rfc3339(t: std::time::SystemTime) -> String {
    crate::time::fmt_time(crate::time::to_ns(t))
}

/// Locks this host holds, per key.
#[derive(Default)]
pub struct LockTable {
    keys: Mutex<HashMap<String, KeyLocks>>,
    changed: Notify,
    /// Per key: serializes the decisions on its locks and the lease requests they lead to
    /// (other keys' lease requests, however slow, hold up none of them).
    gates: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// Set when the mount ends ([`LockTable::drain`]): no new lease is taken after that.
    closing: std::sync::atomic::AtomicBool,
    /// The last grant number given.
    grants: std::sync::atomic::AtomicU64,
    /// Blocking requests waiting for a conflict to clear, by kind, owner and key, since when:
    /// for `status`, and among record locks to find deadlocks (POSIX answers them EDEADLK).
    waiting: Mutex<HashMap<Waiter, (LockRequest, std::time::SystemTime)>>,
    /// Keys this host takes no new lease on until the given time: another host waits for them
    /// (see `fs::waiters`).
    yields: Mutex<HashMap<String, std::time::Instant>>,
    /// Tokens of this host's own waiter markers.
    markers: Mutex<std::collections::HashSet<String>>,
    /// Leases on files taken by a blocking exclusive request that still waits for other hosts'
    /// shared locks to end, by its kind, owner and key.
    pending: Mutex<HashMap<Waiter, LeaseKeeper>>,
    /// Locks that ended because their file lease ran out or was lost (not by their holder), by
    /// key and the open file they were taken through: the lease id, and the holder. Their
    /// holder may still write through that file (a write on its way while this host was
    /// paused): such a write is refused, not taken as one made without a lock.
    lost: Mutex<HashMap<(String, u64), (String, Holder)>>,
}

impl LockTable {
    /// The lease id writes to `key` must carry, if this host holds its lease.
    pub fn lease_id(&self, key: &str) -> Option<String> {
        let keys = lock(&self.keys);
        let lease = keys.get(key)?.lease.as_ref().filter(|l| !l.is_slot())?;
        // A lease that ran out by design (xattr locks) is no longer presented; one whose renewal
        // failed still is, so the write fails loudly instead of overwriting.
        (lease.is_live() || lease.remaining().is_none()).then(|| lease.id().to_string())
    }

    /// The id of `key`'s file lease while it certainly holds (not lost, deadline not passed).
    pub fn live_lease_id(&self, key: &str) -> Option<String> {
        let keys = lock(&self.keys);
        let lease = keys.get(key)?.lease.as_ref().filter(|l| !l.is_slot())?;
        lease.is_live().then(|| lease.id().to_string())
    }

    /// The lease under which a lock taken through open file `handle` on `key` was held when that
    /// lease ran out or was lost (and the holder has not unlocked, closed, or locked anew since):
    /// writes through it are refused.
    pub fn lost_lock(&self, key: &str, handle: u64) -> Option<String> {
        lock(&self.lost)
            .get(&(key.to_string(), handle))
            .map(|(lease, _)| lease.clone())
    }

    /// Whether a lock on `key` taken through an open file other than `handle` ended with its
    /// lease while its holder still holds it here (it has not unlocked or closed): until it
    /// lets go, no other lock on `key` is granted here and no write to it is taken (its holder,
    /// or a process it started, may still be writing what it meant to write under that lock).
    pub fn others_lost(&self, key: &str, handle: Option<u64>) -> bool {
        lock(&self.lost)
            .keys()
            .any(|(k, h)| k == key && Some(*h) != handle)
    }

    /// Forgets the lost locks `drop` picks (waking requests waiting for them to go).
    fn forget_lost(&self, drop: impl Fn(&(String, u64), &Holder) -> bool) {
        let removed = {
            let mut lost = lock(&self.lost);
            let before = lost.len();
            lost.retain(|k, (_, holder)| !drop(k, holder));
            lost.len() != before
        };
        if removed {
            self.changed.notify_waiters();
        }
    }

    /// Whether grant `grant` of `owner` on `key` still stands under a live lease (the file's or
    /// a reader slot): checked just before a grant is answered.
    pub fn grant_holds(&self, key: &str, owner: u64, grant: u64) -> bool {
        let keys = lock(&self.keys);
        keys.get(key).is_some_and(|k| {
            k.lease.as_ref().is_some_and(|l| l.is_live())
                && k.holders
                    .iter()
                    .any(|((_, o), h)| *o == owner && h.grant == grant)
        })
    }

    /// Keys this host holds a live lease on (one lost, or past its deadline, is not held).
    pub fn held_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.keys)
            .iter()
            .filter(|(_, k)| {
                k.lease
                    .as_ref()
                    .is_some_and(|l| l.is_live() && !l.is_slot())
            })
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Held while deciding on a lock of `key` and acquiring the lease it needs.
    pub async fn gate(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = {
            let mut gates = lock(&self.gates);
            if gates.len() > 1024 {
                // Gates nobody holds or waits for are dropped now and then.
                gates.retain(|_, g| std::sync::Arc::strong_count(g) > 1);
            }
            gates.entry(key.to_string()).or_default().clone()
        };
        gate.lock_owned().await
    }

    /// A future that completes at the next change of the table (a lock let go). Enable it
    /// before trying, so a change between the try and the wait is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Wakes the waiters (a lease this host held was given back: another try may now get it).
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    fn next_grant(&self) -> u64 {
        self.grants
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Grants `req` if this host holds the key's live lease and no other owner here holds a
    /// conflicting lock.
    pub fn try_grant(&self, key: &str, req: &LockRequest) -> Grant {
        if self.others_lost(key, Some(req.handle)) {
            return Grant::Conflict;
        }
        let mut keys = lock(&self.keys);
        let Some(k) = keys.get_mut(key) else {
            return Grant::NeedLease(None);
        };
        if k.lease.as_ref().is_some_and(|l| !l.is_live()) {
            // The lease ran out or was lost: nobody here holds the lock any more.
            let gone = keys.remove(key);
            // (A lease that simply ran out, as a lock with a duration does by design, ends its
            // locks; only one lost while it was kept renewed leaves holders that may still act.)
            let lease = gone.as_ref().and_then(|k| k.lease.as_ref());
            let lost_lease = lease.filter(|l| !l.is_slot() && l.renewed());
            if let (Some(gone), Some(lease)) = (&gone, lost_lease) {
                let mut lost = lock(&self.lost);
                for (holder, hold) in &gone.holders {
                    for seg in &hold.segments {
                        lost.insert(
                            (key.to_string(), seg.handle),
                            (lease.id().to_string(), *holder),
                        );
                    }
                }
            }
            drop(keys);
            if self.others_lost(key, Some(req.handle)) {
                // Its holders here may still act: this request waits for them to let go.
                return Grant::Conflict;
            }
            return Grant::NeedLease(gone.and_then(|k| k.lease));
        }
        if let Some((holder, _, _)) = k.conflicting(req) {
            let mine = (req.kind, req.owner);
            if req.kind == LockKind::Record && req.wait {
                // POSIX: a wait that would close a cycle (the holder waits for what this owner
                // holds) fails EDEADLK; the owner keeps what it holds.
                let theirs = lock(&self.waiting)
                    .get(&(LockKind::Record, holder.1, key.to_string()))
                    .map(|(r, _)| *r);
                let held = k.holders.get(&mine);
                if let (Some(theirs), Some(held)) = (theirs, held) {
                    let blocks_them = held.segments.iter().any(|s| {
                        s.overlaps(theirs.start, theirs.end)
                            && (theirs.mode == LockMode::Exclusive || s.mode == LockMode::Exclusive)
                    });
                    if blocks_them {
                        return Grant::Deadlock;
                    }
                }
                return Grant::Conflict;
            }
            let converting = k.holders.get(&mine).is_some_and(|h| {
                h.segments
                    .iter()
                    .any(|s| s.overlaps(req.start, req.end) && s.mode != req.mode)
            });
            if converting && req.wait {
                // A conversion that must wait drops the lock held first, as Linux does for
                // flock (flock(2): not atomic), so two shared holders that both upgrade do not
                // wait on each other. One that does not wait keeps what it held.
                if let Some(h) = k.holders.get_mut(&mine) {
                    h.segments = cut(&h.segments, req.start, req.end);
                    h.grant = 0;
                    if h.segments.is_empty() {
                        k.holders.remove(&mine);
                    }
                }
                // (Another owner still holds a lock here, so the lease stays.)
                drop(keys);
                self.changed.notify_waiters();
            }
            return Grant::Conflict;
        }
        if k.lease.is_some() && k.catch_up == CatchUp::Running {
            return Grant::CatchingUp;
        }
        if k.lease.as_ref().is_some_and(|l| l.is_slot()) && req.mode == LockMode::Exclusive {
            return Grant::Upgrade;
        }
        if k.lease.is_some() {
            let grant = self.next_grant();
            k.apply(req, grant);
            self.forget_lost(|(k, h), _| k == key && *h == req.handle);
            if k.catch_up == CatchUp::Needed {
                k.catch_up = CatchUp::Running;
                k.catch_up_by = grant;
                return Grant::GrantedBehind(grant);
            }
            return Grant::Granted(grant);
        }
        Grant::NeedLease(None)
    }

    /// Records the lease just acquired for `key` and the lock of `req` under it; returns the
    /// grant, and the lease it replaces (the reader slot of an upgrade), for the caller to
    /// release. Once the mount is ending it records nothing and hands the lease back.
    pub fn install(
        &self,
        key: &str,
        lease: LeaseKeeper,
        req: &LockRequest,
    ) -> Result<(u64, Option<LeaseKeeper>), LeaseKeeper> {
        let grant = self.next_grant();
        let mut keys = lock(&self.keys);
        if self.closing() {
            return Err(lease);
        }
        let k = keys.entry(key.to_string()).or_default();
        let replaced = k.lease.replace(lease);
        self.forget_lost(|(k, h), _| k == key && *h == req.handle);
        k.catch_up = CatchUp::Running;
        k.catch_up_by = grant;
        k.apply(req, grant);
        Ok((grant, replaced))
    }

    /// The holder that took `key`'s lease has caught up with the last holder's writes: other
    /// locks may be granted under it now. Wakes waiters.
    pub fn caught_up(&self, key: &str, grant: u64) {
        self.set_catch_up(key, grant, CatchUp::Done);
    }

    /// Catching up under `key`'s lease failed: the next lock granted under it tries again.
    pub fn catch_up_failed(&self, key: &str, grant: u64) {
        self.set_catch_up(key, grant, CatchUp::Needed);
    }

    fn set_catch_up(&self, key: &str, grant: u64, state: CatchUp) {
        if let Some(k) = lock(&self.keys).get_mut(key) {
            if k.catch_up_by == grant && k.catch_up == CatchUp::Running {
                k.catch_up = state;
            }
        }
        self.changed.notify_waiters();
    }

    /// Whether this host holds `key` shared across hosts (by a reader slot), and the slot's blob.
    pub fn slot_of(&self, key: &str) -> Option<String> {
        let keys = lock(&self.keys);
        let lease = keys.get(key)?.lease.as_ref()?;
        lease.is_slot().then(|| lease.blob().to_string())
    }

    /// The process that took the oldest lock on `key` here (0 when none).
    pub fn slot_pid(&self, key: &str) -> u32 {
        lock(&self.keys).get(key).map_or(0, |k| {
            k.holders
                .values()
                .min_by_key(|h| h.since)
                .map_or(0, |h| h.pid)
        })
    }

    /// Whether `req`'s owner already holds a lock of its kind on `key` here.
    pub fn holds(&self, key: &str, req: &LockRequest) -> bool {
        lock(&self.keys)
            .get(key)
            .is_some_and(|k| k.holders.contains_key(&(req.kind, req.owner)))
    }

    /// A blocking upgrade from shared to exclusive must wait for another host: as a waiting
    /// flock conversion on Linux, it lets go of what `req`'s owner holds on those bytes first,
    /// so two hosts upgrading at once do not wait for each other forever. Returns the slot
    /// when nobody here holds the key any more.
    pub fn drop_for_upgrade(&self, key: &str, req: &LockRequest) -> Option<LeaseKeeper> {
        self.change(key, |holders| {
            let Some(h) = holders.get_mut(&(req.kind, req.owner)) else {
                return false;
            };
            h.segments = cut(&h.segments, req.start, req.end);
            h.grant = 0;
            true
        })
        .1
    }

    /// Keeps `lease`, the file's lease taken by a blocking exclusive request that waits for
    /// other hosts' shared locks to end, until its next try ([`LockTable::take_pending`]).
    /// Once the mount is ending it keeps nothing and hands the lease back.
    pub fn set_pending(
        &self,
        key: &str,
        req: &LockRequest,
        lease: LeaseKeeper,
    ) -> Result<(), LeaseKeeper> {
        let mut pending = lock(&self.pending);
        if self.closing() {
            return Err(lease);
        }
        let old = pending.insert((req.kind, req.owner, key.to_string()), lease);
        debug_assert!(old.is_none());
        Ok(())
    }

    /// The file's lease a waiting exclusive request of `kind` and `owner` took, if any.
    pub fn take_pending(&self, key: &str, kind: LockKind, owner: u64) -> Option<LeaseKeeper> {
        lock(&self.pending).remove(&(kind, owner, key.to_string()))
    }

    /// Changes the holds of `key` with `change` (which says whether it changed anything); an
    /// owner left with no segment holds nothing. Returns whether anything changed, and the key's
    /// lease when no holder is left here (for the caller to release). Wakes waiters.
    fn change(
        &self,
        key: &str,
        change: impl FnOnce(&mut HashMap<Holder, Hold>) -> bool,
    ) -> (bool, Option<LeaseKeeper>) {
        let mut keys = lock(&self.keys);
        let Some(k) = keys.get_mut(key) else {
            return (false, None);
        };
        let changed = change(&mut k.holders);
        k.holders.retain(|_, h| !h.segments.is_empty());
        let lease = if k.holders.is_empty() {
            keys.remove(key).and_then(|k| k.lease)
        } else {
            None
        };
        drop(keys);
        if changed {
            self.changed.notify_waiters();
        }
        (changed, lease)
    }

    /// Unlocks bytes `start..=end` of `owner`'s locks of `kind` on `key` (`F_UNLCK`, `LOCK_UN`).
    pub fn unlock(
        &self,
        key: &str,
        kind: LockKind,
        owner: u64,
        start: u64,
        end: u64,
    ) -> (bool, Option<LeaseKeeper>) {
        self.forget_lost(|(k, _), holder| k == key && *holder == (kind, owner));
        self.change(key, |holders| {
            let Some(h) = holders.get_mut(&(kind, owner)) else {
                return false;
            };
            let had = h.segments.iter().any(|s| s.overlaps(start, end));
            h.segments = cut(&h.segments, start, end);
            h.grant = 0;
            had
        })
    }

    /// Drops every lock `owner` holds on `key` (a process closing the file drops its record
    /// locks: flush names the process, which owns no flock; removing the xattr drops its lock).
    pub fn drop_owner(&self, key: &str, owner: u64) -> (bool, Option<LeaseKeeper>) {
        self.forget_lost(|(k, _), (_, o)| k == key && *o == owner);
        self.change(key, |holders| {
            let before = holders.len();
            holders.retain(|(_, o), _| *o != owner);
            holders.len() != before
        })
    }

    /// Open file `handle` is released: locks taken through it, and through no other handle
    /// still open, end (flock and OFD locks at the last close of their file description).
    pub fn drop_handle(&self, key: &str, handle: u64) -> (bool, Option<LeaseKeeper>) {
        self.forget_lost(|(k, h), _| k == key && *h == handle);
        self.change(key, |holders| {
            let mut dropped = false;
            for h in holders.values_mut() {
                let before = h.segments.len();
                h.segments.retain(|s| s.handle != handle);
                if h.segments.len() != before {
                    h.grant = 0;
                    dropped = true;
                }
            }
            dropped
        })
    }

    /// Undoes `grant` if it is still the last change to `owner`'s locks on `key` (its request
    /// was abandoned before it landed): the owner holds again what it held before.
    pub fn give_back(&self, key: &str, owner: u64, grant: u64) -> (bool, Option<LeaseKeeper>) {
        self.change(key, |holders| {
            match holders
                .iter_mut()
                .find(|((_, o), h)| *o == owner && h.grant == grant)
            {
                Some((_, h)) => {
                    h.segments = std::mem::take(&mut h.before);
                    true
                }
                None => false,
            }
        })
    }

    /// Takes no new lease on `key` for `time` (another host waits for it).
    pub fn yield_key(&self, key: &str, time: Duration) {
        lock(&self.yields).insert(key.to_string(), std::time::Instant::now() + time);
    }

    /// Whether this host is yielding `key` to a waiting host now.
    pub fn yielding(&self, key: &str) -> bool {
        let mut yields = lock(&self.yields);
        let now = std::time::Instant::now();
        yields.retain(|_, until| *until > now);
        yields.contains_key(key)
    }

    /// A new waiter marker token of this host.
    pub fn new_marker(&self) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        lock(&self.markers).insert(token.clone());
        token
    }

    pub fn drop_marker(&self, token: &str) {
        lock(&self.markers).remove(token);
    }

    pub fn is_own_marker(&self, token: &str) -> bool {
        lock(&self.markers).contains(token)
    }

    /// Records that `req` waits on `key` (for deadlock detection); [`LockTable::done_waiting`]
    /// ends it.
    pub fn waiting(&self, key: &str, req: &LockRequest) {
        lock(&self.waiting).insert(
            (req.kind, req.owner, key.to_string()),
            (*req, std::time::SystemTime::now()),
        );
    }

    pub fn done_waiting(&self, key: &str, req: &LockRequest) {
        lock(&self.waiting).remove(&(req.kind, req.owner, key.to_string()));
    }

    /// The blocking requests waiting on this host, oldest first.
    pub fn waiters(&self) -> Vec<WaitingLock> {
        let mut all: Vec<(std::time::SystemTime, WaitingLock)> = lock(&self.waiting)
            .iter()
            .map(|((kind, _, key), (req, since))| {
                let w = WaitingLock {
                    key: key.clone(),
                    kind: kind.as_str(),
                    pid: req.pid,
                    command: None,
                    mode: req.mode.as_str(),
                    since: rfc3339(*since),
                };
                (*since, w)
            })
            .collect();
        all.sort_by_key(|a| a.0);
        all.into_iter()
            .map(|(_, mut w)| {
                w.command = command_of(w.pid);
                w
            })
            .collect()
    }

    /// `key` was deleted by this host: its lease went with the blob. The locks on it are
    /// forgotten (their owners hold the unlinked file, which nobody else can open) and the name
    /// is free to be locked anew. Wakes waiters.
    /// Returns a reader slot's lease (its blob is not the file's), for the caller to release.
    pub fn forget(&self, key: &str) -> Option<LeaseKeeper> {
        self.forget_lost(|(k, _), _| k == key);
        let removed = lock(&self.keys).remove(key);
        let slot = removed
            .as_ref()
            .and_then(|k| k.lease.as_ref())
            .is_some_and(|l| l.is_slot());
        if removed.is_some() {
            self.changed.notify_waiters();
        }
        removed.and_then(|k| k.lease).filter(|_| slot)
    }

    /// The locks on `from` move to `to` (a held file was renamed by this host), under `lease`,
    /// the lease just taken on `to`'s blob (the one on `from` went with its blob); when `to` is
    /// itself held here on a live lease, they join its holders under it. Returns a lease not
    /// used (nobody held `from` any more, or `to`'s own lease serves) and the reader slot of
    /// `from` (a slot is per name), for the caller to release. Wakes waiters.
    pub fn move_key(&self, from: &str, to: &str, lease: Option<LeaseKeeper>) -> Vec<LeaseKeeper> {
        {
            // Lost locks follow the file: its holders' writes stay refused under the new name.
            let mut lost = lock(&self.lost);
            let moved: Vec<_> = lost.keys().filter(|(k, _)| k == from).cloned().collect();
            for (k, h) in moved {
                if let Some(v) = lost.remove(&(k, h)) {
                    lost.insert((to.to_string(), h), v);
                }
            }
        }
        let mut keys = lock(&self.keys);
        let Some(mut moved) = keys.remove(from) else {
            return lease.into_iter().collect();
        };
        let old_slot = moved.lease.take().filter(|l| l.is_slot());
        let catch_up = moved.catch_up;
        let target = keys.entry(to.to_string()).or_default();
        for (holder, hold) in moved.holders {
            match target.holders.get_mut(&holder) {
                Some(h) => h.segments.extend(hold.segments),
                None => {
                    target.holders.insert(holder, hold);
                }
            }
        }
        // (A catch-up still running under the old name ends there: the next grant redoes it.)
        let catch_up = match catch_up {
            CatchUp::Running => CatchUp::Needed,
            c => c,
        };
        let target_held = target
            .lease
            .as_ref()
            .filter(|l| l.is_live())
            .map(|l| l.is_slot());
        let unused = match (target_held, lease) {
            // `to`'s own lease on its blob serves.
            (Some(false), lease) => lease,
            // `to` is held shared here and an exclusive lock arrives with a lease on the blob:
            // that lease guards both, and the slot goes.
            (Some(true), Some(l)) if !l.is_slot() => {
                target.catch_up = catch_up;
                target.lease.replace(l)
            }
            (Some(true), lease) => lease,
            // (A lease of `to` that ran out is dropped: it guards nothing any more.)
            (None, lease) => {
                target.lease = lease;
                target.catch_up = catch_up;
                None
            }
        };
        drop(keys);
        self.changed.notify_waiters();
        unused.into_iter().chain(old_slot).collect()
    }

    /// The first lock held here that conflicts with `req` (`F_GETLK`), with its holder's pid.
    pub fn conflict(&self, key: &str, req: &LockRequest) -> Option<(Segment, u32)> {
        lock(&self.keys).get(key)?.conflict(req)
    }

    /// Every lock held on this host, by key.
    pub fn held(&self) -> Vec<HeldLock> {
        let keys = lock(&self.keys);
        let mut out: Vec<(std::time::SystemTime, HeldLock)> = Vec::new();
        for (key, k) in keys.iter() {
            let host_mode = match &k.lease {
                Some(l) if l.is_slot() => "shared",
                _ => "exclusive",
            };
            let lease = match &k.lease {
                Some(l) if !l.is_live() => "lost".to_string(),
                Some(l) => match l.remaining() {
                    Some(left) => format!("expires in {} s", left.as_secs()),
                    None if l.renewed() => "renewed".to_string(),
                    None => "infinite".to_string(),
                },
                None => "none".to_string(),
            };
            for ((kind, owner), h) in &k.holders {
                for s in &h.segments {
                    let lock = HeldLock {
                        key: key.clone(),
                        kind: kind.as_str(),
                        owner: *owner,
                        pid: h.pid,
                        command: None,
                        mode: s.mode.as_str(),
                        start: s.start,
                        end: (s.end != WHOLE).then_some(s.end),
                        since: rfc3339(h.since),
                        lease: lease.clone(),
                        host_mode,
                    };
                    out.push((h.since, lock));
                }
            }
        }
        drop(keys);
        out.sort_by(|a, b| (&a.1.key, a.0, a.1.start).cmp(&(&b.1.key, b.0, b.1.start)));
        out.into_iter()
            .map(|(_, mut l)| {
                l.command = command_of(l.pid);
                l
            })
            .collect()
    }

    /// Whether the mount is ending (no new lease may be taken).
    pub fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forgets every lock and refuses new ones; returns the leases to release (at unmount).
    /// Wakes waiters.
    pub fn drain(&self) -> Vec<(String, LeaseKeeper)> {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all: Vec<(String, LeaseKeeper)> = lock(&self.keys)
            .drain()
            .filter_map(|(key, k)| k.lease.map(|l| (key, l)))
            .collect();
        all.extend(lock(&self.pending).drain().map(|((_, _, key), l)| (key, l)));
        self.changed.notify_waiters();
        all
    }

    /// Time left on the live lock `owner` holds on `key`: `Some(None)` when it never runs out,
    /// `None` when it holds none.
    pub fn time_left(&self, key: &str, owner: u64) -> Option<Option<Duration>> {
        let keys = lock(&self.keys);
        let k = keys
            .get(key)
            .filter(|k| k.holders.contains_key(&(LockKind::Flock, owner)))?;
        let lease = k.lease.as_ref().filter(|l| l.is_live())?;
        Some(lease.remaining())
    }
}
