//! An open directory's entries as opendir took them, packed: every name in one buffer, with its
//! end offset, inode number and kind in parallel arrays (about 13 bytes plus the name per entry,
//! instead of a `String` each), so a listing of a million names stays small while it is open.

use super::{DirEntry, NodeKind};

/// The entries of one open directory, in the order they are served.
#[derive(Debug, Default)]
pub struct Listing {
    names: String,
    /// End of each entry's name in `names`.
    ends: Vec<u32>,
    inos: Vec<u64>,
    kinds: Vec<NodeKind>,
}

impl Listing {
    /// An empty listing with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Listing {
            names: String::new(),
            ends: Vec::with_capacity(n),
            inos: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
        }
    }

    /// Adds an entry at the end. (A listing's names add up to far less than 4 GiB: a name is
    /// at most 255 bytes, and a folder of ten million of them is 2.5 GiB at worst.)
    pub fn push(&mut self, ino: u64, name: &str, kind: NodeKind) {
        self.names.push_str(name);
        self.ends
            .push(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        self.inos.push(ino);
        self.kinds.push(kind);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.inos.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inos.is_empty()
    }

    /// The name of entry `i`.
    pub fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = (self.ends[i] as usize).min(self.names.len());
        self.names.get(start..end).unwrap_or_default()
    }

    /// The inode number of entry `i`.
    pub fn ino(&self, i: usize) -> u64 {
        self.inos[i]
    }

    /// The kind of entry `i`.
    pub fn kind(&self, i: usize) -> NodeKind {
        self.kinds[i]
    }

    /// Entry `i` as a [`DirEntry`], if there is one.
    pub fn get(&self, i: usize) -> Option<DirEntry> {
        (i < self.len()).then(|| DirEntry {
            ino: self.inos[i],
            name: self.name(i).to_string(),
            kind: self.kinds[i],
        })
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = DirEntry> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The inode numbers in order.
    pub fn inos(&self) -> &[u64] {
        &self.inos
    }
}

impl FromIterator<DirEntry> for Listing {
    fn from_iter<T: IntoIterator<Item = DirEntry>>(iter: T) -> Self {
        let mut l = Listing::default();
        for e in iter {
            l.push(e.ino, &e.name, e.kind);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_pushed() {
        let mut l = Listing::with_capacity(3);
        l.push(1, ".", NodeKind::Dir);
        l.push(7, "", NodeKind::File);
        l.push(9, "naïve name", NodeKind::Symlink);
        assert_eq!(l.len(), 3);
        assert_eq!(l.name(0), ".");
        assert_eq!(l.name(1), "");
        assert_eq!(l.name(2), "naïve name");
        assert_eq!(l.ino(2), 9);
        assert_eq!(l.kind(2), NodeKind::Symlink);
        assert!(l.get(3).is_none());
        let names: Vec<String> = l.iter().map(|e| e.name).collect();
        assert_eq!(names, vec![".", "", "naïve name"]);
        assert_eq!(l.inos(), &[1, 7, 9]);
    }
}
