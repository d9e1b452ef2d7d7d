//! Streaming download: ranged GETs, fetched a few ahead, feed a blocking thread that decodes the
//! value into a file and publishes how far it got, so readers can start before the end.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{TransferConfig, TransferError};
use crate::codec;
use crate::store::{BlobStore, GetResult};

/// A blocking `Read` over chunks arriving from the async side.
struct ChunkSource {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkSource {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A `Write` that publishes how many bytes went through it.
struct Progress<W> {
    inner: W,
    written: u64,
    tx: Option<watch::Sender<u64>>,
}

impl<W: Write> Write for Progress<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.written += n as u64;
        if let Some(tx) = &self.tx {
            tx.send_replace(self.written);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a download found.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub etag: String,
    /// Bytes of the value written to the destination.
    pub size: u64,
}

/// Reads blob `blob` (expected at `etag` if given), decodes it and writes the value to `dest`.
/// `progress` receives the number of value bytes written so far.
pub async fn download_to(
    store: &Arc<dyn BlobStore>,
    blob: &str,
    etag: Option<&str>,
    dest: std::fs::File,
    cfg: &TransferConfig,
    progress: Option<watch::Sender<u64>>,
) -> Result<Downloaded, TransferError> {
    download_with(store, blob, etag, cfg, move |dec| {
        // Progress counts bytes that reached the file, so readers never overtake the writer.
        let mut out = io::BufWriter::with_capacity(
            1 << 20,
            Progress {
                inner: dest,
                written: 0,
                tx: progress,
            },
        );
        let n = io::copy(dec, &mut out)?;
        out.flush()?;
        Ok(n)
    })
    .await
}

/// Reads blob `blob` (expected at `etag` if given) with ranged GETs in parallel and hands the
/// decoded value, in order, to `consume` on a blocking thread (as a `BufRead`: it can take the
/// decoder's own buffer without copying it first); returns what `consume` returned
/// as the value's size. An error `consume` returns ends the download (read errors of the value
/// itself come back as [`TransferError::Corrupt`]).
pub async fn download_with<F>(
    store: &Arc<dyn BlobStore>,
    blob: &str,
    etag: Option<&str>,
    cfg: &TransferConfig,
    consume: F,
) -> Result<Downloaded, TransferError>
where
    F: FnOnce(&mut dyn BufRead) -> io::Result<u64> + Send + 'static,
{
    let range = cfg.range_size.max(64 << 10);
    let (props, first) = match store.get(blob, Some(0..range), None).await? {
        GetResult::Found { props, data } => (props, data),
        GetResult::NotModified => return Err(TransferError::Changed(blob.to_string())),
    };
    if etag.is_some_and(|e| e != props.etag) {
        return Err(TransferError::Changed(blob.to_string()));
    }
    // Two ranges queued for the decoder (it keeps up): memory stays near the GETs in flight.
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let blob_name = blob.to_string();
    let decoder = tokio::task::spawn_blocking(move || -> Result<u64, TransferError> {
        let source = ChunkSource {
            rx,
            current: Bytes::new(),
        };
        let mut dec = codec::decoder(source).map_err(TransferError::from)?;
        consume(&mut dec).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                TransferError::Corrupt {
                    blob: blob_name.clone(),
                    message: e.to_string(),
                }
            }
            _ => TransferError::from(e),
        })
    });

    let feed = async {
        if tx.send(first).await.is_err() {
            return Ok(());
        }
        let mut offsets = (range..props.size).step_by(range as usize);
        let mut inflight = FuturesOrdered::new();
        loop {
            while inflight.len() < cfg.read_parallel.max(1) {
                let Some(start) = offsets.next() else { break };
                let store = store.clone();
                let name = blob.to_string();
                let end = (start + range).min(props.size);
                inflight.push_back(async move { store.get(&name, Some(start..end), None).await });
            }
            let Some(next) = inflight.next().await else {
                return Ok(());
            };
            match next? {
                GetResult::Found { props: p, data } if p.etag == props.etag => {
                    if tx.send(data).await.is_err() {
                        return Ok(()); // the decoder stopped; its error tells why
                    }
                }
                _ => return Err(TransferError::Changed(blob.to_string())),
            }
        }
    };
    let fed: Result<(), TransferError> = feed.await;
    drop(tx);
    let decoded = decoder.await.map_err(TransferError::from)?;
    fed?;
    Ok(Downloaded {
        etag: props.etag,
        size: decoded?,
    })
}
