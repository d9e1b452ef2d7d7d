//! Changes to an index and how they apply: pure functions over an [`Index`], no store, so the
//! rules can be tested (and reasoned about) on their own.
//!
//! One rule needs the store: a [`Change::Saved`] whose listed entry moved on since the write
//! began lands only if its blob is still the version written. [`saved_check`] says when (and
//! which blob to ask about); [`super::shared`] asks the store and, when another writer's value
//! is newer, skips the change (or lists that value if the key is unlisted); everything else is
//! [`apply_change`].

use super::format::{Entry, Index};

/// One change to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds or replaces a key's entry.
    Put { key: String, entry: Entry },
    /// Adds a key's entry only if the key is not listed (never replaces a newer entry).
    Insert { key: String, entry: Entry },
    /// Replaces a key's entry only while it still names the blob version `if_etag`.
    Update {
        key: String,
        if_etag: String,
        entry: Entry,
    },
    /// Removes a key; with `if_etag`, only while its entry still names that blob version (so a
    /// delete never drops a newer value another writer just committed).
    Remove {
        key: String,
        if_etag: Option<String>,
    },
    /// Lists the value this process just wrote to `blob`, replacing the entry `replaces` (the
    /// etag listed when the write began; `None`: the key was not listed). Submitted changes land
    /// later, so when the listed entry has changed meanwhile the commit asks the store whether
    /// `blob` is still this version and lists it only then: a late commit never puts back an
    /// older value over another writer's newer one. When another writer's value is there and the
    /// key is unlisted (it was removed, then rewritten, and that writer's listing has not landed
    /// yet), the key is listed with the newer blob as the store describes it (not a claim or a
    /// link), so the name this host just saved never vanishes.
    Saved {
        key: String,
        blob: String,
        entry: Entry,
        replaces: Option<String>,
    },
}

impl Change {
    /// The key the change is about.
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. }
            | Change::Insert { key, .. }
            | Change::Update { key, .. }
            | Change::Remove { key, .. }
            | Change::Saved { key, .. } => key,
        }
    }
}

/// A [`Change::Saved`] that can only land once the store confirms its blob is still the
/// version written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedCheck<'a> {
    pub key: &'a str,
    /// The blob to ask about.
    pub blob: &'a str,
    /// The etag it must still have for the change to land.
    pub etag: &'a str,
}

/// Whether `change`, applied to `index` as it is now, must first have its blob confirmed:
/// only a [`Change::Saved`] whose listed entry is neither the one its write replaced nor the
/// one it lists (another writer changed the key meanwhile).
pub fn saved_check<'a>(index: &Index, change: &'a Change) -> Option<SavedCheck<'a>> {
    let Change::Saved {
        key,
        blob,
        entry,
        replaces,
    } = change
    else {
        return None;
    };
    let listed = index.entries.get(key).map(|e| e.etag);
    let current = listed.as_deref() == replaces.as_deref() || listed.as_ref() == Some(&entry.etag);
    (!current).then_some(SavedCheck {
        key,
        blob,
        etag: &entry.etag,
    })
}

/// Applies one change to an index (a [`Change::Saved`] as a put: its check, if any, is the
/// caller's); returns whether anything changed.
pub fn apply_change(index: &mut Index, change: &Change) -> bool {
    match change {
        Change::Put { key, entry } | Change::Saved { key, entry, .. } => {
            if index.entries.get(key).as_ref() != Some(entry) {
                index.entries.insert(key.clone(), entry.clone());
                true
            } else {
                false
            }
        }
        Change::Insert { key, entry } => {
            if index.entries.contains_key(key) {
                false
            } else {
                index.entries.insert(key.clone(), entry.clone());
                true
            }
        }
        Change::Update {
            key,
            if_etag,
            entry,
        } => match index.entries.get(key) {
            Some(e) if &e.etag == if_etag && &e != entry => {
                index.entries.insert(key.clone(), entry.clone());
                true
            }
            _ => false,
        },
        Change::Remove { key, if_etag } => {
            let matches = index
                .entries
                .get(key)
                .is_some_and(|e| if_etag.as_ref().is_none_or(|t| &e.etag == t));
            if matches {
                index.entries.remove(key);
            }
            matches
        }
    }
}

/// Applies changes to an index, in order (each [`Change::Saved`] as a put); returns whether
/// anything changed.
pub fn apply_changes(index: &mut Index, changes: &[Change]) -> bool {
    let mut changed = false;
    for c in changes {
        changed |= apply_change(index, c);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(etag: &str) -> Index {
        let mut index = Index::default();
        index
            .entries
            .insert("k".into(), Entry::file(1, 1, 0, etag.to_string()));
        index
    }

    fn saved(etag: &str, replaces: Option<&str>) -> Change {
        Change::Saved {
            key: "k".into(),
            blob: "f/k".into(),
            entry: Entry::file(2, 2, 0, etag.to_string()),
            replaces: replaces.map(String::from),
        }
    }

    #[test]
    fn a_saved_change_is_checked_only_when_the_listing_moved_on() {
        // Listed as the write found it, or already listing it: lands without asking.
        assert_eq!(saved_check(&listed("a"), &saved("b", Some("a"))), None);
        assert_eq!(saved_check(&listed("b"), &saved("b", Some("a"))), None);
        assert_eq!(saved_check(&Index::default(), &saved("b", None)), None);
        // Another writer's entry (or a removal) came in between: ask about the blob.
        let check = SavedCheck {
            key: "k",
            blob: "f/k",
            etag: "b",
        };
        assert_eq!(
            saved_check(&listed("c"), &saved("b", Some("a"))),
            Some(check)
        );
        assert_eq!(
            saved_check(&Index::default(), &saved("b", Some("a"))),
            Some(check)
        );
        assert_eq!(saved_check(&listed("a"), &saved("b", None)), Some(check));
    }

    #[test]
    fn conditional_changes_apply_only_while_their_condition_holds() {
        let mut index = listed("a");
        let entry = Entry::file(5, 5, 0, "b");
        let update = |if_etag: &str| Change::Update {
            key: "k".into(),
            if_etag: if_etag.into(),
            entry: entry.clone(),
        };
        assert!(!apply_change(&mut index, &update("x")));
        assert!(apply_change(&mut index, &update("a")));
        assert!(!apply_change(&mut index, &update("b")), "already so");
        let remove = |if_etag: Option<&str>| Change::Remove {
            key: "k".into(),
            if_etag: if_etag.map(String::from),
        };
        assert!(!apply_change(&mut index, &remove(Some("a"))));
        assert!(apply_change(&mut index, &remove(Some("b"))));
        assert!(!apply_change(&mut index, &remove(None)));
        assert!(index.entries.is_empty());
    }
}
