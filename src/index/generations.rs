//! Format 2 of the index (docs/FORMAT.md): the index blob is a small *head* naming the current
//! *generation*, a snapshot (an entry list) plus a journal (an append blob of records, see
//! `records`) of the changes since.
//!
//! A writer appends its batch at the journal length it knows (the append-position condition);
//! when another writer appended first, it reads the new tail, decides its changes again against
//! it, and appends again. A reader revalidates with one conditional ranged GET of the journal
//! from the offset it knows: "not modified", or just the new records. When the journal passes a
//! bound, the writer that notices *compacts*: it writes the next generation's snapshot (what the
//! journal adds up to) and an empty journal, then appends a seal naming that generation to the
//! old journal at the length it compacted — so exactly one compaction of a generation wins, and
//! everyone following the old journal finds the way on. The head is then pointed at the new
//! generation (for mounts starting later), and generations older than a grace period that
//! neither the head nor anyone following it needs are removed. A crash at any step leaves a
//! consistent chain: unsealed leftovers are ignored (and removed later); a head not yet moved
//! still leads, through the seal, to the newest generation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::format::{self, Head, Index, IndexFormatError};
use super::records::{self, Op};
use super::shared::{IndexError, JournalPos, SharedIndex, Source};
use crate::store::{list_all, Conditions, GetResult, PutOptions, StoreError};

/// A journal this long (and at least half the snapshot's size) is compacted.
pub const COMPACT_MIN_BYTES: u64 = 4 << 20;

/// Appends short of the store's limit at which a journal is compacted (room for the seal).
const APPEND_HEADROOM: u32 = 100;

/// Generations replaced this long ago are removed (a reader still on one finds the seal first;
/// one that slept longer starts again from the head).
pub const GENERATION_GRACE: Duration = Duration::from_secs(600);

/// Whether `g` can name a generation (`[0-9a-z-]`, 1 to 64 characters).
pub fn valid_generation(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 64
        && g.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// A new generation name: creation time (ms, hex, so names sort by age) and randomness.
pub fn new_generation() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms:012x}-{:08x}", fastrand::u32(..))
}

/// What reading a journal's tail found.
pub(super) enum Tail {
    /// Nothing new.
    Same,
    /// The index and position after the new records (possibly in later generations).
    Grew(Arc<Index>, JournalPos, Vec<[u8; 16]>),
    /// The journal is gone (a generation removed long after it was replaced): start again from
    /// the head.
    Gone,
}

impl SharedIndex {
    pub(super) fn snapshot_blob(&self, generation: &str) -> String {
        format!("{}-{generation}.snapshot", self.blob())
    }

    pub(super) fn journal_blob(&self, generation: &str) -> String {
        format!("{}-{generation}.journal", self.blob())
    }

    fn format_error(&self, blob: &str, source: IndexFormatError) -> IndexError {
        IndexError::Format {
            blob: blob.to_string(),
            source,
        }
    }

    /// Reads the head and what it names: the whole index (format 1), or a generation's
    /// snapshot and journal. `if_none_match`: the etag of a format-1 copy held.
    pub(super) async fn load_head(
        &self,
        if_none_match: Option<&str>,
    ) -> Result<Option<(Arc<Index>, Source)>, IndexError> {
        let mut last = None;
        for _ in 0..4 {
            let (props, data) = match self.store().get(self.blob(), None, if_none_match).await {
                Ok(GetResult::NotModified) => return Ok(None),
                Ok(GetResult::Found { props, data }) => (props, data),
                Err(StoreError::NotFound(_)) => {
                    return Ok(Some((Arc::new(Index::default()), Source::Missing)))
                }
                Err(e) => return Err(e.into()),
            };
            let head = {
                let blob = self.blob().to_string();
                tokio::task::spawn_blocking(move || format::decode_head(&data))
                    .await
                    .map_err(|e| IndexError::Abandoned(e.to_string()))?
                    .map_err(|source| self.format_error(&blob, source))?
            };
            match head {
                Head::Whole(index) => {
                    return Ok(Some((Arc::new(index), Source::Whole { etag: props.etag })))
                }
                Head::Generation(g) => match self.load_generation(&g).await? {
                    Some((index, pos)) => return Ok(Some((index, Source::Journal(pos)))),
                    // Replaced and removed between reading the head and reading it: again.
                    None => last = Some(g),
                },
            }
        }
        Err(IndexError::Format {
            blob: self.blob().to_string(),
            source: IndexFormatError::Corrupt(format!(
                "the generation it names ({}) has no snapshot or journal",
                last.unwrap_or_default()
            )),
        })
    }

    /// A generation's snapshot with its journal (and any generations it was sealed into)
    /// applied; `None` when it is gone.
    async fn load_generation(
        &self,
        generation: &str,
    ) -> Result<Option<(Arc<Index>, JournalPos)>, IndexError> {
        let Some((index, bytes)) = self.load_snapshot(generation).await? else {
            return Ok(None);
        };
        let pos = JournalPos::start(generation, Some(bytes));
        match self.read_tail(&index, &pos).await? {
            Tail::Same => Ok(Some((index, pos))),
            Tail::Grew(index, pos, _) => Ok(Some((index, pos))),
            Tail::Gone => Ok(None),
        }
    }

    async fn load_snapshot(
        &self,
        generation: &str,
    ) -> Result<Option<(Arc<Index>, u64)>, IndexError> {
        let blob = self.snapshot_blob(generation);
        let data = match self.store().get(&blob, None, None).await {
            Ok(GetResult::Found { data, .. }) => data,
            Ok(GetResult::NotModified) => return Ok(None),
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bytes = data.len() as u64;
        let index = tokio::task::spawn_blocking(move || format::decode(&data))
            .await
            .map_err(|e| IndexError::Abandoned(e.to_string()))?
            .map_err(|source| self.format_error(&blob, source))?;
        log::debug!(
            "index {}: generation {generation}: {} entries in its snapshot",
            self.blob(),
            index.entries.len()
        );
        Ok(Some((Arc::new(index), bytes)))
    }

    /// Reads the journal from `pos` on (one conditional ranged GET when nothing changed),
    /// following seals into later generations.
    pub(super) async fn read_tail(
        &self,
        base: &Arc<Index>,
        pos: &JournalPos,
    ) -> Result<Tail, IndexError> {
        let mut index = base.clone();
        let mut pos = pos.clone();
        let mut grew = false;
        let mut batches = Vec::new();
        loop {
            let blob = self.journal_blob(&pos.generation);
            let got = self
                .store()
                .get(&blob, Some(pos.len..u64::MAX), pos.etag.as_deref())
                .await;
            let (props, data) = match got {
                Ok(GetResult::NotModified) => break,
                Ok(GetResult::Found { props, data }) => (props, data),
                Err(StoreError::NotFound(_)) => return Ok(Tail::Gone),
                Err(e) => return Err(e.into()),
            };
            if props.size < pos.len {
                // The journal is shorter than what was read of it: it is not the one read (a
                // store restored from a backup, or an emulator that lost appends on restart).
                // Everything is read again from the head.
                log::warn!(
                    "index {}: journal {blob:?} is {} bytes, shorter than the {} already read; \
                     reading the index again",
                    self.blob(),
                    props.size,
                    pos.len
                );
                return Ok(Tail::Gone);
            }
            let (recs, used) =
                records::decode_records(&data).map_err(|e| self.format_error(&blob, e))?;
            grew = true;
            let mut sealed = None;
            let mut consumed = 0;
            {
                let next = Arc::make_mut(&mut index);
                for (rec, end) in &recs {
                    records::apply_record(next, rec);
                    batches.push(rec.batch);
                    pos.appends += 1;
                    consumed = *end;
                    if let Some((g, replaced)) = rec.seal() {
                        sealed = Some((g.to_string(), replaced));
                        break;
                    }
                }
            }
            if let Some((next, replaced)) = sealed {
                log::debug!(
                    "index {}: generation {} was compacted into {next}",
                    self.blob(),
                    pos.generation
                );
                let mut snapshot_bytes = None;
                if replaced {
                    match self.load_snapshot(&next).await? {
                        Some((snap, bytes)) => {
                            index = snap;
                            snapshot_bytes = Some(bytes);
                        }
                        None => return Ok(Tail::Gone),
                    }
                }
                pos = JournalPos::start(&next, snapshot_bytes);
                continue;
            }
            pos.len += consumed as u64;
            // The etag is kept (for the next read's "not modified") only from an answer with no
            // new bytes, whose etag and size describe the same journal. An answer with bytes may
            // carry a later etag than its bytes (Azurite reads an append blob's etag after the
            // body, so an append landing meanwhile shows in it): kept, the next read would be
            // "not modified" while that append is unread, for as long as the journal stays so.
            pos.etag =
                (data.is_empty() && used == 0 && props.size == pos.len).then_some(props.etag);
            break;
        }
        Ok(if grew {
            Tail::Grew(index, pos, batches)
        } else {
            Tail::Same
        })
    }

    /// Whether the journal at `pos` is due for compaction, for an index of `entries` keys.
    pub(super) fn due_for_compaction(&self, pos: &JournalPos, entries: usize) -> bool {
        let snapshot = pos.snapshot_bytes.unwrap_or(entries as u64 * 48);
        pos.appends >= crate::store::MAX_APPENDS - APPEND_HEADROOM
            || (pos.len >= self.compact_min_bytes() && pos.len >= snapshot / 2)
    }

    /// Creates generation `generation` holding `index`: its snapshot, then its empty journal.
    async fn create_generation(&self, generation: &str, index: &Index) -> Result<u64, IndexError> {
        let body = {
            let index = index.clone();
            tokio::task::spawn_blocking(move || format::encode(&index))
                .await
                .map_err(|e| IndexError::Abandoned(e.to_string()))?
        };
        let bytes = body.len() as u64;
        let create = PutOptions {
            conditions: Conditions::if_absent(),
            ..Default::default()
        };
        self.store()
            .put(&self.snapshot_blob(generation), Bytes::from(body), &create)
            .await?;
        self.store()
            .create_append(&self.journal_blob(generation), &create)
            .await?;
        Ok(bytes)
    }

    /// Removes what a generation that never took over left (best effort).
    async fn drop_generation(&self, generation: &str) {
        for blob in [
            self.journal_blob(generation),
            self.snapshot_blob(generation),
        ] {
            if let Err(e) = self.store().delete(&blob, &Conditions::default()).await {
                if !matches!(e, StoreError::NotFound(_)) {
                    log::warn!("index: cannot remove {blob:?} (fsck will): {e}");
                }
            }
        }
    }

    /// Upgrades a format-1 (or missing) index to format 2: a first generation holding `index`,
    /// then the head naming it, written only over the version `source` read (If-Match).
    /// `Ok(None)` when another writer changed the index first.
    pub(super) async fn upgrade(
        &self,
        index: &Index,
        source: &Source,
    ) -> Result<Option<Source>, IndexError> {
        let generation = new_generation();
        let started = std::time::Instant::now();
        let bytes = self.create_generation(&generation, index).await?;
        if started.elapsed() > self.generation_grace() / 2 {
            // (As in `compact`: a generation this old may be removed as never used.)
            self.drop_generation(&generation).await;
            return Ok(None);
        }
        let conditions = match source {
            Source::Whole { etag } => Conditions::if_match(etag.clone()),
            _ => Conditions::if_absent(),
        };
        let mut opts = PutOptions {
            conditions,
            ..Default::default()
        };
        opts.metadata.insert(
            "remotedict_index_version".into(),
            format::FORMAT_VERSION.to_string(),
        );
        let head = Bytes::from(format::encode_head(&generation));
        match self.store().put(self.blob(), head, &opts).await {
            Ok(_) => {
                if matches!(source, Source::Whole { .. }) {
                    log::info!(
                        "index {}: upgraded to format 2 ({} entries)",
                        self.blob(),
                        index.entries.len()
                    );
                }
                Ok(Some(Source::Journal(JournalPos::start(
                    &generation,
                    Some(bytes),
                ))))
            }
            Err(StoreError::PreconditionFailed(_)) => {
                self.drop_generation(&generation).await;
                Ok(None)
            }
            // The head may have been written with its answer lost (an outage): the generation
            // stays, as it may be the one the head names. If it is not, it is a leftover that
            // nothing leads to, removed after the grace period.
            Err(e) => Err(e.into()),
        }
    }

    /// Compacts the journal at `pos` into a new generation holding `index` (what the journal
    /// adds up to, or with `replaced`, entries that replace it: a batch too large for a record).
    /// `Ok(None)` when another writer appended first (nothing changed: decide again).
    pub(super) async fn compact(
        &self,
        index: &Index,
        pos: &JournalPos,
        replaced: bool,
    ) -> Result<Option<JournalPos>, IndexError> {
        let generation = new_generation();
        let started = std::time::Instant::now();
        let bytes = self.create_generation(&generation, index).await?;
        if started.elapsed() > self.generation_grace() / 2 {
            // Unsealed generations this old may be removed as never used: this one is not
            // sealed in (the next commit compacts again).
            log::warn!(
                "index {}: compaction took {:?} to write generation {generation}; abandoned",
                self.blob(),
                started.elapsed()
            );
            self.drop_generation(&generation).await;
            return Ok(None);
        }
        let seal = if replaced {
            Op::SealReplaced {
                next: generation.clone(),
            }
        } else {
            Op::Seal {
                next: generation.clone(),
            }
        };
        let record = records::encode_record(records::new_batch(), &[seal]);
        let old = self.journal_blob(&pos.generation);
        match self
            .store()
            .append(&old, Bytes::from(record), pos.len)
            .await
        {
            Ok(_) => {}
            Err(StoreError::PreconditionFailed(_) | StoreError::NotFound(_)) => {
                self.drop_generation(&generation).await;
                return Ok(None);
            }
            Err(e) => {
                // (It may have landed; if not, the leftover generation is removed later.)
                return Err(e.into());
            }
        }
        crate::metrics::index_compaction();
        log::info!(
            "index {}: compacted generation {} ({} bytes of journal) into {generation} \
             ({} entries)",
            self.blob(),
            pos.generation,
            pos.len,
            index.entries.len()
        );
        self.point_head(&generation).await;
        Ok(Some(JournalPos::start(&generation, Some(bytes))))
    }

    /// Points the head at `generation` if the head names a generation that leads to it through
    /// seals (the head only leads mounts that start later to the chain; failures are logged),
    /// then removes generations nobody needs any more.
    async fn point_head(&self, generation: &str) {
        let (etag, head) = match self.store().get(self.blob(), None, None).await {
            Ok(GetResult::Found { props, data }) => match format::decode_head(&data) {
                Ok(Head::Generation(g)) => (props.etag, g),
                Ok(_) | Err(_) => return,
            },
            Ok(GetResult::NotModified) => return,
            Err(e) => {
                log::warn!("index: cannot move the head to generation {generation}: {e}");
                return;
            }
        };
        let mut at = head;
        for _ in 0..64 {
            if at == generation {
                break;
            }
            match self.seal_of(&at).await {
                Some(next) => at = next,
                // (The head is past `generation` already, or leads elsewhere: it stays.)
                None => return,
            }
        }
        if at != generation {
            return;
        }
        let mut opts = PutOptions {
            conditions: Conditions::if_match(etag),
            ..Default::default()
        };
        opts.metadata.insert(
            "remotedict_index_version".into(),
            format::FORMAT_VERSION.to_string(),
        );
        let bytes = Bytes::from(format::encode_head(generation));
        match self.store().put(self.blob(), bytes, &opts).await {
            Ok(_) => self.remove_old_generations(generation).await,
            Err(e) => log::warn!("index: cannot move the head to generation {generation}: {e}"),
        }
    }

    /// The generation a generation's journal was sealed into, if it was.
    async fn seal_of(&self, generation: &str) -> Option<String> {
        self.sealed_into(generation).await.ok().flatten()
    }

    /// The generation a generation's journal was sealed into: `None` when it is not sealed (or
    /// gone), an error when the store could not say.
    async fn sealed_into(&self, generation: &str) -> Result<Option<String>, StoreError> {
        let name = self.journal_blob(generation);
        let size = match self.store().head(&name).await {
            Ok(p) => p.size,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.seal_at_end(&name, size).await
    }

    /// Removes, once unchanged for the grace period, generations that were replaced (their
    /// journal ends with a seal), generations that never took over (a compaction that died or
    /// lost before its seal: no seal and not the head leads to them) and snapshots left without a
    /// journal (best effort). `head`, the one the head names, and the generations it leads to
    /// stay, whatever their age; when that chain cannot be read to its end, unsealed
    /// generations stay too (one of them may be its end).
    pub(super) async fn remove_old_generations(&self, head: &str) {
        let prefix = format!("{}-", self.blob());
        let blobs = match list_all(self.store().as_ref(), &prefix).await {
            Ok(b) => b,
            Err(e) => {
                log::warn!("index: cannot list old generations: {e}");
                return;
            }
        };
        // The chain from the head, walked after the listing: a generation sealed meanwhile is
        // younger than the grace period, so it is not removed either.
        let mut needed = std::collections::HashSet::new();
        let mut at = head.to_string();
        let mut chain_read = false;
        while needed.insert(at.clone()) && needed.len() < 64 {
            match self.sealed_into(&at).await {
                Ok(Some(next)) => at = next,
                Ok(None) => {
                    chain_read = true;
                    break;
                }
                Err(e) => {
                    log::debug!("index: cannot follow the generations from {head}: {e}");
                    break;
                }
            }
        }
        let now = SystemTime::now();
        let grace = self.generation_grace();
        let old = |b: &crate::store::BlobProps| {
            now.duration_since(b.last_modified)
                .is_ok_and(|age| age >= grace)
        };
        let mut by_generation: std::collections::BTreeMap<&str, Vec<&crate::store::BlobProps>> =
            Default::default();
        for b in &blobs {
            let Some(rest) = b.name.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(g) = rest
                .strip_suffix(".snapshot")
                .or_else(|| rest.strip_suffix(".journal"))
            {
                by_generation.entry(g).or_default().push(b);
            }
        }
        for (generation, parts) in by_generation {
            if needed.contains(generation) || !parts.iter().all(|b| old(b)) {
                continue;
            }
            let journal = parts.iter().find(|b| b.name.ends_with(".journal"));
            let removable = match journal {
                Some(j) => match self.seal_at_end(&j.name, j.size).await {
                    // Replaced.
                    Ok(Some(_)) => true,
                    // Never took over: nothing leads to it.
                    Ok(None) => chain_read,
                    Err(_) => false,
                },
                None => true,
            };
            if !removable {
                continue;
            }
            log::debug!("index: removing generation {generation} (replaced or never used)");
            for b in parts {
                let cond = Conditions::if_match(b.etag.clone());
                match self.store().delete(&b.name, &cond).await {
                    Ok(()) => log::debug!("index: removed {:?}", b.name),
                    Err(StoreError::NotFound(_) | StoreError::PreconditionFailed(_)) => {}
                    Err(e) => log::warn!("index: cannot remove {:?}: {e}", b.name),
                }
            }
        }
    }

    /// The generation journal `name` (`size` bytes) was sealed into, if it ends with a seal.
    async fn seal_at_end(&self, name: &str, size: u64) -> Result<Option<String>, StoreError> {
        // A seal record is small (about 50 bytes): it is within the last few hundred.
        let from = size.saturating_sub(256);
        let tail = match self.store().get(name, Some(from..size), None).await {
            Ok(GetResult::Found { data, .. }) => data,
            Ok(GetResult::NotModified) | Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((0..tail.len().saturating_sub(11))
            .filter(|&i| tail[i..].starts_with(records::RECORD_MAGIC))
            .find_map(|i| match records::decode_records(&tail[i..]) {
                Ok((recs, used)) if used == tail.len() - i && recs.len() == 1 => {
                    recs[0].0.seal().map(|(next, _)| next.to_string())
                }
                _ => None,
            }))
    }
}

impl SharedIndex {
    /// Replaces the whole index with `index` (fsck rebuilding an unreadable one): a new
    /// generation holding it, every journal of the folder sealed into it (so mounts following
    /// any of them move to it), then the head naming it, written only over the head fsck read
    /// (`head_etag`; `None`: there was none).
    pub async fn replace_all(
        &self,
        index: &Index,
        head_etag: Option<&str>,
    ) -> Result<(), IndexError> {
        let generation = new_generation();
        self.create_generation(&generation, index).await?;
        let prefix = format!("{}-", self.blob());
        let mine = self.journal_blob(&generation);
        for b in list_all(self.store().as_ref(), &prefix).await? {
            if !b.name.ends_with(".journal") || b.name == mine {
                continue;
            }
            let record = records::encode_record(
                records::new_batch(),
                &[Op::SealReplaced {
                    next: generation.clone(),
                }],
            );
            let mut at = b.size;
            for _ in 0..20 {
                match self
                    .store()
                    .append(&b.name, Bytes::from(record.clone()), at)
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound(_)) => break,
                    Err(StoreError::PreconditionFailed(_)) => {
                        at = self.store().head(&b.name).await?.size;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut opts = PutOptions {
            conditions: match head_etag {
                Some(e) => Conditions::if_match(e),
                None => Conditions::if_absent(),
            },
            ..Default::default()
        };
        opts.metadata.insert(
            "remotedict_index_version".into(),
            format::FORMAT_VERSION.to_string(),
        );
        let head = Bytes::from(format::encode_head(&generation));
        self.store().put(self.blob(), head, &opts).await?;
        log::info!(
            "index {}: replaced by generation {generation} ({} entries)",
            self.blob(),
            index.entries.len()
        );
        Ok(())
    }
}
