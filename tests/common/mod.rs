//! Shared test helpers: the stores a suite runs against.
#![allow(dead_code)]

pub mod hosts;
pub mod mount;
pub mod proxy;

use std::sync::Arc;

use remotedict::store::azure::{AzureOptions, AzureStore};
use remotedict::store::local::LocalStore;
use remotedict::store::testing::MemStore;
use remotedict::store::BlobStore;

/// A fresh, empty local store in a temporary directory (kept alive by the returned guard).
pub async fn local_store() -> (tempfile::TempDir, Arc<dyn BlobStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("store"));
    store.create_container().await.expect("create local store");
    (dir, Arc::new(store))
}

/// A fresh, empty in-memory store.
pub fn mem_store() -> Arc<dyn BlobStore> {
    Arc::new(MemStore::new())
}

/// The Azurite connection string `scripts/test` exports, if any.
pub fn azure_connection_string() -> Option<String> {
    match std::env::var("REMOTEDICT_TEST_AZURE") {
        Ok(s) if !s.is_empty() => Some(s),
        _ => {
            assert!(
                std::env::var_os("REMOTEDICT_REQUIRE_AZURE").is_none(),
                "REMOTEDICT_TEST_AZURE is not set: run the tests with scripts/test, which starts Azurite"
            );
            eprintln!(
                "REMOTEDICT_TEST_AZURE not set: skipping the Azurite half (scripts/test runs it)"
            );
            None
        }
    }
}

/// A unique container name for one test.
pub fn unique_container() -> String {
    format!("t{}", uuid_like())
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..20)
        .map(|_| char::from(b'a' + r.gen_range(0..26)))
        .collect()
}

/// A fresh, empty container on Azurite, or `None` when Azurite is not configured.
pub async fn azure_store() -> Option<Arc<dyn BlobStore>> {
    let conn = azure_connection_string()?;
    let store =
        AzureStore::from_connection_string(&conn, &unique_container(), AzureOptions::default())
            .expect("azure store");
    store.create_container().await.expect("create container");
    Some(Arc::new(store))
}

/// Runs each listed async test function `fn(Arc<dyn BlobStore>)` against both backends, and
/// against the in-memory test double, which must keep their semantics.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (_dir, store) = $crate::common::local_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod azure_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(store) = $crate::common::azure_store().await {
                        super::$name(store).await;
                    }
                }
            )*
        }
        mod mem_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::mem_store()).await;
                }
            )*
        }
    };
}

/// The `Fs` settings core tests use: the mounting user 1000, a disk cache of `cache_bytes` in
/// `cache`, small blocks (256 KiB staged, 128 KiB ranges) so multi-block values stay small, and
/// 15 s leases.
pub fn fs_config(cache: &std::path::Path, cache_bytes: u64) -> remotedict::fs::FsConfig {
    remotedict::fs::FsConfig {
        uid: 1000,
        gid: 1000,
        read_only: false,
        cache_dir: cache.to_path_buf(),
        cache_bytes,
        transfer: remotedict::transfer::TransferConfig {
            block_size: 256 << 10,
            parallel: 3,
            read_parallel: 3,
            range_size: 128 << 10,
        },
        lease_duration: remotedict::store::LeaseDuration::Seconds(15),
    }
}
