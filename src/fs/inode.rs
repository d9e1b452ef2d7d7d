//! Inode numbers for keys: stable for the life of a mount, renamed with the keys they stand for.

use std::collections::HashMap;
use std::sync::Arc;

/// A fast hasher with a random seed per table (foldhash): a listing of a million keys hashes
/// each of them, and SipHash was a sixth of the daemon's time there.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The root directory's inode number (the mounted folder itself).
pub const ROOT_INO: u64 = 1;

/// Two-way map between inode numbers and keys (`""` is the root).
#[derive(Debug)]
pub struct InodeTable {
    /// Each key is stored once, shared by both maps.
    by_ino: Map<u64, Arc<str>>,
    by_key: Map<Arc<str>, u64>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut t = InodeTable {
            by_ino: Map::default(),
            by_key: Map::default(),
            next: ROOT_INO + 1,
        };
        t.by_ino.insert(ROOT_INO, Arc::from(""));
        t.by_key.insert(Arc::from(""), ROOT_INO);
        t
    }
}

impl InodeTable {
    /// The key of an inode.
    pub fn key(&self, ino: u64) -> Option<&str> {
        self.by_ino.get(&ino).map(|k| &**k)
    }

    /// The inode of a key, if one was handed out.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// The inode of a key, handing out a new one if needed.
    pub fn ino(&mut self, key: &str) -> u64 {
        if let Some(&ino) = self.by_key.get(key) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        let key: Arc<str> = Arc::from(key);
        self.by_ino.insert(ino, key.clone());
        self.by_key.insert(key, ino);
        ino
    }

    /// Forgets a key's inode (after unlink).
    pub fn remove_key(&mut self, key: &str) {
        if let Some(ino) = self.by_key.remove(key) {
            self.by_ino.remove(&ino);
        }
    }

    /// Moves `from` and every key under `from/` to `to`, keeping their inode numbers; an inode
    /// that `to` had is forgotten (it was replaced).
    pub fn rename(&mut self, from: &str, to: &str) {
        self.remove_key(to);
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
            self.by_ino.insert(ino, new);
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
        let target = t.ino("z");
        t.rename("a", "z");
        assert_eq!(t.get("z"), Some(a));
        assert_eq!(t.get("z/b"), Some(ab));
        assert_eq!(t.key(ab), Some("z/b"));
        assert_eq!(
            t.get("ab"),
            Some(other),
            "a sibling sharing the prefix is untouched"
        );
        assert_eq!(t.key(target), None, "the replaced inode is forgotten");
        assert_eq!(t.get("a"), None);
        assert_eq!(child_key("", "x"), "x");
        assert_eq!(child_key("d", "x"), "d/x");
        assert_eq!(parent_key("d/e/x"), "d/e");
        assert_eq!(parent_key("x"), "");
    }
}
