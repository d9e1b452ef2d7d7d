"""The random workload one host's worker threads run, and the history they record.

Choices come only from the worker's own seeded random generator (never from results), so a seed
gives the same sequence of operations every time. Every operation is recorded with its start
and end time (monotonic, seconds since the run started), the host, the daemon generation, the
result (`ok` or the errno name) and what it wrote or read.
"""
import errno
import fcntl
import json
import os
import random
import stat
import threading
import time

from values import make_record, make_value, parse_records, parse_value

VALUES = ["v/f%d" % i for i in range(10)]
LOGS = ["a/log%d" % i for i in range(3)]
# Every few minutes the appends go to new log files (`a/log0.1`, ...), so a long run's logs (each
# append rewrites its whole file) stay small.
LOG_EPOCH = 240


def logs_at(t):
    """The log files appended to at run time `t`."""
    e = int(t // LOG_EPOCH)
    return LOGS if e == 0 else ["%s.%d" % (p, e) for p in LOGS]


def all_logs(t):
    """Every log file of a run that lasted until `t`."""
    return [p for e in range(int(t // LOG_EPOCH) + 1) for p in logs_at(e * LOG_EPOCH)]
TREE_DIRS = ["t/d%d" % i for i in range(4)]


class History:
    def __init__(self, path, t_start):
        self.ops = []
        self.lock = threading.Lock()
        self.t_start = t_start
        self.file = open(path, "w")
        self.next_id = 0

    def now(self):
        return time.monotonic() - self.t_start

    def begin(self, **fields):
        with self.lock:
            self.next_id += 1
            op = dict(id=self.next_id, t0=self.now(), **fields)
        return op

    def end(self, op, res, **fields):
        op["t1"] = self.now()
        op["res"] = res
        op.update(fields)
        with self.lock:
            self.ops.append(op)
            self.file.write(json.dumps(op) + "\n")
        return op

    def note(self, **fields):
        """A fault or phase line in the history file."""
        with self.lock:
            self.file.write(json.dumps(dict(t=self.now(), **fields)) + "\n")
            self.file.flush()

    def close(self):
        with self.lock:
            self.file.close()


def err_name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else repr(e)


def read_all(fd):
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: 1 << 20])
        view = view[n:]


class Worker(threading.Thread):
    def __init__(self, host, index, w, seed, hist, stop, big):
        super().__init__(daemon=True, name="%s-w%d" % (host.name, w))
        self.host, self.index, self.w, self.hist, self.stop_ev = host, index, w, hist, stop
        self.rng = random.Random("%s/%d/%d" % (seed, index, w))
        self.big = big
        self.n = 0
        self.current = None  # (op, t0) while an operation runs

    def writer_id(self):
        self.n += 1
        return "h%d.%d%06d" % (self.index, self.w, self.n)

    def size(self):
        r = self.rng.random()
        if r < 0.02 * self.big:
            return self.rng.randint(2 << 20, 5 << 20)
        if r < 0.15:
            return self.rng.randint(10 << 10, 300 << 10)
        return self.rng.randint(1, 3000)

    def run(self):
        kinds = [("write", 22), ("excl", 6), ("rm", 5), ("mv", 6), ("chmod", 3), ("touch", 3),
                 ("read", 25), ("append", 10), ("readlog", 6), ("mkdirp", 4), ("treewrite", 5),
                 ("mvdir", 3), ("treerm", 2), ("rmdir", 2), ("scan", 3)]
        names = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        while not self.stop_ev.is_set():
            kind = self.rng.choices(names, weights)[0]
            plan = self.plan(kind)
            pause = self.rng.uniform(0, 0.03)
            while not self.host.up.wait(0.2):
                if self.stop_ev.is_set():
                    return
            with self.host.lock:
                fd, gen = self.host.root_fd, self.host.gen
            if fd is None:
                continue
            try:
                getattr(self, "op_" + kind)(fd, gen, *plan)
            except Exception as e:  # a bug here must not stop the run silently
                self.hist.note(event="worker-error", host=self.index, kind=kind, error=repr(e))
            self.current = None
            time.sleep(pause)

    # -- plans: all random choices of one operation, made before it runs

    def plan(self, kind):
        r = self.rng
        if kind in ("write", "excl"):
            return (r.choice(VALUES), self.writer_id(), self.size(), r.random() < 0.4)
        if kind in ("rm", "read", "touch"):
            return (r.choice(VALUES),)
        if kind == "chmod":
            return (r.choice(VALUES), r.choice([0o600, 0o640, 0o644, 0o664]))
        if kind == "mv":
            a, b = r.sample(VALUES, 2)
            return (a, b)
        if kind == "append":
            return (r.choice(logs_at(self.hist.now())), self.writer_id(), r.randint(1, 400),
                    r.random() < 0.3)
        if kind == "readlog":
            return (r.choice(logs_at(self.hist.now())),)
        if kind == "mkdirp":
            return ("%s/s%d" % (r.choice(TREE_DIRS), r.randrange(3)),)
        if kind == "treewrite":
            d = r.choice(TREE_DIRS) + r.choice(["", "/s0", "/s1", "/s2"])
            return ("%s/f%d" % (d, r.randrange(3)), self.writer_id(), self.size())
        if kind == "mvdir":
            a, b = r.sample(TREE_DIRS, 2)
            return (a, b)
        if kind == "treerm":
            d = r.choice(TREE_DIRS) + r.choice(["", "/s0", "/s1"])
            return ("%s/f%d" % (d, r.randrange(3)),)
        if kind == "rmdir":
            return ("%s/s%d" % (r.choice(TREE_DIRS), r.randrange(3)),)
        return ()

    # -- operations

    def begin(self, gen, kind, path, **kw):
        op = self.hist.begin(host=self.index, w=self.w, gen=gen, kind=kind, path=path, **kw)
        self.current = (op, time.monotonic())
        return op

    def op_write(self, root, gen, path, writer, size, fsync, excl=False):
        with self.host.name_lock(path):
            self.write(root, gen, path, writer, size, fsync, excl)

    def write(self, root, gen, path, writer, size, fsync, excl):
        kind = "excl" if excl else ("write" if path.startswith("v/") else "treewrite")
        op = self.begin(gen, kind, path, val=writer, size=size, fsync=fsync)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if excl else os.O_TRUNC)
        stage = "open"
        try:
            fd = os.open(path, flags, 0o644, dir_fd=root)
            try:
                stage = "write"
                write_all(fd, make_value(writer, size))
                if fsync:
                    stage = "fsync"
                    os.fsync(fd)
            finally:
                stage = "close" if stage != "open" else stage
                os.close(fd)
            self.hist.end(op, "ok")
        except OSError as e:
            self.hist.end(op, err_name(e), stage=stage)

    def op_excl(self, root, gen, path, writer, size, fsync):
        self.op_write(root, gen, path, writer, size, fsync, excl=True)

    def simple(self, gen, kind, path, fn, **kw):
        op = self.begin(gen, kind, path, **kw)
        try:
            fn()
            self.hist.end(op, "ok")
        except OSError as e:
            self.hist.end(op, err_name(e))

    def op_rm(self, root, gen, path):
        self.simple(gen, "rm", path, lambda: os.unlink(path, dir_fd=root))

    def op_mv(self, root, gen, a, b):
        self.simple(gen, "mv", a, lambda: os.rename(a, b, src_dir_fd=root, dst_dir_fd=root),
                    path2=b)

    def op_chmod(self, root, gen, path, mode):
        self.simple(gen, "chmod", path, lambda: os.chmod(path, mode, dir_fd=root), mode=mode)

    def op_touch(self, root, gen, path):
        t = 1_600_000_000 + self.rng.randrange(10**8)
        self.simple(gen, "touch", path, lambda: os.utime(path, (t, t), dir_fd=root), mtime=t)

    def read(self, root, gen, path, kind):
        """Opens and reads `path`: (op, result, bytes or None when absent)."""
        op = self.begin(gen, kind, path)
        try:
            fd = os.open(path, os.O_RDONLY, dir_fd=root)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return op, "ok", None
            return op, err_name(e), None
        try:
            return op, "ok", read_all(fd)
        except OSError as e:
            return op, err_name(e), None
        finally:
            os.close(fd)

    def keep_garbage(self, op, data):
        path = os.path.join(os.path.dirname(self.hist.file.name), "garbage-%d.bin" % op["id"])
        with open(path, "wb") as f:
            f.write(data)
        return path

    def op_read(self, root, gen, path, kind="read"):
        op, res, data = self.read(root, gen, path, kind)
        if res != "ok":
            return self.hist.end(op, res)
        val, why = parse_value(data)
        if why:
            why += "; bytes kept in %s" % self.keep_garbage(op, data)
            return self.hist.end(op, res, val="GARBAGE", why=why)
        return self.hist.end(op, res, val=val)

    def op_readlog(self, root, gen, path, kind="readlog"):
        op, res, data = self.read(root, gen, path, kind)
        if res != "ok":
            return self.hist.end(op, res)
        recs, why = parse_records(data)
        extra = {"why": why + "; bytes kept in " + self.keep_garbage(op, data)} if why else {}
        return self.hist.end(op, res, absent=data is None, recs=recs, **extra)

    def op_append(self, root, gen, path, writer, size, fsync):
        op = self.begin(gen, "append", path, val=writer, fsync=fsync)
        stage = "lock-open"
        lfd = None
        try:
            lfd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644, dir_fd=root)
            stage = "flock"
            fcntl.flock(lfd, fcntl.LOCK_EX)
            op["locked"] = self.hist.now()
            stage = "open"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644, dir_fd=root)
            try:
                stage = "write"
                write_all(fd, make_record(writer, size))
                if fsync:
                    stage = "fsync"
                    os.fsync(fd)
            finally:
                stage = "close" if stage != "open" else stage
                os.close(fd)
            op["unlock"] = self.hist.now()
            stage = "unlock"
            fcntl.flock(lfd, fcntl.LOCK_UN)
            self.hist.end(op, "ok")
        except OSError as e:
            if "locked" in op and "unlock" not in op:
                op["unlock"] = self.hist.now()
            self.hist.end(op, err_name(e), stage=stage)
        finally:
            if lfd is not None:
                try:
                    os.close(lfd)
                except OSError:
                    pass

    def op_mkdirp(self, root, gen, path):
        def mkdirp():
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                try:
                    os.mkdir("/".join(parts[:i]), 0o755, dir_fd=root)
                except FileExistsError:
                    pass
        self.simple(gen, "mkdirp", path, mkdirp)

    def op_treewrite(self, root, gen, path, writer, size):
        self.op_write(root, gen, path, writer, size, False)

    def op_treerm(self, root, gen, path):
        self.simple(gen, "treerm", path, lambda: os.unlink(path, dir_fd=root))

    def op_mvdir(self, root, gen, a, b):
        self.simple(gen, "mvdir", a, lambda: os.rename(a, b, src_dir_fd=root, dst_dir_fd=root),
                    path2=b)

    def op_rmdir(self, root, gen, path):
        self.simple(gen, "rmdir", path, lambda: os.rmdir(path, dir_fd=root))

    def op_scan(self, root, gen):
        """Reads everything: the value files, the logs, and every file under t/."""
        for path in VALUES:
            self.op_read(root, gen, path, "scan-read")
        for path in logs_at(self.hist.now()):
            self.op_readlog(root, gen, path, "scan-readlog")
        for path in walk(root, "t"):
            self.op_read(root, gen, path, "tree-read")


def walk(root, top):
    """File paths under `top` (relative to the directory fd `root`); errors skip a directory."""
    out, stack = [], [top]
    while stack:
        d = stack.pop()
        try:
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY, dir_fd=root)
        except OSError:
            continue
        try:
            names = os.listdir(dfd)
        except OSError:
            names = []
        finally:
            os.close(dfd)
        for n in sorted(names):
            p = d + "/" + n
            try:
                st = os.stat(p, dir_fd=root, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            else:
                out.append(p)
    return out


def listing(root, top=""):
    """{path: (kind, size, mode)} of everything under `top`, for the convergence check."""
    out, stack = {}, [top or "."]
    while stack:
        d = stack.pop()
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY, dir_fd=root)
        try:
            names = os.listdir(dfd)
        finally:
            os.close(dfd)
        for n in names:
            p = n if d == "." else d + "/" + n
            if p == ".remotedict":
                continue
            st = os.stat(p, dir_fd=root, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                out[p] = ("dir", 0, stat.S_IMODE(st.st_mode))
                stack.append(p)
            else:
                out[p] = ("file", st.st_size, stat.S_IMODE(st.st_mode))
    return out
