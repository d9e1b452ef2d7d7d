//! Streaming upload: a blocking thread reads a local file and compresses it into an LZ4 frame cut
//! into blocks, staged in parallel and committed once (one plain put when it fits in one block).
//!
//! Each upload stages block ids of its own ([`BlockIds`]), so two uploads of one name at once
//! never mix: each commit is all of one upload. A commit discards every other upload's staged
//! blocks, so the upload that commits second finds its blocks gone (`BlockListInvalid`): it then
//! starts again from the local file, up to [`UPLOAD_ATTEMPTS`] times — the last writer wins, as
//! on a local filesystem — and fails loudly after that.

use std::io::{self, BufReader, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{TransferConfig, TransferError};
use crate::codec;
use crate::store::{BlobStore, BlockIds, PutOptions, StoreError};

/// Uploads of one value, started again each time another upload's commit discarded its blocks.
pub const UPLOAD_ATTEMPTS: u32 = 4;

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
    opts: PutOptions,
    cfg: &TransferConfig,
) -> Result<Uploaded, TransferError> {
    let _pending = crate::metrics::PendingUpload::start();
    // One id for every attempt: they all write the same value.
    let opts = PutOptions {
        metadata: super::with_new_value_id(opts.metadata),
        ..opts
    };
    let mut attempt = 1;
    loop {
        // Read by position: the handle may share its offset with others.
        let reader = Box::new(BufReader::with_capacity(
            1 << 20,
            ReadAt {
                file: src.try_clone()?,
                pos: 0,
            },
        ));
        let lease = opts.conditions.lease_id.clone();
        let ready = std::future::ready(Ok(opts.clone()));
        let r = upload_once(store, blob, reader, lease, ready, cfg).await;
        match r {
            Err(TransferError::Store(StoreError::BlockListInvalid(_)))
                if attempt < UPLOAD_ATTEMPTS =>
            {
                log::info!(
                    "upload of {blob:?}: another upload's commit discarded this one's blocks; \
                     uploading again (attempt {})",
                    attempt + 1
                );
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// A file read from its start by position (`pread`), whatever its shared offset.
struct ReadAt {
    file: std::fs::File,
    pos: u64,
}

impl io::Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// One attempt of an upload: compresses what `src` reads, stages the blocks (under `lease`)
/// and commits them with the options `opts` gives once everything is staged (they may be known
/// only then: see `early`).
pub(super) async fn upload_once<O>(
    store: &Arc<dyn BlobStore>,
    blob: &str,
    src: Box<dyn io::Read + Send>,
    lease: Option<String>,
    opts: O,
    cfg: &TransferConfig,
) -> Result<Uploaded, TransferError>
where
    O: std::future::Future<Output = Result<PutOptions, TransferError>>,
{
    // Two blocks ready beyond those being staged: the encoder keeps ahead of the uploads, and
    // memory stays near the blocks in flight.
    let (tx, mut rx) = mpsc::channel::<Bytes>(2);
    let chunk = cfg.block_size.max(64 << 10);
    let encoder = tokio::task::spawn_blocking(move || -> io::Result<(u64, u64)> {
        let mut src = src;
        let mut sink = ChunkSink {
            buf: Vec::with_capacity(chunk),
            chunk,
            tx,
            sent: 0,
            scanner: Default::default(),
        };
        let mut enc = codec::encoder(&mut sink);
        let size = io::copy(&mut src, &mut enc)?;
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
            .map_err(TransferError::from)?
            .map_err(TransferError::from)
    };

    let first = rx.recv().await.unwrap_or_default();
    let second = rx.recv().await;
    let Some(second) = second else {
        // One chunk: a single put.
        let (size, stored) = finish_encoder(encoder).await?;
        let mut opts = opts.await?;
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

    let block_ids = BlockIds::new();
    let mut ids = Vec::new();
    let mut staging: JoinSet<Result<(), StoreError>> = JoinSet::new();
    let mut next_chunk = Some(first);
    let mut queued = Some(second);
    loop {
        let Some(data) = next_chunk.take() else { break };
        while staging.len() >= cfg.parallel.max(1) {
            if let Some(r) = staging.join_next().await {
                r.map_err(TransferError::from)??;
            }
        }
        let id = block_ids.id(ids.len());
        ids.push(id.clone());
        let (store, blob, lease) = (store.clone(), blob.to_string(), lease.clone());
        staging.spawn(async move { store.put_block(&blob, &id, data, lease.as_deref()).await });
        next_chunk = match queued.take() {
            Some(c) => Some(c),
            None => rx.recv().await,
        };
    }
    while let Some(r) = staging.join_next().await {
        r.map_err(TransferError::from)??;
    }
    let (size, stored) = finish_encoder(encoder).await?;
    let mut opts = opts.await?;
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
