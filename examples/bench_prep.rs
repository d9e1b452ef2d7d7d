//! Prepares a container for `scripts/bench`: many tiny keys for listings, large values in our
//! format for the mount, and the same bytes raw for rclone and the direct client.
//! Environment: AZURE_STORAGE_CONNECTION_STRING; arguments: CONTAINER FOLDER WORKDIR, or
//! `listing N CONTAINER FOLDER` for only N tiny keys under `ls<N/1000>k/`, or
//! `index-only N CONTAINER FOLDER` for N keys under `idx<N/1000>k/` listed in the index without
//! blobs (for listing and memory measurements at a million keys).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use remotedict::index::{meta::blob_metadata, Change, Entry, SharedIndex};
use remotedict::layout::Layout;
use remotedict::store::azure::{AzureOptions, AzureStore};
use remotedict::store::{BlobStore, BlockIds, PutOptions};
use remotedict::transfer::{upload_file, TransferConfig};

fn data(len: usize, compressible: bool) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // About 3:1 for LZ4: short random runs between repeated text.
            if !compressible || (i / 16) % 4 == 0 {
                x as u8
            } else {
                b"remotedict bench "[i % 17]
            }
        })
        .collect()
}

/// Puts `n` tiny values as blobs under `ls<n/1000>k/` (both mounts list them) and lists them
/// in one index commit.
async fn tiny_keys(
    store: &Arc<dyn BlobStore>,
    layout: &Layout,
    index: &Arc<SharedIndex>,
    n: usize,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let value = Bytes::from(remotedict::codec::compress(b"x\n"));
    let changes: Vec<Change> = stream::iter(0..n)
        .map(|i| {
            let (store, layout, value) = (store.clone(), layout.clone(), value.clone());
            async move {
                let key = format!("ls{}k/key{i:06}", n / 1000);
                let mut e = Entry::file(2, value.len() as u64, 0, "");
                let opts = PutOptions {
                    metadata: blob_metadata(&e),
                    ..Default::default()
                };
                e.etag = store.put(&layout.blob_name(&key), value, &opts).await?;
                anyhow::Ok(Change::Put { key, entry: e })
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    index.commit(changes).await?;
    eprintln!("prep: {n} keys in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    let only_keys = match mode.as_str() {
        mode @ ("listing" | "index-only") => {
            let blobs = mode == "listing";
            let n = args.get(1).and_then(|n| n.parse::<usize>().ok());
            args.drain(..2.min(args.len()));
            let n =
                n.ok_or_else(|| anyhow::anyhow!("usage: bench_prep {mode} N CONTAINER FOLDER"))?;
            Some((n, blobs))
        }
        _ => None,
    };
    let (container, folder) = match (args.first(), args.get(1)) {
        (Some(c), Some(f)) => (c, f),
        _ => {
            anyhow::bail!(
                "usage: bench_prep CONTAINER FOLDER WORKDIR | listing|index-only N CONTAINER FOLDER"
            )
        }
    };
    let conn = std::env::var("AZURE_STORAGE_CONNECTION_STRING")?;
    let store: Arc<dyn BlobStore> = Arc::new(AzureStore::from_connection_string(
        &conn,
        container,
        AzureOptions::default(),
    )?);
    store.create_container().await?;
    let layout = Layout::new(folder)?;
    let index = SharedIndex::new(
        store.clone(),
        layout.index_blob(),
        std::time::Duration::ZERO,
    );
    match only_keys {
        Some((n, true)) => return tiny_keys(&store, &layout, &index, n).await,
        Some((n, false)) => {
            let changes = (0..n)
                .map(|i| Change::Put {
                    key: format!("idx{}k/key{i:07}", n / 1000),
                    entry: Entry::file(
                        2,
                        25,
                        1_764_000_000_000_000_000,
                        // As random as Azure's etags (they compress as badly).
                        format!(
                            "\"0x8DE{:013X}\"",
                            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 12
                        ),
                    ),
                })
                .collect();
            index.commit(changes).await?;
            eprintln!("prep: {n} keys in the index only");
            return Ok(());
        }
        None => {}
    }
    let work = std::path::PathBuf::from(
        args.get(2)
            .ok_or_else(|| anyhow::anyhow!("usage: bench_prep CONTAINER FOLDER WORKDIR"))?,
    );
    // The keys for listings are made by the `listing` mode, on an Azurite of their own
    // (scripts/bench): the in-memory Azurite scans every blob on each request, so 10 k keys
    // would slow every other measure to its pace.
    // Large values: ours (LZ4 + seek table, listed) and raw copies for rclone and direct GETs.
    let cfg = TransferConfig::default();
    for (name, compressible) in [("compressible.bin", true), ("random.bin", false)] {
        let bytes = data(1 << 30, compressible);
        let path = work.join(name);
        std::fs::write(&path, &bytes)?;
        let key = format!("seq/{name}");
        let mut e = Entry::file(bytes.len() as u64, 0, 0, "");
        let opts = PutOptions {
            metadata: blob_metadata(&e),
            ..Default::default()
        };
        let up = upload_file(
            &store,
            &layout.blob_name(&key),
            std::fs::File::open(&path)?,
            opts,
            &cfg,
        )
        .await?;
        (e.size, e.stored_size, e.etag) = (up.size, up.stored_size, up.etag);
        index.commit(vec![Change::Put { key, entry: e }]).await?;
        let raw = format!("raw/{name}");
        let upload = BlockIds::new();
        let ids: Vec<String> = (0..bytes.len().div_ceil(8 << 20))
            .map(|i| upload.id(i))
            .collect();
        stream::iter(ids.iter().enumerate())
            .map(|(i, id)| {
                let chunk = Bytes::copy_from_slice(
                    &bytes[i * (8 << 20)..((i + 1) * (8 << 20)).min(bytes.len())],
                );
                let (store, blob) = (store.clone(), raw.clone());
                async move { store.put_block(&blob, id, chunk, None).await }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        store
            .commit_blocks(&raw, &ids, &PutOptions::default())
            .await?;
        eprintln!(
            "prep: {name}: {} bytes, stored {} in our format",
            bytes.len(),
            up.stored_size
        );
    }
    Ok(())
}
