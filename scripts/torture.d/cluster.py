"""The processes a torture run starts: remotedict daemons (one per host), Azurite with a
persistent location, and a TCP fault proxy between the daemons and Azurite. All on 127.0.0.1;
everything started here is stopped by `stop()`, also after errors."""
import asyncio
import os
import random
import signal
import socket
import subprocess
import threading
import time

AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")  # the public Azurite development key


def conn_string(port):
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=%s;"
            "BlobEndpoint=http://127.0.0.1:%d/devstoreaccount1;" % (AZURITE_KEY, port))


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(l.split(" ")[4] == path for l in f)


def lazy_unmount(path):
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], stderr=subprocess.DEVNULL, timeout=30)


class Store:
    """Where the hosts keep their data: `--local DIR` or an Azurite container."""

    def __init__(self, kind, root, container, folder, azurite=None, proxy=None):
        self.kind, self.root, self.container, self.folder = kind, root, container, folder
        self.azurite, self.proxy = azurite, proxy

    def args_env(self, direct=False):
        args = ["--container", self.container, "--folder", self.folder]
        env = dict(os.environ)
        env.pop("AZURE_STORAGE_CONNECTION_STRING", None)
        if self.kind == "local":
            args += ["--local", os.path.join(self.root, "store")]
        else:
            port = self.azurite.port if direct or not self.proxy else self.proxy.port
            env["AZURE_STORAGE_CONNECTION_STRING"] = conn_string(port)
        return args, env


class Host:
    """One remotedict daemon = one host: its own mount point and cache directory."""

    def __init__(self, name, binary, store, root, ttl, extra):
        self.name, self.binary, self.store, self.ttl, self.extra = name, binary, store, ttl, extra
        self.mnt = os.path.join(root, name, "mnt")
        self.cache = os.path.join(root, name, "cache")
        self.log = os.path.join(root, name, "daemon.log")
        os.makedirs(self.mnt, exist_ok=True)
        os.makedirs(self.cache, exist_ok=True)
        self.proc = None
        self.gen = 0
        self.root_fd = None
        self.up = threading.Event()
        self.lock = threading.Lock()
        # one writer per name at a time on a host: two processes of one host writing one file
        # at once may interleave their bytes, as on a local disk
        self.name_locks = {}

    def start(self, timeout=40):
        args, env = self.store.args_env()
        if self.store.kind == "azurite":
            args.append("--create-container")
        env.setdefault("RUST_LOG", "remotedict=info")
        cmd = [self.binary, "mount", self.mnt, "--foreground", "--cache-dir", self.cache,
               "--index-ttl", str(self.ttl)] + args + self.extra
        with open(self.log, "ab") as log:
            log.write(b"\n=== torture: mount (generation %d) at %.3f ===\n" % (self.gen + 1, time.time()))
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError("%s: remotedict mount exited with %s (see %s)"
                                   % (self.name, self.proc.returncode, self.log))
            if time.time() > deadline:
                raise RuntimeError("%s: mount did not appear within %d s" % (self.name, timeout))
            time.sleep(0.05)
        with self.lock:
            self.gen += 1
            self.root_fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        self.up.set()

    def _down(self):
        self.up.clear()
        with self.lock:
            fd, self.root_fd = self.root_fd, None
        return fd

    def kill9(self):
        fd = self._down()
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self._reap(10)
        lazy_unmount(self.mnt)
        if fd is not None:
            os.close(fd)

    def term(self, timeout=20):
        """SIGTERM: the daemon saves unsaved files and unmounts. Returns an error text or None."""
        fd = self._down()
        if fd is not None:
            os.close(fd)  # only operations in flight keep the mount busy
            fd = None
        self._signal(signal.SIGTERM)
        err = None
        if not self._reap(timeout):
            err = "daemon did not exit within %d s of SIGTERM" % timeout
            self._signal(signal.SIGKILL)
            self._reap(10)
        elif self.proc.returncode != 0:
            err = "daemon exited with %s after SIGTERM" % self.proc.returncode
        lazy_unmount(self.mnt)
        if fd is not None:
            os.close(fd)
        return err

    def unmount(self, timeout=60):
        """A clean unmount (fusermount3 -u); returns an error text or None."""
        fd = self._down()
        if fd is not None:
            os.close(fd)
        err = None
        try:
            r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, timeout=30)
            if r.returncode != 0:
                err = "fusermount3 -u failed: %s" % r.stderr.decode().strip()
        except subprocess.TimeoutExpired:
            err = "fusermount3 -u hung"
        if not self._reap(timeout):
            err = err or "daemon did not exit within %d s of unmount" % timeout
            self._signal(signal.SIGKILL)
            self._reap(10)
        elif self.proc and self.proc.returncode != 0:
            err = err or "daemon exited with %s after unmount" % self.proc.returncode
        lazy_unmount(self.mnt)
        return err

    def stop_sig(self):
        self._signal(signal.SIGSTOP)

    def cont_sig(self):
        self._signal(signal.SIGCONT)

    def _signal(self, sig):
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self, timeout):
        if not self.proc:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def name_lock(self, path):
        with self.lock:
            return self.name_locks.setdefault(path, threading.Lock())

    def force_stop(self):
        self.up.clear()
        self._signal(signal.SIGCONT)
        if self.proc and self.proc.poll() is None:
            try:
                subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if not self._reap(15):
                self._signal(signal.SIGKILL)
                self._reap(10)
        lazy_unmount(self.mnt)


class Azurite:
    """Azurite keeping its data in a directory, so that it survives a restart (SIGTERM saves)."""

    def __init__(self, repo, root):
        self.repo, self.location = repo, os.path.join(root, "azurite")
        self.pidfile = os.path.join(root, "azurite.pid")
        self.port = None

    def start(self):
        env = dict(os.environ, AZURITE_LOCATION=self.location)
        if self.port:
            env["AZURITE_PORT"] = str(self.port)
        out = subprocess.run(["bash", os.path.join(self.repo, "scripts/azurite"), self.pidfile],
                             env=env, capture_output=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("azurite did not start: %s" % out.stderr.decode())
        self.port = int(out.stdout.split()[-1])

    def pid(self):
        try:
            return int(open(self.pidfile).read())
        except (OSError, ValueError):
            return None

    def signal(self, sig):
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=20):
        pid = self.pid()
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # the same port must be free again for the restart
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.1)
            except OSError:
                break
        os.unlink(self.pidfile)


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of Azurite that injects faults while `mode` is set:
    `delay` (answers held back 0.1–1.5 s), `drop` (a connection closed in the middle of an
    answer), `lose` (the request is forwarded, then the connection is closed before the answer
    is passed back: the request took effect, its answer is lost), `blackhole` (every byte, both
    ways, held until the mode ends: a host cut off from the store, its connections left open)."""

    def __init__(self, upstream_port, seed):
        self.upstream = upstream_port
        self.mode = None
        self.rng = random.Random(seed)
        self.injected = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def _count(self, what):
        self.injected[what] = self.injected.get(what, 0) + 1

    async def _client(self, creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cwriter.close()
            return

        async def up():
            try:
                while True:
                    data = await creader.read(65536)
                    if not data:
                        break
                    while self.mode == "blackhole":
                        await asyncio.sleep(0.05)
                    uwriter.write(data)
                    await uwriter.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                uwriter.close()

        async def down():
            try:
                while True:
                    data = await ureader.read(65536)
                    if not data:
                        break
                    while self.mode == "blackhole":
                        await asyncio.sleep(0.05)
                    mode = self.mode
                    if mode == "delay" and self.rng.random() < 0.5:
                        self._count("delay")
                        await asyncio.sleep(self.rng.uniform(0.1, 1.5))
                    elif mode == "lose" and self.rng.random() < 0.2:
                        self._count("lost answer")
                        break
                    elif mode == "drop" and self.rng.random() < 0.2:
                        self._count("dropped mid-answer")
                        cwriter.write(data[: len(data) // 2])
                        break
                    cwriter.write(data)
                    await cwriter.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                cwriter.close()
                uwriter.close()

        await asyncio.gather(up(), down())

    def stop(self):
        def shut():
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(shut)
        self.thread.join(5)
