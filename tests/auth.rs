//! Signing in over HTTPS against real parts: Azurite started with `--oauth basic` and a
//! certificate from a test CA, a small token server standing in for Entra ID and the
//! managed-identity endpoint (tests/support/fake_entra.py), and a stub `az` on PATH.
//!
//! Each mode writes and reads a value through the CLI; one mount lives through token refreshes,
//! a sign-in outage (EACCES, a log line naming the mode) and its end. Trust comes from
//! `SSL_CERT_FILE` or `--ca-file`; without either, a clear TLS error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SECRET: &str = "test-client-secret";

/// Azurite over HTTPS with bearer tokens, a token server, and their certificates.
struct Rig {
    dir: tempfile::TempDir,
    azurite_pid: u32,
    entra: Child,
    azurite_port: u16,
    entra_port: u16,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    out
}

/// A CA, and a server certificate for 127.0.0.1 that it signs (rustls refuses a CA as the
/// server's own certificate).
fn make_certs(dir: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=remotedict test CA",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // A client certificate (PEM: certificate and key in one file) for `--auth spn`.
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.crt",
        "-days",
        "2",
        "-subj",
        "/CN=remotedict test client",
    ]);
    let pem = [
        std::fs::read(dir.join("client.crt")).unwrap(),
        std::fs::read(dir.join("client.key")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("client.pem"), pem).unwrap();
}

impl Rig {
    fn start() -> Option<Rig> {
        common::azure_connection_string()?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_certs(d);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = run(Command::new(root.join("scripts/azurite"))
            .arg(d.join("azurite.pid"))
            .env(
                "AZURITE_ARGS",
                format!(
                    "--oauth basic --cert {} --key {}",
                    d.join("server.pem").display(),
                    d.join("server.key").display()
                ),
            ));
        let azurite_port = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let azurite_pid = std::fs::read_to_string(d.join("azurite.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let entra = Command::new("python3")
            .arg(root.join("tests/support/fake_entra.py"))
            .args([d, &d.join("server.pem"), &d.join("server.key")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let entra_port = loop {
            if let Ok(p) = std::fs::read_to_string(d.join("port")) {
                break p.trim().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the token server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        // A stub `az` that prints what `az account get-access-token -o json` prints.
        let bin = d.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(
            bin.join("az"),
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\nexec python3 -c 'import base64,json,time\n\
                 e=lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b\"=\").decode()\n\
                 n=int(time.time())\n\
                 t=e({{\"alg\":\"RS256\"}})+\".\"+e({{\"aud\":\"https://storage.azure.com\",\"iss\":\"https://sts.windows.net/{TENANT}/\",\"nbf\":n-60,\"iat\":n-60,\"exp\":n+3600}})+\".c2ln\"\n\
                 print(json.dumps({{\"accessToken\":t,\"expiresOn\":\"2030-01-01 00:00:00.000000\",\"expires_on\":n+3600,\"tenant\":\"{TENANT}\",\"tokenType\":\"Bearer\"}}))'\n",
                log = d.join("az.log").display()
            ),
        )
        .unwrap();
        run(Command::new("chmod").arg("+x").arg(bin.join("az")));
        Some(Rig {
            dir,
            azurite_pid,
            entra,
            azurite_port,
            entra_port,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/devstoreaccount1", self.azurite_port)
    }

    fn issued(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("issued"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `remotedict ARGS` with a clean Azure environment, trusting the test CA through
    /// SSL_CERT_FILE, signing in with `mode` (and `env`).
    fn cli(&self, mode: &str, container: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remotedict"));
        cmd.args(args)
            .args([
                "--container",
                container,
                "--folder",
                "f",
                "--request-timeout",
                "10",
            ])
            .args(["--endpoint", &self.endpoint()]);
        if !mode.is_empty() {
            cmd.args(["--auth", mode]);
        }
        for (k, _) in std::env::vars() {
            let proxy = k.to_ascii_lowercase().ends_with("_proxy");
            if k.starts_with("AZURE_")
                || k.starts_with("IDENTITY_")
                || k == "SSL_CERT_FILE"
                || proxy
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("SSL_CERT_FILE", self.path("ca.pem"))
            .env(
                "AZURE_AUTHORITY_HOST",
                format!("https://127.0.0.1:{}", self.entra_port),
            )
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.path("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        match mode {
            "key" => {
                cmd.env("AZURE_STORAGE_ACCOUNT", "devstoreaccount1")
                    .env("AZURE_STORAGE_KEY", DEV_KEY);
            }
            "spn" => {
                cmd.env("AZURE_TENANT_ID", TENANT)
                    .env("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
                    .env("AZURE_CLIENT_SECRET", SECRET);
            }
            "msi" => {
                cmd.env(
                    "IDENTITY_ENDPOINT",
                    format!("https://127.0.0.1:{}/msi/token", self.entra_port),
                )
                .env("IDENTITY_HEADER", "test-identity-header");
            }
            "workload" => {
                std::fs::write(self.path("federated-token"), "a.projected.token").unwrap();
                cmd.env("AZURE_TENANT_ID", TENANT)
                    .env("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
                    .env("AZURE_FEDERATED_TOKEN_FILE", self.path("federated-token"));
            }
            _ => {}
        }
        cmd
    }

    /// Starts `mount` (a `remotedict mount --foreground` command from [`Rig::cli`]) on a new
    /// directory `mnt-NAME` with its cache `cache-NAME` and its log `NAME.log`; waits until it is
    /// mounted. Returns the daemon, the mount point and the log.
    fn start_mount(&self, mut mount: Command, name: &str) -> (Child, PathBuf, PathBuf) {
        let mnt = self.path(&format!("mnt-{name}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let log = self.path(&format!("{name}.log"));
        let daemon = mount
            .arg(&mnt)
            .arg("--cache-dir")
            .arg(self.path(&format!("cache-{name}")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !common::mount::is_mounted(&mnt) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(Instant::now() < deadline, "{name}: no mount: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        (daemon, mnt, log)
    }

    /// Writes a value with `mode` and reads it back; returns the output of the read.
    fn put_get(&self, mode: &str, container: &str, cmd_env: &[(&str, &str)]) {
        let value = format!("value written with --auth {mode}\n");
        std::fs::write(self.path("in"), &value).unwrap();
        let mut put = self.cli(mode, container, &["put", "k"]);
        put.arg(self.path("in")).arg("--create-container");
        put.envs(cmd_env.iter().copied());
        run(&mut put);
        let mut get = self.cli(mode, container, &["get", "k"]);
        get.arg(self.path("out"));
        get.envs(cmd_env.iter().copied());
        run(&mut get);
        assert_eq!(
            std::fs::read_to_string(self.path("out")).unwrap(),
            value,
            "{mode}"
        );
        // And through a mount: the value the CLI wrote is read, a new file is written and read.
        let mut mount = self.cli(mode, container, &["mount", "--foreground"]);
        mount.envs(cmd_env.iter().copied());
        let (mut daemon, mnt, _) = self.start_mount(mount, container);
        let read = std::fs::read_to_string(mnt.join("k"));
        let written = std::fs::write(mnt.join("m"), "through the mount");
        let read_back = std::fs::read_to_string(mnt.join("m"));
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
        let _ = daemon.wait();
        assert_eq!(read.unwrap(), value, "{mode}: read through the mount");
        written.unwrap_or_else(|e| panic!("{mode}: write through the mount: {e}"));
        assert_eq!(read_back.unwrap(), "through the mount", "{mode}");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.entra.kill();
        let _ = self.entra.wait();
        let _ = Command::new("kill")
            .arg(self.azurite_pid.to_string())
            .status();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_mode_writes_and_reads_over_https() {
    let Some(rig) = Rig::start() else { return };
    rig.put_get("key", "ckey", &[]);
    rig.put_get("spn", "cspn", &[]);
    assert!(
        rig.issued().contains(&"secret".to_string()),
        "{:?}",
        rig.issued()
    );
    rig.put_get("msi", "cmsi", &[]);
    assert!(
        rig.issued()
            .iter()
            .any(|k| k.starts_with("msi:resource=https://storage.azure.com")),
        "{:?}",
        rig.issued()
    );
    // A user-assigned identity is asked for by its client id.
    let mut put = rig.cli("msi", "cmsi", &["ls", "--msi-client-id", "my-identity-id"]);
    run(&mut put);
    assert!(
        rig.issued()
            .iter()
            .any(|k| k.contains("client_id=my-identity-id")),
        "{:?}",
        rig.issued()
    );
    rig.put_get("workload", "cwork", &[]);
    rig.put_get("azcli", "caz", &[]);
    let az = std::fs::read_to_string(rig.path("az.log")).unwrap();
    assert!(
        az.contains("account get-access-token") && az.contains("https://storage.azure.com"),
        "{az}"
    );
    // A client certificate (PEM) instead of the secret.
    let cert = rig.path("client.pem");
    let mut put = rig.cli("spn", "ccert", &["put", "k", "--create-container"]);
    put.arg(rig.path("in"))
        .env_remove("AZURE_CLIENT_SECRET")
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &cert);
    run(&mut put);
    assert!(
        rig.issued().contains(&"assertion".to_string()),
        "{:?}",
        rig.issued()
    );
    // Without --auth, the secret in the environment chooses spn.
    rig.put_get(
        "",
        "cauto",
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ("AZURE_CLIENT_SECRET", SECRET),
        ],
    );
}

#[test]
fn trust_comes_from_ssl_cert_file_or_ca_file_and_its_absence_is_a_clear_error() {
    let Some(rig) = Rig::start() else { return };
    let mut untrusted = rig.cli("key", "ctls", &["ls", "--create-container"]);
    untrusted.env_remove("SSL_CERT_FILE");
    let out = untrusted.output().unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.to_lowercase().contains("certificate"), "{t}");
    assert!(!t.contains(DEV_KEY) && !t.contains("sig="), "{t}");
    let ca = rig.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let mut with_ca_file = rig.cli(
        "key",
        "ctls",
        &["ls", "--create-container", "--ca-file", ca],
    );
    with_ca_file.env_remove("SSL_CERT_FILE");
    run(&mut with_ca_file);
    run(&mut rig.cli("key", "ctls", &["ls"]));
}

#[test]
fn a_missing_or_refused_credential_is_named_never_shown() {
    let Some(rig) = Rig::start() else { return };
    // Each mode's missing piece is named.
    for (mode, unset, named) in [
        ("spn", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_SECRET"),
        ("spn", "AZURE_TENANT_ID", "AZURE_TENANT_ID"),
        (
            "workload",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
        ("key", "AZURE_STORAGE_KEY", "AZURE_STORAGE_KEY"),
    ] {
        let mut cmd = rig.cli(mode, "cbad", &["ls"]);
        cmd.env_remove(unset);
        let out = cmd.output().unwrap();
        let t = text(&out);
        assert!(
            !out.status.success() && t.contains(named),
            "{mode} without {unset}: {t}"
        );
    }
    // A connection string of the other kind than --auth asked for: refused, not switched.
    let key_conn = format!(
        "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint={}",
        rig.endpoint()
    );
    let mut cmd = rig.cli("sas", "cbad", &["ls"]);
    cmd.env("AZURE_STORAGE_CONNECTION_STRING", &key_conn);
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("--auth sas was asked for"),
        "{t}"
    );
    assert!(!t.contains(DEV_KEY), "{t}");
    // A wrong secret: refused within the time limit, the mode named, the secret not shown.
    let started = Instant::now();
    let mut cmd = rig.cli("spn", "cbad", &["ls"]);
    cmd.env("AZURE_CLIENT_SECRET", "wrong-secret-value");
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("spn"), "{t}");
    assert!(!t.contains("wrong-secret-value"), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    // A token endpoint that does not answer: an error within the request time limit, no hang.
    let started = Instant::now();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = rig.cli("msi", "cbad", &["ls", "--retries", "0"]);
    cmd.env(
        "IDENTITY_ENDPOINT",
        format!(
            "http://127.0.0.1:{}/msi/token",
            listener.local_addr().unwrap().port()
        ),
    );
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("msi"), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_mount_refreshes_its_token_and_recovers_from_a_sign_in_outage() {
    let Some(rig) = Rig::start() else { return };
    // Tokens whose JWT Azurite refuses after 8 s, announced as valid for 303 s: the client
    // fetches a new one 3 s after each (five minutes before the announced expiry).
    std::fs::write(rig.path("jwt_life"), "8").unwrap();
    std::fs::write(rig.path("expires_in"), "303").unwrap();
    let mount = rig.cli(
        "msi",
        "cmount",
        &[
            "mount",
            "--foreground",
            "--create-container",
            "--index-ttl",
            "0.5",
        ],
    );
    let (mut daemon, mnt, log) = rig.start_mount(mount, "cmount");
    // 20 s of writes and reads: past two lifetimes of a token.
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let p = mnt.join(format!("f{i}"));
        std::fs::write(&p, format!("v{i}")).unwrap_or_else(|e| panic!("write {i}: {e}"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("v{i}"));
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let issued = rig.issued().len();
    assert!(issued >= 3, "tokens issued: {issued}");
    // The sign-in endpoint refuses: once the last token has expired, writes fail with EACCES.
    std::fs::write(rig.path("fail"), "").unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let err = std::fs::write(mnt.join("during-outage"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    // The refresh that failed is logged, naming the mode (it runs beside the request that found
    // the token refused: allow it a moment).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let logged = std::fs::read_to_string(&log).unwrap();
        if logged.contains("sign-in (--auth msi) failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line naming the mode: {logged}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The endpoint answers again: the mount recovers by itself.
    std::fs::remove_file(rig.path("fail")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match std::fs::write(mnt.join("after-outage"), "y") {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "no recovery: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        std::fs::read_to_string(mnt.join("after-outage")).unwrap(),
        "y"
    );
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let _ = daemon.wait();
}

#[test]
fn https_proxy_and_no_proxy_are_honoured() {
    let Some(rig) = Rig::start() else { return };
    let mut proxy = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/connect_proxy.py"))
        .arg(rig.dir.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let port: u16 = loop {
        if let Ok(p) = std::fs::read_to_string(rig.path("proxy_port")) {
            break p.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let proxy_url = format!("http://127.0.0.1:{port}");
    let connects = || {
        std::fs::read_to_string(rig.path("proxy.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("CONNECT "))
            .count()
    };
    // Token sign-in and blob requests both go through the proxy.
    let mut cmd = rig.cli("spn", "cproxy", &["ls", "--create-container"]);
    cmd.env("HTTPS_PROXY", &proxy_url);
    run(&mut cmd);
    let log = std::fs::read_to_string(rig.path("proxy.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{}", rig.azurite_port))
            && log.contains(&format!("CONNECT 127.0.0.1:{}", rig.entra_port)),
        "{log}"
    );
    // NO_PROXY names the hosts that are reached directly.
    let before = connects();
    let mut cmd = rig.cli("spn", "cproxy", &["ls"]);
    cmd.env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "127.0.0.1");
    run(&mut cmd);
    assert_eq!(connects(), before, "NO_PROXY was not honoured");
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[test]
fn a_slow_token_refresh_does_not_hold_up_requests() {
    let Some(rig) = Rig::start() else { return };
    // Tokens announced as valid for 303 s are refreshed from 3 s on; the refresh then takes 25 s
    // (the request time limit is 10 s): requests must go on with the valid token meanwhile.
    std::fs::write(rig.path("expires_in"), "303").unwrap();
    let mount = rig.cli(
        "spn",
        "cslow",
        &["mount", "--foreground", "--create-container"],
    );
    let (mut daemon, mnt, _) = rig.start_mount(mount, "cslow");
    std::fs::write(mnt.join("first"), "1").unwrap();
    std::fs::write(rig.path("delay"), "25").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    for i in 0..8 {
        let started = Instant::now();
        std::fs::write(mnt.join(format!("g{i}")), "x").unwrap_or_else(|e| panic!("write {i}: {e}"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "write {i} waited {took:?} for the refresh"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::fs::remove_file(rig.path("delay")).unwrap();
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let _ = daemon.wait();
}
