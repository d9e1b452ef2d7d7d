//! Test doubles of the storage layer: [`MemStore`], an in-memory [`BlobStore`](super::BlobStore)
//! with the semantics of the local and Azure backends, and [`FaultStore`], a wrapper that makes
//! any store fail, stall or lose answers on a plan a test sets.
//!
//! They are public so that integration tests (`tests/`) and the core's unit tests can use them
//! alike, and always compiled: they are small and have no dependencies of their own. Nothing in
//! the daemon itself uses them.

pub mod fault;
pub mod mem;

pub use fault::{Fault, FaultStore, Op, When};
pub use mem::MemStore;
