//! remotedict: a folder of an Azure Blob Storage container, mounted as a directory.
//!
//! Layers, top-down: `cli` (commands) and `mount` (the daemon) → `fuse` (thin adapter) → `fs`
//! (filesystem semantics) → `lock` (leases), `index` (the index blob) and `codec` (LZ4 frames) →
//! `store` (Azure or local blobs). `config` (the typed configuration and the store factory) sits
//! on `store`, below `cli` and `mount`; `runtime` builds the one kind of tokio runtime. See
//! docs/ARCHITECTURE.md.

pub mod cli;
pub mod codec;
pub mod config;
pub mod dict;
pub mod fs;
pub mod fsck;
pub mod fuse;
pub mod index;
pub mod layout;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod mount;
pub mod mutex;
pub mod runtime;
pub mod seek;
pub mod store;
pub mod time;
pub mod transfer;
