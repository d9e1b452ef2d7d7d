//! The thin `fuser::Filesystem` adapter: translate each kernel request into a call on the
//! filesystem core (`fs::Fs`), run it as a task so a slow transfer never blocks other requests,
//! and reply. No policy lives here.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use tokio_util::task::TaskTracker;

use crate::fs::{
    as_caller, Attr, Caller, Fs, FsError, LockKind, LockMode, LockRequest, NodeKind, SetAttr,
};
use crate::metrics;

/// How long an ending mount waits for the operations still running (an `rm` between its delete
/// and its index commit, an upload ending in a close) before it stops anyway.
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(30);

/// Serves an `Fs` to the kernel.
pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
    /// How long the kernel may cache names and attributes (the index TTL).
    ttl: Duration,
    /// The operations running, so an ending mount lets them finish.
    tasks: TaskTracker,
    /// The number the next request gets (its log lines carry it: `req=N`).
    requests: std::sync::atomic::AtomicU64,
}

impl FuseAdapter {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle, ttl: Duration) -> Self {
        FuseAdapter {
            fs,
            rt,
            ttl,
            tasks: TaskTracker::new(),
            requests: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The operations this adapter runs (for [`finish`] once the session has ended).
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// A failure answered without a task: counted by the core, logged, as an errno.
    fn fail(&self, op: &str, e: &FsError) -> Errno {
        self.fs.note_failure(e);
        errno(op, e)
    }

    /// Runs `op` on the runtime and hands its result to `reply`; the core counts failures, the
    /// metrics the request `name` (its time to the answer, and its errno).
    fn spawn<T, F, Fut>(
        &self,
        name: &'static str,
        op: F,
        reply: impl FnOnce(Result<T, FsError>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce(Arc<Fs>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let started = Instant::now();
        let id = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fs = self.fs.clone();
        let fut = op(fs.clone());
        self.tasks.spawn_on(
            crate::logging::in_request(id, async move {
                let r = fut.await;
                let failed = r.as_ref().err().map(|e| {
                    fs.note_failure(e);
                    e.errno()
                });
                reply(r);
                metrics::fuse_request(name, started.elapsed(), failed);
            }),
            &self.rt,
        );
    }
}

/// The credentials of the process behind `req`.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// Ends a mount whose session is over: waits (a bounded time) for the operations still running,
/// then saves what is pending and releases this host's locks ([`Fs::shutdown`]).
pub async fn finish(fs: &Fs, tasks: &TaskTracker) {
    tasks.close();
    if tokio::time::timeout(IN_FLIGHT_PATIENCE, tasks.wait())
        .await
        .is_err()
    {
        log::warn!(
            "unmount: {} operation(s) still running after {} s; stopping anyway",
            tasks.len(),
            IN_FLIGHT_PATIENCE.as_secs()
        );
    }
    fs.shutdown().await;
}

/// Largest read or write request, and the I/O size files advertise (`st_blksize`), so tools
/// like `cat` and `cp` move 1 MiB (one LZ4 block) per call.
const IO_SIZE: u32 = 1 << 20;

/// A closed listing this long is followed by handing free memory back to the system.
const BIG_LISTING: usize = 65_536;

/// The one place failures are logged and turned into an errno (the core counts them: see
/// `FuseAdapter::spawn` and `FuseAdapter::fail`).
fn errno(op: &str, e: &FsError) -> Errno {
    if e.is_routine() {
        log::debug!("{op}: {e}");
    } else {
        log::warn!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.stored_size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: IO_SIZE,
        flags: 0,
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

fn name_str(name: &OsStr) -> Result<String, FsError> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| FsError::Invalid("names must be valid UTF-8".into()))
}

/// The mode a lock request's type asks for: `Some(None)` for `F_UNLCK`, `None` for no type.
fn lock_mode(typ: i32) -> Option<Option<LockMode>> {
    match typ {
        libc::F_RDLCK => Some(Some(LockMode::Shared)),
        libc::F_WRLCK => Some(Some(LockMode::Exclusive)),
        libc::F_UNLCK => Some(None),
        _ => None,
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // flock() and fcntl()/lockf() requests come to us (and become blob leases).
        if let Err(missing) =
            config.add_capabilities(InitFlags::FUSE_FLOCK_LOCKS | InitFlags::FUSE_POSIX_LOCKS)
        {
            log::warn!("the kernel does not offer {missing:?}: those locks hold on this host only");
        }
        // Listings come with attributes (`ls -l` needs no lookup per entry), for as long as the
        // program listing asks for them: after the first batch the kernel goes on with plain
        // readdir unless it saw the entries stat'ed (`ls -f`, `find`, shell globs then cost no
        // kernel inode per name, and no inode here once the listing is closed).
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        // O_TRUNC arrives with open, so a truncating open never fetches the old value.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Requests of up to 1 MiB (one LZ4 block) instead of 128 KiB: a quarter as many round
        // trips for large reads and writes.
        if let Err(max) = config.set_max_write(IO_SIZE) {
            let _ = config.set_max_write(max);
        }
        log::info!("mounted");
        Ok(())
    }

    fn destroy(&mut self) {
        self.rt.block_on(finish(&self.fs, &self.tasks));
        log::info!("unmounted");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ttl = self.ttl;
        let name = name_str(name);
        self.spawn(
            "lookup",
            move |fs| async move { fs.lookup_entry(parent.0, &name?).await },
            move |r| match r {
                Ok(a) => reply.entry_with_ttls(&ttl, &ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno("lookup", &e)),
            },
        );
    }

    /// The kernel drops `nlookup` references to `ino`. (`batch_forget` keeps fuser's default,
    /// which calls this for each inode: its `ForgetOne` cannot be named outside fuser 0.18.)
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.ttl;
        self.spawn(
            "getattr",
            move |fs| async move { fs.getattr(ino.0).await },
            move |r| match r {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(errno("getattr", &e)),
            },
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ttl = self.ttl;
        let set = SetAttr {
            size,
            mtime: mtime.map(time_of),
            atime: atime.map(time_of),
            mode,
            uid,
            gid,
        };
        self.spawn(
            "setattr",
            move |fs| async move { fs.setattr(ino.0, fh.map(|f| f.0), set).await },
            move |r| match r {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(errno("setattr", &e)),
            },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let who = caller(req);
        let ttl = self.ttl;
        let name = name_str(name);
        self.spawn(
            "mkdir",
            move |fs| {
                as_caller(
                    who,
                    async move { fs.mkdir_entry(parent.0, &name?, mode).await },
                )
            },
            move |r| match r {
                Ok(a) => reply.entry_with_ttls(&ttl, &ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno("mkdir", &e)),
            },
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let who = caller(req);
        let ttl = self.ttl;
        let name = name_str(name);
        self.spawn(
            "mknod",
            move |fs| {
                as_caller(who, async move {
                    fs.mknod_entry(parent.0, &name?, mode, rdev).await
                })
            },
            move |r| match r {
                Ok(a) => reply.entry_with_ttls(&ttl, &ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno("mknod", &e)),
            },
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let who = caller(req);
        let ttl = self.ttl;
        let name = name_str(link_name);
        let target = name_str(target.as_os_str());
        self.spawn(
            "symlink",
            move |fs| {
                as_caller(who, async move {
                    fs.symlink_entry(parent.0, &name?, &target?).await
                })
            },
            move |r| match r {
                Ok(a) => reply.entry_with_ttls(&ttl, &ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno("symlink", &e)),
            },
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(
            "readlink",
            move |fs| async move { fs.readlink(ino.0).await },
            move |r| match r {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(errno("readlink", &e)),
            },
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // A blob has one name: hard links cannot be represented.
        reply.error(self.fail(
            "link",
            &FsError::NotPermitted("hard links are not supported"),
        ));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_str(name);
        self.spawn(
            "unlink",
            move |fs| async move { fs.unlink(parent.0, &name?).await },
            move |r| empty(reply, "unlink", r),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_str(name);
        self.spawn(
            "rmdir",
            move |fs| async move { fs.rmdir(parent.0, &name?).await },
            move |r| empty(reply, "rmdir", r),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(self.fail(
                "rename",
                &FsError::Unsupported("RENAME_EXCHANGE and RENAME_WHITEOUT"),
            ));
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (name, newname) = (name_str(name), name_str(newname));
        self.spawn(
            "rename",
            move |fs| async move {
                fs.rename(parent.0, &name?, newparent.0, &newname?, noreplace)
                    .await
            },
            move |r| empty(reply, "rename", r),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(
            "open",
            move |fs| async move { fs.open(ino.0, flags.0).await },
            move |r| match r {
                Ok(fh) if Fs::direct_io(flags.0) => {
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno("open", &e)),
            },
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let who = caller(req);
        let ttl = self.ttl;
        let name = name_str(name);
        self.spawn(
            "create",
            move |fs| {
                as_caller(who, async move {
                    fs.create_entry(parent.0, &name?, mode, flags).await
                })
            },
            move |r| match r {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &file_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(errno("create", &e)),
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(
            "read",
            move |fs| async move { fs.read(fh.0, offset, size).await },
            move |r| match r {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno("read", &e)),
            },
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn(
            "write",
            move |fs| async move { fs.write(fh.0, offset, &data).await },
            move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno("write", &e)),
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "flush",
            move |fs| async move {
                let saved = fs.flush(fh.0).await;
                // A process closing any descriptor of a file drops its POSIX record locks on it
                // (its lock owner is the one flush names); flock locks have other owners. After
                // the save, so the next holder reads what was written under the lock.
                let unlocked = fs.unlock_owner(ino.0, lock_owner.0).await;
                saved?;
                unlocked.map(|_| ())
            },
            move |r| empty(reply, "flush", r),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "fsync",
            move |fs| async move { fs.fsync(fh.0).await },
            move |r| empty(reply, "fsync", r),
        );
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "release",
            move |fs| async move {
                let saved = fs.release(fh.0).await;
                // The last close of a file description drops its flock and OFD locks. By handle:
                // the lock owner is the address of the file description, which a new open can
                // reuse before this release arrives (see `LockTable::drop_handle`).
                let unlocked = fs.unlock_handle(ino.0, fh.0).await;
                saved?;
                unlocked
            },
            move |r| empty(reply, "release", r),
        );
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let Some(Some(mode)) = lock_mode(typ) else {
            return reply.error(Errno::from_i32(libc::EINVAL));
        };
        let req = LockRequest {
            kind: LockKind::Record,
            owner: lock_owner.0,
            handle: fh.0,
            start,
            end,
            mode,
            wait: false,
            pid,
        };
        self.spawn(
            "getlk",
            move |fs| async move { fs.test_lock(ino.0, &req).await },
            move |r| match r {
                Ok(Some((s, pid))) => {
                    let typ = match s.mode {
                        LockMode::Shared => libc::F_RDLCK,
                        LockMode::Exclusive => libc::F_WRLCK,
                    };
                    reply.locked(s.start, s.end, typ, pid)
                }
                Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
                Err(e) => reply.error(errno("getlk", &e)),
            },
        );
    }

    fn setlk_kind(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        flock: bool,
        reply: ReplyEmpty,
    ) {
        let kind = if flock {
            LockKind::Flock
        } else {
            LockKind::Record
        };
        let pid = req.pid();
        let Some(mode) = lock_mode(typ) else {
            return reply.error(Errno::from_i32(libc::EINVAL));
        };
        self.spawn(
            "setlk",
            move |fs| async move {
                // Owned by the kernel's lock owner: the open file description for flock and
                // OFD locks, the process for POSIX record locks.
                match mode {
                    Some(mode) => {
                        let req = LockRequest {
                            kind,
                            owner: lock_owner.0,
                            handle: fh.0,
                            start,
                            end,
                            mode,
                            wait: sleep,
                            pid,
                        };
                        fs.lock(ino.0, req).await
                    }
                    None => fs
                        .unlock(ino.0, kind, lock_owner.0, start, end)
                        .await
                        .map(|_| ()),
                }
            },
            move |r| empty(reply, "lock", r),
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let pid = req.pid();
        let name = name_str(name);
        // ACLs and security labels (`rsync -A`, `cp -a`): not stored, answered at once.
        if let Some(e) = name.as_deref().ok().and_then(Fs::xattr_answer_for_any_file) {
            return reply.error(Errno::from_i32(e.errno()));
        }
        let value = value.to_vec();
        self.spawn(
            "setxattr",
            move |fs| async move { fs.setxattr(ino.0, &name?, &value, flags, pid).await },
            move |r| empty(reply, "setxattr", r),
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_str(name);
        self.spawn(
            "removexattr",
            move |fs| async move { fs.removexattr(ino.0, &name?).await },
            move |r| empty(reply, "removexattr", r),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(
            "opendir",
            move |fs| async move { fs.opendir(ino.0).await },
            move |r| match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno("opendir", &e)),
            },
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let started = Instant::now();
        let failed = match self.fs.readdir(fh.0) {
            Ok(entries) => {
                for i in (offset as usize)..entries.len() {
                    let (ino, kind) = (entries.ino(i), entries.kind(i));
                    if reply.add(
                        INodeNo(ino),
                        (i + 1) as u64,
                        file_type(kind),
                        entries.name(i),
                    ) {
                        break;
                    }
                }
                reply.ok();
                None
            }
            Err(e) => {
                let errno = self.fail("readdir", &e);
                reply.error(errno);
                Some(e.errno())
            }
        };
        metrics::fuse_request("readdir", started.elapsed(), failed);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl;
        let fs = self.fs.clone();
        self.spawn(
            "readdirplus",
            move |fs| async move { fs.readdir_plus(fh.0, offset as usize).await },
            move |r| match r {
                Ok(entries) => {
                    let mut sent = entries.len();
                    for (i, (next, e, a)) in entries.iter().enumerate() {
                        if reply.add(
                            INodeNo(e.ino),
                            *next,
                            &e.name,
                            &ttl,
                            &file_attr(a),
                            Generation(0),
                        ) {
                            sent = i;
                            break;
                        }
                    }
                    // The kernel counts a lookup for each entry it received, not for the rest.
                    fs.readdir_plus_unsent(&entries[sent..]);
                    reply.ok();
                }
                Err(e) => reply.error(errno("readdirplus", &e)),
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let entries = self.fs.releasedir(fh.0);
        reply.ok();
        if entries >= BIG_LISTING {
            // Its names and inodes were many small allocations, now free but kept by the
            // allocator: hand the pages back, so a mount's memory follows what it holds.
            crate::runtime::return_free_memory();
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "fsyncdir",
            move |fs| async move { fs.sync_index().await },
            move |r| empty(reply, "fsyncdir", r),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name_str(name);
        // `ls -l` asks every file for ACLs and security labels: answer at once, without a task.
        if let Some(e) = name.as_deref().ok().and_then(Fs::xattr_answer_for_any_file) {
            return reply.error(Errno::from_i32(e.errno()));
        }
        self.spawn(
            "getxattr",
            move |fs| async move { fs.getxattr(ino.0, &name?).await },
            move |r| match r {
                Ok(value) => xattr_reply(reply, size, &value),
                Err(e) => reply.error(errno("getxattr", &e)),
            },
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(
            "listxattr",
            move |fs| async move { fs.listxattr(ino.0).await },
            move |r| match r {
                Ok(names) => {
                    let mut list = Vec::new();
                    for n in names {
                        list.extend_from_slice(n.as_bytes());
                        list.push(0);
                    }
                    xattr_reply(reply, size, &list)
                }
                Err(e) => reply.error(errno("listxattr", &e)),
            },
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, files) = self.fs.statfs();
        reply.statfs(blocks, free, free, files, u64::MAX / 2, 4096, 255, 4096);
    }
}

fn empty(reply: ReplyEmpty, op: &str, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(op, &e)),
    }
}

/// Answers an xattr read: the size when asked for it, ERANGE when the buffer is too small.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}
