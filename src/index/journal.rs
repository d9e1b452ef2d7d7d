//! The local journal of submitted index entries, so a daemon killed between a close and the
//! index commit that lists the file does not leave the file unlisted.
//!
//! A file's close returns once its blob is stored; its index entry is *submitted* and written in
//! the next group commit (see [`super::shared`]). Each submitted entry is first appended to this
//! mount's journal in the cache directory (`<stem>-<pid>.journal`), and the journal is emptied
//! whenever every submitted entry has landed. The file is held under an exclusive `flock` while
//! the mount lives; a later mount of the same folder finds journals whose lock is free (their
//! daemon died), and lists each entry again if its blob is still that version.
//!
//! Records: a little-endian `u32` length, then an index blob (docs/FORMAT.md) holding the one
//! entry. A torn last record (the daemon died mid-append) is ignored.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use super::format::{self, Entry, Index};

/// One mount's journal, locked while it lives.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Whether anything was appended since the last clear.
    dirty: bool,
    /// Records in the file.
    records: usize,
}

/// A journal is rewritten when it holds more than this many records ...
const COMPACT_MIN: usize = 64;
/// ... and more than this many times the records still waiting.
const COMPACT_FACTOR: usize = 2;

/// A journal left by a mount that ended before its entries landed.
pub struct Orphan {
    pub path: PathBuf,
    pub entries: Vec<(String, Entry)>,
    /// Holds the orphan's lock until it is settled.
    _file: File,
}

impl Journal {
    /// Creates this process's journal for the folder identified by `stem`, in `dir`: a new
    /// file of its own, never one an earlier mount left (those are [`Journal::orphans`]).
    pub fn create(dir: &Path, stem: &str) -> std::io::Result<Journal> {
        let (file, path) = new_locked(dir, stem, "journal")?;
        Ok(Journal {
            file,
            path,
            dirty: false,
            records: 0,
        })
    }

    /// Appends one entry (on disk once [`Journal::sync_handle`]'s file is synced).
    pub fn append(&mut self, key: &str, entry: &Entry) -> std::io::Result<()> {
        // One write per record: a kill can tear only the last one.
        self.file.write_all(&record(key, entry))?;
        self.dirty = true;
        self.records += 1;
        Ok(())
    }

    /// A handle to sync the journal with (`sync_data`), without holding the journal.
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Forgets every entry (they all landed).
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.set_len(0)?;
            std::io::Seek::seek(&mut self.file, std::io::SeekFrom::Start(0))?;
            self.dirty = false;
            self.records = 0;
        }
        Ok(())
    }

    /// Whether most records have landed, so [`Journal::rewrite`] with the `waiting` ones is due.
    pub fn wants_rewrite(&self, waiting: usize) -> bool {
        self.records > COMPACT_MIN && self.records > COMPACT_FACTOR * waiting.max(1)
    }

    /// Replaces the journal with one holding only `waiting` (the entries not landed yet): a new
    /// file, synced, then renamed over the old one, so a crash at any point leaves one journal
    /// with every waiting entry.
    pub fn rewrite<'a>(
        &mut self,
        waiting: impl IntoIterator<Item = (&'a str, &'a Entry)>,
    ) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let stem = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".journal"))
            .unwrap_or("journal")
            .to_string();
        // Not named `.journal` until complete: a scan for orphans never reads it half-written.
        let (mut file, tmp) = new_locked(dir, &stem, "journal-new")?;
        let mut records = 0;
        let mut bytes = Vec::new();
        for (key, entry) in waiting {
            bytes.extend_from_slice(&record(key, entry));
            records += 1;
        }
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_data())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.file = file;
        self.records = records;
        self.dirty = records > 0;
        Ok(())
    }

    /// Journals of earlier mounts of the folder `stem` whose daemon is gone, with their entries
    /// (empty ones are removed at once).
    pub fn orphans(dir: &Path, stem: &str) -> std::io::Result<Vec<Orphan>> {
        let mut out = Vec::new();
        let prefix = format!("{stem}-");
        let Ok(listing) = std::fs::read_dir(dir) else {
            return Ok(out);
        };
        for item in listing {
            let path = item?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with(&prefix) {
                continue;
            }
            if name.ends_with(".journal-new") {
                // A rewrite a crash interrupted (the journal it was to replace is still there).
                if let Ok(f) = File::open(&path) {
                    if matches!(f.try_lock_exclusive(), Ok(true)) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                continue;
            }
            if !name.ends_with(".journal") {
                continue;
            }
            let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if !matches!(file.try_lock_exclusive(), Ok(true)) {
                continue; // a live mount's
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let entries = parse(&bytes);
            if entries.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            out.push(Orphan {
                path,
                entries,
                _file: file,
            });
        }
        Ok(out)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.dirty {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Orphan {
    /// Removes the journal once its entries are listed again (unless its name now belongs to
    /// another file: a live mount's rewritten journal).
    pub fn settle(self) {
        use std::os::unix::fs::MetadataExt;
        let same = match (self._file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// A new file `<stem>-<random id>.<suffix>` in `dir`, created here (never an existing one) and
/// locked.
fn new_locked(dir: &Path, stem: &str, suffix: &str) -> std::io::Result<(File, PathBuf)> {
    let path = dir.join(format!("{stem}-{}.{suffix}", uuid::Uuid::new_v4().simple()));
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    if !file.try_lock_exclusive()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("{} is locked by another process", path.display()),
        ));
    }
    Ok((file, path))
}

/// One record: a little-endian `u32` length, then an index holding the one entry.
fn record(key: &str, entry: &Entry) -> Vec<u8> {
    let mut one = Index::default();
    one.entries.insert(key.to_string(), entry.clone());
    let body = format::encode(&one);
    let mut record = Vec::with_capacity(4 + body.len());
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

/// The entries of a journal's bytes, up to the first torn or unreadable record.
fn parse(mut bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(body) = bytes.get(4..4 + len) else {
            break;
        };
        match format::decode(body) {
            Ok(index) => out.extend(index.entries),
            Err(_) => break,
        }
        bytes = &bytes[4 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "stem").unwrap();
        let e1 = Entry::file(5, 20, 1, "\"0x1\"");
        let e2 = Entry::file(7, 22, 2, "\"0x2\"");
        j.append("a/b", &e1).unwrap();
        j.append("c", &e2).unwrap();
        // A live journal is not an orphan.
        assert!(Journal::orphans(dir.path(), "stem").unwrap().is_empty());
        // Simulate a kill mid-append: a torn record at the end.
        j.file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        // The daemon dies: its lock goes, its journal stays, and a later mount finds it.
        drop(j);
        let orphans = Journal::orphans(dir.path(), "stem").unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(
            orphans[0].entries,
            vec![("a/b".to_string(), e1), ("c".to_string(), e2)]
        );
        // Another folder's journals are not this one's; a held orphan is nobody else's.
        assert!(Journal::orphans(dir.path(), "other").unwrap().is_empty());
        assert!(Journal::orphans(dir.path(), "stem").unwrap().is_empty());
        orphans.into_iter().for_each(Orphan::settle);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_cleared_journal_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "stem").unwrap();
        j.append("k", &Entry::file(1, 1, 1, "\"e\"")).unwrap();
        j.clear().unwrap();
        drop(j);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A daemon restarted with the same pid (in a container, pid 1 again) must not wipe the
    /// journal its crashed predecessor left: each journal is a new file of its own.
    #[test]
    fn a_new_journal_never_replaces_an_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = Entry::file(5, 20, 1, "\"0x1\"");
        let mut crashed = Journal::create(dir.path(), "stem").unwrap();
        crashed.append("k", &e).unwrap();
        drop(crashed); // dies with the entry unlanded
        let _next = Journal::create(dir.path(), "stem").unwrap();
        let orphans = Journal::orphans(dir.path(), "stem").unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].entries, vec![("k".to_string(), e)]);
    }

    /// A rewrite keeps exactly the waiting entries, leaves no temporary file, and a crash after
    /// it leaves a journal a later mount reads.
    #[test]
    fn a_rewrite_keeps_only_the_waiting_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "stem").unwrap();
        let entries: Vec<(String, Entry)> = (0..100)
            .map(|i| (format!("k{i}"), Entry::file(i, i, 1, format!("\"{i}\""))))
            .collect();
        for (k, e) in &entries {
            j.append(k, e).unwrap();
        }
        assert!(j.wants_rewrite(2) && !j.wants_rewrite(60));
        j.rewrite(entries[98..].iter().map(|(k, e)| (k.as_str(), e)))
            .unwrap();
        assert!(!j.wants_rewrite(2));
        j.append("late", &entries[0].1).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(j);
        let orphans = Journal::orphans(dir.path(), "stem").unwrap();
        let keys: Vec<&str> = orphans[0].entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["k98", "k99", "late"]);
    }
}
