//! Streaming transfers between local files and blobs, never holding a whole value in memory.
//!
//! Upload: a blocking thread reads the file and compresses it into an LZ4 frame, cut into
//! blocks that are staged in parallel and committed once (one plain put when the value fits in one
//! block). Download: ranged GETs, fetched a few ahead, feed a blocking thread that decodes and
//! writes the value to a file, publishing how far it got so readers can start before the end.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::codec;
use crate::store::{block_id, BlobStore, GetResult, PutOptions, StoreError};

/// Sizes and parallelism of transfers.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// Bytes of compressed data per staged block.
    pub block_size: usize,
    /// Blocks staged (uploads) or ranges fetched (downloads) at once.
    pub parallel: usize,
    /// Bytes per ranged GET.
    pub range_size: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            block_size: 4 << 20,
            parallel: 4,
            range_size: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {blob:?} is corrupt: {message}")]
    Corrupt { blob: String, message: String },
    #[error("blob {0:?} changed while it was being read")]
    Changed(String),
    #[error("local I/O: {0}")]
    Io(String),
}

/// What an upload produced.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub etag: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// Bytes stored in the blob.
    pub stored_size: u64,
}

/// A `Write` that cuts what it receives into chunks and sends them to the async side.
struct ChunkSink {
    buf: Vec<u8>,
    chunk: usize,
    tx: mpsc::Sender<Bytes>,
    sent: u64,
    /// Notes where each block of the frame starts, for the seek table.
    scanner: crate::seek::FrameScanner,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        self.sent += full.len() as u64;
        self.tx
            .blocking_send(Bytes::from(full))
            .map_err(|_| io::Error::other("upload cancelled"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.chunk - self.buf.len());
        self.scanner.feed(&data[..n]);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compresses `src` (read from its start) into the blob `blob`; `opts` carries the conditions,
/// and the size metadata is added here.
pub async fn upload_file(
    store: &Arc<dyn BlobStore>,
    blob: &str,
    src: std::fs::File,
    mut opts: PutOptions,
    cfg: &TransferConfig,
) -> Result<Uploaded, TransferError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(cfg.parallel.max(1));
    let chunk = cfg.block_size.max(64 << 10);
    let encoder = tokio::task::spawn_blocking(move || -> io::Result<(u64, u64)> {
        let mut src = src;
        // The handle may share its offset with others: always read the whole file.
        io::Seek::seek(&mut src, io::SeekFrom::Start(0))?;
        let mut sink = ChunkSink {
            buf: Vec::with_capacity(chunk),
            chunk,
            tx,
            sent: 0,
            scanner: Default::default(),
        };
        let mut enc = codec::encoder(&mut sink);
        let size = io::copy(&mut BufReader::with_capacity(1 << 20, src), &mut enc)?;
        enc.finish().map_err(io::Error::other)?;
        // The seek table follows the frame, in a skippable frame (see `seek`).
        let table = sink
            .scanner
            .table(size)
            .ok_or_else(|| io::Error::other("the LZ4 frame did not end as expected"))?;
        sink.buf.extend_from_slice(&table.to_frame());
        if !sink.buf.is_empty() {
            sink.send()?;
        }
        Ok((size, sink.sent))
    });
    let finish_encoder = |h: tokio::task::JoinHandle<io::Result<(u64, u64)>>| async move {
        h.await
            .map_err(|e| TransferError::Io(e.to_string()))?
            .map_err(|e| TransferError::Io(e.to_string()))
    };

    let first = rx.recv().await.unwrap_or_default();
    let second = rx.recv().await;
    let Some(second) = second else {
        // One chunk: a single put.
        let (size, stored) = finish_encoder(encoder).await?;
        opts.metadata
            .insert(codec::META_SIZE.into(), size.to_string());
        opts.metadata
            .insert(codec::META_ENCODING.into(), "lz4".into());
        let etag = store.put(blob, first, &opts).await?;
        return Ok(Uploaded {
            etag,
            size,
            stored_size: stored,
        });
    };

    let lease = opts.conditions.lease_id.clone();
    let mut ids = Vec::new();
    let mut staging: JoinSet<Result<(), StoreError>> = JoinSet::new();
    let mut next_chunk = Some(first);
    let mut queued = Some(second);
    loop {
        let Some(data) = next_chunk.take() else { break };
        while staging.len() >= cfg.parallel.max(1) {
            if let Some(r) = staging.join_next().await {
                r.map_err(|e| TransferError::Io(e.to_string()))??;
            }
        }
        let id = block_id(ids.len());
        ids.push(id.clone());
        let (store, blob, lease) = (store.clone(), blob.to_string(), lease.clone());
        staging.spawn(async move { store.put_block(&blob, &id, data, lease.as_deref()).await });
        next_chunk = match queued.take() {
            Some(c) => Some(c),
            None => rx.recv().await,
        };
    }
    while let Some(r) = staging.join_next().await {
        r.map_err(|e| TransferError::Io(e.to_string()))??;
    }
    let (size, stored) = finish_encoder(encoder).await?;
    opts.metadata
        .insert(codec::META_SIZE.into(), size.to_string());
    opts.metadata
        .insert(codec::META_ENCODING.into(), "lz4".into());
    let etag = store.commit_blocks(blob, &ids, &opts).await?;
    Ok(Uploaded {
        etag,
        size,
        stored_size: stored,
    })
}

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
    let range = cfg.range_size.max(64 << 10);
    let (props, first) = match store.get(blob, Some(0..range), None).await? {
        GetResult::Found { props, data } => (props, data),
        GetResult::NotModified => return Err(TransferError::Changed(blob.to_string())),
    };
    if etag.is_some_and(|e| e != props.etag) {
        return Err(TransferError::Changed(blob.to_string()));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(cfg.parallel.max(1));
    let blob_name = blob.to_string();
    let decoder = tokio::task::spawn_blocking(move || -> Result<u64, TransferError> {
        let source = ChunkSource {
            rx,
            current: Bytes::new(),
        };
        // Progress counts bytes that reached the file, so readers never overtake the writer.
        let mut out = io::BufWriter::with_capacity(
            1 << 20,
            Progress {
                inner: dest,
                written: 0,
                tx: progress,
            },
        );
        let mut dec = codec::decoder(source).map_err(|e| TransferError::Io(e.to_string()))?;
        let n = io::copy(&mut dec, &mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                TransferError::Corrupt {
                    blob: blob_name.clone(),
                    message: e.to_string(),
                }
            }
            _ => TransferError::Io(e.to_string()),
        })?;
        out.flush().map_err(|e| TransferError::Io(e.to_string()))?;
        Ok(n)
    });

    let feed = async {
        if tx.send(first).await.is_err() {
            return Ok(());
        }
        let mut offsets = (range..props.size).step_by(range as usize);
        let mut inflight = FuturesOrdered::new();
        loop {
            while inflight.len() < cfg.parallel.max(1) {
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
    let decoded = decoder
        .await
        .map_err(|e| TransferError::Io(e.to_string()))?;
    fed?;
    Ok(Downloaded {
        etag: props.etag,
        size: decoded?,
    })
}
