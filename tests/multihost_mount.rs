//! Two daemons on one folder (two hosts) driven by real programs: a stale host's `rm` and `mv`,
//! `mkdir -p` on both hosts, and names left behind by a killed `cp` or an unlink before the first
//! save — on the local store and Azurite.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mount::{Backend, Mount, FOLDER};
use remotedict::store::StoreError;

/// How old a claim's heartbeat must be before another host takes it over, for these daemons.
const CLAIM_STALE_SECS: &str = "3";

fn start(backend: &Backend, ttl: &str) -> Mount {
    // Inherited by the daemons (the same value in every test of this binary).
    std::env::set_var("REMOTEDICT_CLAIM_STALE_SECS", CLAIM_STALE_SECS);
    Mount::start_with(backend, &["--index-ttl", ttl])
}

fn run(m: &Mount, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&m.dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `check` until it holds, for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn blob_exists(backend: &Backend, name: &str) -> bool {
    match backend
        .store()
        .await
        .head(&format!("{FOLDER}/{name}"))
        .await
    {
        Ok(_) => true,
        Err(StoreError::NotFound(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

/// Case 2: C (`--index-ttl 30`) still lists v1 of `f` when B writes v2; C's `rm f` and `mv`
/// leave every host agreeing with the store: `f` gone for good, the moved name readable.
async fn a_stale_host_rm_and_mv(backend: Backend) {
    let b = start(&backend, "0.5");
    // `sync FILE` is fsync: listed in the index blob before C mounts.
    b.sh("printf v1 > f; printf v1 > g; sync f g");
    let c = start(&backend, "30");
    assert_eq!(c.sh("cat f g"), "v1v1");
    b.sh("printf 'version 2' > f; printf 'version 2' > g; sync f g");
    c.sh("rm f");
    c.sh("mv g h");
    eventually("f is gone on B", || !run(&b, "test -e f").status.success());
    assert!(
        !blob_exists(&backend, "f").await,
        "f: a blob without a name"
    );
    let d = start(&backend, "0.5");
    let ls = d.sh("ls");
    assert!(!ls.contains('f') && !ls.contains('g'), "{ls}");
    assert_eq!(d.sh("cat h"), "version 2");
}

/// Case 3: `mkdir -p run/a` on A, then `mkdir -p run/b` on B whose index copy predates it;
/// and both at once. Every round succeeds and both hosts see both subfolders.
async fn mkdir_p_on_two_hosts(backend: Backend) {
    let a = start(&backend, "0.5");
    let b = start(&backend, "30");
    for round in 0..4 {
        b.sh("ls > /dev/null"); // B's copy of the index is taken before A's mkdir
        a.sh(&format!("mkdir -p run{round}/a"));
        b.sh(&format!("mkdir -p run{round}/b && test -d run{round}/b"));
        let o = run(&b, &format!("ls run{round}"));
        assert!(o.status.success(), "{}", text(&o));
    }
    // Simultaneous: both start `mkdir -p out/N/...` together.
    for n in 0..4 {
        let pa = Command::new("mkdir")
            .args(["-p", &format!("out/{n}/a")])
            .current_dir(&a.dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pb = Command::new("mkdir")
            .args(["-p", &format!("out/{n}/b")])
            .current_dir(&b.dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for p in [pa, pb] {
            let o = p.wait_with_output().unwrap();
            assert!(o.status.success(), "round {n}: {}", text(&o));
        }
    }
    let c = start(&backend, "0.5");
    for n in 0..4 {
        assert_eq!(c.sh(&format!("ls run{n}")), "a\nb\n");
        assert_eq!(c.sh(&format!("ls out/{n}")), "a\nb\n");
    }
}

/// Case 4: a `cp` killed with its daemon (`kill -9`) mid-copy, and an `open(O_CREAT|O_EXCL)`,
/// `unlink`, `close`, leave no name that `cp` cannot create afterwards on any host.
async fn no_name_is_wedged_by_a_leftover_claim(backend: Backend) {
    let mut a = start(&backend, "0.5");
    let b = start(&backend, "0.5");
    // cp copies from a pipe that never ends: it has created x (O_EXCL) and is still copying
    // when its daemon is killed.
    let fifo = a.dir.parent().unwrap().join("src.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("(printf start; sleep 60) > {}", fifo.display()))
        .spawn()
        .unwrap();
    let mut cp = Command::new("cp")
        .arg(&fifo)
        .arg("x")
        .current_dir(&a.dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blob_exists(&backend, "x").await {
        assert!(Instant::now() < deadline, "cp never created x");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill9();
    let _ = cp.kill();
    let _ = cp.wait();
    let _ = writer.kill();
    let _ = writer.wait();
    b.sh("printf small > small.src");
    // A claim of a writer that is gone is taken over once its heartbeat is old enough.
    eventually("cp to the name of the killed cp works", || {
        run(&b, "cp small.src x").status.success()
    });
    assert_eq!(b.sh("cat x"), "small");

    // Unlink before the first save: the close succeeds and the name is free everywhere at once.
    b.sh(
        "python3 -c \"import os; fd = os.open('y', os.O_CREAT | os.O_EXCL | os.O_WRONLY); \
         os.write(fd, b'gone'); os.unlink('y'); os.close(fd)\"",
    );
    assert!(!run(&b, "test -e y").status.success());
    let c = start(&backend, "0.5");
    c.sh("cp small.src y");
    assert_eq!(c.sh("cat y"), "small");
    eventually("y is listed on B", || run(&b, "cat y").stdout == b"small");
}

on_both_mounts!(
    a_stale_host_rm_and_mv,
    mkdir_p_on_two_hosts,
    no_name_is_wedged_by_a_leftover_claim
);
