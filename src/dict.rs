//! The dictionary face, without FUSE: list, get, put (several keys in one index commit), remove,
//! stat, lock and unlock keys through the store and the index — what the original RemoteDict
//! library offered, for scripts on hosts without FUSE.

use std::io::{IsTerminal, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::index::meta::blob_metadata;
use crate::index::{Change, Entry, EntryKind, SharedIndex};
use crate::layout::Layout;
use crate::store::{BlobStore, Conditions, LeaseDuration, PutOptions, StoreError};
use crate::transfer::{self, TransferConfig};

/// A folder of a container, as a dictionary.
pub struct Dict {
    store: Arc<dyn BlobStore>,
    layout: Layout,
    index: Arc<SharedIndex>,
    cfg: TransferConfig,
}

/// Where a value comes from or goes to.
pub enum Endpoint {
    Stdio,
    File(PathBuf),
}

impl Endpoint {
    pub fn parse(arg: Option<&str>) -> Self {
        match arg {
            None | Some("-") => Endpoint::Stdio,
            Some(p) => Endpoint::File(PathBuf::from(p)),
        }
    }
}

/// A progress bar on stderr for transfers over 1 MiB, only when stderr is a terminal.
fn progress(len: u64, what: &str) -> Option<ProgressBar> {
    if len < (1 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Some(bar)
}

pub use crate::time::{fmt_time, now_ns};

impl Dict {
    pub fn new(store: Arc<dyn BlobStore>, layout: Layout) -> Self {
        let index = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
        Dict {
            store,
            layout,
            index,
            cfg: TransferConfig::default(),
        }
    }

    /// Keys under `prefix`, from the index (one conditional GET).
    pub async fn ls(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let index = self.index.current().await?;
        Ok(index
            .entries
            .range_from(prefix)
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect())
    }

    /// One line per key (`-l`: kind, size, mtime), or JSON.
    pub fn render_ls(entries: &[(String, Entry)], long: bool, json: bool) -> String {
        if json {
            let items: Vec<serde_json::Value> = entries
                .iter()
                .map(|(k, e)| {
                    serde_json::json!({
                        "key": k,
                        "kind": match e.kind { EntryKind::File => "file", EntryKind::Dir => "dir", EntryKind::Symlink => "symlink", EntryKind::Special => "special" },
                        "size": e.size,
                        "stored_size": e.stored_size,
                        "mtime": fmt_time(e.mtime_ns),
                        "etag": e.etag,
                    })
                })
                .collect();
            return serde_json::to_string_pretty(&items).unwrap_or_default() + "\n";
        }
        let mut out = String::new();
        for (k, e) in entries {
            if long {
                let kind = match e.kind {
                    EntryKind::File => '-',
                    EntryKind::Dir => 'd',
                    EntryKind::Symlink => 'l',
                    EntryKind::Special => match e.target.split(' ').next() {
                        Some("fifo") => 'p',
                        Some("socket") => 's',
                        Some("char") => 'c',
                        _ => 'b',
                    },
                };
                out.push_str(&format!(
                    "{kind} {:>12} {:>12} {} {k}\n",
                    e.size,
                    e.stored_size,
                    fmt_time(e.mtime_ns)
                ));
            } else {
                out.push_str(k);
                out.push('\n');
            }
        }
        out
    }

    async fn entry(&self, key: &str) -> Result<Entry> {
        self.layout.check_key(key)?;
        match self.index.current().await?.entries.get(key) {
            Some(e) => Ok(e.clone()),
            None => bail!(
                "no key {key:?} in {}/{}",
                self.store.describe(),
                self.layout.folder()
            ),
        }
    }

    /// Writes the value of `key` to `dest`.
    pub async fn get(&self, key: &str, dest: Endpoint) -> Result<u64> {
        let entry = self.entry(key).await?;
        if entry.kind != EntryKind::File {
            bail!("{key:?} is not a file");
        }
        let file = match &dest {
            Endpoint::File(p) => {
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?
            }
            Endpoint::Stdio => tempfile::tempfile().context("creating a temporary file")?,
        };
        let bar = progress(entry.size, key);
        let (tx, mut rx) = watch::channel(0u64);
        let watcher = bar.clone().map(|b| {
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let n = *rx.borrow_and_update();
                    b.set_position(n);
                }
            })
        });
        let blob = self.layout.blob_name(key);
        let got = transfer::download_to(
            &self.store,
            &blob,
            Some(&entry.etag),
            file.try_clone()?,
            &self.cfg,
            Some(tx),
        )
        .await;
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let got = got.with_context(|| format!("reading {key:?}"))?;
        if let Endpoint::Stdio = dest {
            let mut f = file;
            f.seek(SeekFrom::Start(0))?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut f, &mut out)?;
            out.flush()?;
        }
        Ok(got.size)
    }

    /// Uploads every (key, source) pair, then lists them all in one index commit: either every key
    /// changes or none does. All sources are opened (and stdin read) before anything is uploaded.
    pub async fn put(&self, items: Vec<(String, Endpoint)>) -> Result<usize> {
        let mut opened = Vec::new();
        for (key, src) in items {
            self.layout.check_key(&key)?;
            let file = match src {
                Endpoint::File(p) => std::fs::File::open(&p)
                    .with_context(|| format!("{key}: cannot read {}", p.display()))?,
                Endpoint::Stdio => {
                    let mut tmp = tempfile::tempfile()?;
                    std::io::copy(&mut std::io::stdin().lock(), &mut tmp)
                        .context("reading stdin")?;
                    tmp
                }
            };
            let meta = file.metadata()?;
            if !meta.is_file() {
                bail!("{key}: the source is not a regular file");
            }
            opened.push((key, file, meta.len()));
        }
        let mut changes = Vec::new();
        for (key, file, len) in opened {
            let bar = progress(len, &key);
            if let Some(b) = &bar {
                b.enable_steady_tick(Duration::from_millis(200));
            }
            let mut entry = Entry::file(len, 0, now_ns(), "");
            let opts = PutOptions {
                conditions: Conditions::default(),
                metadata: blob_metadata(&entry),
            };
            let up = transfer::upload_file(
                &self.store,
                &self.layout.blob_name(&key),
                file,
                opts,
                &self.cfg,
            )
            .await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let up =
                up.with_context(|| format!("uploading {key:?} (no key was changed in the index)"))?;
            (entry.size, entry.stored_size, entry.etag) = (up.size, up.stored_size, up.etag);
            changes.push(Change::Put { key, entry });
        }
        let n = changes.len();
        self.index.commit(changes).await?;
        Ok(n)
    }

    /// Removes keys: their blobs, then their entries in one index commit.
    pub async fn rm(&self, keys: &[String]) -> Result<()> {
        let mut changes = Vec::new();
        for key in keys {
            let entry = self.entry(key).await?;
            match self
                .store
                .delete(&self.layout.blob_name(key), &Conditions::default())
                .await
            {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e).with_context(|| format!("removing {key:?}")),
            }
            changes.push(Change::Remove {
                key: key.clone(),
                if_etag: Some(entry.etag),
            });
        }
        self.index.commit(changes).await?;
        Ok(())
    }

    /// Sizes, etag, times, mode and lease state of a key.
    pub async fn stat(&self, key: &str) -> Result<String> {
        let e = self.entry(key).await?;
        let props = self.store.head(&self.layout.blob_name(key)).await?;
        let kind = match e.kind {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Special => "special",
        };
        let mut out = format!(
            "key: {key}\nblob: {}\nkind: {kind}\nsize: {}\nstored_size: {}\netag: {}\nmtime: {}\nctime: {}\nlease: {}{}\n",
            self.layout.blob_name(key),
            e.size,
            props.size,
            props.etag,
            fmt_time(e.mtime_ns),
            fmt_time(e.ctime_ns),
            props.lease_state.as_str(),
            if props.lease_state == crate::store::LeaseState::Leased {
                if props.lease_infinite { " (infinite)" } else { " (fixed)" }
            } else {
                ""
            }
        );
        if e.mode != 0 {
            out.push_str(&format!(
                "mode: {:o}\nuid: {}\ngid: {}\n",
                e.mode, e.uid, e.gid
            ));
        }
        if e.kind.has_target() {
            out.push_str(&format!("target: {}\n", e.target));
        }
        Ok(out)
    }

    /// Takes the lease of a key (not renewed: it runs out after `duration`), waiting for it when
    /// `wait`; returns the lease id to unlock with.
    pub async fn lock(&self, key: &str, duration: LeaseDuration, wait: bool) -> Result<String> {
        self.entry(key).await?;
        let blob = self.layout.blob_name(key);
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.acquire_lease(&blob, duration, None).await {
                Ok(id) => return Ok(id),
                Err(StoreError::LeaseConflict(_)) if wait => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(StoreError::LeaseConflict(_)) => bail!("{key:?} is locked by another holder"),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Releases a lease taken by `lock` (with its id), or breaks whatever lease the key has.
    pub async fn unlock(&self, key: &str, lease_id: Option<&str>) -> Result<()> {
        self.entry(key).await?;
        let blob = self.layout.blob_name(key);
        match lease_id {
            Some(id) => self
                .store
                .release_lease(&blob, id)
                .await
                .with_context(|| format!("releasing the lock on {key:?}")),
            None => self
                .store
                .break_lease(&blob)
                .await
                .with_context(|| format!("breaking the lock on {key:?}")),
        }
    }
}
