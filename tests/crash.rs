//! `kill -9` of the daemon during a large copy, many times (with the index compacted at nearly
//! every commit, so kills land during journal appends and compactions): no partially written
//! value is ever visible, the index stays readable and lists only complete blobs, and a new
//! mount of the folder works.
//! (`scripts/crash-trials N` runs more trials.)

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mount::{pseudo_random, Backend, Mount, FOLDER};
use remotedict::index::SharedIndex;
use remotedict::layout::Layout;
use remotedict::store::{list_all, BlobStore};
use remotedict::transfer::{download_to, TransferConfig};

/// Source files: relative name → content. One large value (several blocks) and small ones.
fn sources(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_string(), pseudo_random(9 << 20, 7));
    for i in 0..15 {
        files.insert(
            format!("small/{i:02}.txt"),
            format!("small file {i}\n").repeat(i * 50 + 1).into_bytes(),
        );
    }
    for (name, data) in &files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    files
}

async fn decoded(store: &std::sync::Arc<dyn BlobStore>, blob: &str, etag: &str) -> Vec<u8> {
    let tmp = tempfile::tempfile().unwrap();
    let out = tmp.try_clone().unwrap();
    download_to(
        store,
        blob,
        Some(etag),
        out,
        &TransferConfig::default(),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{blob}: not a whole value: {e}"));
    let mut f = tmp;
    let mut data = Vec::new();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
    std::io::Read::read_to_end(&mut f, &mut data).unwrap();
    data
}

async fn kill_during_copy(backend: Backend, trials: usize) {
    let src = tempfile::tempdir().unwrap();
    let files = sources(src.path());
    let store = backend.store().await;
    let layout = Layout::new(FOLDER).unwrap();
    let mut complete = 0;
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for trial in 0..trials {
        // A tiny journal bound: nearly every index commit compacts first, so the kills land
        // during appends and during compactions alike.
        let mut m = Mount::start_with(&backend, &["--index-compact-kib", "1"]);
        let target = format!("t{trial:02}");
        let mut cp = Command::new("cp")
            .arg("-r")
            .arg(src.path())
            .arg(m.path(&target))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50 + (trial as u64 * 137) % 900));
        m.kill9();
        let _ = cp.wait();

        // Every listed key names an existing blob with the same etag, holding the whole value.
        let index = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
        let idx = index.current().await.unwrap();
        // No entry listed after an earlier trial was lost by this one (killed mid-compaction).
        for (key, etag) in &listed {
            assert_eq!(
                idx.entries.get(key).map(|e| e.etag).as_ref(),
                Some(etag),
                "trial {trial}: {key}, listed before, is gone"
            );
        }
        let prefix = format!("{target}/");
        for (key, entry) in idx
            .entries
            .range_from(&prefix)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            if entry.kind != remotedict::index::EntryKind::File {
                continue;
            }
            let rel = &key[prefix.len()..];
            let data = decoded(&store, &layout.blob_name(&key), &entry.etag).await;
            assert_eq!(
                entry.size,
                data.len() as u64,
                "trial {trial}: {key}: size in the index"
            );
            assert!(
                data == files[rel],
                "trial {trial}: {key}: a partial or wrong value is listed ({} of {} bytes)",
                data.len(),
                files[rel].len()
            );
            complete += 1;
        }
        listed.extend(
            idx.entries
                .range_from(&prefix)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, e)| (k.clone(), e.etag.clone())),
        );
        // Every blob that exists is whole (a commit is all or nothing), listed or not.
        for b in list_all(store.as_ref(), &layout.blob_name(&prefix))
            .await
            .unwrap()
        {
            if b.metadata.contains_key("hdi_isfolder") {
                continue;
            }
            let rel = &b.name[layout.blob_name(&prefix).len()..];
            let data = decoded(&store, &b.name, &b.etag).await;
            // An empty blob is the claim of an O_EXCL create (`cp` uses O_EXCL) killed before
            // its first save: a whole (empty) value, not listed in the index.
            assert!(
                data.is_empty() || data == files[rel],
                "trial {trial}: blob {} is torn ({} of {} bytes)",
                b.name,
                data.len(),
                files[rel].len()
            );
        }
    }
    eprintln!("{trials} kill -9 trials: {complete} complete files listed, none partial");
    // A new mount of the same folder works and reads what was listed.
    let m = Mount::start(&backend);
    let listing = m.sh("ls");
    assert!(listing.lines().count() >= 1, "{listing}");
    m.sh("cat t*/small/* > /dev/null 2>&1 || true; echo ok > after-crashes && cat after-crashes");
    m.unmount();
}

fn trials() -> usize {
    std::env::var("REMOTEDICT_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_copy_local_store() {
    let tmp = tempfile::tempdir().unwrap();
    kill_during_copy(Backend::local(tmp.path()), trials()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_copy_azurite() {
    if let Some(b) = Backend::azure() {
        kill_during_copy(b, trials()).await;
    }
}

/// A file whose close succeeded is listed even when the daemon is killed before the index commit
/// that lists it: the next mount with the same cache directory replays its journal.
async fn killed_before_the_index_commit(backend: Backend) {
    let store = backend.store().await;
    let layout = Layout::new(FOLDER).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut m = Mount::start_with_cache(&backend, cache.path());
    m.sh("mkdir j && for i in $(seq 1 20); do echo value $i > j/f$i; done");
    m.kill9();
    let index = SharedIndex::new(store.clone(), layout.index_blob(), Duration::ZERO);
    let listed = |idx: &remotedict::index::Index| {
        (1..=20)
            .filter(|i| idx.entries.contains_key(&format!("j/f{i}")))
            .count()
    };
    let before = listed(&index.current().await.unwrap());
    eprintln!("{before} of 20 closed files were listed when the daemon died");
    let m = Mount::start_with_cache(&backend, cache.path());
    assert_eq!(
        listed(&index.current().await.unwrap()),
        20,
        "the next mount lists every closed file"
    );
    let text = m.sh("cat j/f1 j/f20");
    assert_eq!(text, "value 1\nvalue 20\n");
    m.unmount();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_files_survive_a_kill_before_the_index_commit() {
    let tmp = tempfile::tempdir().unwrap();
    killed_before_the_index_commit(Backend::local(tmp.path())).await;
    if let Some(b) = Backend::azure() {
        killed_before_the_index_commit(b).await;
    }
}
