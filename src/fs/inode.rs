//! Inode numbers for keys: stable while the kernel holds them, renamed with the keys they stand
//! for, forgotten when nothing holds them any more.
//!
//! Each inode counts the kernel's references to it (its *lookup count*: one per reply that handed
//! it out — lookup, create, mkdir, symlink, a readdirplus entry — less what `forget` gave back)
//! and the open directory listings that name it (*pins*). Once both are zero the key may be
//! forgotten ([`InodeTable::release`]); numbers are never reused, so a number the kernel still
//! holds can never come to mean another key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A fast hasher with a random seed per table (foldhash): a listing of a million keys hashes
/// each of them, and SipHash was a sixth of the daemon's time there.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The root directory's inode number (the mounted folder itself).
pub const ROOT_INO: u64 = 1;

/// One inode: its key (stored once, shared with `by_key`) and what holds it.
#[derive(Debug)]
struct Node {
    key: Arc<str>,
    /// The kernel's lookup count.
    lookups: u64,
    /// Open directory listings naming this inode.
    pins: u32,
}

/// Two-way map between inode numbers and keys (`""` is the root).
#[derive(Debug)]
pub struct InodeTable {
    by_ino: Map<u64, Node>,
    by_key: Map<Arc<str>, u64>,
    /// Inodes nothing references but that were in use (an open file) when they became so: looked
    /// at again by [`Self::take_parked`].
    parked: HashSet<u64>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut t = InodeTable {
            by_ino: Map::default(),
            by_key: Map::default(),
            parked: HashSet::new(),
            next: ROOT_INO + 1,
        };
        let root: Arc<str> = Arc::from("");
        t.by_ino.insert(
            ROOT_INO,
            Node {
                key: root.clone(),
                lookups: 0,
                pins: 0,
            },
        );
        t.by_key.insert(root, ROOT_INO);
        t
    }
}

impl InodeTable {
    /// The key of an inode.
    pub fn key(&self, ino: u64) -> Option<&str> {
        self.by_ino.get(&ino).map(|n| &*n.key)
    }

    /// The inode of a key, if one was handed out.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// How many inodes the table holds (the root included).
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// Whether the table holds only the root.
    pub fn is_empty(&self) -> bool {
        self.by_ino.len() <= 1
    }

    /// The inode of a key, handing out a new one if needed.
    pub fn ino(&mut self, key: &str) -> u64 {
        if let Some(&ino) = self.by_key.get(key) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        let key: Arc<str> = Arc::from(key);
        self.by_ino.insert(
            ino,
            Node {
                key: key.clone(),
                lookups: 0,
                pins: 0,
            },
        );
        self.by_key.insert(key, ino);
        ino
    }

    /// The inode of a key, counting one kernel lookup of it (a reply handing it out).
    pub fn hand_out(&mut self, key: &str) -> u64 {
        let ino = self.ino(key);
        self.add_lookup(ino);
        ino
    }

    /// Counts one kernel lookup of `ino` (if it is still known).
    pub fn add_lookup(&mut self, ino: u64) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.lookups += 1;
        }
    }

    /// Takes back `n` of the kernel's lookups of `ino`; true when nothing references it now.
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        match self.by_ino.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0 && node.pins == 0
            }
            None => false,
        }
    }

    /// The inode of a key, pinned by an open directory listing.
    pub fn pin(&mut self, key: &str) -> u64 {
        let ino = self.ino(key);
        self.pin_ino(ino);
        ino
    }

    /// Pins a known inode (a listing's `.` and `..`).
    pub fn pin_ino(&mut self, ino: u64) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.pins += 1;
        }
    }

    /// Drops a listing's pin of `ino`; true when nothing references it now.
    pub fn unpin(&mut self, ino: u64) -> bool {
        match self.by_ino.get_mut(&ino) {
            Some(node) => {
                node.pins = node.pins.saturating_sub(1);
                node.lookups == 0 && node.pins == 0
            }
            None => false,
        }
    }

    /// Forgets `ino` if nothing references it (never the root). `in_use` (an open file of it):
    /// it is kept and parked, to be looked at again once that ends.
    pub fn release(&mut self, ino: u64, in_use: bool) {
        let free = ino != ROOT_INO
            && self
                .by_ino
                .get(&ino)
                .is_some_and(|n| n.lookups == 0 && n.pins == 0);
        if !free {
            self.parked.remove(&ino);
            return;
        }
        if in_use {
            self.parked.insert(ino);
            return;
        }
        self.parked.remove(&ino);
        if let Some(n) = self.by_ino.remove(&ino) {
            // Its key may name another inode by now (it was replaced by a rename).
            if self.by_key.get(&n.key) == Some(&ino) {
                self.by_key.remove(&n.key);
            }
        }
    }

    /// Gives back the tables' spare room once they hold under a quarter of what they have room
    /// for (a listing of a million names grew them; they keep that size otherwise).
    pub fn shrink(&mut self) {
        if self.by_ino.len() * 4 < self.by_ino.capacity() {
            self.by_ino.shrink_to_fit();
            self.by_key.shrink_to_fit();
        }
    }

    /// The parked inodes (to be released again), emptying the set.
    pub fn take_parked(&mut self) -> Vec<u64> {
        self.parked.drain().collect()
    }

    /// Whether some inode is parked.
    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Frees a key's name (after unlink): a later lookup of the key gets a new inode. An inode
    /// the kernel still holds (an open descriptor of the unlinked file) keeps its number and
    /// old key until the kernel forgets it, so writes, reads and `fstat` through the descriptor
    /// go on (as on a local disk); one nobody holds is forgotten now. `open`: the file has
    /// open handles here (they hold it too).
    pub fn remove_key(&mut self, key: &str, open: bool) {
        if let Some(ino) = self.by_key.remove(key) {
            let held = open
                || self
                    .by_ino
                    .get(&ino)
                    .is_some_and(|n| n.lookups > 0 || n.pins > 0);
            if !held {
                self.by_ino.remove(&ino);
                self.parked.remove(&ino);
            }
        }
    }

    /// Moves `from` and every key under `from/` to `to`, keeping their inode numbers (and what
    /// holds them). An inode that `to` had was replaced: it keeps meaning `to` until the kernel
    /// forgets it (an open racing the rename through the old name finds the new value, not
    /// nothing), but `to` now names the moved inode.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(old) = self.by_key.remove(to) {
            if self
                .by_ino
                .get(&old)
                .is_some_and(|n| n.lookups == 0 && n.pins == 0)
            {
                self.by_ino.remove(&old);
            }
        }
        let prefix = format!("{from}/");
        let moved: Vec<(Arc<str>, u64)> = self
            .by_key
            .iter()
            .filter(|(k, _)| &***k == from || k.starts_with(&prefix))
            .map(|(k, &i)| (k.clone(), i))
            .collect();
        for (old, ino) in moved {
            let new: Arc<str> = Arc::from(format!("{to}{}", &old[from.len()..]));
            self.by_key.remove(&old);
            self.by_key.insert(new.clone(), ino);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.key = new;
            }
        }
    }
}

/// Joins a directory key and a child name.
pub fn child_key(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The directory part of a key (`""` for top-level keys).
pub fn parent_key(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_subtrees_and_keeps_numbers() {
        let mut t = InodeTable::default();
        let a = t.ino("a");
        let ab = t.ino("a/b");
        let other = t.ino("ab");
        let target = t.hand_out("z");
        let unused = t.ino("y");
        t.rename("a", "z");
        t.rename("ab/c", "y");
        assert_eq!(
            t.key(unused),
            None,
            "a replaced inode nothing holds is forgotten"
        );
        assert_eq!(t.get("z"), Some(a));
        assert_eq!(t.get("z/b"), Some(ab));
        assert_eq!(t.key(ab), Some("z/b"));
        assert_eq!(
            t.get("ab"),
            Some(other),
            "a sibling sharing the prefix is untouched"
        );
        assert_eq!(
            t.key(target),
            Some("z"),
            "the replaced inode means `z` until the kernel forgets it"
        );
        assert!(t.forget(target, 1));
        t.release(target, false);
        assert_eq!(t.key(target), None);
        assert_eq!(t.get("z"), Some(a), "releasing it leaves the new `z` alone");
        assert_eq!(t.get("a"), None);
        assert_eq!(child_key("", "x"), "x");
        assert_eq!(child_key("d", "x"), "d/x");
        assert_eq!(parent_key("d/e/x"), "d/e");
        assert_eq!(parent_key("x"), "");
    }

    #[test]
    fn an_inode_is_forgotten_once_nothing_holds_it_and_numbers_are_not_reused() {
        let mut t = InodeTable::default();
        let a = t.hand_out("a");
        assert_eq!(t.hand_out("a"), a);
        assert!(!t.forget(a, 1), "one lookup is left");
        let pinned = t.pin("a");
        assert_eq!(pinned, a);
        assert!(!t.forget(a, 1), "a listing still names it");
        assert!(t.unpin(a));
        t.release(a, true);
        assert_eq!(t.get("a"), Some(a), "an open file keeps it");
        assert_eq!(t.take_parked(), vec![a]);
        t.release(a, false);
        assert_eq!((t.get("a"), t.key(a), t.len()), (None, None, 1));
        let again = t.hand_out("a");
        assert_ne!(again, a, "a forgotten number is not handed out again");
        assert!(!t.forget(a, 1), "a forget of an old number finds nothing");
        assert_eq!(t.key(again), Some("a"));
        assert!(t.forget(ROOT_INO, 5));
        t.release(ROOT_INO, false);
        assert_eq!(t.key(ROOT_INO), Some(""), "the root is never forgotten");
    }
}
