//! The fault-injecting store wrapper: each fault it offers does what it says, on the calls its
//! plan selects, and nothing else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use remotedict::store::retry::{with_backoff, Backoff};
use remotedict::store::testing::{Fault, FaultStore, MemStore, Op, When};
use remotedict::store::{
    BlobStore, Conditions, GetResult, LeaseDuration, LeaseState, PutOptions, StoreError,
};

fn faulty() -> (Arc<MemStore>, Arc<FaultStore>) {
    let mem = Arc::new(MemStore::new());
    let fault = Arc::new(FaultStore::new(mem.clone()));
    (mem, fault)
}

fn data(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

async fn content(store: &dyn BlobStore, name: &str) -> Option<Bytes> {
    match store.get(name, None, None).await {
        Ok(GetResult::Found { data, .. }) => Some(data),
        Ok(GetResult::NotModified) => panic!("unconditional get answered NotModified"),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => panic!("get {name}: {e}"),
    }
}

fn is_transient<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(e) if e.is_transient())
}

#[tokio::test]
async fn a_lost_answer_leaves_the_put_applied() {
    let (mem, store) = faulty();
    store.plan(Op::Put, When::Nth(1), Fault::LoseAnswer);
    let r = store.put("b", data("one"), &PutOptions::default()).await;
    assert!(is_transient(&r), "the caller sees a transient error: {r:?}");
    assert_eq!(
        content(mem.as_ref(), "b").await.as_deref(),
        Some(&b"one"[..])
    );
    // The rule was for the first call only.
    store
        .put("b", data("two"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        content(mem.as_ref(), "b").await.as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(store.calls(Op::Put), 2);
}

#[tokio::test]
async fn a_retried_commit_whose_answer_was_lost_meets_its_own_success() {
    let (mem, store) = faulty();
    let ids = vec![remotedict::store::BlockIds::new().id(0)];
    store
        .put_block("v", &ids[0], data("value"), None)
        .await
        .unwrap();
    store.plan(Op::CommitBlocks, When::Nth(1), Fault::LoseAnswer);
    let opts = PutOptions {
        conditions: Conditions::if_absent(),
        ..Default::default()
    };
    let backoff = Backoff {
        max_retries: 3,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let r = with_backoff("commit", backoff, || store.commit_blocks("v", &ids, &opts)).await;
    // The retry finds the blob its first attempt wrote: the condition no longer holds.
    assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    assert_eq!(store.calls(Op::CommitBlocks), 2);
    assert_eq!(
        content(mem.as_ref(), "v").await.as_deref(),
        Some(&b"value"[..])
    );
}

#[tokio::test]
async fn failing_before_sending_writes_nothing() {
    let (mem, store) = faulty();
    store.plan(Op::Put, When::Always, Fault::Timeout);
    store.plan(Op::Delete, When::Always, Fault::ConnectionReset);
    let r = store.put("b", data("x"), &PutOptions::default()).await;
    assert!(
        matches!(&r, Err(StoreError::Transient { message, .. }) if message.contains("timed out")),
        "{r:?}"
    );
    assert!(content(mem.as_ref(), "b").await.is_none());
    mem.put("b", data("x"), &PutOptions::default())
        .await
        .unwrap();
    let r = store.delete("b", &Conditions::default()).await;
    assert!(
        matches!(&r, Err(StoreError::Transient { message, .. }) if message.contains("reset")),
        "{r:?}"
    );
    assert!(content(mem.as_ref(), "b").await.is_some(), "not deleted");
}

#[tokio::test]
async fn chosen_errors_and_statuses_are_answered_without_calling_the_store() {
    let (mem, store) = faulty();
    store.plan(Op::Put, When::Nth(1), Fault::Status(412));
    store.plan(Op::Put, When::Nth(2), Fault::Status(409));
    store.plan(Op::Put, When::Nth(3), Fault::Status(503));
    store.plan(
        Op::Put,
        When::Nth(4),
        Fault::Fail(StoreError::NoSpace("full".into())),
    );
    let opts = PutOptions::default();
    let put = || store.put("b", data("x"), &opts);
    assert!(matches!(put().await, Err(StoreError::PreconditionFailed(n)) if n == "b"));
    assert!(matches!(put().await, Err(StoreError::LeaseConflict(n)) if n == "b"));
    assert!(is_transient(&put().await));
    assert!(matches!(put().await, Err(StoreError::NoSpace(_))));
    assert!(content(mem.as_ref(), "b").await.is_none());
    put().await.unwrap();
    assert_eq!(store.calls(Op::Put), 5);
}

#[tokio::test]
async fn nth_and_from_count_calls_per_op() {
    let (_mem, store) = faulty();
    store
        .put("b", data("x"), &PutOptions::default())
        .await
        .unwrap();
    store.plan(Op::Head, When::Nth(2), Fault::Timeout);
    store.plan(Op::Get, When::From(3), Fault::Timeout);
    let heads: Vec<bool> = futures_results(3, || store.head("b")).await;
    assert_eq!(heads, [true, false, true]);
    let gets: Vec<bool> = futures_results(4, || store.get("b", None, None)).await;
    assert_eq!(gets, [true, true, false, false]);
    assert_eq!((store.calls(Op::Head), store.calls(Op::Get)), (3, 4));
    assert_eq!(store.calls(Op::Put), 1);
    assert_eq!(store.calls(Op::Delete), 0);
    store.reset_calls();
    assert_eq!(store.calls(Op::Get), 0);
    // Counting starts again: the third get from here fails, not the first.
    let gets: Vec<bool> = futures_results(3, || store.get("b", None, None)).await;
    assert_eq!(gets, [true, true, false]);
}

/// Whether each of `n` calls in a row succeeded.
async fn futures_results<T, F, Fut>(n: usize, mut f: F) -> Vec<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(f().await.is_ok());
    }
    out
}

#[tokio::test]
async fn rules_select_calls_by_blob_name() {
    let (mem, store) = faulty();
    store.plan(Op::Put, When::Prefix("idx/".into()), Fault::Status(412));
    store.plan(Op::Put, When::NthWithPrefix("v/".into(), 2), Fault::Timeout);
    store.plan(
        Op::Delete,
        When::matching(|name| name.ends_with(".tmp")),
        Fault::Timeout,
    );
    let opts = PutOptions::default();
    assert!(store.put("idx/main", data("i"), &opts).await.is_err());
    assert!(store.put("idx/other", data("i"), &opts).await.is_err());
    store.put("other", data("o"), &opts).await.unwrap();
    store.put("v/1", data("1"), &opts).await.unwrap();
    store.put("w", data("w"), &opts).await.unwrap();
    assert!(is_transient(&store.put("v/2", data("2"), &opts).await));
    store.put("v/3", data("3"), &opts).await.unwrap();
    assert_eq!(mem.names(), ["other", "v/1", "v/3", "w"]);
    store.put("a.tmp", data("t"), &opts).await.unwrap();
    assert!(store.delete("a.tmp", &Conditions::default()).await.is_err());
    store.delete("w", &Conditions::default()).await.unwrap();
    assert_eq!(mem.names(), ["a.tmp", "other", "v/1", "v/3"]);
}

#[tokio::test]
async fn delays_hold_the_call_back_before_or_after_the_store_acts() {
    let (mem, store) = faulty();
    let delay = Duration::from_millis(400);
    store.plan(Op::Put, When::Nth(1), Fault::DelayBefore(delay));
    store.plan(Op::Put, When::Nth(2), Fault::DelayAfter(delay));

    let started = Instant::now();
    let s = store.clone();
    let first =
        tokio::spawn(async move { s.put("before", data("1"), &PutOptions::default()).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        content(mem.as_ref(), "before").await.is_none(),
        "not sent yet"
    );
    first.await.unwrap().unwrap();
    assert!(started.elapsed() >= delay);
    assert!(content(mem.as_ref(), "before").await.is_some());

    let started = Instant::now();
    let s = store.clone();
    let second =
        tokio::spawn(async move { s.put("after", data("2"), &PutOptions::default()).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        content(mem.as_ref(), "after").await.is_some(),
        "applied before the answer came back"
    );
    if started.elapsed() < delay - Duration::from_millis(50) {
        assert!(!second.is_finished(), "the answer is still held back");
    }
    second.await.unwrap().unwrap();
    assert!(started.elapsed() >= delay);

    // Without a rule, no delay.
    let started = Instant::now();
    store
        .put("now", data("3"), &PutOptions::default())
        .await
        .unwrap();
    assert!(started.elapsed() < delay);
}

#[tokio::test]
async fn a_hook_runs_once_before_its_call() {
    let (mem, store) = faulty();
    let runs = Arc::new(AtomicUsize::new(0));
    let (other_host, counter) = (mem.clone(), runs.clone());
    // Another host creates the blob between this host's check and its write.
    store.plan(
        Op::Put,
        When::Always,
        Fault::hook(move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            other_host
                .put("b", data("theirs"), &PutOptions::default())
                .await
                .unwrap();
        }),
    );
    assert!(matches!(
        store.head("b").await,
        Err(StoreError::NotFound(_))
    ));
    let opts = PutOptions {
        conditions: Conditions::if_absent(),
        ..Default::default()
    };
    let r = store.put("b", data("mine"), &opts).await;
    assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    assert_eq!(
        content(mem.as_ref(), "b").await.as_deref(),
        Some(&b"theirs"[..])
    );
    store
        .put("b", data("mine"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one-shot");
    assert_eq!(
        content(mem.as_ref(), "b").await.as_deref(),
        Some(&b"mine"[..])
    );
}

#[tokio::test]
async fn plans_change_while_running() {
    let (_mem, store) = faulty();
    store.plan(Op::Put, When::Always, Fault::Timeout);
    assert!(store
        .put("b", data("x"), &PutOptions::default())
        .await
        .is_err());
    store.clear();
    store
        .put("b", data("x"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(store.calls(Op::Put), 2, "clear keeps the counts");
    store.plan(Op::Head, When::Always, Fault::Status(404)).plan(
        Op::List,
        When::Always,
        Fault::Status(500),
    );
    assert!(matches!(
        store.head("b").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(is_transient(&store.list("", None).await));
}

#[tokio::test]
async fn faults_combine_and_reach_lease_operations() {
    let (mem, store) = faulty();
    mem.put("l", data("x"), &PutOptions::default())
        .await
        .unwrap();
    // A lost acquire answer: the lease is held, though the caller does not know its id.
    store.plan(Op::AcquireLease, When::Nth(1), Fault::LoseAnswer);
    let r = store
        .acquire_lease("l", LeaseDuration::Seconds(15), None)
        .await;
    assert!(is_transient(&r), "{r:?}");
    assert_eq!(mem.head("l").await.unwrap().lease_state, LeaseState::Leased);
    // A delay then a failure: the store is not called, after the wait.
    store.plan(
        Op::BreakLease,
        When::Nth(1),
        Fault::DelayBefore(Duration::from_millis(100)),
    );
    store.plan(Op::BreakLease, When::Nth(1), Fault::Timeout);
    let started = Instant::now();
    assert!(is_transient(&store.break_lease("l").await));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(mem.head("l").await.unwrap().lease_state, LeaseState::Leased);
    store.break_lease("l").await.unwrap();
    assert_eq!(mem.head("l").await.unwrap().lease_state, LeaseState::Broken);
    assert_eq!(store.calls(Op::BreakLease), 2);
    assert_eq!(store.describe(), mem.describe());
}

/// An append whose answer was lost after it landed: the retry is refused (the log grew), and
/// the retrying store reads the bytes back at the position, finds its own, and reports the
/// success it was (not a conflict the caller would redo, appending the batch twice).
#[tokio::test]
async fn a_retried_append_recognises_its_own_earlier_success() {
    use remotedict::store::retry::Backoff;
    use remotedict::store::retrying::RetryingStore;
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let backoff = Backoff {
        max_retries: 3,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    let store = RetryingStore::new(faults.clone(), backoff);
    store
        .create_append("log", &PutOptions::default())
        .await
        .unwrap();
    faults.plan(Op::Append, When::Nth(1), Fault::LoseAnswer);
    let len = store
        .append("log", Bytes::from_static(b"batch-1;"), 0)
        .await
        .expect("the lost answer's append is recognised");
    assert_eq!(len, 8);
    assert!(faults.calls(Op::Append) >= 2, "the append was retried");
    // Someone else's bytes at that position are not mistaken for ours.
    faults.plan(
        Op::Append,
        When::Nth(faults.calls(Op::Append) + 1),
        Fault::ConnectionReset,
    );
    mem.append("log", Bytes::from_static(b"other-1;"), 8)
        .await
        .unwrap();
    let r = store
        .append("log", Bytes::from_static(b"batch-2;"), 8)
        .await;
    assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    match mem.get("log", None, None).await.unwrap() {
        GetResult::Found { data, .. } => assert_eq!(&data[..], b"batch-1;other-1;"),
        GetResult::NotModified => unreachable!(),
    }
}
