//! `--metrics ADDR`: a mount serves Prometheus text on `http://ADDR/metrics`, scraped here while
//! ordinary programs work on the mount, on the local store and on Azurite; an address that
//! cannot be served fails the mount with a clear error.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{is_mounted, Backend, Mount};

/// A loopback address nobody listens on now.
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The metrics page at `addr`, as `name{labels}` -> value.
fn scrape(addr: &str) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(addr).expect("the metrics endpoint answers");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of the series of `name` whose labels include every one of `labels`.
fn total(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

fn metrics_follow_a_workload(backend: &Backend) {
    let addr = free_addr();
    let m = Mount::start_with(backend, &["--metrics", &addr]);
    m.sh("mkdir -p d && echo hello > d/a && seq 1 20000 > d/b && cp d/b d/c");
    m.sh("cat d/a d/b > /dev/null && ls -l d > /dev/null && flock d/a true && rm d/c");
    // A lookup of a missing name: an ENOENT answer.
    assert!(std::fs::metadata(m.path("d/missing")).is_err());
    // Index commits land shortly after the closes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = scrape(&addr);
        if total(&metrics, "remotedict_index_commits_total", &[]) >= 1.0
            || Instant::now() > deadline
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let page = format!("{metrics:#?}");
    let t = |name: &str, labels: &[&str]| total(&metrics, name, labels);
    assert!(
        t("remotedict_store_requests_total", &["outcome=\"ok\""]) >= 5.0,
        "{page}"
    );
    assert!(
        t("remotedict_store_requests_total", &["op=\"acquire_lease\""]) >= 1.0,
        "{page}"
    );
    assert!(
        t("remotedict_store_request_seconds_count", &["op=\"head\""]) >= 1.0,
        "{page}"
    );
    assert!(
        t("remotedict_store_bytes_total", &["direction=\"written\""]) > 0.0,
        "{page}"
    );
    assert!(t("remotedict_index_commits_total", &[]) >= 1.0, "{page}");
    assert!(
        t("remotedict_index_commit_bytes_total", &[]) > 0.0,
        "{page}"
    );
    assert!(
        t("remotedict_lease_acquires_total", &["outcome=\"ok\""]) >= 1.0,
        "{page}"
    );
    assert!(
        t("remotedict_fuse_requests_total", &["op=\"write\""]) >= 3.0,
        "{page}"
    );
    assert!(
        t("remotedict_fuse_request_seconds_count", &["op=\"create\""]) >= 3.0,
        "{page}"
    );
    assert!(
        t(
            "remotedict_fuse_errors_total",
            &["op=\"lookup\"", "errno=\"ENOENT\""]
        ) >= 1.0,
        "{page}"
    );
    assert!(t("remotedict_cache_lookups_total", &[]) >= 1.0, "{page}");
    // Every upload has ended: none pending.
    assert_eq!(t("remotedict_uploads_pending", &[]), 0.0, "{page}");
    assert!(metrics.contains_key("remotedict_uploads_pending"), "{page}");
    // `remotedict status` names the endpoint.
    let status = Command::new(env!("CARGO_BIN_EXE_remotedict"))
        .args(["status", "--json"])
        .arg(&m.dir)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json[0]["metrics"], format!("http://{addr}/metrics"));
    m.unmount();
}

#[test]
fn metrics_follow_a_workload_on_the_local_store() {
    let tmp = tempfile::tempdir().unwrap();
    metrics_follow_a_workload(&Backend::local(tmp.path()));
}

#[test]
fn metrics_follow_a_workload_on_azure() {
    let Some(backend) = Backend::azure() else {
        return;
    };
    metrics_follow_a_workload(&backend);
}

/// An address taken by another program: the mount fails at once, saying which option and why,
/// and nothing is mounted.
#[test]
fn an_address_in_use_fails_the_mount_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::local(tmp.path());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = backend
        .command(&mnt, &tmp.path().join("cache"), &["--metrics", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--metrics {addr}: cannot serve metrics there")),
        "{stderr}"
    );
    assert!(!is_mounted(&mnt));
    drop(taken);
}
