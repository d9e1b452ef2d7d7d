//! Crash recovery: files an earlier mount of this folder saved but had not listed when it died
//! (its index journal, see `index::journal`) are listed again at mount time.

use super::*;
use crate::index::journal::Journal;
use crate::index::Change;
use crate::store::StoreError;

/// Names this folder's index journals: the same store and folder give the same stem.
pub(super) fn journal_stem(store: &dyn BlobStore, layout: &Layout) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}\n{}", store.describe(), layout.index_blob()));
    format!("index-{}", &hex::encode(digest)[..16])
}

impl Fs {
    /// Lists again the files an earlier mount of this folder saved but had not listed when it
    /// died (its journal, see `index::journal`), where the blob is still the version it wrote.
    pub(super) async fn recover_journals(&self) {
        let stem = journal_stem(self.store.as_ref(), &self.layout);
        let orphans = match Journal::orphans(&self.cfg.cache_dir, &stem) {
            Ok(o) => o,
            Err(e) => {
                log::warn!("cannot read old index journals: {e}");
                return;
            }
        };
        for orphan in orphans {
            let mut changes = Vec::new();
            let mut complete = true;
            for (key, entry) in &orphan.entries {
                match self.store.head(&self.layout.blob_name(key)).await {
                    // Conditional, like the save it replays: if another host lists a newer
                    // value by the time this lands, the commit checks the blob again and keeps
                    // the newer one.
                    Ok(p) if p.etag == entry.etag => changes.push(Change::Saved {
                        key: key.clone(),
                        blob: self.layout.blob_name(key),
                        entry: entry.clone(),
                        replaces: None,
                    }),
                    Ok(_) | Err(StoreError::NotFound(_)) => {} // replaced or removed since
                    Err(e) => {
                        log::warn!("index journal {}: {key:?}: {e}", orphan.path.display());
                        complete = false;
                    }
                }
            }
            let n = changes.len();
            if let Err(e) = self.index.commit(changes).await {
                log::warn!("index journal {}: {e}", orphan.path.display());
                continue;
            }
            if n > 0 {
                log::info!(
                    "listed {n} file(s) an earlier mount saved but had not listed when it stopped"
                );
            }
            if complete {
                orphan.settle();
            }
        }
    }
}
