//! Locks across hosts: two daemons mounting the same folder (Azurite, and the local store whose
//! leases hold across processes), driven by `flock`, `setfattr` and `getfattr`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mount::{Backend, Mount};

const LEASE: &str = "15";

fn mounts(backend: &Backend) -> (Mount, Mount) {
    let args = ["--lease-duration", LEASE];
    (
        Mount::start_with(backend, &args),
        Mount::start_with(backend, &args),
    )
}

fn run(m: &Mount, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&m.dir)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Starts `flock FILE -c CMD` in the background on mount `m`, and waits until it holds the lock
/// (seen from mount `other`, whose non-blocking attempt then fails).
#[allow(clippy::zombie_processes)] // the caller waits for the returned child
fn hold(m: &Mount, other: &Mount, file: &str, cmd: &str) -> std::process::Child {
    let mut child = Command::new("flock")
        .arg(file)
        .args(["-c", cmd])
        .current_dir(&m.dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = run(other, &format!("flock -n {file} true"));
        if !probe.status.success() {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the lock was never taken");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn flock_guarded_counter_reaches_400(backend: Backend) {
    let (a, b) = mounts(&backend);
    // The counter does not exist yet: flock creates it, and an empty read counts as 0.
    let cycle = "for i in $(seq 200); do flock counter -c 'n=$(cat counter); echo $((n+1)) > counter' || exit 1; done";
    let started = Instant::now();
    let ta = Command::new("sh")
        .arg("-c")
        .arg(cycle)
        .current_dir(&a.dir)
        .spawn()
        .unwrap();
    let tb = Command::new("sh")
        .arg("-c")
        .arg(cycle)
        .current_dir(&b.dir)
        .spawn()
        .unwrap();
    for mut t in [ta, tb] {
        assert!(t.wait().unwrap().success());
    }
    eprintln!("2 x 200 flock cycles: {:?}", started.elapsed());
    let out = run(&a, "flock counter cat counter");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "400");
    let out = run(&b, "flock counter cat counter");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "400");
    a.unmount();
    b.unmount();
}

async fn nonblocking_fails_fast_and_waiting_can_be_interrupted(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo 1 > f");
    let mut holder = hold(&a, &b, "f", "sleep 6");
    let started = Instant::now();
    let out = run(&b, "flock -n f true");
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "LOCK_NB took {:?}",
        started.elapsed()
    );
    // The holder's host can still write; the other host cannot (EBUSY).
    let out = run(&b, "cp /etc/hostname f");
    assert!(
        stderr(&out).contains("busy"),
        "write from the other host: {out:?}"
    );
    // A blocking flock waits; SIGINT (Ctrl-C) makes it return. It gets SIGINT's default action,
    // as under a terminal (a harness started in the background hands its children SIGINT ignored).
    let mut waiter = Command::new("flock");
    waiter.args(["f", "true"]).current_dir(&b.dir);
    // SAFETY: between fork and exec only signal(2), which is async-signal-safe, is called.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut waiter, || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut waiter = waiter.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(waiter.try_wait().unwrap().is_none(), "flock did not wait");
    unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) };
    let t = Instant::now();
    while waiter.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "Ctrl-C did not end the waiting flock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once the holder is done, the other host gets the lock.
    assert!(holder.wait().unwrap().success());
    let out = run(
        &b,
        "flock -w 10 f cp /etc/hostname f && cmp /etc/hostname f",
    );
    assert!(out.status.success(), "{out:?}");
    a.unmount();
    b.unmount();
}

async fn a_killed_holder_loses_the_lock_within_the_lease(backend: Backend) {
    let (mut a, b) = mounts(&backend);
    run(&a, "echo 1 > f");
    let mut holder = hold(&a, &b, "f", "sleep 120");
    a.kill9();
    let started = Instant::now();
    let out = run(&b, "flock -w 40 f true");
    let waited = started.elapsed();
    assert!(out.status.success(), "the lock never came free: {out:?}");
    assert!(
        waited <= Duration::from_secs(18),
        "took {waited:?}, lease is {LEASE} s"
    );
    eprintln!("lock of a killed holder free after {waited:?}");
    let _ = holder.kill();
    let _ = holder.wait();
    b.unmount();
}

async fn a_lock_held_past_three_lease_durations_stays_held(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo 1 > f");
    let mut holder = hold(&a, &b, "f", "sleep 50");
    std::thread::sleep(Duration::from_secs(46));
    let out = run(&b, "flock -n f true");
    assert!(
        !out.status.success(),
        "the lock was lost before 3 x {LEASE} s"
    );
    assert!(holder.wait().unwrap().success());
    assert!(run(&b, "flock -w 10 f true").status.success());
    a.unmount();
    b.unmount();
}

async fn xattr_lock_and_readonly_attributes(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo hello > f");
    let out = run(&a, "setfattr -n user.remotedict.lock -v 30 f");
    assert!(out.status.success(), "{out:?}");
    assert!(
        !run(&b, "flock -n f true").status.success(),
        "xattr lock must exclude flock elsewhere"
    );
    let started = Instant::now();
    let out = run(&b, "setfattr -n user.remotedict.lock -v 30,nowait f");
    assert!(
        !out.status.success() && started.elapsed() < Duration::from_secs(2),
        "{out:?}"
    );
    // Read by name (never listed: copies of the file must not carry them).
    let mut dump = String::new();
    for name in [
        "user.remotedict.etag",
        "user.remotedict.lease",
        "user.remotedict.compressed_size",
        "user.remotedict.lock",
    ] {
        let out = run(&a, &format!("getfattr -n {name} f"));
        assert!(out.status.success(), "getfattr -n {name}: {out:?}");
        dump.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(dump.contains("leased,fixed,held-here"), "{dump}");
    let listed = String::from_utf8_lossy(&run(&a, "getfattr -d f").stdout).to_string();
    assert!(!listed.contains("user.remotedict."), "{listed}");
    let left: u64 = String::from_utf8_lossy(
        &run(&a, "getfattr --only-values -n user.remotedict.lock f").stdout,
    )
    .trim()
    .parse()
    .unwrap();
    assert!((25..=30).contains(&left), "{left}");
    assert!(run(&a, "setfattr -x user.remotedict.lock f")
        .status
        .success());
    assert!(
        run(&b, "flock -n f true").status.success(),
        "removing the attribute releases the lease"
    );
    for bad in ["10", "61", "abc", "30,later"] {
        let out = run(
            &a,
            &format!("setfattr -n user.remotedict.lock -v '{bad}' f"),
        );
        assert!(stderr(&out).contains("Invalid argument"), "{bad}: {out:?}");
    }
    let out = run(&a, "setfattr -n user.remotedict.etag -v x f");
    assert!(stderr(&out).contains("not permitted"), "{out:?}");
    // Other namespaces are not stored (`user.*` names are the file's own: tests/posix.rs).
    let out = run(&a, "setfattr -n trusted.other -v x f");
    assert!(!out.status.success(), "{out:?}");
    let size = String::from_utf8_lossy(
        &run(
            &b,
            "getfattr --only-values -n user.remotedict.compressed_size f",
        )
        .stdout,
    )
    .to_string();
    assert!(
        size.trim().parse::<u64>().unwrap() > 6,
        "an LZ4 frame is larger than 6 bytes: {size}"
    );
    a.unmount();
    b.unmount();
}

/// Two mounts with a TTL long enough that each kernel caches a file's size across the other's
/// writes, and `counter` at 0, listed on both.
fn counter_mounts(backend: &Backend) -> (Mount, Mount) {
    let args = ["--lease-duration", LEASE, "--index-ttl", "3"];
    let (a, b) = (
        Mount::start_with(backend, &args),
        Mount::start_with(backend, &args),
    );
    run(&a, "echo 0 > counter && sync counter");
    // Listed for B once its index copy is revalidated (within the TTL).
    run(
        &b,
        "timeout 10 sh -c 'until test -e counter; do sleep 0.1; done'",
    );
    (a, b)
}

/// Runs Python `script_a` on mount `a` and `script_b` on `b` at once, each adding 100 to
/// `counter`: it must end at 200.
fn count_to_200(a: Mount, b: Mount, script_a: &str, script_b: &str) {
    let spawn = |m: &Mount, script: &str| {
        Command::new("python3")
            .args(["-c", script])
            .current_dir(&m.dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a, script_a), spawn(&b, script_b));
    for p in [pa, pb] {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = run(&b, "flock counter cat counter");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    a.unmount();
    b.unmount();
}

/// The usual Python idiom on two hosts at once, 2 x 100 increments from 0:
/// `with open(p, 'r+') as f: fcntl.flock(f, LOCK_EX); n = int(f.read()); ...`. The open never
/// fails because the other host holds the lock (it used to fail EBUSY, losing increments), the
/// handle opened before the lock reads what the last holder wrote, and the kernel does not cut
/// that read at the size it cached before the lock (99 read as "10" once the counter is 100).
async fn python_open_then_flock_keeps_every_increment(backend: Backend) {
    let (a, b) = counter_mounts(&backend);
    let script = r#"
import fcntl, sys
for _ in range(100):
    with open("counter", "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        n = int(f.read() or "0")
        f.seek(0)
        f.truncate()
        f.write(str(n + 1))
"#;
    count_to_200(a, b, script, script);
}

/// Two processes on one host hold `LOCK_SH` and both ask for `LOCK_EX` (Python
/// `fcntl.flock`): both finish, one after the other, as on ext4 (they used to hang forever).
async fn two_shared_holders_upgrading_both_finish(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo x > f");
    let script = r#"
import fcntl, time
with open("f") as f:
    fcntl.flock(f, fcntl.LOCK_SH)
    time.sleep(1)
    fcntl.flock(f, fcntl.LOCK_EX)
    time.sleep(0.2)
"#;
    let spawn = || {
        Command::new("timeout")
            .args(["30", "python3", "-c", script])
            .current_dir(&a.dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(), spawn());
    for p in [p1, p2] {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "an upgrade hung or failed: {out:?}");
    }
    a.unmount();
    b.unmount();
}

/// `exec 9>f; flock 9; echo ... >&9` (truncating open, then the lock) while another host holds
/// the lock: the open succeeds and the lock waits for the holder, then the write lands (after
/// the open stopped failing with EBUSY, the lock itself did, at once, trying to save the
/// truncation without the lease).
async fn truncating_open_then_flock_waits_for_the_holder(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo held > f && sync f");
    run(&b, "timeout 10 sh -c 'until test -e f; do sleep 0.1; done'");
    let holder = hold(&a, &b, "f", "sleep 2");
    let started = Instant::now();
    let out = run(&b, "exec 9>f; flock 9; echo mine >&9");
    assert!(out.status.success(), "{out:?}");
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the lock did not wait for the holder"
    );
    assert!(holder.wait_with_output().unwrap().status.success());
    let out = run(&b, "cat f");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mine\n");
    a.unmount();
    b.unmount();
}

/// SIGTERM to the daemon of a host where a process holds a lock (what `systemctl stop` sends):
/// the lock stays held while its holder runs, and is free for other hosts once it is done (the
/// daemon used to give back every lease at the signal, inside the holder's critical section).
async fn a_stopping_mount_keeps_its_holders_locks(backend: Backend) {
    let (mut a, b) = mounts(&backend);
    run(&a, "echo x > f && sync f");
    run(&b, "timeout 10 sh -c 'until test -e f; do sleep 0.1; done'");
    let holder = hold(&a, &b, "f", "sleep 4");
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(1500));
    let out = run(&b, "flock -n f true");
    assert!(
        !out.status.success(),
        "another host got the lock while its holder still ran"
    );
    let _ = holder.wait_with_output();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&b, "flock -n f true").status.success() {
        assert!(Instant::now() < deadline, "the lock was never given back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = a.child.wait();
    b.unmount();
}

/// POSIX record locks (Python `fcntl.lockf`, what `fcntl(F_SETLKW)`, `lockf(3)` and Java's
/// `FileChannel.lock()` use) on two hosts at once, 2 x 100 increments, one host locking the
/// whole file and the other only its first byte: all 200 land (the kernel used to keep these
/// locks on each host alone, silently, and increments were lost).
async fn lockf_guarded_counter_keeps_every_increment(backend: Backend) {
    let (a, b) = counter_mounts(&backend);
    let script = |len: u32| {
        format!(
            r#"
import fcntl, os
for _ in range(100):
    with open("counter", "r+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX, {len})
        n = int(f.read() or "0")
        f.seek(0)
        f.truncate()
        f.write(str(n + 1))
        f.flush()
        fcntl.lockf(f, fcntl.LOCK_UN, {len})
"#
        )
    };
    count_to_200(a, b, &script(0), &script(1));
}

/// Record locks keep their POSIX semantics on a host and hold across hosts: two processes on
/// host A lock disjoint byte ranges of one file at once, a third's overlapping `F_SETLK` fails,
/// host B cannot lock any byte of it (across hosts a range locks the whole file), `F_GETLK` on
/// B reports the lock, and the lock ends when its process closes any descriptor of the file.
async fn record_locks_by_range_here_and_whole_file_elsewhere(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo 0123456789abcdefghij > f && sync f");
    run(&b, "timeout 10 sh -c 'until test -e f; do sleep 0.1; done'");
    // Holds bytes START..START+LEN until told to go on, then closes a second descriptor of
    // the file (which drops its locks, as POSIX says) and waits to be told to end.
    let holder = r#"
import fcntl, sys
f = open("f", "r+")
other = open("f")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, int(sys.argv[2]), int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
other.close()
print("closed", flush=True)
sys.stdin.readline()
"#;
    let spawn = |start: &str, len: &str| {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-c", holder, start, len])
            .current_dir(&a.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        (child, out, line)
    };
    let (mut p1, mut out1, line) = spawn("0", "5");
    assert_eq!(line.trim(), "ready", "the first range lock failed");
    let (mut p2, _out2, line) = spawn("10", "5");
    assert_eq!(
        line.trim(),
        "ready",
        "a disjoint range lock on the same host failed"
    );
    let (p3, _, line) = spawn("3", "4");
    assert_ne!(
        line.trim(),
        "ready",
        "an overlapping range lock was granted"
    );
    let _ = p3.wait_with_output();
    let try_b = r#"
import fcntl, struct, sys
with open("f", "r+") as f:
    lk = fcntl.fcntl(f, fcntl.F_GETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 18, 1, 0))
    print("getlk", struct.unpack("hhqqi", lk)[0] == fcntl.F_UNLCK)
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 18)
        print("locked")
    except OSError as e:
        print("busy", e.errno)
"#;
    let out = Command::new("python3")
        .args(["-c", try_b])
        .current_dir(&b.dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("getlk False"),
        "F_GETLK on B saw no lock: {said}"
    );
    assert!(
        said.contains("busy"),
        "B locked a byte while A held others: {said}"
    );
    use std::io::{BufRead, Write};
    // Closing another descriptor of the file drops a process's record locks; the second
    // holder still holds its range, so B stays out.
    p1.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let mut line = String::new();
    out1.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "closed");
    let (mut p4, _, line) = spawn("3", "4");
    assert_eq!(
        line.trim(),
        "ready",
        "the range stayed locked after its process closed the file"
    );
    let _ = p4.kill();
    let _ = p4.wait();
    let out = Command::new("python3")
        .args(["-c", try_b])
        .current_dir(&b.dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("busy"));
    for p in [&mut p1, &mut p2] {
        let _ = p.kill();
        let _ = p.wait();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("python3")
            .args(["-c", try_b])
            .current_dir(&b.dir)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("locked") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed holders' locks were never freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.unmount();
    b.unmount();
}

/// A program that unlocks before it closes (`lockf(LOCK_UN)`, `flock -u`, then `close`): what it
/// wrote under the lock is what the next holder, on another host, reads, and its close succeeds
/// (the write used to be saved only at close, after the lease had gone: the next holder read
/// the old value and the close failed EBUSY).
async fn a_write_before_an_unlock_reaches_the_next_holder(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo old > f && sync f");
    run(&b, "timeout 10 sh -c 'until test -e f; do sleep 0.1; done'");
    let script = r#"
import fcntl, sys
f = open("f", "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
f.truncate()
f.write("new\n")
f.flush()
fcntl.lockf(f, fcntl.LOCK_UN)
print("ready", flush=True)
sys.stdin.readline()
f.close()
"#;
    let (mut writer, _out) = python_ready(&a, script);
    let out = run(&b, "flock f cat f");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "new\n");
    use std::io::Write;
    writer.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "close after the unlock failed: {out:?}"
    );
    a.unmount();
    b.unmount();
}

/// Removing and renaming locked files, by the holder and by another host. The holder's `rm`
/// frees the name (its lock stays with its descriptor): the name can be written and locked again
/// at once (later writes to it used to fail EIO, with the old lease id). The holder's
/// `mv tmp locked` replaces the file it holds (it used to fail EBUSY on its own lease). The
/// holder's `mv f g` takes its lock along: another host cannot lock `g` until it lets go. And
/// renaming a file another host holds fails EBUSY and leaves it in place (it used to copy it
/// and then fail to delete it, leaving the value under both names).
async fn removing_and_renaming_locked_files(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo one > f && echo x > locked && sync");
    let out = run(&a, "flock f -c 'rm f' && echo two > f && cat f");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\n");
    run(
        &b,
        "timeout 10 sh -c 'until test -e f && test -e locked; do sleep 0.1; done'",
    );
    let out = run(&b, "flock -n f cat f");
    assert!(
        out.status.success(),
        "the recreated name stayed locked: {out:?}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\n");

    let out = run(
        &a,
        "flock locked -c 'echo v2 > tmp && mv tmp locked && cat locked'",
    );
    assert!(
        out.status.success(),
        "the holder could not replace its file: {out:?}"
    );
    let out = run(&b, "flock -n locked cat locked");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\n", "{out:?}");

    let holder = hold(&a, &b, "locked", "sleep 3");
    let out = run(&b, "mv locked moved");
    assert!(!out.status.success(), "B renamed a file A holds");
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    let out = run(&b, "rm locked");
    assert!(!out.status.success(), "B removed a file A holds");
    let _ = holder.wait_with_output();
    let out = run(&a, "cat locked; test -e moved && echo both");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\n");

    let mut mover = Command::new("flock")
        .args([
            "locked",
            "-c",
            "mv locked moved && touch moved-done && sleep 3",
        ])
        .current_dir(&a.dir)
        .spawn()
        .unwrap();
    run(
        &a,
        "timeout 10 sh -c 'until test -e moved-done; do sleep 0.1; done'",
    );
    run(
        &b,
        "timeout 10 sh -c 'until test -e moved; do sleep 0.1; done'",
    );
    let out = run(&b, "flock -n moved true");
    assert!(
        !out.status.success(),
        "the lock did not follow the file to its new name"
    );
    assert!(mover.wait().unwrap().success());
    let out = run(&b, "flock -w 10 moved cat moved");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\n", "{out:?}");
    a.unmount();
    b.unmount();
}

/// `flock f python3 -c '...lockf(f)...'`: the child takes a record lock on the file its parent
/// holds a flock on. On Linux the two kinds are independent, so it finishes here too (treating
/// them alike, it waited forever for its own parent).
async fn a_flock_holders_child_can_take_a_record_lock(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo x > f && sync f");
    let out = run(
        &a,
        "timeout 20 flock f python3 -c 'import fcntl; fcntl.lockf(open(\"f\", \"r+\"), fcntl.LOCK_EX); print(\"ok\")'",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    a.unmount();
    b.unmount();
}

/// `while ...; do flock f true; done` on host A for 10 s while `flock f` waits on host B: B gets
/// its turn while A's loop runs (it used to wait until the loop ended, 12 s in the report).
async fn a_waiting_host_is_served_while_another_locks_in_a_loop(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo x > f && sync f");
    run(&b, "timeout 10 sh -c 'until test -e f; do sleep 0.1; done'");
    let looping = Command::new("sh")
        .args([
            "-c",
            "end=$(($(date +%s) + 10)); n=0; \
             while [ $(date +%s) -lt $end ]; do flock f true; n=$((n+1)); done; echo $n",
        ])
        .current_dir(&a.dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let out = run(&b, "timeout 30 flock f true");
    let waited = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(
        waited < Duration::from_secs(6),
        "B waited {waited:?}, until A's loop was nearly over"
    );
    let rounds = looping.wait_with_output().unwrap();
    eprintln!(
        "B waited {waited:?}; A locked {} times",
        String::from_utf8_lossy(&rounds.stdout).trim()
    );
    a.unmount();
    b.unmount();
}

/// `flock -s` holds on two mounts at once, and Python's `fcntl.flock(LOCK_SH)` joins them;
/// `LOCK_EX` waits for every reader, keeps new readers out while it waits (`flock -n -s` fails
/// then), and gets the file once the last reader is done. `getfattr` names the readers' hosts.
async fn shared_locks_hold_on_both_mounts(backend: Backend) {
    let (a, b) = mounts(&backend);
    run(&a, "echo 1 > f");
    let mut reader = Command::new("flock")
        .args(["-s", "f", "-c", "sleep 6"])
        .current_dir(&a.dir)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while run(&b, "flock -n -x f true").status.success() {
        assert!(Instant::now() < deadline, "the shared lock was never taken");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(&b, "flock -n -s f cat f");
    assert!(out.status.success(), "a second host's LOCK_SH: {out:?}");
    let py =
        "import fcntl; f = open('f'); fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB); print('ok')";
    let out = Command::new("python3")
        .args(["-c", py])
        .current_dir(&b.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "python LOCK_SH: {out:?}");
    let holders = run(&b, "getfattr --only-values -n user.remotedict.holders f");
    let holders = String::from_utf8_lossy(&holders.stdout).to_string();
    assert!(holders.contains("\"mode\":\"shared\""), "{holders}");
    assert!(holders.contains("\"command\":\"flock\""), "{holders}");
    // A writer on b waits for a's reader ...
    let started = Instant::now();
    let mut writer = Command::new("flock")
        .args(["-x", "f", "-c", "echo 2 > f"])
        .current_dir(&b.dir)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the writer did not wait for the reader"
    );
    // Both hosts see who holds it and who waits.
    let holders = run(&a, "getfattr --only-values -n user.remotedict.holders f");
    let holders = String::from_utf8_lossy(&holders.stdout).to_string();
    assert!(
        holders.contains("\"mode\":\"waiting (exclusive)\""),
        "{holders}"
    );
    assert!(holders.contains("\"mode\":\"shared\""), "{holders}");
    // ... and no new reader comes in meanwhile, on either host.
    for m in [&a, &b] {
        assert!(
            !run(m, "flock -n -s f true").status.success(),
            "a reader joined a waiting writer"
        );
    }
    assert!(reader.wait().unwrap().success());
    assert!(writer.wait().unwrap().success());
    eprintln!("the writer waited {:?} for the reader", started.elapsed());
    let out = run(&a, "flock -s f cat f");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    a.unmount();
    b.unmount();
}

on_both_mounts!(
    flock_guarded_counter_reaches_400,
    nonblocking_fails_fast_and_waiting_can_be_interrupted,
    a_killed_holder_loses_the_lock_within_the_lease,
    a_lock_held_past_three_lease_durations_stays_held,
    xattr_lock_and_readonly_attributes,
    python_open_then_flock_keeps_every_increment,
    two_shared_holders_upgrading_both_finish,
    truncating_open_then_flock_waits_for_the_holder,
    a_stopping_mount_keeps_its_holders_locks,
    lockf_guarded_counter_keeps_every_increment,
    record_locks_by_range_here_and_whole_file_elsewhere,
    a_write_before_an_unlock_reaches_the_next_holder,
    removing_and_renaming_locked_files,
    a_flock_holders_child_can_take_a_record_lock,
    a_waiting_host_is_served_while_another_locks_in_a_loop,
    shared_locks_hold_on_both_mounts
);

/// Starts `python3 -c SCRIPT` on mount `m` with piped stdin and stdout, and waits for the line
/// `ready` it prints once the file is open.
fn python_ready(
    m: &Mount,
    script: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .current_dir(&m.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (child, out)
}

/// Host A's path to Azurite is black-holed (a proxy holds every byte) while host B's works:
/// `flock -n` on A answers EIO within seconds (it used to sit in the kernel for minutes, where
/// not even `timeout` could end it), a blocking `flock` on A ends when its process gets SIGTERM,
/// B takes the lock meanwhile, and once A's path heals, the lease A's given-up requests got
/// after all goes back (B can lock again) and A locks as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_the_store_answers_lock_requests() {
    use std::io::{BufRead, Write};
    let Some(direct) = Backend::azure() else {
        return;
    };
    direct.store().await.create_container().await.unwrap();
    let Backend::Azure { conn, container } = &direct else {
        unreachable!()
    };
    let proxy = common::proxy::Proxy::start(common::proxy::upstream_port(conn));
    let via_proxy = Backend::Azure {
        conn: proxy.connection_string(conn),
        container: container.clone(),
    };
    let args = ["--lease-duration", LEASE, "--index-ttl", "60"];
    let a = Mount::start_with(&via_proxy, &args);
    run(&a, "echo 1 > f && sync f");
    let b = Mount::start_with(&direct, &args);
    assert!(run(&b, "cat f").status.success());
    let nonblocking = r#"
import errno, fcntl, sys, time
f = open("f", "r+")
print("ready", flush=True)
sys.stdin.readline()
t = time.monotonic()
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], time.monotonic() - t, flush=True)
"#;
    let blocking = r#"
import fcntl, sys
f = open("f", "r+")
print("ready", flush=True)
sys.stdin.readline()
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
"#;
    let (mut nb, mut nb_out) = python_ready(&a, nonblocking);
    let (mut bl, _bl_out) = python_ready(&a, blocking);
    proxy.cut();
    std::thread::sleep(Duration::from_millis(300));

    writeln!(nb.stdin.as_mut().unwrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = nb_out.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("flock -n on the cut-off host did not answer within 30 s");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("EIO"), "{line}");
    let took: f64 = words.next().unwrap().parse().unwrap();
    assert!(took < 8.0, "LOCK_NB answered after {took:.1} s");
    eprintln!("LOCK_NB on the cut-off host answered EIO after {took:.1} s");
    let _ = nb.wait();

    writeln!(bl.stdin.as_mut().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        bl.try_wait().unwrap().is_none(),
        "the blocking flock cannot be granted"
    );
    let signalled = Instant::now();
    unsafe { libc::kill(bl.id() as i32, libc::SIGTERM) };
    while bl.try_wait().unwrap().is_none() {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "SIGTERM did not end a flock waiting on a cut-off store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "a blocking flock ended {:?} after SIGTERM",
        signalled.elapsed()
    );

    assert!(
        run(&b, "flock -w 10 f true").status.success(),
        "the connected host could not lock"
    );
    proxy.heal();
    // A's held-back lease requests land now; whatever they got goes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&b, "flock -n f true").status.success() {
        assert!(
            Instant::now() < deadline,
            "a lease of the cut-off host was kept"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run(&a, "flock -w 30 f sh -c 'echo 2 > f'");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&run(&b, "flock -w 30 f cat f").stdout).trim(),
        "2"
    );
    a.unmount();
    b.unmount();
}
