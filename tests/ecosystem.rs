//! Fitting the ecosystem: `mount -t fuse.remotedict` (fstab) and `umount`, the dictionary commands
//! round-tripping with a mount, atomic multi-key put, secrets kept out of `--print-config`, the
//! status file, and the systemd units.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::{is_mounted, Backend, Mount, FOLDER};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_remotedict")
}

fn cli(backend: &Backend, args: &[&str]) -> Output {
    backend.cli(args).output().unwrap()
}

fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fstab_style_mount_and_umount() {
    let Some(conn) = common::azure_connection_string() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let conn_file = tmp.path().join("conn");
    std::fs::write(&conn_file, &conn).unwrap();
    let container = common::unique_container();
    // mount(8) runs helpers with a clean PATH; `scripts/install` links this helper name, the
    // test links it to the binary under test for its duration.
    let helper = Path::new("/sbin/mount.fuse.remotedict");
    struct Unlink(&'static Path, bool);
    impl Drop for Unlink {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::fs::remove_file(self.0);
            }
        }
    }
    let created = !helper.exists() && std::os::unix::fs::symlink(bin(), helper).is_ok();
    let _unlink = Unlink(Path::new("/sbin/mount.fuse.remotedict"), created);
    let path = std::env::var("PATH").unwrap_or_default();
    let opts = format!(
        "_netdev,nofail,connection_string_file={},create_container,cache_dir={},index_ttl=0.5",
        conn_file.display(),
        tmp.path().join("cache").display()
    );
    let o = Command::new("mount")
        .args(["-t", "fuse.remotedict", &format!("{container}/{FOLDER}")])
        .arg(&mnt)
        .args(["-o", &opts])
        .env("PATH", &path)
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mount -t fuse.remotedict: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(is_mounted(&mnt));
    std::fs::write(mnt.join("via-fstab"), b"hello").unwrap();
    assert_eq!(std::fs::read(mnt.join("via-fstab")).unwrap(), b"hello");
    // The kernel releases a just-closed file asynchronously; until it has, umount may answer
    // "target is busy". Anything else is a failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = Command::new("umount").arg(&mnt).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        if o.status.success() {
            break;
        }
        assert!(
            err.contains("busy") && Instant::now() < deadline,
            "umount: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for("the unmount", || !is_mounted(&mnt));
    // The value went to the container named in the source; its listing lands with the daemon's
    // last group commit, a moment after umount returns.
    let backend = Backend::Azure { conn, container };
    wait_for("the value listed", || {
        let o = cli(&backend, &["get", "via-fstab"]);
        o.status.success() && o.stdout == b"hello"
    });
}

async fn cli_round_trips_with_a_mount(backend: Backend) {
    let m = Mount::start(&backend);
    // `sync FILE` (fsync) returns once the index lists the file for everyone; a plain close
    // lists it within a moment (the next group commit).
    m.sh("mkdir -p docs && echo from-mount > docs/a.txt && sync docs/a.txt");
    assert_eq!(out(&cli(&backend, &["ls"])), "docs\ndocs/a.txt\n");
    m.sh("echo later > docs/c.txt");
    wait_for("the listing of a closed file", || {
        out(&cli(&backend, &["ls"])).contains("docs/c.txt")
    });
    m.sh("rm docs/c.txt");
    assert_eq!(out(&cli(&backend, &["get", "docs/a.txt"])), "from-mount\n");
    let long = out(&cli(&backend, &["ls", "-l", "docs/"]));
    assert!(long.contains("11") && long.contains("docs/a.txt"), "{long}");
    let json: serde_json::Value =
        serde_json::from_str(&out(&cli(&backend, &["ls", "--json"]))).unwrap();
    assert_eq!(json[1]["key"], "docs/a.txt");
    assert_eq!(json[1]["size"], 11);
    let stat = out(&cli(&backend, &["stat", "docs/a.txt"]));
    assert!(
        stat.contains("size: 11") && stat.contains("lease: available"),
        "{stat}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::write(&src, b"from-cli\n").unwrap();
    out(&cli(
        &backend,
        &["put", "docs/b.txt", src.to_str().unwrap()],
    ));
    wait_for("the mount to see a CLI put", || {
        std::fs::read(m.path("docs/b.txt")).ok().as_deref() == Some(b"from-cli\n")
    });
    out(&cli(&backend, &["rm", "docs/a.txt"]));
    wait_for("the mount to see a CLI rm", || {
        !m.path("docs/a.txt").exists()
    });

    // Locks taken by the CLI hold against the mount, and the status file shows the mount's own.
    let id = out(&cli(&backend, &["lock", "docs/b.txt", "--duration", "15"]));
    let busy = Command::new("flock")
        .args(["-n", "docs/b.txt", "true"])
        .current_dir(&m.dir)
        .output()
        .unwrap();
    assert!(
        !busy.status.success(),
        "the CLI lock must exclude flock on the mount"
    );
    out(&cli(
        &backend,
        &["unlock", "docs/b.txt", "--lease-id", id.trim()],
    ));
    let mut holder = Command::new("flock")
        .args(["docs/b.txt", "sleep", "3"])
        .current_dir(&m.dir)
        .spawn()
        .unwrap();
    wait_for("the lease", || {
        out(&cli(&backend, &["stat", "docs/b.txt"])).contains("lease: leased")
    });
    let status = Command::new(bin())
        .args(["status", "--json"])
        .arg(&m.dir)
        .output()
        .unwrap();
    let text = out(&status);
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let json = &all[0];
    assert_eq!(json["mountpoint"], m.dir.display().to_string(), "{text}");
    assert_eq!(json["leases_held"][0], "docs/b.txt", "{text}");
    // Who holds it: the `flock` process, since when, in which mode, on a renewed lease.
    let lock = &json["locks"][0];
    assert_eq!(lock["key"], "docs/b.txt", "{text}");
    assert_eq!(lock["kind"], "flock", "{text}");
    assert_eq!(lock["mode"], "exclusive", "{text}");
    assert_eq!(lock["pid"], holder.id(), "{text}");
    assert_eq!(lock["command"], "flock", "{text}");
    assert_eq!(lock["lease"], "renewed", "{text}");
    assert!(lock["end"].is_null() && lock["since"].is_string(), "{text}");
    // The same for people: a summary and a row per lock.
    let table = out(&Command::new(bin())
        .arg("status")
        .arg(&m.dir)
        .output()
        .unwrap());
    assert!(
        table.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.starts_with(&["docs/b.txt", "flock", "exclusive", "exclusive"])
                && cells.contains(&holder.id().to_string().as_str())
        }),
        "{table}"
    );
    // A second `flock` waiting for it is listed as a waiter.
    let mut waiter = Command::new("flock")
        .args(["docs/b.txt", "true"])
        .current_dir(&m.dir)
        .spawn()
        .unwrap();
    wait_for("the waiter", || {
        let status = Command::new(bin())
            .args(["status", "--json"])
            .arg(&m.dir)
            .output()
            .unwrap();
        out(&status).contains(&format!("\"pid\": {}", waiter.id()))
    });
    assert!(json["index"]["keys"].as_u64().unwrap() >= 2, "{text}");
    assert!(json["index"]["changes_not_yet_written"].is_u64(), "{text}");
    // Plain programs read the status file too: `cat` must see no error, including at close.
    let cat = Command::new("cat")
        .arg(m.dir.join(".remotedict/status"))
        .output()
        .unwrap();
    assert!(cat.status.success(), "cat of the status file: {cat:?}");
    assert!(String::from_utf8_lossy(&cat.stdout).contains("leases_held"));
    holder.wait().unwrap();
    assert!(waiter.wait().unwrap().success());
    m.unmount();
}

#[test]
fn multi_key_put_is_all_or_nothing_in_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::write(&a, b"A").unwrap();
    std::fs::write(&b, b"B").unwrap();
    let missing = tmp.path().join("missing");
    let o = cli(
        &backend,
        &[
            "put",
            &format!("ka={}", a.display()),
            &format!("kb={}", missing.display()),
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot read"),
        "{o:?}"
    );
    assert_eq!(out(&cli(&backend, &["ls"])), "", "neither key may appear");
    let mut cmd = Command::new(bin());
    cmd.args(["put", "--folder", FOLDER, "--container", "c1", "--local"])
        .arg(tmp.path().join("store"))
        .args([format!("ka={}", a.display()), format!("kb={}", b.display())])
        .env("RUST_LOG", "remotedict=debug");
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let log = String::from_utf8_lossy(&o.stderr);
    let commits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("change(s) in one commit"))
        .collect();
    assert_eq!(commits.len(), 1, "{log}");
    assert!(commits[0].contains(" 2 change(s) in one commit"), "{log}");
    assert_eq!(out(&cli(&backend, &["ls"])), "ka\nkb\n");
    assert_eq!(out(&cli(&backend, &["get", "kb", "-"])), "B");
}

#[test]
fn print_config_never_prints_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "U2VjcmV0S2V5VGhhdE11c3ROb3RMZWFrMTIzNDU2Nzg5MA==";
    let conn = format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={secret}");
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("container = \"fromfile\"\nconnection_string = \"{conn}\"\nindex_ttl = 3\n"),
    )
    .unwrap();
    let run = |env_conn: bool, extra: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(["mount", "/mnt/x", "--print-config", "--config"])
            .arg(&config)
            .args(extra);
        cmd.env_remove("AZURE_STORAGE_CONNECTION_STRING");
        if env_conn {
            cmd.env("AZURE_STORAGE_CONNECTION_STRING", &conn);
        }
        out(&cmd.output().unwrap())
    };
    let from_file = run(false, &[]);
    assert!(
        !from_file.contains(secret) && !from_file.contains("AccountKey"),
        "{from_file}"
    );
    assert!(
        from_file.contains("redacted")
            && from_file.contains("container = \"fromfile\"")
            && from_file.contains("index_ttl = 3"),
        "{from_file}"
    );
    let from_env = run(true, &["--container", "fromflag", "--index-ttl", "2"]);
    assert!(!from_env.contains(secret), "{from_env}");
    assert!(
        from_env.contains("AZURE_STORAGE_CONNECTION_STRING (redacted)"),
        "{from_env}"
    );
    assert!(
        from_env.contains("container = \"fromflag\"") && from_env.contains("index_ttl = 2"),
        "flags win over the file: {from_env}"
    );
    let o = Command::new(bin())
        .args(["mount", "/mnt/x", "--print-config"])
        .env("REMOTEDICT_CONTAINER", "fromenv")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out(&o).contains("container = \"fromenv\""),
        "the environment wins over the file"
    );
}

#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not available: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut units = Vec::new();
    for (src, name) in [
        ("remotedict.service", "remotedict.service"),
        ("remotedict@.service", "remotedict@data.service"),
    ] {
        let text = std::fs::read_to_string(root.join("contrib").join(src))
            .unwrap()
            .replace("/usr/local/bin/remotedict", bin());
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        units.push(p);
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trips_local() {
    let tmp = tempfile::tempdir().unwrap();
    cli_round_trips_with_a_mount(Backend::local(tmp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trips_azurite() {
    if let Some(b) = Backend::azure() {
        cli_round_trips_with_a_mount(b).await;
    }
}
