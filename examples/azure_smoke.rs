//! Throwaway check of the Azure backend against Azurite on 127.0.0.1:10999.
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use remotedict::store::azure::{AzureOptions, AzureStore};
use remotedict::store::retry::with_retry;
use remotedict::store::*;

const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const EP: &str = "http://127.0.0.1:10999/devstoreaccount1";

fn conn() -> String {
    format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint={EP};")
}

macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if $cond { println!("ok   {}", format!($($arg)*)); } else { println!("FAIL {}", format!($($arg)*)); }
    };
}

fn data(r: &Result<GetResult>) -> Option<Vec<u8>> {
    match r {
        Ok(GetResult::Found { data, .. }) => Some(data.to_vec()),
        _ => None,
    }
}

#[tokio::main]
async fn main() {
    env_logger::init();
    let container = format!("smoke{}", std::process::id());
    let s = AzureStore::from_connection_string(&conn(), &container, AzureOptions::default())
        .expect("store");
    println!("describe: {} {:?}", s.describe(), s);

    // containers
    let r = s.check_container().await;
    check!(
        matches!(r, Err(StoreError::ContainerNotFound(_))),
        "check missing container -> {r:?}"
    );
    let r = s
        .put("x", Bytes::from_static(b"x"), &PutOptions::default())
        .await;
    check!(
        matches!(r, Err(StoreError::ContainerNotFound(_))),
        "put into missing container -> {r:?}"
    );
    let r = s.list("", None).await;
    check!(
        matches!(r, Err(StoreError::ContainerNotFound(_))),
        "list missing container -> {r:?}"
    );
    check!(s.create_container().await.is_ok(), "create container");
    let r = s.create_container().await;
    check!(r.is_ok(), "create container again -> {r:?}");
    check!(s.check_container().await.is_ok(), "check container");

    // put / get
    let mut meta = Metadata::new();
    meta.insert("rawsize".into(), "42".into());
    let etag = s
        .put(
            "a/b",
            Bytes::from_static(b"hello world"),
            &PutOptions {
                metadata: meta.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("put");
    println!("etag from put: {etag}");
    let r = s.get("a/b", None, None).await;
    check!(
        data(&r).as_deref() == Some(&b"hello world"[..]),
        "get whole"
    );
    if let Ok(GetResult::Found { props, .. }) = &r {
        check!(
            props.etag == etag && props.size == 11 && props.metadata == meta,
            "get props {props:?}"
        );
    }
    let r = s.get("a/b", Some(2..5), None).await;
    check!(data(&r).as_deref() == Some(&b"llo"[..]), "get range 2..5");
    if let Ok(GetResult::Found { props, .. }) = &r {
        check!(
            props.size == 11,
            "ranged get reports full size {}",
            props.size
        );
    }
    let r = s.get("a/b", Some(6..100), None).await;
    check!(
        data(&r).as_deref() == Some(&b"world"[..]),
        "get range clamped at end"
    );
    let r = s.get("a/b", Some(11..20), None).await;
    check!(
        data(&r).as_deref() == Some(&b""[..]),
        "get range at end -> {:?}",
        data(&r)
    );
    let r = s.get("a/b", Some(50..60), None).await;
    check!(
        data(&r).as_deref() == Some(&b""[..]),
        "get range past end -> {:?}",
        data(&r)
    );
    let r = s.get("a/b", Some(3..3), None).await;
    check!(data(&r).as_deref() == Some(&b""[..]), "get empty range");
    let r = s.get("a/b", None, Some(&etag)).await;
    check!(
        matches!(r, Ok(GetResult::NotModified)),
        "conditional get same etag -> 304 NotModified"
    );
    let r = s.get("a/b", Some(0..4), Some(&etag)).await;
    check!(
        matches!(r, Ok(GetResult::NotModified)),
        "conditional ranged get same etag -> NotModified"
    );
    let r = s.get("a/b", None, Some("\"0x1234\"")).await;
    check!(data(&r).is_some(), "conditional get other etag -> data");
    let h = s.head("a/b").await;
    check!(
        h.as_ref()
            .map(|p| p.etag == etag && p.size == 11)
            .unwrap_or(false),
        "head {h:?}"
    );
    let r = s.get("nope", None, None).await;
    check!(
        matches!(r, Err(StoreError::NotFound(_))),
        "get missing -> {r:?}"
    );
    let r = s.head("nope").await;
    check!(
        matches!(r, Err(StoreError::NotFound(_))),
        "head missing -> {r:?}"
    );

    // empty blob
    s.put("empty", Bytes::new(), &PutOptions::default())
        .await
        .expect("put empty");
    let r = s.get("empty", None, None).await;
    check!(
        data(&r).as_deref() == Some(&b""[..]),
        "get empty blob -> {r:?}"
    );
    let r = s.get("empty", Some(0..10), None).await;
    check!(
        data(&r).as_deref() == Some(&b""[..]),
        "ranged get of empty blob"
    );

    // conditional writes
    let r = s
        .put(
            "a/b",
            Bytes::from_static(b"x"),
            &PutOptions {
                conditions: Conditions::if_match("\"0x8DEADBEEF\""),
                ..Default::default()
            },
        )
        .await;
    check!(
        matches!(r, Err(StoreError::PreconditionFailed(_))),
        "put If-Match wrong etag -> {r:?}"
    );
    let r = s
        .put(
            "a/b",
            Bytes::from_static(b"x"),
            &PutOptions {
                conditions: Conditions::if_absent(),
                ..Default::default()
            },
        )
        .await;
    check!(
        matches!(r, Err(StoreError::PreconditionFailed(_))),
        "put If-None-Match * on existing -> {r:?}"
    );
    let r = s
        .put(
            "new1",
            Bytes::from_static(b"x"),
            &PutOptions {
                conditions: Conditions::if_absent(),
                ..Default::default()
            },
        )
        .await;
    check!(r.is_ok(), "put If-None-Match * on absent -> {r:?}");
    let r = s
        .put(
            "nope2",
            Bytes::from_static(b"x"),
            &PutOptions {
                conditions: Conditions::if_match(etag.clone()),
                ..Default::default()
            },
        )
        .await;
    check!(
        matches!(
            r,
            Err(StoreError::PreconditionFailed(_)) | Err(StoreError::NotFound(_))
        ),
        "put If-Match on absent -> {r:?}"
    );
    let etag2 = s
        .put(
            "a/b",
            Bytes::from_static(b"hello again"),
            &PutOptions {
                conditions: Conditions::if_match(etag.clone()),
                ..Default::default()
            },
        )
        .await;
    check!(etag2.is_ok(), "put If-Match right etag -> {etag2:?}");
    let etag2 = etag2.unwrap_or_default();
    let r = s.get("a/b", None, Some(&etag)).await;
    check!(
        data(&r).as_deref() == Some(&b"hello again"[..]),
        "conditional get after change -> new data"
    );
    // unquoted etag accepted too
    let r = s.get("a/b", None, Some(etag2.trim_matches('"'))).await;
    check!(
        matches!(r, Ok(GetResult::NotModified)),
        "conditional get with unquoted etag -> {:?}",
        r.as_ref().map(|_| ())
    );

    // set_metadata
    let mut m2 = Metadata::new();
    m2.insert("k".into(), "v".into());
    let r = s
        .set_metadata("a/b", &m2, &Conditions::if_match(etag.clone()))
        .await;
    check!(
        matches!(r, Err(StoreError::PreconditionFailed(_))),
        "set_metadata wrong etag -> {r:?}"
    );
    let r = s
        .set_metadata("a/b", &m2, &Conditions::if_match(etag2.clone()))
        .await;
    check!(r.is_ok(), "set_metadata right etag -> {r:?}");
    let h = s.head("a/b").await.expect("head");
    check!(
        h.metadata == m2 && Some(&h.etag) == r.as_ref().ok(),
        "metadata replaced, etag matches {h:?}"
    );
    let r = s.set_metadata("nope", &m2, &Conditions::default()).await;
    check!(
        matches!(r, Err(StoreError::NotFound(_))),
        "set_metadata missing -> {r:?}"
    );

    // leases
    let lid = s
        .acquire_lease("a/b", LeaseDuration::Seconds(15), None)
        .await;
    check!(lid.is_ok(), "acquire lease -> {lid:?}");
    let lid = lid.unwrap_or_default();
    let h = s.head("a/b").await.expect("head");
    check!(
        h.lease_state == LeaseState::Leased && !h.lease_infinite,
        "head shows leased, finite: {:?} {}",
        h.lease_state,
        h.lease_infinite
    );
    let r = s
        .put("a/b", Bytes::from_static(b"z"), &PutOptions::default())
        .await;
    check!(
        matches!(r, Err(StoreError::LeaseConflict(_))),
        "put without lease id on leased -> {r:?}"
    );
    let other = uuid::Uuid::new_v4().to_string();
    let r = s
        .put(
            "a/b",
            Bytes::from_static(b"z"),
            &PutOptions {
                conditions: Conditions::default().with_lease(Some(other.clone())),
                ..Default::default()
            },
        )
        .await;
    check!(
        matches!(r, Err(StoreError::LeaseConflict(_))),
        "put with wrong lease id -> {r:?}"
    );
    let r = s.delete("a/b", &Conditions::default()).await;
    check!(
        matches!(r, Err(StoreError::LeaseConflict(_))),
        "delete without lease on leased -> {r:?}"
    );
    let r = s.set_metadata("a/b", &m2, &Conditions::default()).await;
    check!(
        matches!(r, Err(StoreError::LeaseConflict(_))),
        "set_metadata without lease on leased -> {r:?}"
    );
    let r = s
        .put(
            "a/b",
            Bytes::from_static(b"leased write"),
            &PutOptions {
                conditions: Conditions::default().with_lease(Some(lid.clone())),
                ..Default::default()
            },
        )
        .await;
    check!(r.is_ok(), "put with right lease id -> {r:?}");
    let r = s.get("a/b", None, None).await;
    check!(
        data(&r).as_deref() == Some(&b"leased write"[..]),
        "read while leased"
    );
    let r = s
        .acquire_lease("a/b", LeaseDuration::Seconds(15), Some(&other))
        .await;
    check!(
        matches!(r, Err(StoreError::LeaseConflict(_))),
        "acquire by other -> {r:?}"
    );
    let r = s
        .acquire_lease("a/b", LeaseDuration::Seconds(15), None)
        .await;
    check!(
        matches!(r, Err(StoreError::LeaseConflict(_))),
        "acquire by other (no proposal) -> {r:?}"
    );
    let r = s
        .acquire_lease("a/b", LeaseDuration::Seconds(15), Some(&lid))
        .await;
    check!(
        r.as_deref().ok() == Some(lid.as_str()),
        "re-acquire with same id -> {r:?}"
    );
    check!(s.renew_lease("a/b", &lid).await.is_ok(), "renew");
    let r = s.renew_lease("a/b", &other).await;
    check!(
        matches!(r, Err(StoreError::LeaseLost(_))),
        "renew wrong id -> {r:?}"
    );
    let r = s.release_lease("a/b", &other).await;
    check!(
        matches!(r, Err(StoreError::LeaseLost(_))),
        "release wrong id -> {r:?}"
    );
    check!(s.release_lease("a/b", &lid).await.is_ok(), "release");
    let r = s.renew_lease("a/b", &lid).await;
    println!("info renew after release -> {r:?}");
    let r = s
        .put(
            "a/b",
            Bytes::from_static(b"q"),
            &PutOptions {
                conditions: Conditions::default().with_lease(Some(lid.clone())),
                ..Default::default()
            },
        )
        .await;
    check!(
        matches!(r, Err(StoreError::LeaseLost(_))),
        "put with lease id on unleased blob -> {r:?}"
    );
    let r = s.break_lease("a/b").await;
    check!(r.is_ok(), "break with no lease -> {r:?}");
    let mine = uuid::Uuid::new_v4().to_string();
    let r = s
        .acquire_lease("a/b", LeaseDuration::Infinite, Some(&mine))
        .await;
    check!(
        r.as_deref().ok() == Some(mine.as_str()),
        "acquire infinite with proposed id -> {r:?}"
    );
    let h = s.head("a/b").await.expect("head");
    check!(
        h.lease_state == LeaseState::Leased && h.lease_infinite,
        "head shows infinite lease"
    );
    let l = s.list("a/", None).await.expect("list");
    check!(
        l.items
            .first()
            .map(|p| p.lease_infinite && p.lease_state == LeaseState::Leased)
            .unwrap_or(false),
        "list shows infinite lease"
    );
    check!(s.break_lease("a/b").await.is_ok(), "break lease");
    let h = s.head("a/b").await.expect("head");
    println!("info lease state after break: {:?}", h.lease_state);
    let r = s.renew_lease("a/b", &mine).await;
    check!(
        matches!(r, Err(StoreError::LeaseLost(_))),
        "renew after break -> {r:?}"
    );
    let r = s
        .put(
            "a/b",
            Bytes::from_static(b"q"),
            &PutOptions {
                conditions: Conditions::default().with_lease(Some(mine.clone())),
                ..Default::default()
            },
        )
        .await;
    println!("info put with broken lease id -> {r:?}");
    let r = s
        .acquire_lease("a/b", LeaseDuration::Seconds(15), Some(&other))
        .await;
    check!(r.is_ok(), "acquire after break -> {r:?}");
    let r = s.break_lease("a/b").await;
    check!(r.is_ok(), "break again -> {r:?}");
    let r = s.break_lease("a/b").await;
    check!(r.is_ok(), "break broken lease -> {r:?}");
    let r = s
        .acquire_lease("nope", LeaseDuration::Seconds(15), None)
        .await;
    check!(
        matches!(r, Err(StoreError::NotFound(_))),
        "acquire on missing -> {r:?}"
    );
    let r = s
        .acquire_lease("a/b", LeaseDuration::Seconds(15), Some("not-a-uuid"))
        .await;
    check!(
        matches!(r, Err(StoreError::Other(_))),
        "bad lease id -> {r:?}"
    );

    // blocks
    let ids: Vec<String> = (0..3).map(block_id).collect();
    for (i, id) in ids.iter().enumerate() {
        let r = s
            .put_block(
                "big/blocks",
                id,
                Bytes::from(vec![b'a' + i as u8; 1000]),
                None,
            )
            .await;
        check!(r.is_ok(), "put_block {id} -> {r:?}");
    }
    let mut bm = Metadata::new();
    bm.insert("x".into(), "1".into());
    let r = s
        .commit_blocks(
            "big/blocks",
            &ids,
            &PutOptions {
                conditions: Conditions::if_absent(),
                metadata: bm.clone(),
            },
        )
        .await;
    check!(r.is_ok(), "commit blocks -> {r:?}");
    let cetag = r.unwrap_or_default();
    let r = s.get("big/blocks", None, None).await;
    let d = data(&r).unwrap_or_default();
    check!(
        d.len() == 3000 && d[0] == b'a' && d[1500] == b'b' && d[2999] == b'c',
        "block blob content"
    );
    if let Ok(GetResult::Found { props, .. }) = &r {
        check!(
            props.etag == cetag && props.metadata == bm,
            "block blob props"
        );
    }
    let r = s
        .commit_blocks(
            "big/blocks",
            &ids,
            &PutOptions {
                conditions: Conditions::if_absent(),
                metadata: bm.clone(),
            },
        )
        .await;
    check!(
        matches!(r, Err(StoreError::PreconditionFailed(_))),
        "commit if_absent on existing -> {r:?}"
    );
    let r = s
        .commit_blocks(
            "big/blocks2",
            &["0000000009".to_string()],
            &PutOptions::default(),
        )
        .await;
    println!("info commit of unstaged block -> {r:?}");

    // large blob: multi-chunk reads
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let bigb = Bytes::from(big.clone());
    let chunk = 4 * 1024 * 1024;
    let ids: Vec<String> = (0..big.len().div_ceil(chunk)).map(block_id).collect();
    for (i, id) in ids.iter().enumerate() {
        let part = bigb.slice(i * chunk..((i + 1) * chunk).min(big.len()));
        s.put_block("big/large", id, part, None)
            .await
            .expect("put block");
    }
    s.commit_blocks("big/large", &ids, &PutOptions::default())
        .await
        .expect("commit");
    let t = std::time::Instant::now();
    let r = s.get("big/large", None, None).await;
    check!(
        data(&r).as_deref() == Some(&big[..]),
        "20 MB multi-chunk read ({:?})",
        t.elapsed()
    );
    let r = s.get("big/large", Some(8_000_000..17_000_000), None).await;
    check!(
        data(&r).as_deref() == Some(&big[8_000_000..17_000_000]),
        "9 MB ranged read across chunks"
    );
    if let Ok(GetResult::Found { props, .. }) = &r {
        check!(props.size == 20_000_000, "ranged read size {}", props.size);
    }

    // names
    let names = [
        "dir/with space/file",
        "hash#name",
        "pct%20name%",
        "q?mark&x=1+plus",
        "ünïcødé/日本語/😀",
        "semi;colon,comma'quote\"dq",
        "brackets[]{}<>|^`~!@$()*",
    ];
    for n in names {
        let r = s
            .put(
                n,
                Bytes::from(n.as_bytes().to_vec()),
                &PutOptions::default(),
            )
            .await;
        check!(r.is_ok(), "put name {n:?} -> {r:?}");
        let r = s.get(n, None, None).await;
        check!(data(&r).as_deref() == Some(n.as_bytes()), "get name {n:?}");
        let l = s.list(n, None).await;
        let listed: Vec<String> = l
            .map(|l| l.items.into_iter().map(|p| p.name).collect())
            .unwrap_or_default();
        check!(
            listed == vec![n.to_string()],
            "list name {n:?} -> {listed:?}"
        );
        let r = s.delete(n, &Conditions::default()).await;
        check!(r.is_ok(), "delete name {n:?} -> {r:?}");
    }
    for bad in ["/lead", "trail/", "a//b", "a/../b", "dot.", "back\\slash"] {
        let r = s.put(bad, Bytes::new(), &PutOptions::default()).await;
        check!(
            matches!(r, Err(StoreError::InvalidName { .. })),
            "invalid name {bad:?} -> {r:?}"
        );
    }

    // list
    let l = s.list("", None).await.expect("list");
    let names: Vec<&str> = l.items.iter().map(|p| p.name.as_str()).collect();
    println!("info list all: {names:?}");
    let l = s.list("a/", None).await.expect("list");
    check!(l.items.len() == 1 && l.next.is_none(), "list prefix a/");
    let h = s.head("a/b").await.expect("head");
    check!(
        l.items[0].etag == h.etag && l.items[0].metadata == h.metadata && l.items[0].size == h.size,
        "listed props equal head props: {:?} vs {:?}",
        l.items[0],
        h
    );
    let l = s.list("big/", None).await.expect("list");
    check!(
        l.items
            .iter()
            .any(|p| p.name == "big/blocks" && p.metadata == bm),
        "list shows metadata of block blob"
    );
    let l = s.list("zzz", None).await.expect("list");
    check!(l.items.is_empty() && l.next.is_none(), "list empty prefix");

    // paging: 5003 blobs
    let t = std::time::Instant::now();
    let puts = futures::stream::iter(0..5003)
        .map(|i| {
            let s = &s;
            async move {
                s.put(
                    &format!("page/{i:05}"),
                    Bytes::from_static(b"p"),
                    &PutOptions::default(),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    check!(
        puts.iter().all(|r| r.is_ok()),
        "5003 puts ({:?})",
        t.elapsed()
    );
    let p1 = s.list("page/", None).await.expect("list page 1");
    check!(
        p1.items.len() == 5000 && p1.next.is_some(),
        "page 1: {} items, next {:?}",
        p1.items.len(),
        p1.next
    );
    let p2 = s.list("page/", p1.next.clone()).await.expect("list page 2");
    check!(
        p2.items.len() == 3 && p2.next.is_none(),
        "page 2: {} items, next {:?}",
        p2.items.len(),
        p2.next
    );
    let all = list_all(&s, "page/").await.expect("list_all");
    check!(all.len() == 5003, "list_all {}", all.len());

    // delete
    let r = s.delete("a/b", &Conditions::if_match(etag.clone())).await;
    check!(
        matches!(r, Err(StoreError::PreconditionFailed(_))),
        "delete wrong etag -> {r:?}"
    );
    let h = s.head("a/b").await.expect("head");
    let r = s.delete("a/b", &Conditions::if_match(h.etag.clone())).await;
    check!(r.is_ok(), "delete right etag -> {r:?}");
    let r = s.get("a/b", None, None).await;
    check!(
        matches!(r, Err(StoreError::NotFound(_))),
        "get deleted -> {r:?}"
    );
    let r = s.delete("a/b", &Conditions::default()).await;
    check!(
        matches!(r, Err(StoreError::NotFound(_))),
        "delete deleted -> {r:?}"
    );

    // SAS with all resource types (service+container+object) via the raw builder
    {
        let sas_token = make_full_sas().await;
        let c = format!("BlobEndpoint={EP};SharedAccessSignature={sas_token}");
        let ss = AzureStore::from_connection_string(&c, &container, AzureOptions::default())
            .expect("sas store");
        let r = ss.check_container().await;
        check!(r.is_ok(), "sas check_container -> {r:?}");
        let r = ss
            .put(
                "sas/blob",
                Bytes::from_static(b"via sas"),
                &PutOptions::default(),
            )
            .await;
        check!(r.is_ok(), "sas put -> {r:?}");
        let r = ss.get("sas/blob", None, None).await;
        check!(data(&r).as_deref() == Some(&b"via sas"[..]), "sas get");
        let l = ss.list("sas/", None).await;
        check!(l.map(|l| l.items.len() == 1).unwrap_or(false), "sas list");
        // a SAS with a broken signature
        let broken = sas_token.replace("sig=", "sig=AAAA");
        let c = format!("BlobEndpoint={EP};SharedAccessSignature={broken}");
        let ss = AzureStore::from_connection_string(&c, &container, AzureOptions::default())
            .expect("sas store");
        let r = ss.get("sas/blob", None, None).await;
        let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        check!(
            matches!(r, Err(StoreError::Auth(_))) && !msg.contains("sig="),
            "broken sas -> Auth: {msg}"
        );
    }

    // wrong key -> Auth, without the key
    let wrong =
        "AAAAvdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let c = format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong};BlobEndpoint={EP};");
    let bad =
        AzureStore::from_connection_string(&c, &container, AzureOptions::default()).expect("store");
    let r = bad.get("big/blocks", None, None).await;
    let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    check!(
        matches!(r, Err(StoreError::Auth(_))) && !msg.contains("AAAAvdM0"),
        "wrong key -> {msg}"
    );
    let r = bad.check_container().await;
    check!(
        matches!(r, Err(StoreError::Auth(_))),
        "wrong key check_container -> {r:?}"
    );

    // garbled connection strings
    for g in [
        format!("AccountName=devstoreaccount1;AccountKey={KEY};Oops"),
        format!("AccountName=devstoreaccount1;{KEY}"),
        format!("AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=::not a url"),
        format!("AccountName=devstoreaccount1;AccountKey=notbase64!!!;BlobEndpoint={EP}"),
        format!("AccountKey={KEY};BlobEndpoint={EP}"),
        format!("BlobEndpoint={EP}?sv=1&sig={KEY}"),
        "".to_string(),
        "garbage".to_string(),
    ] {
        let r = AzureStore::from_connection_string(&g, &container, AzureOptions::default());
        let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        check!(
            r.is_err() && !msg.contains("Eby8") && !msg.contains("notbase64"),
            "garbled -> {msg}"
        );
    }

    // unreachable endpoint -> Transient after retries, no key in message
    let c = format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;");
    let dead = AzureStore::from_connection_string(
        &c,
        &container,
        AzureOptions {
            request_timeout: Duration::from_secs(2),
            max_retries: 2,
        },
    )
    .expect("store");
    let t = std::time::Instant::now();
    let r = dead.get("x", None, None).await;
    let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    check!(
        matches!(r, Err(StoreError::Transient { .. })) && !msg.contains("Eby8"),
        "unreachable -> {msg} ({:?})",
        t.elapsed()
    );
    let sas_token = make_full_sas().await;
    let c = format!(
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;SharedAccessSignature={sas_token}"
    );
    let dead = AzureStore::from_connection_string(
        &c,
        &container,
        AzureOptions {
            request_timeout: Duration::from_secs(2),
            max_retries: 0,
        },
    )
    .expect("store");
    let r = dead.get("x", None, None).await;
    let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    check!(
        matches!(r, Err(StoreError::Transient { .. })) && !msg.contains("sig="),
        "unreachable with sas -> {msg}"
    );

    // timeout
    let quick = AzureStore::from_connection_string(
        &conn(),
        &container,
        AzureOptions {
            request_timeout: Duration::from_micros(1),
            max_retries: 1,
        },
    )
    .expect("store");
    let r = quick.head("big/large").await;
    check!(
        matches!(r, Err(StoreError::Transient { .. })),
        "tiny timeout -> {r:?}"
    );

    // retry helper
    let calls = AtomicU32::new(0);
    let r: Result<u32> = with_retry("test op", 3, || async {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            Err(StoreError::Transient {
                name: "t".into(),
                message: "flaky".into(),
            })
        } else {
            Ok(n)
        }
    })
    .await;
    check!(
        r.as_ref().ok() == Some(&2) && calls.load(Ordering::SeqCst) == 3,
        "retry helper: 2 transient failures then ok"
    );
    let calls = AtomicU32::new(0);
    let r: Result<u32> = with_retry("test op", 3, || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::NotFound("t".into()))
    })
    .await;
    check!(
        r.is_err() && calls.load(Ordering::SeqCst) == 1,
        "retry helper: no retry of NotFound"
    );

    println!("done");
}

async fn make_full_sas() -> String {
    let now = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let se = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let (sp, ss, srt, sv) = ("racwdl", "b", "sco", "2018-11-09");
    let sts = format!("devstoreaccount1\n{sp}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n");
    let sig = azure_core::hmac::hmac_sha256(&sts, &azure_core::auth::Secret::new(KEY))
        .unwrap_or_default();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("sv", sv),
            ("ss", ss),
            ("srt", srt),
            ("se", se.as_str()),
            ("sp", sp),
            ("sig", sig.as_str()),
        ])
        .finish()
}
