//! What the index says about folders: a folder is a key prefix, so its children and whether it
//! has any are range queries over the sorted index.

use super::types::kind_of;
use super::NodeKind;
use crate::index::Index;

/// The children of directory `dir` in the index: (name, kind), in name order.
pub(super) fn children(index: &Index, dir: &str) -> Vec<(String, NodeKind)> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = Vec::new();
    let mut from = prefix.clone();
    // One pass over the folder's keys; a subfolder's keys are skipped with one new seek.
    'seek: loop {
        for (key, entry) in index.entries.range_from(&from) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break 'seek;
            };
            match rest.split_once('/') {
                Some((name, _)) => {
                    out.push((name.to_string(), NodeKind::Dir));
                    // Past the whole subtree: '0' is the character after '/'.
                    from = format!("{prefix}{name}0");
                    continue 'seek;
                }
                None => out.push((rest.to_string(), kind_of(&entry))),
            }
        }
        break;
    }
    // A folder's name comes back once more after names that sort between it and its '/'
    // ("a", "a-b", "a/x"): sort (nearly sorted already) and keep one of each.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Whether any key lies under `dir/`.
pub(super) fn has_children(index: &Index, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    index
        .entries
        .range_from(&prefix)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}
