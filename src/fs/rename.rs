//! `rename`: a file or a directory tree moves by copying its blobs (each copy is of one known
//! version), one index commit that lists the copies and drops the old names, then deleting the
//! old blobs, each only at the version copied or at a version holding the same value (its
//! attributes changed elsewhere meanwhile): a value another host wrote there since stays.
//!
//! Unsaved changes never travel: a file being written on this host moves as its last saved
//! version, and its writer's changes are saved under the new name at close (no other host ever
//! sees a half-written value). A file created here and not saved yet moves by name only.

use std::time::SystemTime;

use super::handles::{FileState, OpenFile};
use super::namespace::removals;
use super::*;
use crate::index::meta::entry_from_props;
use crate::index::{Change, Entry, EntryKind};
use crate::lock::LeaseKeeper;
use crate::mutex::lock;
use crate::store::{BlobProps, Conditions, LeaseState, StoreError};
use crate::time::to_ns;
use crate::transfer::{self, value_id, Copied, TransferError};

/// One key a rename moved.
struct Moved {
    old: String,
    new: String,
    /// The version of `old` that was copied.
    source: BlobProps,
    /// The entry listed for `new`.
    entry: Entry,
}

impl Fs {
    /// Renames a file or a directory tree. Not atomic for directories: a crash midway leaves the
    /// copies and the originals both listed or neither, never a missing value.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        noreplace: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        if from == to {
            return Ok(());
        }
        self.rename_keys(&from, &to, noreplace).await?;
        self.touch_parent(&from);
        if parent_key(&from) != parent_key(&to) {
            self.touch_parent(&to);
        }
        Ok(())
    }

    async fn rename_keys(&self, from: &str, to: &str, noreplace: bool) -> FsResult<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.check_name(&from)?;
        self.check_name(&to)?;
        if to.starts_with(&format!("{from}/")) {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        // A file of this host that is open: its saves wait until it has moved (and a save in
        // progress finishes first), so it is saved under one name or the other, whole. So do
        // those of a file open here under the target name: a save in progress lands before the
        // move replaces it, and none comes after (it would overwrite the moved value).
        let src_ino = lock(&self.inodes).get(&from);
        let dst_ino = lock(&self.inodes).get(&to).filter(|&d| Some(d) != src_ino);
        let src_file = src_ino.and_then(|i| self.open_file(i).map(|f| (i, f)));
        let dst_file = dst_ino.and_then(|i| self.open_file(i).map(|f| (i, f)));
        let (mut held, mut dst_guard) = lock_both(src_file, dst_file).await;
        let mut dst_held = dst_ino.zip(dst_guard.as_deref_mut());
        let index = self.index.current().await?;
        let src_entry = index.entries.get(&from);
        let src_is_dir = src_entry
            .as_ref()
            .map_or_else(|| has_children(&index, &from), |e| e.kind == EntryKind::Dir);
        let pending =
            src_entry.is_none() && !src_is_dir && held.as_deref().is_some_and(never_saved);
        if src_entry.is_none() && !src_is_dir && !pending {
            return Err(FsError::NotFound);
        }
        let dst_entry = index.entries.get(&to);
        let dst_is_dir = dst_entry
            .as_ref()
            .map_or_else(|| has_children(&index, &to), |e| e.kind == EntryKind::Dir);
        let dst_exists = dst_entry.is_some() || dst_is_dir;
        if dst_exists && noreplace {
            return Err(FsError::Exists);
        }
        if dst_is_dir && !src_is_dir {
            return Err(FsError::IsDir);
        }
        if dst_exists && src_is_dir && !dst_is_dir {
            return Err(FsError::NotDir);
        }
        if dst_is_dir && has_children(&index, &to) {
            return Err(FsError::NotEmpty);
        }
        if pending {
            if let Some(st) = held.as_deref_mut() {
                return self
                    .rename_pending(&from, &to, dst_entry, st, dst_held)
                    .await;
            }
        }
        // Every key that moves: the node itself and, for a directory, everything under it.
        let prefix = format!("{from}/");
        let moving: Vec<(String, Entry)> = index
            .entries
            .get(&from)
            .map(|e| (from.clone(), e))
            .into_iter()
            .chain(
                index
                    .entries
                    .range_from(&prefix)
                    .take_while(|(k, _)| k.starts_with(&prefix)),
            )
            .collect();
        for (key, _) in &moving {
            self.check_name(key)?;
        }
        // The leases each name had here: unsaved changes made under one follow the file.
        let leases: std::collections::HashMap<String, Option<String>> = moving
            .iter()
            .map(|(old, _)| {
                let new = format!("{to}{}", &old[from.len()..]);
                (new, self.locks.live_lease_id(old))
            })
            .collect();
        let result = self
            .move_keys(&from, &to, &index, &moving, &dst_entry)
            .await;
        let (moved, stayed) = result?;
        self.move_inodes(&from, &to, dst_held.take()).await;
        // (The files open under the moved names are locked below one by one, in no order:
        // the replaced file's lock goes first.)
        drop(dst_guard);
        for old in &stayed {
            // Locked elsewhere while its directory moved: it stays where it was.
            let new = format!("{to}{}", &old[from.len()..]);
            lock(&self.inodes).rename(&new, old);
        }
        // A file of this host being written moved as its saved version; its changes now replace
        // the copy at its new name when they are saved.
        // Its unsaved changes made under the old name's lease go on under the new name's.
        for (new, entry) in moved {
            let ino = lock(&self.inodes).get(&new);
            let lease = self.locks.lease_id(&new);
            let old = leases.get(&new).cloned().flatten();
            if ino.is_some() && ino == src_ino {
                if let Some(st) = held.as_deref_mut() {
                    if let Some(ino) = ino {
                        self.rebind_unsaved(ino, st, &old, lease);
                    }
                    if st.base.is_some() {
                        st.base = Some(entry);
                    }
                }
                continue;
            }
            if let Some((ino, f)) = ino.and_then(|i| self.open_file(i).map(|f| (i, f))) {
                let mut st = f.state.lock().await;
                self.rebind_unsaved(ino, &mut st, &old, lease);
                if st.base.is_some() {
                    st.base = Some(entry);
                }
            }
        }
        Ok(())
    }

    /// The copies, the index commit and the deletes of a rename (see `rename`). Locks this host
    /// holds on a moved file move with it, under a lease on the new blob taken before the copy
    /// is listed. A file another host holds a lock on does not move (EBUSY): checked on the
    /// version copied, and again by its delete (a lock taken in between undoes that file's
    /// move). Returns each new key with the entry listed for it.
    async fn move_keys(
        &self,
        from: &str,
        to: &str,
        index: &crate::index::Index,
        moving: &[(String, Entry)],
        dst_entry: &Option<Entry>,
    ) -> FsResult<(Vec<(String, Entry)>, Vec<String>)> {
        let src_entry = index.entries.get(from);
        let mut changes = Vec::new();
        let mut moved: Vec<Moved> = Vec::new();
        let mut carried = Vec::new();
        // Copies made and not listed yet: deleted again if the move stops before its commit.
        let mut made: Vec<(String, String)> = Vec::new();
        for (old, e) in moving {
            let new = format!("{to}{}", &old[from.len()..]);
            let copied = match self.copy_version(old, &new).await {
                Ok(Some(c)) => c,
                Ok(None) if old != from => continue,
                stopped => {
                    release_all(carried).await;
                    self.drop_copies(made).await;
                    return match stopped {
                        Err(e) => Err(e),
                        _ => Err(FsError::NotFound), // deleted elsewhere meanwhile
                    };
                }
            };
            made.push((new.clone(), copied.etag.clone()));
            let held_here = self.locks.lease_id(old).is_some();
            if !held_here && copied.source.lease_state == LeaseState::Leased {
                log::info!("rename: {old:?} is locked by another host; nothing moves");
                release_all(carried).await;
                self.drop_copies(made).await;
                return Err(StoreError::LeaseConflict(self.layout.blob_name(old)).into());
            }
            if held_here && self.locks.lease_id(&new).is_none() {
                // Held here: the holders' lock follows the file to its new name.
                let blob = self.layout.blob_name(&new);
                match LeaseKeeper::acquire(&self.store, &blob, self.cfg.lease_duration, true).await
                {
                    Ok(lease) => carried.push((old.clone(), new.clone(), Some(lease))),
                    Err(e) => {
                        release_all(carried).await;
                        self.drop_copies(made).await;
                        return Err(e.into());
                    }
                }
            } else if held_here {
                carried.push((old.clone(), new.clone(), None));
            } else if self.locks.slot_of(old).is_some() {
                // Held shared across hosts: a reader slot of the new name carries it (slots are
                // per name). A writer that locked the new name meanwhile makes it EBUSY.
                let pid = self.locks.slot_pid(old);
                let slot = match self
                    .take_slot(&new, pid, self.cfg.lease_duration, true)
                    .await
                {
                    Ok(Some(slot)) => Ok(slot),
                    Ok(None) => Err(StoreError::LeaseConflict(self.layout.blob_name(&new)).into()),
                    Err(e) => Err(e),
                };
                match slot {
                    Ok(slot) => carried.push((old.clone(), new.clone(), Some(slot))),
                    Err(e) => {
                        release_all(carried).await;
                        self.drop_copies(made).await;
                        return Err(e);
                    }
                }
            }
            let now = if copied.source.etag == e.etag {
                e.clone()
            } else {
                log::info!("rename: {old:?} was rewritten elsewhere; moving the newest version");
                Entry {
                    target: e.target.clone(),
                    ..entry_from_props(&copied.source)
                }
            };
            let entry = Entry {
                etag: copied.etag.clone(),
                ctime_ns: to_ns(SystemTime::now()),
                ..now
            };
            // Listed unless the copy was itself overwritten before the commit lands.
            changes.push(Change::Saved {
                key: new.clone(),
                blob: self.layout.blob_name(&new),
                entry: entry.clone(),
                replaces: index.entries.get(&new).map(|d| d.etag.clone()),
            });
            let mut listed = vec![e.etag.clone()];
            if copied.source.etag != e.etag {
                listed.push(copied.source.etag.clone());
            }
            changes.extend(removals(old, listed));
            moved.push(Moved {
                old: old.clone(),
                new,
                source: copied.source,
                entry,
            });
        }
        if let Some(d) = dst_entry {
            if d.kind == EntryKind::Dir && src_entry.is_none() {
                // An implicit directory moved onto an explicit empty one: drop the old marker.
                changes.push(Change::Remove {
                    key: to.to_string(),
                    if_etag: Some(d.etag.clone()),
                });
                let _ = self
                    .store
                    .delete(&self.layout.blob_name(to), &Conditions::default())
                    .await;
            }
        }
        if let Err(e) = self.index.commit(changes).await {
            release_all(carried).await;
            return Err(e.into());
        }
        let stayed = self.delete_moved(&moved).await;
        let mut unused = Vec::new();
        for (old, new, lease) in carried {
            if stayed.contains(&old) {
                unused.push((old, new, lease));
            } else {
                // (Leases not used: its holders let go meanwhile, or the old name's slot.)
                for lease in self.locks.move_key(&old, &new, lease) {
                    let _ = lease.release().await;
                }
            }
        }
        release_all(unused).await;
        if stayed.iter().any(|k| k == from) {
            return Err(StoreError::LeaseConflict(self.layout.blob_name(from)).into());
        }
        let moved = moved
            .into_iter()
            .filter(|m| !stayed.contains(&m.old))
            .map(|m| (m.new, m.entry))
            .collect();
        Ok((moved, stayed))
    }

    /// Deletes the old blobs of a rename: each at the version copied, or at a newer version of
    /// the same value (only its attributes changed meanwhile); a new value stays (its writer
    /// lists it). Failures are logged: the move itself is done.
    ///
    /// A source another host locked after it was copied stays: its copy is unlisted and
    /// deleted again, so the value is under one name only. Returns the keys that stayed so.
    async fn delete_moved(&self, moved: &[Moved]) -> Vec<String> {
        let mut late = Vec::new();
        let mut stayed = Vec::new();
        for m in moved {
            let lease = self.locks.lease_id(&m.old);
            let vid = value_id(&m.source.metadata).map(str::to_string);
            let same_value = |p: &BlobProps| {
                Ok(vid.is_some()
                    && value_id(&p.metadata) == vid.as_deref()
                    && entry_from_props(p).kind != EntryKind::Dir)
            };
            match self
                .delete_versions(&m.old, &m.source.etag, lease, same_value)
                .await
            {
                Ok((seen, gone)) => {
                    if !gone {
                        log::info!(
                            "rename: {:?} was rewritten elsewhere meanwhile; it stays",
                            m.old
                        );
                    }
                    // Any of the versions deleted may have been listed meanwhile (a save of
                    // another host that checked the blob before it went): unlisted again now
                    // that they are gone.
                    late.extend(removals(&m.old, seen));
                }
                Err(FsError::Store(StoreError::LeaseConflict(_))) => {
                    log::info!(
                        "rename: {:?} was locked by another host while it moved; it stays",
                        m.old
                    );
                    // Listed again under its old name (unless its new holder listed a newer
                    // value meanwhile), and unlisted under the new one.
                    late.push(Change::Saved {
                        key: m.old.clone(),
                        blob: self.layout.blob_name(&m.old),
                        entry: Entry {
                            etag: m.source.etag.clone(),
                            ..m.entry.clone()
                        },
                        replaces: None,
                    });
                    late.push(Change::Remove {
                        key: m.new.clone(),
                        if_etag: Some(m.entry.etag.clone()),
                    });
                    self.drop_copies(vec![(m.new.clone(), m.entry.etag.clone())])
                        .await;
                    stayed.push(m.old.clone());
                }
                Err(e) => log::warn!("rename: could not delete the old blob of {:?}: {e}", m.old),
            }
        }
        if !late.is_empty() {
            if let Err(e) = self.index.commit(late).await {
                log::warn!("rename: could not unlist the old names: {e}");
            }
        }
        stayed
    }

    /// Deletes copies a rename made and does not keep (each only at the version it wrote).
    async fn drop_copies(&self, copies: Vec<(String, String)>) {
        for (key, etag) in copies {
            let cond = Conditions::if_match(etag).with_lease(self.locks.lease_id(&key));
            match self.store.delete(&self.layout.blob_name(&key), &cond).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => log::warn!("rename: could not delete the unused copy {key:?}: {e}"),
            }
        }
    }

    /// Renames a file created here and not saved yet (`st`, locked): nothing is stored under
    /// its name but a claim (dropped: the file is saved under its new name at close). A file at
    /// the target stays listed until then, and that save replaces it: other hosts see the old
    /// value, then the new one, never no file (the name used to be deleted at once, and a
    /// reader elsewhere found nothing there until the close).
    async fn rename_pending(
        &self,
        from: &str,
        to: &str,
        dst: Option<Entry>,
        st: &mut FileState,
        mut replaced: Option<(u64, &mut FileState)>,
    ) -> FsResult<()> {
        if let Some(claim) = st.claim.take() {
            st.base = None;
            if let Err(e) = self.drop_claim(from, claim).await {
                log::warn!("rename: could not remove the claim of {from:?}: {e}");
            }
        }
        if st.replacing {
            // Moving on from a name whose old value it was to replace: that value goes now
            // (the name is left empty, as the earlier rename said).
            st.replacing = false;
            if let Some(old) = st.base.take() {
                self.delete_listed(from, &old.etag).await?;
            }
        }
        let dst = match dst.filter(|d| d.kind != EntryKind::Dir) {
            Some(d) => Some(d),
            None if self.takes_over_claim(to, st, &mut replaced) => None,
            None => {
                // A free name: claimed at once, as an `O_EXCL` create claims it, so that the
                // name is taken for every host from the rename on (an `O_EXCL` create elsewhere
                // meets EEXIST), not only from the first save.
                let perms = st.perms.unwrap_or((0o644, self.cfg.uid, self.cfg.gid));
                match self.claim_new(to, perms).await {
                    Ok((entry, keeper)) => {
                        st.base = Some(entry);
                        st.claim = Some(keeper);
                        None
                    }
                    // Made elsewhere meanwhile: replaced by this file's save, as a file that
                    // was there (an `O_EXCL` create still in progress elsewhere keeps it).
                    Err(FsError::Exists) => self.index.cached().entries.get(to),
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some(d) = dst {
            // The value it replaces: its save lists the new value over this one. (Content,
            // not a copy of it: nothing of the old value is read, nor its attributes kept.)
            st.base = Some(d);
            st.replacing = true;
            st.written = true;
            if st.xattrs.is_none() {
                st.xattrs = Some(Vec::new());
            }
            if let Some(s) = st.staged.as_mut() {
                s.derived = false;
                s.dirty = true;
            }
        }
        self.move_inodes(from, to, replaced).await;
        Ok(())
    }

    /// When the file replaced at `to` was created here and holds the name's claim (not saved
    /// yet), the moved file `st` takes the claim over: its save lands over the claim (the name
    /// stays taken for every host meanwhile). Left behind, the claim would make that save find
    /// the name held by a live claim and save nothing.
    fn takes_over_claim(
        &self,
        to: &str,
        st: &mut FileState,
        replaced: &mut Option<(u64, &mut FileState)>,
    ) -> bool {
        let Some((ino, d)) = replaced.as_mut() else {
            return false;
        };
        if d.unlinked || lock(&self.inodes).get(to) != Some(*ino) {
            return false;
        }
        let Some(keeper) = d.claim.take() else {
            return false;
        };
        st.base = d.base.take();
        st.claim = Some(keeper);
        true
    }

    /// Moves the inodes of `from` (and under it) to `to`. A file of this host open under the
    /// name `to` was replaced: nothing of it is saved any more (as after `unlink`). `replaced`:
    /// that file's state, if the caller holds it locked.
    async fn move_inodes(&self, from: &str, to: &str, replaced: Option<(u64, &mut FileState)>) {
        let old = lock(&self.inodes).get(to);
        lock(&self.inodes).rename(from, to);
        let Some(old) = old else {
            return;
        };
        match replaced {
            Some((ino, st)) if ino == old => detach(st),
            _ => {
                // Opened since the rename began: not locked in order with the source, so it is
                // not waited for here (another rename may hold it and wait for the source).
                if let Some(f) = self.open_file(old) {
                    match f.state.clone().try_lock_owned() {
                        Ok(mut st) => detach(&mut st),
                        Err(_) => {
                            tokio::spawn(async move { detach(&mut *f.state.lock().await) });
                        }
                    }
                }
            }
        }
    }

    /// Copies the blob of `old` to `new`: a copy of one version (the newest when another host
    /// rewrites it while it is copied). `None` if `old` is gone.
    async fn copy_version(&self, old: &str, new: &str) -> FsResult<Option<Copied>> {
        let src = self.layout.blob_name(old);
        let dst = self.layout.blob_name(new);
        let mut last_err = None;
        for _ in 0..5 {
            let lease = self.locks.lease_id(new);
            match transfer::copy_stored(self.store.as_ref(), &src, &dst, lease, &self.cfg.transfer)
                .await
            {
                Ok(c) => return Ok(Some(c)),
                Err(TransferError::Store(StoreError::NotFound(_))) => return Ok(None),
                Err(e @ TransferError::Changed(_)) => last_err = Some(FsError::from(e)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err.unwrap_or(FsError::Internal("rename: no copy attempted".into())))
    }
}

/// An open file whose name another was moved onto: its handles keep their data, saved nowhere
/// (its claim, if it had one, was overwritten by the move).
fn detach(st: &mut FileState) {
    st.unlinked = true;
    st.claim = None;
    if let Some(s) = st.staged.as_mut() {
        s.dirty = false;
        s.early = None;
    }
}

/// Locks the states of two open files (either may be absent), the lower inode first: two moves
/// between the same names in opposite directions never each wait for the other.
async fn lock_both(
    a: Option<(u64, Arc<OpenFile>)>,
    b: Option<(u64, Arc<OpenFile>)>,
) -> (Option<StateGuard>, Option<StateGuard>) {
    async fn take(f: &Option<(u64, Arc<OpenFile>)>) -> Option<StateGuard> {
        match f {
            Some((_, f)) => Some(f.state.clone().lock_owned().await),
            None => None,
        }
    }
    if matches!((&a, &b), (Some((ia, _)), Some((ib, _))) if ib < ia) {
        let gb = take(&b).await;
        (take(&a).await, gb)
    } else {
        let ga = take(&a).await;
        (ga, take(&b).await)
    }
}

type StateGuard = tokio::sync::OwnedMutexGuard<FileState>;

/// Gives back the leases a rename took to carry locks along, when it does not happen.
async fn release_all(carried: Vec<(String, String, Option<LeaseKeeper>)>) {
    for (_, _, lease) in carried {
        if let Some(lease) = lease {
            let _ = lease.release().await;
        }
    }
}

/// Whether an open file of this host has no saved value (created here, at most claimed, or
/// renamed over a value it has not replaced yet).
fn never_saved(st: &FileState) -> bool {
    !st.unlinked && st.staged.is_some() && (st.base.is_none() || st.claim.is_some() || st.replacing)
}
