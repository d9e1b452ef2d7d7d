//! `setattr`: truncation through the staged copy; mode, owner and mtime as blob metadata mirrored in
//! the index entry (If-Match on the blob; when the blob is newer than the listed entry, the change
//! applies to the blob as it is now, another host's newer value or the same value with newer
//! attributes).

use std::time::SystemTime;

use bytes::Bytes;

use super::*;
use crate::index::meta::{
    blob_metadata, entry_from_props, META_ATIME, META_CLAIM, META_CTIME, META_WRITE_ID,
    META_XATTR_PREFIX,
};
use crate::index::{Change, Entry, EntryKind};
use crate::store::{Conditions, Metadata, PutOptions, StoreError};
use crate::time::to_ns;

impl Fs {
    pub async fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> FsResult<Attr> {
        if self.virtual_attr(ino).is_some() {
            return Err(FsError::NotPermitted(
                "`.remotedict` is remotedict's own (read-only)",
            ));
        }
        let key = self.key_of(ino)?;
        if key.is_empty() {
            return self.getattr(ino).await;
        }
        self.writable()?;
        let attr = self.attr_of(&key, ino).await?;
        if let Some(size) = set.size {
            if attr.kind == NodeKind::Dir {
                return Err(FsError::IsDir);
            }
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooLarge);
            }
            let (f, mut st) = self.lock_state(ino).await;
            if st.staged.is_none() {
                st.base = self.index.current().await?.entries.get(&key);
            }
            // (Checked before anything is staged: a refused truncation leaves no trace.)
            let r = match self.check_lease(&key, fh, &st) {
                Ok(()) => self.ensure_staged(&key, &mut st, size == 0).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                self.drop_if_idle(ino, &f, &st);
                return Err(e);
            }
            self.note_dirty(&key, &mut st);
            if let Some(fh) = fh {
                self.note_unsaved(&key, fh);
            }
            if let Some(s) = st.staged.as_mut() {
                if s.file.metadata()?.len() != size {
                    s.appended_from = None;
                    // The bytes an early upload streamed change: give it up.
                    s.early = None;
                    s.scattered = size != 0;
                }
                if size == 0 {
                    s.derived = false;
                }
                s.file.set_len(size)?;
                s.dirty = true;
                s.mtime = set.mtime.unwrap_or_else(SystemTime::now);
            }
            st.written = true;
            st.save_failed = false;
            let idle = st.handles == 0;
            drop(st);
            if idle || fh.is_none() {
                // truncate(2) on a path: save now, there is no close to wait for.
                let saved = self.save(ino).await;
                let mut st = f.state.lock().await;
                if saved.is_err() && st.handles == 0 {
                    // Nothing to save it later: the previous value stays, as the error says.
                    st.staged = None;
                    (st.atime, st.xattrs) = (None, None);
                }
                self.drop_if_idle(ino, &f, &st);
                drop(st);
                saved?;
            }
        }
        // Attribute-only changes: mode, owner, atime, and mtime unless it came with a size
        // change.
        let mtime = if set.size.is_some() { None } else { set.mtime };
        let atime = set.atime.map(to_ns);
        let owner = set.mode.is_some() || set.uid.is_some() || set.gid.is_some();
        if mtime.is_none() && atime.is_none() && !owner {
            return self.getattr(ino).await;
        }
        let perms = (
            set.mode.map_or(u32::from(attr.perm), |m| m & 0o7777),
            set.uid.unwrap_or(attr.uid),
            set.gid.unwrap_or(attr.gid),
        );
        if let Some(f) = self.open_file(ino) {
            let mut st = f.state.lock().await;
            if st.staged.as_ref().is_some_and(|s| s.dirty) {
                // Unsaved content: the attributes go with the next upload.
                if owner {
                    st.perms = Some(perms);
                }
                if let (Some(t), Some(s)) = (mtime, st.staged.as_mut()) {
                    s.mtime = t;
                }
                if atime.is_some() {
                    st.atime = atime;
                }
                drop(st);
                return self.getattr(ino).await;
            }
        }
        let entry = self
            .update_entry(&key, attr.kind, |e| {
                if owner {
                    (e.mode, e.uid, e.gid) = perms;
                }
                match (atime, mtime) {
                    (Some(a), _) => e.atime_ns = Some(a),
                    // Only the mtime changes: the access time stays what it was.
                    (None, Some(_)) => e.atime_ns = Some(e.atime()),
                    (None, None) => {}
                }
                if let Some(t) = mtime {
                    e.mtime_ns = to_ns(t);
                }
                // (An access time equal to the mtime is the default one.)
                if e.atime_ns == Some(e.mtime_ns) {
                    e.atime_ns = None;
                }
            })
            .await?;
        if let Some(f) = self.open_file(ino) {
            let mut st = f.state.lock().await;
            if st.base.is_some() {
                st.base = Some(entry);
            }
            if let (Some(t), Some(s)) = (mtime, st.staged.as_mut()) {
                s.mtime = t;
            }
        }
        self.getattr(ino).await
    }

    /// Changes an index entry's attributes (not its value) and the blob metadata that mirrors
    /// them; an implicit directory becomes an explicit one (with its marker blob) so its
    /// attributes have somewhere to live.
    pub(super) async fn update_entry(
        &self,
        key: &str,
        kind: NodeKind,
        change: impl Fn(&mut Entry),
    ) -> FsResult<Entry> {
        let blob = self.layout.blob_name(key);
        for attempt in 0..5 {
            let index = if attempt == 0 {
                self.index.current().await?
            } else {
                self.index.revalidate().await?
            };
            let existing = index.entries.get(key);
            let mut e = match &existing {
                Some(e) => e.clone(),
                None if kind == NodeKind::Dir => {
                    let mut d = Entry::file(0, 0, to_ns(SystemTime::now()), "");
                    d.kind = EntryKind::Dir;
                    d
                }
                None => return Err(FsError::NotFound),
            };
            change(&mut e);
            e.ctime_ns = to_ns(SystemTime::now());
            let metadata = blob_metadata(&e);
            let written = match &existing {
                Some(old) => match self.store.head(&blob).await {
                    // The blob's own metadata stays (its value id, other tools' keys); the
                    // attributes replace theirs.
                    Ok(p) if p.etag == old.etag => {
                        let cond = Conditions::if_match(old.etag.clone())
                            .with_lease(self.locks.lease_id(key));
                        let merged = merged_metadata(&p.metadata, metadata);
                        self.store.set_metadata(&blob, &merged, &cond).await
                    }
                    Ok(_) => Err(StoreError::PreconditionFailed(blob.clone())),
                    Err(e) => Err(e),
                },
                None => {
                    let opts = PutOptions {
                        conditions: Conditions::if_absent(),
                        metadata,
                    };
                    self.store.put(&blob, Bytes::new(), &opts).await
                }
            };
            match written {
                Ok(etag) => {
                    e.etag = etag;
                    // Listed only while it replaces what was listed, or is still the blob there
                    // (a rename or rm elsewhere meanwhile is not undone).
                    self.index
                        .commit(vec![Change::Saved {
                            key: key.to_string(),
                            blob: blob.clone(),
                            entry: e.clone(),
                            replaces: existing.as_ref().map(|o| o.etag.clone()),
                        }])
                        .await?;
                    self.content.forget(&blob);
                    return Ok(e);
                }
                Err(StoreError::PreconditionFailed(_)) => {
                    // The blob is newer than the listing (a metadata write whose listing was
                    // lost, or another host's write whose listing is on its way): the change
                    // applies to it.
                    if let Some(old) = &existing {
                        if let Some(e) = self.change_newest(key, &blob, old, &change).await? {
                            return Ok(e);
                        }
                    }
                    // Another host changed it meanwhile: start again from the newest entry.
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(FsError::Store(StoreError::PreconditionFailed(
            key.to_string(),
        )))
    }

    /// After a refused metadata write on `key`: the blob is no longer the version `old` lists.
    /// Applies `change` to the blob as it is now (unless it already carries it: a retried write
    /// whose answer was lost) and lists the result, as `chmod` on a local disk changes the file
    /// that is there. When the blob holds the value `old` describes under a newer etag (its
    /// attributes were changed and the index never learnt it), `old`'s entry is kept with the
    /// blob's attributes; when it holds another host's newer value (a write whose listing is on
    /// its way), that value is the one changed. `None` when the blob is gone, is a claim (being
    /// created elsewhere), or changed again meanwhile.
    async fn change_newest(
        &self,
        key: &str,
        blob: &str,
        old: &Entry,
        change: &impl Fn(&mut Entry),
    ) -> FsResult<Option<Entry>> {
        let props = match self.store.head(blob).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if props.etag == old.etag || props.metadata.contains_key(META_CLAIM) {
            return Ok(None);
        }
        let on_blob = entry_from_props(&props);
        if on_blob.kind == EntryKind::Symlink || old.kind == EntryKind::Symlink {
            // A link's target is its value, not in its metadata: decided again from the index.
            return Ok(None);
        }
        let same_value = on_blob.kind == old.kind
            && on_blob.target == old.target
            && on_blob.stored_size == old.stored_size
            && (old.kind != EntryKind::File || on_blob.size == old.size);
        let mut e = if same_value {
            let mut e = old.clone();
            if on_blob.mode != 0 {
                (e.mode, e.uid, e.gid) = (on_blob.mode, on_blob.uid, on_blob.gid);
            }
            (e.mtime_ns, e.ctime_ns) = (on_blob.mtime_ns, on_blob.ctime_ns);
            // (What another host set on it meanwhile is kept: its access time, attributes.)
            (e.atime_ns, e.xattrs) = (on_blob.atime_ns, on_blob.xattrs);
            e
        } else {
            log::info!("{key:?} was rewritten elsewhere; changing the newest value");
            on_blob
        };
        change(&mut e);
        let metadata = merged_metadata(&props.metadata, blob_metadata(&e));
        let carries = |m: &Metadata| {
            let mut m = m.clone();
            m.remove(META_CTIME);
            m.remove(META_WRITE_ID);
            m
        };
        if carries(&props.metadata) == carries(&metadata) {
            log::info!("{key:?}: the blob already carries this change; listing it");
            e.etag = props.etag;
        } else {
            e.ctime_ns = to_ns(SystemTime::now());
            let cond =
                Conditions::if_match(props.etag.clone()).with_lease(self.locks.lease_id(key));
            let metadata = merged_metadata(&props.metadata, blob_metadata(&e));
            match self.store.set_metadata(blob, &metadata, &cond).await {
                Ok(etag) => e.etag = etag,
                Err(StoreError::PreconditionFailed(_)) => return Ok(None),
                Err(err) => return Err(err.into()),
            }
            log::info!("{key:?}: the index listed an older version; changed the newest");
        }
        self.index
            .commit(vec![Change::Saved {
                key: key.to_string(),
                blob: blob.to_string(),
                entry: e.clone(),
                replaces: Some(old.etag.clone()),
            }])
            .await?;
        self.content.forget(blob);
        Ok(Some(e))
    }
}

/// The metadata of a blob whose attributes change: `attributes` over what it carries now.
fn merged_metadata(current: &Metadata, attributes: Metadata) -> Metadata {
    let mut m = current.clone();
    // (An access time no longer set explicitly, an attribute removed, are not left behind.)
    m.remove(META_ATIME);
    m.retain(|k, _| {
        !k.get(..META_XATTR_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(META_XATTR_PREFIX))
    });
    m.extend(attributes);
    m
}
