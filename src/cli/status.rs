//! `remotedict status [MOUNTPOINT] [--json]`: what mounted daemons are doing, read from each
//! mount's status file (`.remotedict/status`, see `fs::status`): a readable summary by default,
//! or the snapshots as one JSON array for scripts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::Value;

/// Prints the status of `mountpoint`, or of every remotedict mount when `None`.
pub fn status(mountpoint: Option<&Path>, json: bool) -> Result<()> {
    let mounts: Vec<PathBuf> = match mountpoint {
        Some(m) => vec![m.to_path_buf()],
        None => crate::mount::mountinfo::read()
            .into_iter()
            .filter(|m| m.is_remotedict())
            .map(|m| m.mount_point)
            .collect(),
    };
    let mut snapshots = Vec::new();
    for m in mounts {
        let file = m.join(crate::layout::RESERVED_DIR).join("status");
        let read = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        match read {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("mountpoint".into(), m.display().to_string().into());
                }
                snapshots.push(v);
            }
            Err(e) if mountpoint.is_some() => {
                bail!(
                    "{}: no status ({e}); is it a remotedict mount?",
                    m.display()
                )
            }
            Err(e) => eprintln!("{}: no status ({e})", m.display()),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshots)?);
    } else if snapshots.is_empty() {
        println!("no remotedict mounts");
    } else {
        for s in &snapshots {
            print!("{}", render(s));
        }
    }
    Ok(())
}

/// A status snapshot as lines for people.
fn render(s: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let mode = if s["read_only"].as_bool() == Some(true) {
        "read-only"
    } else {
        "read-write"
    };
    let folder = s["folder"].as_str().filter(|f| !f.is_empty());
    let _ = writeln!(
        out,
        "{}: {}{} ({mode}), mounted since {}",
        str_of(&s["mountpoint"]),
        str_of(&s["store"]),
        folder.map(|f| format!("/{f}")).unwrap_or_default(),
        str_of(&s["mounted_since"])
    );
    let ix = &s["index"];
    let age = ix["age_seconds"]
        .as_f64()
        .map_or("not read yet".to_string(), |a| format!("{a:.1} s old"));
    let _ = writeln!(
        out,
        "  index     {} keys, {age}, {} writes, {} conflicts redone, {} changes not yet written",
        num(&ix["keys"]),
        num(&ix["writes"]),
        num(&ix["conflicts_redone"]),
        num(&ix["changes_not_yet_written"])
    );
    let c = &s["cache"];
    let _ = writeln!(
        out,
        "  cache     {} of {} in {}",
        mib(num(&c["used_bytes"])),
        mib(num(&c["limit_bytes"])),
        str_of(&c["dir"])
    );
    let uploads: Vec<String> = s["uploads_pending"]
        .as_array()
        .map(|a| a.iter().map(str_of).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  uploads   {} pending{}",
        uploads.len(),
        if uploads.is_empty() {
            String::new()
        } else {
            format!(": {}", uploads.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "  handles   {} open, {} inodes",
        num(&s["open_handles"]),
        num(&s["inodes"])
    );
    let _ = writeln!(
        out,
        "  errors    {} since start",
        num(&s["errors_since_start"])
    );
    for e in s["last_errors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "            {}  {}",
            str_of(&e["at"]),
            str_of(&e["error"])
        );
    }
    let metrics = s["metrics"]
        .as_str()
        .unwrap_or("not served (--metrics ADDR)");
    let _ = writeln!(out, "  metrics   {metrics}");
    let rows = |items: &Value, cols: &[&str]| -> Vec<Vec<String>> {
        items
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                cols.iter()
                    .map(|c| match &l[*c] {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        v => v.to_string(),
                    })
                    .collect()
            })
            .collect()
    };
    let locks = rows(
        &s["locks"],
        &[
            "key",
            "kind",
            "mode",
            "host_mode",
            "pid",
            "command",
            "lease",
            "since",
        ],
    );
    if locks.is_empty() {
        let _ = writeln!(out, "  locks     none held");
    } else {
        let _ = writeln!(out, "  locks held here:");
        table(
            &mut out,
            &[
                "KEY", "KIND", "MODE", "ACROSS", "PID", "COMMAND", "LEASE", "SINCE",
            ],
            &locks,
        );
    }
    let waiters = rows(
        &s["lock_waiters"],
        &["key", "kind", "mode", "pid", "command", "since"],
    );
    if !waiters.is_empty() {
        let _ = writeln!(out, "  lock requests waiting here:");
        table(
            &mut out,
            &["KEY", "KIND", "MODE", "PID", "COMMAND", "SINCE"],
            &waiters,
        );
    }
    out
}

/// `bytes` in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Appends `rows` under `header`, each column as wide as its widest cell, indented.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("    {}", padded.join("  ").trim_end())
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_as_a_summary_with_its_locks_and_errors() {
        let s = serde_json::json!({
            "mountpoint": "/mnt/data",
            "store": "local:/srv/store/c",
            "folder": "set1",
            "mounted_since": "2026-12-06T10:00:00Z",
            "read_only": false,
            "index": {"keys": 12345, "age_seconds": 0.25, "writes": 7,
                      "conflicts_redone": 2, "changes_not_yet_written": 1},
            "cache": {"dir": "/var/cache/remotedict/data", "used_bytes": 3 << 20,
                      "limit_bytes": 4096u64 << 20},
            "leases_held": ["docs/a.txt"],
            "locks": [{"key": "docs/a.txt", "kind": "flock", "mode": "exclusive",
                       "host_mode": "exclusive", "pid": 42, "command": "flock",
                       "lease": "renewed", "since": "2026-12-06T10:01:00Z", "end": null}],
            "lock_waiters": [{"key": "docs/a.txt", "kind": "flock", "mode": "shared",
                              "pid": 43, "command": null, "since": "2026-12-06T10:02:00Z"}],
            "uploads_pending": ["big.bin"],
            "open_handles": 3,
            "inodes": 9,
            "errors_since_start": 1,
            "last_errors": [{"at": "2026-12-06T10:03:00Z", "error": "store: access denied"}],
            "metrics": "http://127.0.0.1:9464/metrics",
        });
        let text = render(&s);
        assert!(
            text.starts_with("/mnt/data: local:/srv/store/c/set1 (read-write)"),
            "{text}"
        );
        assert!(
            text.contains("12345 keys, 0.2 s old, 7 writes, 2 conflicts redone, 1 changes"),
            "{text}"
        );
        assert!(text.contains("3.0 MiB of 4096.0 MiB"), "{text}");
        assert!(text.contains("1 pending: big.bin"), "{text}");
        assert!(
            text.contains("2026-12-06T10:03:00Z  store: access denied"),
            "{text}"
        );
        assert!(
            text.contains("metrics   http://127.0.0.1:9464/metrics"),
            "{text}"
        );
        let lock_row = text
            .lines()
            .find(|l| l.trim_start().starts_with("docs/a.txt  flock  exclusive"))
            .unwrap_or_else(|| panic!("no lock row in {text}"));
        assert!(
            lock_row.contains("42") && lock_row.contains("renewed"),
            "{text}"
        );
        assert!(text.contains("lock requests waiting here:"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("shared") && l.contains("43") && l.contains(" - ")),
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_without_locks_or_metrics_says_so() {
        let s = serde_json::json!({"mountpoint": "/m", "store": "local:/s/c", "folder": "",
                                   "read_only": true, "index": {}, "cache": {}, "metrics": null});
        let text = render(&s);
        assert!(text.starts_with("/m: local:/s/c (read-only)"), "{text}");
        assert!(text.contains("locks     none held"), "{text}");
        assert!(text.contains("not served (--metrics ADDR)"), "{text}");
        assert!(text.contains("index     0 keys, not read yet"), "{text}");
        assert!(!text.contains("waiting here"), "{text}");
    }
}
