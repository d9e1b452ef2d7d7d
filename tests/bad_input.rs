//! Bad input gets a clear message that says what to fix — never a panic or a hang — and secrets
//! never show: connection strings, keys, containers, mount points, /dev/fuse, corrupt blobs and
//! indexes, names the store cannot hold, and who may enter the mount.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use common::mount::{is_mounted, Backend, Mount, FOLDER};
use remotedict::index::{Change, Entry, SharedIndex};
use remotedict::layout::Layout;
use remotedict::store::PutOptions;

/// A key that is well-formed base64 but not the account's.
const WRONG_KEY: &str = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc=";

fn mount_cmd(mountpoint: &Path, env_conn: Option<&str>, extra: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remotedict"));
    cmd.arg("mount")
        .arg(mountpoint)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(extra);
    cmd.env_remove("AZURE_STORAGE_CONNECTION_STRING");
    if let Some(c) = env_conn {
        cmd.env("AZURE_STORAGE_CONNECTION_STRING", c).args([
            "--request-timeout",
            "5",
            "--retries",
            "1",
        ]);
    }
    let out = cmd.output().unwrap();
    if is_mounted(mountpoint) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(mountpoint)
            .status();
    }
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected a failure: {o:?}");
    let e = stderr(o);
    assert!(e.contains(needle), "message lacks {needle:?}: {e}");
    assert!(!e.contains("panicked"), "a panic: {e}");
}

fn azure_with_key(key: &str) -> Option<String> {
    let conn = common::azure_connection_string()?;
    let good = conn
        .split(';')
        .find_map(|p| p.strip_prefix("AccountKey="))?
        .to_string();
    Some(conn.replace(&good, key))
}

#[test]
fn garbled_connection_string() {
    let dir = tempfile::tempdir().unwrap();
    let out = mount_cmd(
        dir.path(),
        Some("AccountName=x;AccountKey=SECRETSECRET;Garbage"),
        &["--container", "cnt"],
    );
    fails_with(&out, "connection string");
    assert!(
        !stderr(&out).contains("SECRETSECRET"),
        "the key leaked: {}",
        stderr(&out)
    );
    let out = mount_cmd(
        dir.path(),
        Some("not a connection string at all"),
        &["--container", "cnt"],
    );
    fails_with(&out, "connection string");
}

#[test]
fn a_bad_container_name_blames_the_flag_not_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;\
                BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;";
    let out = mount_cmd(dir.path(), Some(conn), &["--container", "c"]);
    fails_with(&out, "--container");
    fails_with(&out, "invalid container name \"c\"");
    assert!(!stderr(&out).contains("not usable"), "{}", stderr(&out));
}

#[test]
fn wrong_key_says_access_denied_without_the_key() {
    let Some(conn) = azure_with_key(WRONG_KEY) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = mount_cmd(dir.path(), Some(&conn), &["--container", "anything"]);
    fails_with(&out, "access denied");
    assert!(
        !stderr(&out).contains(WRONG_KEY) && !stderr(&out).contains("V3Jvbmd"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_container_suggests_create_container() {
    let Some(conn) = common::azure_connection_string() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = mount_cmd(
        dir.path(),
        Some(&conn),
        &["--container", "does-not-exist-here"],
    );
    fails_with(&out, "--create-container");
}

#[test]
fn mount_point_problems() {
    let dir = tempfile::tempdir().unwrap();
    let local = ["--local", dir.path().join("store").to_str().unwrap()].map(str::to_string);
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    fails_with(
        &mount_cmd(&dir.path().join("missing"), None, &local),
        "does not exist",
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(&mount_cmd(&file, None, &local), "not a directory");
    let m = Mount::start(&Backend::local(dir.path()));
    let out = mount_cmd(&m.dir, None, &local);
    fails_with(&out, "already a remotedict mount");
    m.unmount();
    let with_local = |extra: &[&'static str]| [&local[..], extra].concat();
    fails_with(
        &mount_cmd(dir.path(), None, &with_local(&["-o", "bogus_option"])),
        "unknown mount option",
    );
    fails_with(
        &mount_cmd(dir.path(), None, &with_local(&["--lease-duration", "5"])),
        "15 to 60",
    );
}

/// A mount (or an fstab line) that names a container but lost its credential fails and says
/// what it looked at; it never mounts a local store that would keep the writes on this disk.
#[test]
fn no_credential_is_an_error_not_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let empty_config = dir.path().join("config.toml");
    std::fs::write(&empty_config, "").unwrap();
    let home = dir.path().join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_remotedict"))
        .arg("mount")
        .arg(&mnt)
        .args(["--container", "c", "--folder", "f", "--config"])
        .arg(&empty_config)
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .env_remove("REMOTEDICT_LOCAL")
        .env("HOME", &home)
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .output()
        .unwrap();
    let mounted = is_mounted(&mnt);
    if mounted {
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    }
    assert!(!mounted, "mounted without a credential");
    fails_with(&out, "no credential was found");
    fails_with(&out, "AZURE_STORAGE_CONNECTION_STRING");
    fails_with(&out, "--local DIR");
    assert!(
        !dir.path().join("data").exists(),
        "a local store was created in XDG_DATA_HOME"
    );
}

#[test]
fn missing_dev_fuse() {
    // In a private mount namespace, hide /dev behind an empty tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs none /dev && exec {} mount {} --local {} --foreground",
        env!("CARGO_BIN_EXE_remotedict"),
        mnt.display(),
        dir.path().join("store").display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    fails_with(&out, "/dev/fuse is missing");
}

#[tokio::test]
async fn corrupt_lz4_blob_is_eio_with_a_log_line_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let store = backend.store().await;
    store.create_container().await.unwrap();
    let layout = Layout::new(FOLDER).unwrap();
    let mut junk = remotedict::codec::compress(&vec![b'z'; 100_000]);
    let n = junk.len();
    junk[n / 2..].iter_mut().for_each(|b| *b ^= 0x5A);
    let etag = store
        .put(
            &layout.blob_name("broken.bin"),
            Bytes::from(junk),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let index = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
    index
        .commit(vec![Change::Put {
            key: "broken.bin".into(),
            entry: Entry::file(100_000, n as u64, 0, etag),
        }])
        .await
        .unwrap();
    let log = tmp.path().join("daemon.log");
    let m = Mount::start_logged(&backend, &[], Some(&log));
    let out = Command::new("cat")
        .arg(m.path("broken.bin"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    m.unmount();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("broken.bin")),
        "no log line names the key:\n{text}"
    );
}

#[tokio::test]
async fn corrupt_or_newer_index_refuses_to_mount_and_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let store = backend.store().await;
    store.create_container().await.unwrap();
    let layout = Layout::new(FOLDER).unwrap();
    let mut newer = remotedict::index::format::encode_body(&Default::default());
    newer[4] = remotedict::index::FORMAT_VERSION + 1;
    for (bytes, needle) in [
        (b"garbage".to_vec(), "corrupt"),
        (remotedict::codec::compress(&newer), "upgrade"),
    ] {
        store
            .put(
                &layout.index_blob(),
                Bytes::from(bytes.clone()),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let store_dir = tmp.path().join("store");
        let args = [
            "--local",
            store_dir.to_str().unwrap(),
            "--container",
            "c1",
            "--folder",
            FOLDER,
        ];
        let out = mount_cmd(&mnt, None, &args);
        fails_with(&out, needle);
        let remotedict::store::GetResult::Found { data, .. } =
            store.get(&layout.index_blob(), None, None).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(&data[..], &bytes[..], "the index was overwritten");
    }
}

#[test]
fn names_the_store_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::start(&Backend::local(tmp.path()));
    let err = |script: &str| {
        String::from_utf8_lossy(
            &Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(&m.dir)
                .output()
                .unwrap()
                .stderr,
        )
        .to_string()
    };
    assert!(err(&format!("touch {}", "n".repeat(256))).contains("File name too long"));
    let deep = (0..6)
        .map(|_| "d".repeat(200))
        .collect::<Vec<_>>()
        .join("/");
    assert!(
        err(&format!("mkdir -p {deep}")).contains("File name too long"),
        "a blob name over 1024 characters"
    );
    for script in [
        "touch .remotedict/index",
        "echo x > .remotedict/status",
        "mkdir .remotedict/d",
        "touch .remotedict",
    ] {
        assert!(
            err(script).contains("not permitted"),
            "{script}: the reserved name"
        );
    }
    assert!(
        err("touch 'notes.'").contains("Invalid argument"),
        "a trailing dot"
    );
    assert!(
        err("touch 'back\\\\slash'").contains("Invalid argument"),
        "a backslash"
    );
    assert_eq!(
        m.sh("ls -A | grep -v '^d*$' || true"),
        "",
        "no refused name was created"
    );
    m.unmount();
}

#[test]
fn credentials_never_reach_argv_or_logs() {
    let Some(conn) = common::azure_connection_string() else {
        return;
    };
    let key = conn
        .split(';')
        .find_map(|p| p.strip_prefix("AccountKey="))
        .unwrap()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::Azure {
        conn: conn.clone(),
        container: common::unique_container(),
    };
    let log = tmp.path().join("trace.log");
    let mut m = Mount::start_logged(&backend, &[], Some(&log));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", m.child.id())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&key[..20]),
        "the key is in the command line"
    );
    m.sh("echo hello > f && cat f >/dev/null && ls -l >/dev/null && mkdir d && mv f d/g && rm d/g");
    m.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() > 100, "the debug log is there");
    assert!(
        !text.contains(&key[..20]) && !text.contains("AccountKey"),
        "the key is in the log"
    );
}

#[test]
fn the_mount_is_private_unless_allow_other() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let as_nobody = |m: &Mount| {
        Command::new("runuser")
            .args(["-u", "nobody", "--", "ls"])
            .arg(&m.dir)
            .output()
            .unwrap()
    };
    let m = Mount::start(&backend);
    m.sh("echo x > f");
    let out = as_nobody(&m);
    assert!(
        !out.status.success() && stderr(&out).contains("Permission denied"),
        "{out:?}"
    );
    m.unmount();
    let m = Mount::start_with(&backend, &["-o", "allow_other"]);
    let out = as_nobody(&m);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "f\n");
    m.unmount();
}

/// An account SAS for Azurite's well-known account with permissions `perms` (computed by Python's
/// hmac, as any client would).
fn azurite_sas(perms: &str) -> String {
    let script = format!(
        "import base64, hashlib, hmac, urllib.parse\n\
         key = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='\n\
         f = dict(sv='2019-12-12', ss='b', srt='sco', sp='{perms}', se='2030-01-01T00:00:00Z', spr='https,http')\n\
         s = '\\n'.join(['devstoreaccount1', f['sp'], f['ss'], f['srt'], '', f['se'], '', f['spr'], f['sv'], ''])\n\
         f['sig'] = base64.b64encode(hmac.new(base64.b64decode(key), s.encode(), hashlib.sha256).digest()).decode()\n\
         print(urllib.parse.urlencode(f))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn read_only_sas_mounts_and_refuses_writes_with_eacces() {
    let Some(conn) = common::azure_connection_string() else {
        return;
    };
    let endpoint = conn
        .split(';')
        .find_map(|p| p.strip_prefix("BlobEndpoint="))
        .unwrap()
        .to_string();
    // Fill a container with the full key, then mount it with a read-and-list SAS.
    let container = common::unique_container();
    let full = Backend::Azure {
        conn: conn.clone(),
        container: container.clone(),
    };
    full.store().await.create_container().await.unwrap();
    let m = Mount::start(&full);
    m.sh("echo readable > kept");
    m.unmount();
    let sas_conn = format!(
        "BlobEndpoint={endpoint};SharedAccessSignature={}",
        azurite_sas("rl")
    );
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("ro.log");
    let ro = Mount::start_logged(
        &Backend::Azure {
            conn: sas_conn,
            container,
        },
        &[],
        Some(&log),
    );
    assert_eq!(
        ro.sh("cat kept"),
        "readable\n",
        "reads work with a read-only SAS"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg("cp /etc/hostname new")
        .current_dir(&ro.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = Command::new("python3")
        .args(["-c", "f = open('kept', 'a'); f.write('more'); f.close()"])
        .current_dir(&ro.dir)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(ro.sh("cat kept"), "readable\n", "the value is unchanged");
    ro.unmount();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("access denied")),
        "no log line says why:\n{text}"
    );
    assert!(!text.contains("sig="), "the SAS signature reached the log");
}
