//! The metrics a mount exports (`--metrics ADDR`: Prometheus text on `http://ADDR/metrics`):
//! every name, its labels and its help text, in one place, and the functions the layers call to
//! record them. Until [`install`] runs (a mount without `--metrics`, the one-shot commands, the
//! tests that drive the core directly) the `metrics` facade has no recorder and each call costs
//! next to nothing. docs/LOGGING.md lists the names.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

const STORE_REQUESTS: &str = "remotedict_store_requests_total";
const STORE_SECONDS: &str = "remotedict_store_request_seconds";
const STORE_BYTES: &str = "remotedict_store_bytes_total";
const STORE_RETRIES: &str = "remotedict_store_retries_total";
const INDEX_COMMITS: &str = "remotedict_index_commits_total";
const INDEX_CONFLICTS: &str = "remotedict_index_conflicts_total";
const INDEX_BYTES: &str = "remotedict_index_commit_bytes_total";
const INDEX_COMPACTIONS: &str = "remotedict_index_compactions_total";
const LEASE_ACQUIRES: &str = "remotedict_lease_acquires_total";
const LEASE_RENEWALS: &str = "remotedict_lease_renewals_total";
const LEASES_LOST: &str = "remotedict_leases_lost_total";
const CACHE_LOOKUPS: &str = "remotedict_cache_lookups_total";
const CACHE_BYTES: &str = "remotedict_cache_bytes_total";
const FUSE_REQUESTS: &str = "remotedict_fuse_requests_total";
const FUSE_ERRORS: &str = "remotedict_fuse_errors_total";
const FUSE_SECONDS: &str = "remotedict_fuse_request_seconds";
const UPLOADS_PENDING: &str = "remotedict_uploads_pending";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("--metrics {addr}: cannot serve metrics there: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    #[source]
    source: metrics_exporter_prometheus::BuildError,
}

/// Where this process serves its metrics, once [`install`] succeeded.
static SERVED_AT: OnceLock<SocketAddr> = OnceLock::new();

/// Where this process serves its metrics, if it does.
pub fn served_at() -> Option<SocketAddr> {
    SERVED_AT.get().copied()
}

/// Serves the metrics on `http://addr/metrics` from now on (on the current tokio runtime, which
/// must be entered). Fails when the address cannot be bound.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ])
        .and_then(|b| b.install())
        .map_err(|source| MetricsError { addr, source })?;
    describe();
    let _ = SERVED_AT.set(addr);
    log::info!("serving metrics on http://{addr}/metrics");
    Ok(())
}

fn describe() {
    describe_counter!(
        STORE_REQUESTS,
        "Requests to the blob store (each attempt), by operation and outcome"
    );
    describe_histogram!(STORE_SECONDS, "Time of one store request, by operation");
    describe_counter!(
        STORE_BYTES,
        "Bytes read from and written to the blob store, by direction"
    );
    describe_counter!(
        STORE_RETRIES,
        "Store requests retried after a transient failure"
    );
    describe_counter!(INDEX_COMMITS, "Batches of changes committed to the index");
    describe_counter!(
        INDEX_CONFLICTS,
        "Index commits that met another host's commit first and decided again"
    );
    describe_counter!(INDEX_BYTES, "Bytes written to the index by commits");
    describe_counter!(INDEX_COMPACTIONS, "Index compactions into a new generation");
    describe_counter!(LEASE_ACQUIRES, "Lease requests, by outcome");
    describe_counter!(LEASE_RENEWALS, "Lease renewals, by outcome");
    describe_counter!(
        LEASES_LOST,
        "Leases lost while held (renewal failed or ran past the deadline)"
    );
    describe_counter!(
        CACHE_LOOKUPS,
        "Lookups of values in the local cache, by result (hit or miss)"
    );
    describe_counter!(CACHE_BYTES, "Bytes served from the local cache");
    describe_counter!(FUSE_REQUESTS, "FUSE requests answered, by operation");
    describe_counter!(
        FUSE_ERRORS,
        "FUSE requests answered with an error, by operation and errno"
    );
    describe_histogram!(FUSE_SECONDS, "Time to answer a FUSE request, by operation");
    describe_gauge!(
        UPLOADS_PENDING,
        "Uploads of values to the store in progress"
    );
}

/// One store request (one attempt) and how it ended.
pub fn store_request(op: &'static str, outcome: &'static str, took: Duration) {
    counter!(STORE_REQUESTS, "op" => op, "outcome" => outcome).increment(1);
    histogram!(STORE_SECONDS, "op" => op).record(took.as_secs_f64());
}

/// Bytes moved to (`written`) or from (`read`) the store.
pub fn store_bytes(direction: &'static str, n: usize) {
    counter!(STORE_BYTES, "direction" => direction).increment(n as u64);
}

/// A store request about to be retried.
pub fn store_retry() {
    counter!(STORE_RETRIES).increment(1);
}

/// An index commit of `bytes` landed.
pub fn index_commit(bytes: usize) {
    counter!(INDEX_COMMITS).increment(1);
    counter!(INDEX_BYTES).increment(bytes as u64);
}

/// An index commit found another host's commit in its place and decides again.
pub fn index_conflict() {
    counter!(INDEX_CONFLICTS).increment(1);
}

/// The index was compacted into a new generation.
pub fn index_compaction() {
    counter!(INDEX_COMPACTIONS).increment(1);
}

/// A lease request ended: `ok`, `busy` (someone else holds it) or `error`.
pub fn lease_acquire(outcome: &'static str) {
    counter!(LEASE_ACQUIRES, "outcome" => outcome).increment(1);
}

/// A lease renewal ended.
pub fn lease_renewal(ok: bool) {
    counter!(LEASE_RENEWALS, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// A lease held was lost.
pub fn lease_lost() {
    counter!(LEASES_LOST).increment(1);
}

/// A value looked up in the local cache: found (serving `bytes`) or not.
pub fn cache_lookup(hit: bool, bytes: u64) {
    counter!(CACHE_LOOKUPS, "result" => if hit { "hit" } else { "miss" }).increment(1);
    if hit {
        counter!(CACHE_BYTES).increment(bytes);
    }
}

/// A FUSE request `op` answered after `took`, with `errno` when it failed.
pub fn fuse_request(op: &'static str, took: Duration, errno: Option<i32>) {
    counter!(FUSE_REQUESTS, "op" => op).increment(1);
    histogram!(FUSE_SECONDS, "op" => op).record(took.as_secs_f64());
    if let Some(errno) = errno {
        counter!(FUSE_ERRORS, "op" => op, "errno" => errno_name(errno)).increment(1);
    }
}

/// The symbolic name of the errnos a mount answers (the number otherwise).
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EAGAIN => "EAGAIN",
        libc::EBUSY => "EBUSY",
        libc::EINTR => "EINTR",
        libc::ENOSPC => "ENOSPC",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOSYS => "ENOSYS",
        libc::EROFS => "EROFS",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EBADF => "EBADF",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ERANGE => "ERANGE",
        libc::E2BIG => "E2BIG",
        _ => return errno.to_string(),
    };
    name.to_string()
}

/// Counts an upload in `remotedict_uploads_pending` while it lives.
pub struct PendingUpload(());

impl PendingUpload {
    pub fn start() -> Self {
        gauge!(UPLOADS_PENDING).increment(1.0);
        PendingUpload(())
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        gauge!(UPLOADS_PENDING).decrement(1.0);
    }
}
