//! Behaving like a real filesystem for legacy programs: `cp -a`, `tar x` / `tar d`, editor-style
//! saves seen from a second mount, and `O_EXCL` across hosts — on the local store and Azurite.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::{Backend, Mount};

fn sh(dir: &Path, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(dir: &Path, script: &str) -> String {
    let out = sh(dir, script);
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A tree with modes 600/644/755, a symlink, a FIFO, an empty directory and old mtimes.
fn make_tree(root: &Path) {
    ok(
        root,
        "mkdir -p tree/sub tree/empty && echo private > tree/secret && chmod 600 tree/secret \
         && echo public > tree/sub/readme && chmod 644 tree/sub/readme \
         && printf '#!/bin/sh\\necho hi\\n' > tree/sub/run.sh && chmod 755 tree/sub/run.sh \
         && ln -s sub/readme tree/link && mkfifo -m 640 tree/sub/pipe && chmod 750 tree/sub \
         && touch -h -d '2020-01-02 03:04:05' tree/secret tree/sub/readme tree/link \
         && touch -d '2019-05-06 07:08:09' tree/sub/run.sh tree/empty tree/sub",
    );
}

/// `stat` of every node: name, mode, type, size, mtime, and link target.
fn listing(root: &Path) -> String {
    ok(root, "find tree | sort | while read p; do stat -c '%n %a %F %s %Y' \"$p\"; [ -L \"$p\" ] && readlink \"$p\"; done; true")
}

async fn cp_a_keeps_modes_mtimes_links_and_empty_dirs(backend: Backend) {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let m = Mount::start(&backend);
    ok(&m.dir, &format!("cp -a {}/tree tree", src.path().display()));
    let want = listing(src.path()).replace("tree ", "X ");
    let got_now = listing(&m.dir).replace("tree ", "X ");
    // Directory sizes differ between filesystems; compare everything else.
    let strip = |s: &str| {
        s.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                match f.as_slice() {
                    [name, mode, "directory", _size, mtime] => format!("{name} {mode} dir {mtime}"),
                    _ => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&got_now), strip(&want));
    m.unmount();
    let m = Mount::start(&backend);
    assert_eq!(
        strip(&listing(&m.dir).replace("tree ", "X ")),
        strip(&want),
        "after a remount"
    );
    assert_eq!(
        ok(&m.dir, "tree/sub/run.sh"),
        "hi\n",
        "an executable runs from the mount"
    );
    assert_eq!(ok(&m.dir, "cat tree/link"), "public\n");
    let out = sh(&m.dir, "ln tree/secret tree/hard");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not permitted"),
        "hard links: {out:?}"
    );
    m.unmount();
}

async fn tar_x_then_tar_d_finds_no_difference(backend: Backend) {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    ok(src.path(), "tar cf archive.tar tree");
    let m = Mount::start(&backend);
    ok(
        &m.dir,
        &format!("tar xf {}/archive.tar", src.path().display()),
    );
    let diff = sh(
        &m.dir,
        &format!("tar df {}/archive.tar", src.path().display()),
    );
    assert!(
        diff.status.success(),
        "tar d: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    m.unmount();
    let m = Mount::start(&backend);
    let diff = sh(
        &m.dir,
        &format!("tar df {}/archive.tar", src.path().display()),
    );
    assert!(
        diff.status.success(),
        "tar d after remount: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
    m.unmount();
}

async fn editor_saves_are_never_seen_missing_or_partial(backend: Backend) {
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    let version = |n: usize| format!("version {n} {}\n", "x".repeat(n * 997 % 5000));
    std::fs::write(a.path("doc.txt"), version(0)).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let reader_dir = b.dir.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_r = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut reads = 0;
        while !stop_r.load(std::sync::atomic::Ordering::Relaxed) {
            let content = std::fs::read_to_string(reader_dir.join("doc.txt"))
                .unwrap_or_else(|e| panic!("read {reads}: the file went missing: {e}"));
            let n: usize = content
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("read {reads}: not a whole version: {content:?}"));
            assert_eq!(
                content,
                format!("version {n} {}\n", "x".repeat(n * 997 % 5000)),
                "read {reads}: partial"
            );
            reads += 1;
        }
        reads
    });
    for n in 1..=25 {
        // write a temporary file, fsync it, rename it over the original
        let script = format!(
            "printf '%s' '{}' > doc.txt.tmp && sync doc.txt.tmp && mv -f doc.txt.tmp doc.txt",
            version(n)
        );
        ok(&a.dir, &script);
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 10, "the reader only read {reads} times");
    assert_eq!(ok(&b.dir, "ls"), "doc.txt\n", "exactly one key remains");
    assert_eq!(
        std::fs::read_to_string(b.path("doc.txt")).unwrap(),
        version(25)
    );
    a.unmount();
    b.unmount();
}

async fn o_excl_create_from_two_mounts_lets_exactly_one_win(backend: Backend) {
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    let create = "import os, sys, time\n\
                  start = float(sys.argv[1])\n\
                  wins = 0\n\
                  for i in range(10):\n\
                  \x20   while time.time() < start + i * 0.3: time.sleep(0.001)\n\
                  \x20   try:\n\
                  \x20       fd = os.open(f'excl{i}', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)\n\
                  \x20       os.write(fd, sys.argv[2].encode()); os.close(fd); wins += 1\n\
                  \x20   except FileExistsError: pass\n\
                  print(wins)";
    let start = format!(
        "{:.3}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 1.0
    );
    let spawn = |m: &Mount, who: &str| {
        Command::new("python3")
            .args(["-c", create, &start, who])
            .current_dir(&m.dir)
            .output()
            .unwrap()
    };
    let t = Instant::now();
    let (oa, ob) = std::thread::scope(|s| {
        let ha = s.spawn(|| spawn(&a, "A"));
        let hb = s.spawn(|| spawn(&b, "B"));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(oa.status.success() && ob.status.success(), "{oa:?} {ob:?}");
    let wins = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(
        wins(&oa) + wins(&ob),
        10,
        "each name is won exactly once (A {}, B {}) in {:?}",
        wins(&oa),
        wins(&ob),
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(700));
    for i in 0..10 {
        let content = std::fs::read_to_string(a.path(&format!("excl{i}"))).unwrap();
        assert!(content == "A" || content == "B", "excl{i}: {content:?}");
    }
    a.unmount();
    b.unmount();
}

/// A FIFO and a UNIX socket made on one mount carry data between processes of that host, and
/// the other mount lists them as what they are (`ls -l`: `p`, `s`), with their mode.
async fn fifos_and_sockets_are_local_rendezvous_points_listed_everywhere(backend: Backend) {
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    ok(&a.dir, "mkfifo -m 600 pipe");
    let through = ok(&a.dir, "(echo 'through the pipe' > pipe &) ; cat pipe");
    assert_eq!(through, "through the pipe\n");
    let echo = "import os, socket, threading\n\
                s = socket.socket(socket.AF_UNIX); s.bind('sock'); s.listen(1)\n\
                def serve():\n\
                \x20   c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()\n\
                threading.Thread(target=serve).start()\n\
                k = socket.socket(socket.AF_UNIX); k.connect('sock'); k.sendall(b'hello')\n\
                print(k.recv(100).decode())";
    let out = Command::new("python3")
        .args(["-c", echo])
        .current_dir(&a.dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500)); // b's listing TTL
    let listed = ok(&b.dir, "stat -c '%A %n' pipe sock");
    assert!(listed.contains("prw------- pipe"), "{listed}");
    assert!(
        listed.starts_with("prw") && listed.contains("\ns"),
        "{listed}"
    );
    ok(&b.dir, "rm pipe sock");
    a.unmount();
    b.unmount();
}

/// `user.*` attributes: `setfattr`/`getfattr` on the mount, and a tree with attributes copied in
/// by `cp -a`, `rsync -aHAX` and `tar --xattrs` arrives with every attribute (binary values
/// too), as the other mount reads them; `getfattr -d` lists only the files' own attributes.
async fn copies_keep_user_attributes(backend: Backend) {
    let src = tempfile::tempdir().unwrap();
    let probe = sh(
        src.path(),
        "touch p && setfattr -n user.probe -v 1 p && rm p",
    );
    if !probe.status.success() {
        eprintln!("skipped: the temporary directory's filesystem has no user attributes");
        return;
    }
    ok(
        src.path(),
        "mkdir -p tree/sub && echo one > tree/a && echo two > tree/sub/b \
         && setfattr -n user.color -v blue tree/a \
         && setfattr -n user.bin -v 0x00ff0a0d tree/a \
         && setfattr -n user.note -v 'a note' tree/sub/b && setfattr -n user.dir -v yes tree/sub",
    );
    let dump = |dir: &Path, root: &str| {
        ok(
            dir,
            &format!("cd {root} && getfattr -R -d --absolute-names . | grep -v '^#' | sort"),
        )
    };
    let want = dump(src.path(), "tree");
    assert!(want.contains("user.bin=0sAP8KDQ=="), "{want}");
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    let from = src.path().join("tree");
    ok(&a.dir, &format!("cp -a {} by-cp", from.display()));
    ok(
        &a.dir,
        &format!("rsync -aHAX {}/ by-rsync/", from.display()),
    );
    ok(
        &a.dir,
        &format!(
            "tar --xattrs -C {} -cf ../archive.tar . && mkdir by-tar \
             && tar --xattrs --xattrs-include='user.*' -C by-tar -xf ../archive.tar",
            from.display()
        ),
    );
    for copy in ["by-cp", "by-rsync", "by-tar"] {
        assert_eq!(dump(&a.dir, copy), want, "{copy} on the mount that copied");
    }
    std::thread::sleep(Duration::from_millis(1500)); // b's listing TTL
    for copy in ["by-cp", "by-rsync", "by-tar"] {
        assert_eq!(dump(&b.dir, copy), want, "{copy} on the other mount");
    }
    // Changed and removed on one mount, seen so on the other.
    ok(
        &b.dir,
        "setfattr -n user.color -v red by-cp/a && setfattr -x user.bin by-cp/a",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let now = ok(&a.dir, "getfattr -d by-cp/a");
    assert!(
        now.contains("user.color=\"red\"") && !now.contains("user.bin"),
        "{now}"
    );
    a.unmount();
    b.unmount();
}

/// `git clone` into the mount (git falls back from hard links to copies), `git fsck` finds every
/// object whole, the work tree is clean, and the other mount reads the same history; a commit
/// made there is seen here.
async fn git_clone_round_trips(backend: Backend) {
    let src = tempfile::tempdir().unwrap();
    ok(
        src.path(),
        "git init -q -b main origin && cd origin && git config user.email t@example.com \
         && git config user.name t && mkdir -p dir && seq 1 2000 > dir/numbers \
         && printf '#!/bin/sh\necho run\n' > run.sh && chmod 755 run.sh && ln -s dir/numbers link \
         && git add -A && git commit -qm first && echo more >> dir/numbers && git commit -qam second",
    );
    let a = Mount::start(&backend);
    let b = Mount::start(&backend);
    ok(
        &a.dir,
        &format!("git clone -q {}/origin repo", src.path().display()),
    );
    ok(
        &a.dir,
        "cd repo && git fsck --strict --no-dangling && test -z \"$(git status --porcelain)\"",
    );
    let want = ok(src.path(), "cd origin && git log --format='%H %s'");
    assert_eq!(ok(&a.dir, "cd repo && git log --format='%H %s'"), want);
    assert_eq!(ok(&a.dir, "stat -c %a repo/run.sh").trim(), "755");
    std::thread::sleep(Duration::from_millis(1500)); // b's listing TTL
    ok(&b.dir, "cd repo && git -c safe.directory='*' fsck --no-dangling && git -c safe.directory='*' config user.email t@example.com && git -c safe.directory='*' config user.name t && echo third >> dir/numbers && git -c safe.directory='*' commit -qam third");
    std::thread::sleep(Duration::from_millis(1500));
    let log = ok(&a.dir, "cd repo && git log --format=%s");
    assert_eq!(log.lines().next(), Some("third"), "{log}");
    ok(&a.dir, "cd repo && test -z \"$(git status --porcelain)\"");
    a.unmount();
    b.unmount();
}

on_both_mounts!(
    git_clone_round_trips,
    copies_keep_user_attributes,
    fifos_and_sockets_are_local_rendezvous_points_listed_everywhere,
    cp_a_keeps_modes_mtimes_links_and_empty_dirs,
    tar_x_then_tar_d_finds_no_difference,
    editor_saves_are_never_seen_missing_or_partial,
    o_excl_create_from_two_mounts_lets_exactly_one_win
);
