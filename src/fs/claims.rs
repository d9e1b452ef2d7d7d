//! What a conditional write that found its name taken does next, and the claims of `O_EXCL`.
//!
//! - **Adoption**: a create-if-absent (mkdir, symlink, `O_EXCL`, a new file's first save) that
//!   finds a blob already there lists that blob at once (`adopt_blob`), so the name this host was
//!   told exists is visible here right away, as it is on a local filesystem.
//! - **Claims**: `open(O_CREAT|O_EXCL)` claims the name with an empty blob marked
//!   `remotedict_claim` (a token of this writer and the time of its last heartbeat), listed at
//!   the first save. A claim never outlives its writer: while the file is open here a heartbeat
//!   rewrites the mark every [`claim_stale`]/4 (If-Match its own last version, so it stops as
//!   soon as anyone else writes the blob); unlink deletes it; a claim that is not listed and
//!   whose last heartbeat is older than [`claim_stale`] belongs to a writer that is gone, and any
//!   host may take it over with If-Match its etag (so of two hosts racing for it, one wins).
//!   A claim is never adopted as a value.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::index::meta::{blob_metadata, entry_from_props, META_CLAIM};
use crate::index::{Change, Entry, EntryKind};
use crate::store::{BlobProps, Conditions, GetResult, Metadata, PutOptions, StoreError};

/// How old a claim's last heartbeat must be before another host may take it over (60 s;
/// `REMOTEDICT_CLAIM_STALE_SECS` overrides it, for tests).
pub(super) fn claim_stale() -> Duration {
    std::env::var("REMOTEDICT_CLAIM_STALE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// What holds a name in the container that this host's index copy does not list.
pub(super) enum Holder {
    /// Nothing (any more).
    Nothing,
    /// A real value, now listed here.
    Value(Entry),
    /// A claim whose writer is alive (or may be).
    LiveClaim,
    /// A claim whose writer is gone: it may be taken over with If-Match this etag.
    StaleClaim(String),
}

/// The claim mark of a writer: its token and the time of its heartbeat.
fn claim_mark(token: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{token} {secs}")
}

/// Whether a blob's properties are those of a claim, and if so whether its writer is gone.
fn claim_is_stale(props: &BlobProps) -> Option<bool> {
    let mark = props.metadata.get(META_CLAIM)?;
    let beat = mark
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    let stale = match beat {
        Some(t) => SystemTime::now()
            .duration_since(t)
            .is_ok_and(|age| age > claim_stale()),
        None => true,
    };
    Some(stale)
}

/// The heartbeat of a claim held by an open file; stops when dropped.
pub(super) struct ClaimKeeper {
    pub(super) token: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClaimKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fs {
    /// Claims `key` for an `O_EXCL` create: an empty value marked as a claim, written only if no
    /// blob of that name exists (or over a claim whose writer is gone). EEXIST if a value or a
    /// live claim is there; a value found is listed here at once.
    pub(super) async fn claim_new(
        &self,
        key: &str,
        perms: (u32, u32, u32),
    ) -> FsResult<(Entry, ClaimKeeper)> {
        let empty = Bytes::from(crate::codec::compress(b""));
        let mut entry = self.new_entry(EntryKind::File, perms);
        entry.stored_size = empty.len() as u64;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut metadata = blob_metadata(&entry);
        metadata.insert(META_CLAIM.into(), claim_mark(&token));
        let blob = self.layout.blob_name(key);
        let mut conditions = Conditions::if_absent();
        for _ in 0..4 {
            let opts = PutOptions {
                conditions: conditions.clone(),
                metadata: metadata.clone(),
            };
            match self.store.put(&blob, empty.clone(), &opts).await {
                Ok(etag) => {
                    entry.etag = etag.clone();
                    let keeper = self.keep_claim(blob, token, metadata, etag);
                    return Ok((entry, keeper));
                }
                Err(StoreError::PreconditionFailed(_)) => {}
                Err(e) => return Err(e.into()),
            }
            match self.holder(key).await? {
                Holder::Nothing => conditions = Conditions::if_absent(),
                Holder::StaleClaim(etag) => {
                    log::info!("{key:?}: taking over a claim whose writer is gone");
                    conditions = Conditions::if_match(etag);
                }
                Holder::Value(_) | Holder::LiveClaim => return Err(FsError::Exists),
            }
        }
        Err(FsError::Exists)
    }

    /// Starts the heartbeat of a claim this host wrote as version `etag`.
    fn keep_claim(
        &self,
        blob: String,
        token: String,
        mut meta: Metadata,
        etag: String,
    ) -> ClaimKeeper {
        let store = self.store.clone();
        let every = claim_stale() / 4;
        let tok = token.clone();
        let task = tokio::spawn(async move {
            let mut etag = etag;
            loop {
                tokio::time::sleep(every).await;
                meta.insert(META_CLAIM.into(), claim_mark(&tok));
                match store
                    .set_metadata(&blob, &meta, &Conditions::if_match(etag.clone()))
                    .await
                {
                    Ok(e) => etag = e,
                    // Saved over, deleted or taken over: nothing of ours left to keep.
                    Err(
                        StoreError::PreconditionFailed(_)
                        | StoreError::NotFound(_)
                        | StoreError::LeaseConflict(_),
                    ) => return,
                    Err(e) => log::warn!("claim heartbeat of {blob:?} failed, retrying: {e}"),
                }
            }
        });
        ClaimKeeper { token, task }
    }

    /// Deletes this writer's own claim of `key` (unlink before the first save), if it is still
    /// there and still ours.
    pub(super) async fn drop_claim(&self, key: &str, keeper: ClaimKeeper) -> FsResult<()> {
        let token = keeper.token.clone();
        drop(keeper);
        let blob = self.layout.blob_name(key);
        for _ in 0..4 {
            let props = match self.store.head(&blob).await {
                Ok(p) => p,
                Err(StoreError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let ours = props
                .metadata
                .get(META_CLAIM)
                .is_some_and(|m| m.split(' ').next() == Some(token.as_str()));
            if !ours {
                return Ok(());
            }
            match self
                .store
                .delete(&blob, &Conditions::if_match(props.etag))
                .await
            {
                Ok(()) | Err(StoreError::NotFound(_)) => return Ok(()),
                Err(StoreError::PreconditionFailed(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// What holds `key` in the container: a value is listed here at once (another host wrote it
    /// and may not have committed its index entry yet; the same entry from both is harmless).
    pub(super) async fn holder(&self, key: &str) -> FsResult<Holder> {
        let blob = self.layout.blob_name(key);
        let props = match self.store.head(&blob).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => {
                self.index.invalidate();
                return Ok(Holder::Nothing);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(stale) = claim_is_stale(&props) {
            // Only an unlisted claim can be stale: a listed name is a value.
            let index = self.index.revalidate().await?;
            if let Some(e) = index.entries.get(key) {
                return Ok(Holder::Value(e.clone()));
            }
            return Ok(if stale {
                Holder::StaleClaim(props.etag)
            } else {
                Holder::LiveClaim
            });
        }
        let mut entry = entry_from_props(&props);
        if entry.kind == EntryKind::Symlink {
            match self.store.get(&blob, None, None).await? {
                GetResult::Found { data, props: p } if p.etag == entry.etag => {
                    entry.target = String::from_utf8_lossy(&data).into_owned();
                }
                // Rewritten meanwhile: look again.
                _ => {
                    self.index.invalidate();
                    return Ok(Holder::Nothing);
                }
            }
        }
        self.index
            .commit(vec![Change::Insert {
                key: key.to_string(),
                entry: entry.clone(),
            }])
            .await?;
        let listed = self.index.cached().entries.get(key);
        Ok(listed.map_or(Holder::Nothing, Holder::Value))
    }
}
