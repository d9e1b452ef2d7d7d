//! Who asks: the user and group of the process a request comes from, which own the nodes it
//! creates (as on a local filesystem). The FUSE adapter runs each request that creates a node
//! inside [`as_caller`]; outside one (tests, the CLI) nodes belong to the mount's user.

use std::future::Future;

/// The credentials of the process behind a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `fut` on behalf of `caller`: the nodes it creates belong to that user and group.
pub fn as_caller<F: Future>(caller: Caller, fut: F) -> impl Future<Output = F::Output> {
    CALLER.scope(caller, fut)
}

/// The caller of the request being served, if any.
pub(super) fn current() -> Option<Caller> {
    CALLER.try_with(|c| *c).ok()
}
