//! Faults against a real Azurite: stopped (SIGSTOP), killed and restarted mid-operation.
//! Operations fail with EIO within the configured time instead of hanging, the mount recovers by
//! itself, a file whose close succeeded is never lost and one whose close failed keeps its
//! previous content.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{Backend, Mount};

const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite of this test's own, persisting to disk so it can be killed and restarted.
struct Azurite {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Azurite {
    fn start(dir: &Path, port: u16) -> Option<Azurite> {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob");
        if !bin.exists() {
            assert!(
                std::env::var_os("REMOTEDICT_REQUIRE_AZURE").is_none(),
                "Azurite is not installed (scripts/setup)"
            );
            return None;
        }
        let child = Command::new(bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--disableTelemetry",
                "--silent",
                "--location",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Azurite did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Azurite {
            child,
            port,
            dir: dir.to_path_buf(),
        })
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops Azurite (SIGTERM lets it save its metadata: it is not durable under SIGKILL the way
    /// Azure is) or kills it (SIGKILL), then starts it again on the same port and data.
    fn restart(&mut self, sig: i32) {
        self.signal(sig);
        let _ = self.child.wait();
        let again = Azurite::start(&self.dir, self.port).expect("restart");
        *self = again;
    }

    fn conn(&self) -> String {
        format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a small Python program in the mount; returns (success, output, seconds taken).
fn py(m: &Mount, code: &str) -> (bool, String, f64) {
    let t = Instant::now();
    let out = Command::new("python3")
        .args(["-c", code])
        .current_dir(&m.dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, t.elapsed().as_secs_f64())
}

const WRITE: &str = "import sys\nf = open(sys.argv[1] if len(sys.argv) > 1 else 'a.txt', 'w')\nf.write(CONTENT)\nf.close()\nprint('ok')";

fn write(m: &Mount, name: &str, content: &str) -> (bool, String, f64) {
    py(
        m,
        &WRITE.replace("CONTENT", &format!("{content:?}")).replace(
            "sys.argv[1] if len(sys.argv) > 1 else 'a.txt'",
            &format!("{name:?}"),
        ),
    )
}

fn read(m: &Mount, name: &str) -> (bool, String, f64) {
    py(m, &format!("print(open({name:?}).read(), end='')"))
}

#[test]
fn outages_fail_fast_and_the_mount_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut azurite) = Azurite::start(&tmp.path().join("azurite"), free_port()) else {
        return;
    };
    let backend = Backend::Azure {
        conn: azurite.conn(),
        container: "faults".into(),
    };
    let m = Mount::start_with(&backend, &["--request-timeout", "2", "--retries", "1"]);
    assert!(write(&m, "a.txt", "v1").0);
    assert!(write(&m, "b.txt", "b").0);

    // Azurite stops answering: reads and writes fail with EIO in bounded time, never hang.
    azurite.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(600)); // past the index TTL
    let (ok, out, secs) = read(&m, "b.txt");
    assert!(
        !ok && out.contains("Input/output error"),
        "read during the outage: {out}"
    );
    assert!(secs < 30.0, "the read took {secs:.1} s");
    let (ok, out, secs) = write(&m, "a.txt", "v2");
    assert!(
        !ok && out.contains("Input/output error"),
        "write during the outage: {out}"
    );
    assert!(secs < 30.0, "the write took {secs:.1} s");
    eprintln!("outage: read failed after {secs:.1} s");

    // Back: the failed write left the old value, and everything works again.
    azurite.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        let r = read(&m, "a.txt");
        if r.0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        recovered.1, "v1",
        "a failed close must keep the previous content"
    );
    // The first read can be served from this host's caches; a write needs the index, whose
    // error from the outage is handed out for 2 s more (docs/SEMANTICS.md), and a request sent
    // during the stop may still be timing out. Within a bounded time, writes work again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = write(&m, "a.txt", "v3");
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes do not work again after SIGCONT: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Stopped and restarted: what was closed is still there; the mount carries on.
    azurite.restart(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = read(&m, "a.txt");
        if ok {
            assert_eq!(out, "v3");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after a restart: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The read above may be served from this host's caches before Azurite is up again: writes
    // (and reads of what they wrote) come back once it answers, within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = write(&m, "c.txt", "after restart");
        let back = if ok { read(&m, "c.txt").1 } else { out };
        if back == "after restart" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes and reads do not work again after a restart: {back}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(read(&m, "b.txt").1, "b");

    // Killed in the middle of a large write: the close fails (old value kept) or succeeds
    // (new value whole) — never a torn value — and the mount recovers.
    let big = "y".repeat(20 << 20);
    let writer = {
        let dir = m.dir.clone();
        std::thread::spawn(move || {
            let code = format!(
                "f = open('c.txt', 'w')\nf.write('z' * {})\nf.close()",
                20 << 20
            );
            Command::new("python3")
                .args(["-c", &code])
                .current_dir(dir)
                .output()
                .unwrap()
                .status
                .success()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    azurite.restart(libc::SIGKILL);
    let closed = writer.join().unwrap();
    // Azurite itself loses what it had not yet saved when SIGKILLed (its metadata is saved
    // every few seconds), so c.txt may be gone; if it is there, it is whole.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !write(&m, "d.txt", &big[..1000]).0 {
        assert!(
            Instant::now() < deadline,
            "writes do not work again after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(read(&m, "d.txt").1, big[..1000]);
    let (ok, content, _) = read(&m, "c.txt");
    if ok {
        assert!(
            content == "after restart" || content == "z".repeat(20 << 20),
            "torn value ({} bytes, close ok: {closed})",
            content.len()
        );
    } else {
        assert!(content.contains("No such file"), "{content}");
    }
    m.unmount();
}
