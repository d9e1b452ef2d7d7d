//! `FaultStore`: wraps any [`BlobStore`] and makes chosen calls fail, stall or lose their answer,
//! following a plan a test sets (and may change while the code under test runs).
//!
//! A plan is a list of rules `(Op, When, Fault)`: which trait method, which of its calls (the
//! Nth, every one from the Nth, or those on a blob name), and what happens to it:
//!
//! ```
//! # use std::sync::Arc;
//! # use remotedict::store::testing::{FaultStore, MemStore, Op, When, Fault};
//! let store = FaultStore::new(Arc::new(MemStore::new()));
//! // The first commit is applied by the server, but the caller sees a timeout.
//! store.plan(Op::CommitBlocks, When::Nth(1), Fault::LoseAnswer);
//! // Every put of the index blob answers 412.
//! store.plan(Op::Put, When::Prefix("idx".into()), Fault::Status(412));
//! assert_eq!(store.calls(Op::Put), 0);
//! ```
//!
//! Several rules may match one call; then hooks run first (in plan order), before-delays add
//! up, the first fail-before-sending fault wins over the call itself, and after-delays and a lost
//! answer apply once the inner call has returned. Rules for the Nth call and hooks are spent once
//! they fire. Calls are counted per [`Op`] whether or not a fault hit them.
//! [`describe`](BlobStore::describe) is passed through, uncounted.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::mutex::lock;
use crate::store::{
    BlobProps, BlobStore, Conditions, GetResult, LeaseDuration, ListPage, Metadata, PutOptions,
    Result, StoreError,
};

/// One kind of call: a method of [`BlobStore`] (all but `describe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    CheckContainer,
    CreateContainer,
    Get,
    Head,
    Put,
    PutBlock,
    CommitBlocks,
    Delete,
    List,
    SetMetadata,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    BreakLease,
    CreateAppend,
    Append,
}

impl Op {
    /// Every op, in trait order.
    pub const ALL: [Op; 16] = [
        Op::CheckContainer,
        Op::CreateContainer,
        Op::Get,
        Op::Head,
        Op::Put,
        Op::PutBlock,
        Op::CommitBlocks,
        Op::Delete,
        Op::List,
        Op::SetMetadata,
        Op::AcquireLease,
        Op::RenewLease,
        Op::ReleaseLease,
        Op::BreakLease,
        Op::CreateAppend,
        Op::Append,
    ];

    /// The op's name in error messages and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Op::CheckContainer => "check container",
            Op::CreateContainer => "create container",
            Op::Get => "get",
            Op::Head => "head",
            Op::Put => "put",
            Op::PutBlock => "put block",
            Op::CommitBlocks => "commit blocks",
            Op::Delete => "delete",
            Op::List => "list",
            Op::SetMetadata => "set metadata",
            Op::AcquireLease => "acquire lease",
            Op::RenewLease => "renew lease",
            Op::ReleaseLease => "release lease",
            Op::BreakLease => "break lease",
            Op::CreateAppend => "create append blob",
            Op::Append => "append",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which calls of an op a rule applies to. Counts start at 1. The name a call is matched on is
/// its blob name; for [`Op::List`] the listing prefix; for the container ops the empty string.
#[derive(Clone)]
pub enum When {
    /// Only the Nth call of the op.
    Nth(u64),
    /// The Nth call of the op and every later one.
    From(u64),
    /// Every call of the op.
    Always,
    /// Every call on a name starting with this prefix.
    Prefix(String),
    /// Only the Nth call on a name starting with the prefix (counted from when the rule is set).
    NthWithPrefix(String, u64),
    /// Every call on a name for which the predicate holds.
    Matching(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl When {
    /// Every call on a name for which `f` holds.
    pub fn matching(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        When::Matching(Arc::new(f))
    }
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Nth(n) => write!(f, "Nth({n})"),
            When::From(n) => write!(f, "From({n})"),
            When::Always => write!(f, "Always"),
            When::Prefix(p) => write!(f, "Prefix({p:?})"),
            When::NthWithPrefix(p, n) => write!(f, "NthWithPrefix({p:?}, {n})"),
            When::Matching(_) => write!(f, "Matching(..)"),
        }
    }
}

/// The future a [`Fault::Hook`] returns.
pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A one-shot hook: run once, before the call it matched, which waits for it.
pub type HookFn = Box<dyn FnOnce() -> HookFuture + Send>;

/// What happens to a call a rule matches.
pub enum Fault {
    /// Fail before sending (the inner store is not called) with a transient timeout.
    Timeout,
    /// Fail before sending with a transient "connection reset".
    ConnectionReset,
    /// Fail before sending with the error an HTTP status maps to: 404 `NotFound`, 409
    /// `LeaseConflict`, 412 `PreconditionFailed`, 401/403 `Auth`, 408/429/5xx `Transient`,
    /// anything else `Other`; named after the call's blob.
    Status(u16),
    /// Fail before sending with exactly this error.
    Fail(StoreError),
    /// Call the inner store, then answer a transient timeout whatever it answered: the request
    /// reached the server and was applied (if it could be), but its answer was lost.
    LoseAnswer,
    /// Wait this long before calling the inner store.
    DelayBefore(Duration),
    /// Wait this long after the inner store answered, before answering.
    DelayAfter(Duration),
    /// Run this once, before the call (see [`Fault::hook`]); the call then goes ahead.
    Hook(HookFn),
    /// Once, for a GET that finds bytes: call the inner store, then run this, then answer the
    /// bytes read with the etag the blob has *after* it ran (see [`Fault::etag_after`]). Azurite
    /// does this to an append blob read while an append lands: it reads the etag after the body.
    /// (An answer without bytes is left alone: the Azure backend takes those from a HEAD.)
    EtagAfter(HookFn),
}

impl Fault {
    /// A one-shot hook from an async closure, e.g. to let another "host" act at the worst moment.
    pub fn hook<F, Fut>(f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Fault::Hook(Box::new(move || Box::pin(f())))
    }

    /// A GET answered with the bytes it read but the etag of the blob after `f` ran, e.g. after
    /// another host's append (the etag then describes bytes the answer does not hold).
    pub fn etag_after<F, Fut>(f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Fault::EtagAfter(Box::new(move || Box::pin(f())))
    }

    /// The error this fault answers instead of calling the inner store, if it is of that kind.
    fn before_sending(&self, op: Op, name: &str) -> Option<StoreError> {
        let transient = |message: String| StoreError::Transient {
            name: name.to_string(),
            message,
        };
        Some(match self {
            Fault::Timeout => transient(format!("{op}: operation timed out (injected)")),
            Fault::ConnectionReset => {
                transient(format!("{op}: connection reset by peer (injected)"))
            }
            Fault::Fail(e) => e.clone(),
            Fault::Status(status) => status_error(*status, op, name),
            _ => return None,
        })
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Timeout => write!(f, "Timeout"),
            Fault::ConnectionReset => write!(f, "ConnectionReset"),
            Fault::Status(s) => write!(f, "Status({s})"),
            Fault::Fail(e) => write!(f, "Fail({e:?})"),
            Fault::LoseAnswer => write!(f, "LoseAnswer"),
            Fault::DelayBefore(d) => write!(f, "DelayBefore({d:?})"),
            Fault::DelayAfter(d) => write!(f, "DelayAfter({d:?})"),
            Fault::Hook(_) => write!(f, "Hook(..)"),
            Fault::EtagAfter(_) => write!(f, "EtagAfter(..)"),
        }
    }
}

/// The error the Azure backend reports for `status` (without an error code).
fn status_error(status: u16, op: Op, name: &str) -> StoreError {
    let name = name.to_string();
    match status {
        404 => StoreError::NotFound(name),
        409 => StoreError::LeaseConflict(name),
        412 => StoreError::PreconditionFailed(name),
        401 | 403 => StoreError::Auth(format!("{op} was refused (HTTP {status}, injected)")),
        408 | 429 | 500..=599 => StoreError::Transient {
            name,
            message: format!("{op}: HTTP {status} (injected)"),
        },
        _ => StoreError::Other(format!("{op} {name:?} failed: HTTP {status} (injected)")),
    }
}

struct Rule {
    op: Op,
    when: When,
    /// Calls that matched a `NthWithPrefix` rule's prefix so far.
    seen: u64,
    fault: Fault,
}

impl Rule {
    /// Whether the rule applies to the `count`th call of its op, on `name`; counts the call.
    fn matches(&mut self, op: Op, count: u64, name: &str) -> bool {
        if op != self.op {
            return false;
        }
        match &self.when {
            When::Nth(n) => count == *n,
            When::From(n) => count >= *n,
            When::Always => true,
            When::Prefix(p) => name.starts_with(p.as_str()),
            When::NthWithPrefix(p, n) => {
                if name.starts_with(p.as_str()) {
                    self.seen += 1;
                    self.seen == *n
                } else {
                    false
                }
            }
            When::Matching(f) => f(name),
        }
    }

    /// Whether the rule can never match again once it has matched.
    fn spent_once_fired(&self) -> bool {
        matches!(self.fault, Fault::Hook(_) | Fault::EtagAfter(_))
            || matches!(self.when, When::Nth(_) | When::NthWithPrefix(..))
    }
}

#[derive(Default)]
struct Plan {
    rules: Vec<Rule>,
    calls: HashMap<Op, u64>,
}

/// What to do around one call, gathered from the rules that matched it.
#[derive(Default)]
struct Actions {
    hooks: Vec<HookFn>,
    /// Hooks run after a GET, whose answer then carries the etag from after them.
    etag_after: Vec<HookFn>,
    before: Duration,
    fail: Option<StoreError>,
    after: Duration,
    lose_answer: bool,
}

/// A [`BlobStore`] that passes calls to an inner one, except where its plan says otherwise.
pub struct FaultStore {
    inner: Arc<dyn BlobStore>,
    plan: Mutex<Plan>,
}

impl FaultStore {
    /// A wrapper around `inner` with an empty plan: every call goes through unchanged.
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        FaultStore {
            inner,
            plan: Mutex::new(Plan::default()),
        }
    }

    /// The wrapped store, to look at or change behind the faults' back.
    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// Adds a rule: calls of `op` that `when` selects get `fault`. Returns `self` to chain.
    pub fn plan(&self, op: Op, when: When, fault: Fault) -> &Self {
        lock(&self.plan).rules.push(Rule {
            op,
            when,
            seen: 0,
            fault,
        });
        self
    }

    /// Drops every rule; call counts are kept.
    pub fn clear(&self) {
        lock(&self.plan).rules.clear();
    }

    /// How many calls of `op` were made so far (faulted or not).
    pub fn calls(&self, op: Op) -> u64 {
        lock(&self.plan).calls.get(&op).copied().unwrap_or(0)
    }

    /// Sets every call count back to zero (so `When::Nth` counts from the next call).
    pub fn reset_calls(&self) {
        lock(&self.plan).calls.clear();
    }

    /// Counts the call and gathers what the matching rules do to it.
    fn actions(&self, op: Op, name: &str) -> Actions {
        let mut plan = lock(&self.plan);
        let count = {
            let c = plan.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let mut actions = Actions::default();
        let mut kept = Vec::with_capacity(plan.rules.len());
        for mut rule in std::mem::take(&mut plan.rules) {
            if !rule.matches(op, count, name) {
                kept.push(rule);
                continue;
            }
            log::debug!("fault store: {op} #{count} on {name:?}: {:?}", rule.fault);
            let spent = rule.spent_once_fired();
            match rule.fault {
                Fault::Hook(hook) => {
                    actions.hooks.push(hook);
                    continue;
                }
                Fault::EtagAfter(hook) => {
                    actions.etag_after.push(hook);
                    continue;
                }
                Fault::DelayBefore(d) => actions.before += d,
                Fault::DelayAfter(d) => actions.after += d,
                Fault::LoseAnswer => actions.lose_answer = true,
                ref fault => {
                    if actions.fail.is_none() {
                        actions.fail = fault.before_sending(op, name);
                    }
                }
            }
            if !spent {
                kept.push(rule);
            }
        }
        plan.rules = kept;
        actions
    }

    /// Runs `call` (the inner store's answer, not started yet) as the plan says.
    async fn run<T>(
        &self,
        op: Op,
        name: &str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let actions = self.actions(op, name);
        self.run_actions(op, name, actions, call).await
    }

    /// Runs `call` as `actions` say.
    async fn run_actions<T>(
        &self,
        op: Op,
        name: &str,
        actions: Actions,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        for hook in actions.hooks {
            hook().await;
        }
        if !actions.before.is_zero() {
            tokio::time::sleep(actions.before).await;
        }
        if let Some(e) = actions.fail {
            return Err(e);
        }
        let answer = call.await;
        if !actions.after.is_zero() {
            tokio::time::sleep(actions.after).await;
        }
        if actions.lose_answer {
            log::debug!(
                "fault store: {op} on {name:?} answered {}; losing that answer",
                if answer.is_ok() {
                    "success"
                } else {
                    "an error"
                }
            );
            return Err(StoreError::Transient {
                name: name.to_string(),
                message: format!("{op}: operation timed out after the request was sent (injected)"),
            });
        }
        answer
    }
}

#[async_trait]
impl BlobStore for FaultStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn check_container(&self) -> Result<()> {
        self.run(Op::CheckContainer, "", self.inner.check_container())
            .await
    }

    async fn create_container(&self) -> Result<()> {
        self.run(Op::CreateContainer, "", self.inner.create_container())
            .await
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        let mut actions = self.actions(Op::Get, name);
        let later = std::mem::take(&mut actions.etag_after);
        let call = self.inner.get(name, range, if_none_match);
        let answer = self.run_actions(Op::Get, name, actions, call).await;
        let Ok(GetResult::Found { mut props, data }) = answer else {
            return answer;
        };
        if !later.is_empty() && !data.is_empty() {
            for hook in later {
                hook().await;
            }
            props.etag = self.inner.head(name).await?.etag;
        }
        Ok(GetResult::Found { props, data })
    }

    async fn head(&self, name: &str) -> Result<BlobProps> {
        self.run(Op::Head, name, self.inner.head(name)).await
    }

    async fn put(&self, name: &str, data: Bytes, opts: &PutOptions) -> Result<String> {
        self.run(Op::Put, name, self.inner.put(name, data, opts))
            .await
    }

    async fn put_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        lease_id: Option<&str>,
    ) -> Result<()> {
        let call = self.inner.put_block(name, block_id, data, lease_id);
        self.run(Op::PutBlock, name, call).await
    }

    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        opts: &PutOptions,
    ) -> Result<String> {
        let call = self.inner.commit_blocks(name, block_ids, opts);
        self.run(Op::CommitBlocks, name, call).await
    }

    async fn delete(&self, name: &str, conditions: &Conditions) -> Result<()> {
        self.run(Op::Delete, name, self.inner.delete(name, conditions))
            .await
    }

    async fn create_append(&self, name: &str, opts: &PutOptions) -> Result<String> {
        let call = self.inner.create_append(name, opts);
        self.run(Op::CreateAppend, name, call).await
    }

    async fn append(&self, name: &str, data: Bytes, at: u64) -> Result<u64> {
        self.run(Op::Append, name, self.inner.append(name, data, at))
            .await
    }

    async fn list(&self, prefix: &str, marker: Option<String>) -> Result<ListPage> {
        self.run(Op::List, prefix, self.inner.list(prefix, marker))
            .await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        conditions: &Conditions,
    ) -> Result<String> {
        let call = self.inner.set_metadata(name, metadata, conditions);
        self.run(Op::SetMetadata, name, call).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        let call = self.inner.acquire_lease(name, duration, proposed_id);
        self.run(Op::AcquireLease, name, call).await
    }

    async fn renew_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.run(Op::RenewLease, name, self.inner.renew_lease(name, lease_id))
            .await
    }

    async fn release_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        let call = self.inner.release_lease(name, lease_id);
        self.run(Op::ReleaseLease, name, call).await
    }

    async fn break_lease(&self, name: &str) -> Result<()> {
        self.run(Op::BreakLease, name, self.inner.break_lease(name))
            .await
    }
}
