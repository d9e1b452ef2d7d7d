//! The mount as a service: the systemd notification protocol, heard on a socket the test listens
//! on as systemd would (`NOTIFY_SOCKET`), and SIGHUP, which reopens a daemon's log file and never
//! unmounts.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::mount::{is_mounted, Backend};

/// The next notification, or `None` after `within`.
fn next_message(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn wait_unmounted(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mounted(dir) {
        assert!(Instant::now() < deadline, "still mounted after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// READY=1 comes once the mount is in place (not before), with a STATUS= line; a SIGHUP is
/// RELOADING=1 then READY=1 and the mount stays; SIGTERM sends STOPPING=1 and unmounts.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut child = backend
        .command(&mnt, &tmp.path().join("cache"), &["--foreground"])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = next_message(&sock, Duration::from_secs(30)).expect("a notification");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving ")),
        "{ready:?}"
    );
    assert!(is_mounted(&mnt), "READY=1 before the mount was in place");
    std::fs::write(mnt.join("f"), b"before").unwrap();

    signal(child.id(), "HUP");
    let reloading = next_message(&sock, Duration::from_secs(10)).expect("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let again = next_message(&sock, Duration::from_secs(10)).expect("READY=1 after the reload");
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");
    assert!(is_mounted(&mnt), "SIGHUP unmounted");
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"before");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited on SIGHUP"
    );

    signal(child.id(), "TERM");
    let stopping = next_message(&sock, Duration::from_secs(10)).expect("STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(child.wait().unwrap().success());
    wait_unmounted(&mnt);
}

/// A daemonized mount whose log file was renamed away (logrotate) writes to a new file at the
/// path after SIGHUP, and goes on serving.
#[test]
fn sighup_reopens_a_rotated_log_and_keeps_the_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("daemon.log");
    let out = backend
        .command(&mnt, &tmp.path().join("cache"), &[])
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&mnt));
    let pid = daemon_pid(&mnt).expect("the daemon's pid");
    std::fs::rename(&log, tmp.path().join("daemon.log.1")).unwrap();
    signal(pid, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("reopened") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains("log file") && text.contains("reopened"),
        "the new log file says: {text:?}"
    );
    std::fs::write(mnt.join("g"), b"after").unwrap();
    assert_eq!(std::fs::read(mnt.join("g")).unwrap(), b"after");
    assert!(is_mounted(&mnt), "SIGHUP unmounted");
    signal(pid, "TERM");
    wait_unmounted(&mnt);
}

/// The pid of the `remotedict mount` process serving `mnt` (from /proc).
fn daemon_pid(mnt: &Path) -> Option<u32> {
    let want = mnt.as_os_str().as_encoded_bytes().to_vec();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.iter().any(|a| *a == b"mount") && args.contains(&want.as_slice()) {
            return Some(pid);
        }
    }
    None
}

/// A private Azurite (its data in a directory, so a restart keeps it) whose one account has the
/// key it was started with, as a storage account whose key was rotated.
struct KeyedAzurite {
    dir: tempfile::TempDir,
    port: u16,
    pid: Option<u32>,
}

impl KeyedAzurite {
    fn start(key: &str) -> KeyedAzurite {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut az = KeyedAzurite {
            dir: tempfile::tempdir().unwrap(),
            port,
            pid: None,
        };
        az.restart_with(key);
        az
    }

    /// Stops Azurite (saving its data) and starts it again where it was, with only `key`.
    fn restart_with(&mut self, key: &str) {
        self.stop();
        let pidfile = self.dir.path().join("pid");
        let out = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/azurite"),
        )
        .arg(&pidfile)
        .env("AZURITE_ACCOUNTS", format!("devstoreaccount1:{key}"))
        .env("AZURITE_LOCATION", self.dir.path().join("data"))
        .env("AZURITE_PORT", self.port.to_string())
        .output()
        .unwrap();
        assert!(out.status.success(), "Azurite did not start: {out:?}");
        self.pid = Some(
            std::fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
    }

    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() {
                assert!(Instant::now() < deadline, "Azurite did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn connection_string(port: u16, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};\
             BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1"
        )
    }
}

impl Drop for KeyedAzurite {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// A random account key: 64 base64 characters are the whole encoding of 48 bytes, no padding.
fn random_key() -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..64)
        .map(|_| char::from(B64[rand::random::<usize>() % 64]))
        .collect()
}

/// Waits until `log` holds `text`; returns the log.
fn wait_for_log(log: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = std::fs::read_to_string(log).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the log never said {text:?}: {got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The account key is rotated under a running mount: its requests are refused until the
/// connection-string file holds the new key and the daemon gets SIGHUP, then the mount goes on
/// with everything it had. A file with a key that does not work is refused on SIGHUP and the
/// mount keeps the credential it has.
#[test]
fn sighup_picks_up_a_rotated_account_key() {
    if common::azure_connection_string().is_none() {
        return;
    }
    let (old_key, new_key, wrong_key) = (random_key(), random_key(), random_key());
    let mut az = KeyedAzurite::start(&old_key);
    let tmp = tempfile::tempdir().unwrap();
    let conn_file = tmp.path().join("conn");
    let port = az.port;
    let write_conn = |key: &str| {
        std::fs::write(&conn_file, KeyedAzurite::connection_string(port, key)).unwrap();
    };
    write_conn(&old_key);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_remotedict"))
        .arg("mount")
        .arg(&mnt)
        .args([
            "--foreground",
            "--container",
            "rotated",
            "--create-container",
        ])
        .args(["--folder", "f", "--index-ttl", "0", "--retries", "1"])
        .arg("--connection-string-file")
        .arg(&conn_file)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(&mnt) {
        assert!(
            Instant::now() < deadline,
            "not mounted: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(mnt.join("before"), b"written with the old key").unwrap();

    // The key is rotated: the mount's requests are refused.
    az.restart_with(&new_key);
    assert!(
        std::fs::write(mnt.join("refused"), b"x").is_err(),
        "a write with the rotated-out key was accepted"
    );

    // A file with a key that does not work either: SIGHUP keeps the credential it has.
    write_conn(&wrong_key);
    signal(child.id(), "HUP");
    wait_for_log(&log, "the credential was not changed");
    assert!(is_mounted(&mnt), "SIGHUP unmounted");

    // The new key: SIGHUP puts it to use.
    write_conn(&new_key);
    signal(child.id(), "HUP");
    let text = wait_for_log(&log, "credential re-read");
    assert!(
        !text.contains(&new_key) && !text.contains(&old_key) && !text.contains(&wrong_key),
        "a key in the log: {text}"
    );
    if let Err(e) = std::fs::write(mnt.join("after"), b"written with the new key") {
        std::thread::sleep(Duration::from_secs(1));
        panic!("{e}: {}", std::fs::read_to_string(&log).unwrap());
    }
    assert_eq!(
        std::fs::read(mnt.join("before")).unwrap(),
        b"written with the old key"
    );
    assert_eq!(
        std::fs::read(mnt.join("after")).unwrap(),
        b"written with the new key"
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"after".to_string()) && names.contains(&"before".to_string()),
        "{names:?}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");

    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
    wait_unmounted(&mnt);
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) each log line carries its syslog
/// priority for the journal; SIGUSR2 switches debug lines on, and off again, without a restart.
#[test]
fn journal_lines_carry_priorities_and_sigusr2_switches_debug() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("journal");
    let stream = std::fs::File::create(&log).unwrap();
    let m = stream.metadata().unwrap();
    let mut child = backend
        .command(&mnt, &tmp.path().join("cache"), &["--foreground"])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stdout(Stdio::null())
        .stderr(stream)
        .spawn()
        .unwrap();
    let text_with = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(what) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let text = text_with("serving");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>remotedict::mount: serving")),
        "{text}"
    );
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    std::fs::write(mnt.join("a"), b"1").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("<7>"), "debug lines by default: {text}");

    signal(child.id(), "USR2");
    let text = text_with("debug logging on");
    assert!(
        text.contains("<6>remotedict::mount: SIGUSR2: debug logging on"),
        "{text}"
    );
    std::fs::write(mnt.join("b"), b"2").unwrap();
    let text = text_with("<7>");
    let debug_lines = |t: &str| t.lines().filter(|l| l.starts_with("<7>")).count();
    assert!(
        debug_lines(&text) > 0,
        "no debug line after SIGUSR2: {text}"
    );
    // Lines logged while serving a request name it.
    let text = text_with(": req=");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<7>") && l.contains(": req=")),
        "no request id on the debug lines: {text}"
    );

    signal(child.id(), "USR2");
    let text = text_with("debug logging off");
    assert!(text.contains("SIGUSR2: debug logging off"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    let before = debug_lines(&std::fs::read_to_string(&log).unwrap());
    std::fs::write(mnt.join("c"), b"3").unwrap();
    assert_eq!(std::fs::read(mnt.join("c")).unwrap(), b"3");
    std::thread::sleep(Duration::from_millis(1500));
    let after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        debug_lines(&after),
        before,
        "debug lines after the second SIGUSR2: {after}"
    );
    assert!(is_mounted(&mnt), "SIGUSR2 unmounted");
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
    wait_unmounted(&mnt);
}

/// The example units are ones systemd accepts (`systemd-analyze verify`: directives, the
/// binary, the template's instance).
#[test]
fn the_example_units_pass_systemd_analyze_verify() {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: skipping");
        return;
    };
    assert!(probe.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let bin = env!("CARGO_BIN_EXE_remotedict");
    let mut units = Vec::new();
    for (file, name) in [
        ("remotedict.service", "remotedict.service"),
        ("remotedict@.service", "remotedict@.service"),
        ("remotedict@.service", "remotedict@data.service"),
    ] {
        let text = std::fs::read_to_string(contrib.join(file)).unwrap();
        assert!(text.contains("/usr/local/bin/remotedict"), "{file}");
        let path = tmp.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/remotedict", bin)).unwrap();
        if name != "remotedict@.service" {
            units.push(path);
        }
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // Unknown or malformed directives are only warnings, naming the file.
    let ours = tmp.path().to_string_lossy().to_string();
    assert!(!said.contains(&ours), "{said}");
}

/// A daemonized mount's log file is rotated once it passes `--log-max-mib` (FILE.1 keeps the
/// old lines, FILE starts afresh), and the mount goes on.
#[test]
fn a_log_file_past_its_cap_is_rotated() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("daemon.log");
    let out = backend
        .command(&mnt, &tmp.path().join("cache"), &["--log-max-mib", "1"])
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = daemon_pid(&mnt).expect("the daemon's pid");
    // Another writer fills the file past 1 MiB.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let line = "filler line written by the test to grow the log file\n".repeat(1024);
        for _ in 0..22 {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let rotated = tmp.path().join("daemon.log.1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("log file rotated")
    {
        assert!(Instant::now() < deadline, "not rotated within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("serving") && old.contains("filler line"),
        "FILE.1 holds the old lines"
    );
    assert!(std::fs::metadata(&log).unwrap().len() < 4096);
    std::fs::write(mnt.join("f"), b"after").unwrap();
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"after");
    signal(pid, "TERM");
    wait_unmounted(&mnt);
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(
        new.contains("saving pending changes and unmounting"),
        "{new}"
    );
}

/// A daemon whose log file was deleted (or rotated away by another mount sharing it) notices,
/// and writes to a new file at the path instead of into a file nobody can see.
#[test]
fn a_deleted_log_file_is_written_anew() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("daemon.log");
    let out = backend
        .command(&mnt, &tmp.path().join("cache"), &[])
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = daemon_pid(&mnt).expect("the daemon's pid");
    std::fs::remove_file(&log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("moved away or deleted; writing to a new one")
    {
        assert!(Instant::now() < deadline, "no new log file within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, "TERM");
    wait_unmounted(&mnt);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("saving pending changes and unmounting"),
        "{text}"
    );
}
