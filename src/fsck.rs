//! `remotedict fsck`: compares a folder's index with a listing of its blobs, reports keys without
//! blobs, blobs without keys (written by other tools, or an interrupted commit) and entries whose
//! size or etag disagree with their blob; `--repair` fixes the index from the blobs.
//!
//! Repairs go through `SharedIndex::commit` as conditional changes (insert only if still absent,
//! update or remove only while the entry names the version that was checked), so a writer
//! committing at the same time never loses its update.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::index::meta::entry_from_props;
use crate::index::{Change, EntryKind, IndexError, SharedIndex};
use crate::layout::Layout;
use crate::store::{list_all, BlobProps, BlobStore, GetResult, StoreError};

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Index entries checked.
    pub keys: usize,
    /// Blobs of the folder listed.
    pub blobs: usize,
    /// Keys the index lists whose blob is missing.
    pub missing_blobs: Vec<String>,
    /// Blobs of the folder the index does not list.
    pub unlisted_blobs: Vec<String>,
    /// Keys whose entry disagrees with the blob, with what differs.
    pub mismatched: Vec<(String, String)>,
    /// Blob names under the folder that cannot be keys (names a mount cannot show).
    pub unusable_names: Vec<String>,
    /// Why the index itself could not be read, if it could not.
    pub index_error: Option<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.missing_blobs.is_empty()
            && self.unlisted_blobs.is_empty()
            && self.mismatched.is_empty()
            && self.index_error.is_none()
    }

    /// Human-readable lines, one per finding.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.index_error {
            out.push(format!("index unreadable: {e}"));
        }
        out.extend(
            self.missing_blobs
                .iter()
                .map(|k| format!("key without blob: {k}")),
        );
        out.extend(
            self.unlisted_blobs
                .iter()
                .map(|k| format!("blob without key: {k}")),
        );
        out.extend(
            self.mismatched
                .iter()
                .map(|(k, why)| format!("mismatch: {k}: {why}")),
        );
        out.extend(
            self.unusable_names
                .iter()
                .map(|n| format!("blob name not usable as a key (ignored): {n}")),
        );
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the index has a newer format than this remotedict understands; upgrade instead of repairing")]
    NewerIndex,
}

fn mismatch(entry: &crate::index::Entry, props: &BlobProps) -> Option<String> {
    let blob = entry_from_props(props);
    if entry.etag != props.etag {
        return Some(format!(
            "index etag {} but blob etag {}",
            entry.etag, props.etag
        ));
    }
    let sized = props.metadata.contains_key(crate::codec::META_SIZE);
    if entry.kind == EntryKind::File && sized && entry.size != blob.size {
        return Some(format!(
            "index size {} but blob holds {}",
            entry.size, blob.size
        ));
    }
    if entry.stored_size != props.size && entry.kind != EntryKind::Dir {
        return Some(format!(
            "index stored size {} but blob is {} bytes",
            entry.stored_size, props.size
        ));
    }
    None
}

/// Lists the folder and compares it with the index.
pub async fn check(
    store: &Arc<dyn BlobStore>,
    layout: &Layout,
) -> Result<(Report, BTreeMap<String, BlobProps>), FsckError> {
    let shared = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
    let mut report = Report::default();
    let index = match shared.current().await {
        Ok(i) => Some(i),
        Err(IndexError::Format { source, .. }) => {
            if matches!(source, crate::index::IndexFormatError::NewerVersion(_)) {
                return Err(FsckError::NewerIndex);
            }
            report.index_error = Some(source.to_string());
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut blobs = BTreeMap::new();
    for props in list_all(store.as_ref(), layout.prefix()).await? {
        if props.name == layout.index_blob()
            || props.name.starts_with(&format!(
                "{}{}/",
                layout.prefix(),
                crate::layout::RESERVED_DIR
            ))
        {
            continue;
        }
        match layout.key_of(&props.name) {
            Some(key) => {
                blobs.insert(key.to_string(), props);
            }
            None => report.unusable_names.push(props.name.clone()),
        }
    }
    report.blobs = blobs.len();
    if let Some(index) = &index {
        report.keys = index.entries.len();
        for (key, entry) in &index.entries {
            match blobs.get(&key) {
                None => report.missing_blobs.push(key.clone()),
                Some(props) => {
                    if let Some(why) = mismatch(&entry, props) {
                        report.mismatched.push((key.clone(), why));
                    }
                }
            }
        }
        report.unlisted_blobs = blobs
            .keys()
            .filter(|k| !index.entries.contains_key(k))
            .cloned()
            .collect();
    } else {
        report.unlisted_blobs = blobs.keys().cloned().collect();
    }
    Ok((report, blobs))
}

/// The entry a blob stands for, with a symlink's target read from its content, and the
/// uncompressed size of an LZ4 blob written by another tool (decoded once, to a temporary file).
async fn entry_for(
    store: &Arc<dyn BlobStore>,
    props: &BlobProps,
) -> Result<crate::index::Entry, FsckError> {
    let mut e = entry_from_props(props);
    let sized = props.metadata.contains_key(crate::codec::META_SIZE);
    if e.kind == EntryKind::File && !sized && props.size >= 4 {
        if let GetResult::Found { data, .. } = store.get(&props.name, Some(0..4), None).await? {
            if crate::codec::is_lz4(&data) {
                let tmp = tempfile::tempfile().map_err(|e| StoreError::Other(e.to_string()))?;
                let cfg = crate::transfer::TransferConfig::default();
                let name = &props.name;
                match crate::transfer::download_to(store, name, Some(&props.etag), tmp, &cfg, None)
                    .await
                {
                    Ok(d) => e.size = d.size,
                    Err(err) => {
                        log::warn!("{name}: cannot decode ({err}); listed with its stored size")
                    }
                }
            }
        }
    }
    if e.kind == EntryKind::Symlink {
        if let GetResult::Found { data, .. } = store.get(&props.name, None, None).await? {
            e.target = String::from_utf8_lossy(&data).to_string();
            e.size = e.target.len() as u64;
        }
    }
    Ok(e)
}

/// Fixes what `check` found; returns the number of index changes made.
pub async fn repair(
    store: &Arc<dyn BlobStore>,
    layout: &Layout,
    report: &Report,
    blobs: &BTreeMap<String, BlobProps>,
) -> Result<usize, FsckError> {
    if report.index_error.is_some() {
        // The index cannot be read: rebuild it from the blobs, replacing exactly the corrupt blob
        // that was checked (If-Match), so an index a writer just fixed is not overwritten.
        // In format 2 as a new generation that every journal is sealed into: mounts reading any
        // of them move to it.
        let current = match store.head(&layout.index_blob()).await {
            Ok(p) => Some(p.etag),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut index = crate::index::Index::default();
        for (key, props) in blobs {
            index
                .entries
                .insert(key.clone(), entry_for(store, props).await?);
        }
        let shared = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
        shared.replace_all(&index, current.as_deref()).await?;
        return Ok(index.entries.len());
    }
    let shared = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
    let index = shared.current().await?;
    let mut changes = Vec::new();
    for key in &report.missing_blobs {
        if let Some(e) = index.entries.get(key) {
            changes.push(Change::Remove {
                key: key.clone(),
                if_etag: Some(e.etag.clone()),
            });
        }
    }
    for key in &report.unlisted_blobs {
        if let Some(props) = blobs.get(key) {
            changes.push(Change::Insert {
                key: key.clone(),
                entry: entry_for(store, props).await?,
            });
        }
    }
    for (key, _) in &report.mismatched {
        if let (Some(old), Some(props)) = (index.entries.get(key), blobs.get(key)) {
            let mut entry = entry_for(store, props).await?;
            if entry.mode == 0 {
                (entry.mode, entry.uid, entry.gid) = (old.mode, old.uid, old.gid);
            }
            changes.push(Change::Update {
                key: key.clone(),
                if_etag: old.etag.clone(),
                entry,
            });
        }
    }
    let n = changes.len();
    if n > 0 {
        shared.commit(changes).await?;
    }
    Ok(n)
}
