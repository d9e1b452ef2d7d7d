//! Reads of blobs: whole or ranged, optionally conditional on the etag having changed.
//!
//! Long reads are done in chunks of [`READ_CHUNK`], each its own request with its own time limit,
//! and every chunk after the first is pinned to the etag of the first one (`If-Match`), so a blob
//! overwritten during a long read is never returned torn: the read starts over instead, up to
//! [`READ_RESTARTS`] times. Each chunk's body is checked against the `Content-Range` the service
//! announced.

use std::ops::Range;

use std::num::NonZeroUsize;

use azure_core::error::ErrorKind;
use azure_storage_blob::models::BlobClientDownloadOptions;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::convert::{etag, props_from_headers, quote_etag, CONTENT_LENGTH, CONTENT_RANGE};
use super::errors::{http_status, Op};
use super::names::check_name;
use super::AzureStore;
use crate::store::{BlobProps, BlobStore, GetResult, Result, StoreError};

/// Size of one ranged GET: long reads are split so each request stays within its time limit.
const READ_CHUNK: u64 = 8 * 1024 * 1024;
/// How often a read restarts because the blob changed between two of its chunks.
const READ_RESTARTS: u32 = 3;

/// Outcome of one ranged GET.
enum Chunk {
    Data {
        props: BlobProps,
        data: Bytes,
    },
    NotModified,
    /// The range starts past the end (416), or the answer could not be parsed (Azurite answers an
    /// empty blob with `Content-Range: bytes 0--1/0`): decided from the blob's properties.
    Unsatisfiable(Option<StoreError>),
}

/// The condition of one ranged GET.
#[derive(Clone)]
enum Condition {
    /// Only if the etag is this one.
    Match(String),
    /// Only if the etag is not this one (else "not modified").
    NotMatch(String),
}

/// A parsed `Content-Range: bytes START-END/TOTAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ContentRange {
    start: u64,
    /// Inclusive.
    end: u64,
    total: u64,
}

/// Parses `bytes START-END/TOTAL`.
fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let r = ContentRange {
        start: start.trim().parse().ok()?,
        end: end.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
    };
    (r.start <= r.end).then_some(r)
}

/// Outcome of one attempt at a read.
enum ReadOutcome {
    Done(GetResult),
    /// The blob changed between two chunks: start again.
    Changed,
}

impl AzureStore {
    /// [`BlobStore::get`]: the bytes of `range` (all of them without one), unless the etag still
    /// equals `if_none_match`.
    pub(super) async fn read(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        if_none_match: Option<&str>,
    ) -> Result<GetResult> {
        check_name(name)?;
        log::debug!("azure get {name:?} {range:?}");
        let (start, req_end) = match &range {
            Some(r) => (r.start, Some(r.end)),
            None => (0, None),
        };
        let inm = if_none_match.map(quote_etag);
        if req_end.is_some_and(|end| end <= start) {
            // Nothing to read: only the properties (and the condition) matter.
            let props = self.head(name).await?;
            return Ok(no_bytes(props, inm.as_deref()));
        }
        for attempt in 0..READ_RESTARTS {
            match self.read_once(name, start, req_end, inm.as_deref()).await? {
                ReadOutcome::Done(result) => return Ok(result),
                ReadOutcome::Changed => {
                    log::debug!(
                        "azure get {name:?}: the blob changed while being read (attempt {})",
                        attempt + 1
                    );
                }
            }
        }
        Err(StoreError::Transient {
            name: name.to_string(),
            message: "get: the blob kept changing while it was being read".into(),
        })
    }

    /// One ranged GET, with `condition`; the answer's properties carry the blob's full size.
    async fn get_chunk(
        &self,
        name: &str,
        range: Range<u64>,
        condition: Option<Condition>,
    ) -> Result<Chunk> {
        let blob = self.blob(name);
        let len = range.end.saturating_sub(range.start);
        let partition = NonZeroUsize::new(usize::try_from(len).unwrap_or(usize::MAX).max(1))
            .unwrap_or(NonZeroUsize::MIN);
        self.call("get", name, len, || {
            let (if_match, if_none_match) = match &condition {
                Some(Condition::Match(e)) => (Some(etag(e)), None),
                Some(Condition::NotMatch(e)) => (None, Some(etag(e))),
                None => (None, None),
            };
            let options = BlobClientDownloadOptions {
                range: Some(range.clone().into()),
                if_match,
                if_none_match,
                // One request for the whole range: our chunks are the partitions.
                parallel: Some(NonZeroUsize::MIN),
                partition_size: Some(partition),
                ..Default::default()
            };
            let blob = &blob;
            async move {
                let response = match blob.download(Some(options)).await {
                    Ok(r) => r,
                    Err(e) => {
                        return match (http_status(&e), e.kind()) {
                            (Some((304, _)), _) => Ok(Chunk::NotModified),
                            (Some((416, _)), _) => Ok(Chunk::Unsatisfiable(None)),
                            (_, ErrorKind::DataConversion) => Ok(Chunk::Unsatisfiable(Some(
                                self.map_error(&e, name, "get", Op::Blob),
                            ))),
                            _ => Err(self.map_error(&e, name, "get", Op::Blob)),
                        };
                    }
                };
                let headers = response.headers;
                let content_length: u64 = headers
                    .get_optional_str(&CONTENT_LENGTH)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                // Into a buffer sized up front (collecting grows it by doubling, copying the
                // body over and over), no larger than the answer: a small blob read with a
                // large range must not pin a large allocation.
                let mut body =
                    BytesMut::with_capacity(len.min(content_length).min(64 << 20) as usize);
                let mut stream = response.body;
                while let Some(piece) = stream.next().await {
                    let piece = piece.map_err(|e| self.map_error(&e, name, "get", Op::Blob))?;
                    body.extend_from_slice(&piece);
                    // More than was asked for: the SDK answered a 416 on an empty blob by
                    // reading the whole blob again, which was written meanwhile.
                    if body.len() as u64 > len {
                        return Err(StoreError::Transient {
                            name: name.to_string(),
                            message: "get: the answer is longer than the range asked for".into(),
                        });
                    }
                }
                let data = body.freeze();
                let content_range = headers
                    .get_optional_str(&CONTENT_RANGE)
                    .and_then(parse_content_range);
                let (expected, total) = match content_range {
                    Some(cr) if cr.start != range.start => {
                        return Err(StoreError::Transient {
                            name: name.to_string(),
                            message: format!(
                                "get: the answer starts at {} instead of {}",
                                cr.start, range.start
                            ),
                        })
                    }
                    Some(cr) => (cr.end + 1 - cr.start, cr.total),
                    // Azurite answers a range that starts at the end with an empty 2xx and no
                    // usable Content-Range: the blob's size is not in it (the properties say).
                    None if range.start > 0 && data.is_empty() => {
                        return Ok(Chunk::Unsatisfiable(None))
                    }
                    // A whole-blob answer (no range applied) is only right from offset 0.
                    None if range.start > 0 => {
                        return Err(StoreError::Transient {
                            name: name.to_string(),
                            message: "get: a ranged read was answered without Content-Range".into(),
                        })
                    }
                    None => (content_length, content_length),
                };
                if data.len() as u64 != expected {
                    return Err(StoreError::Transient {
                        name: name.to_string(),
                        message: format!(
                            "get: received {} bytes instead of {expected}",
                            data.len()
                        ),
                    });
                }
                Ok(Chunk::Data {
                    props: props_from_headers(name, &headers, total),
                    data,
                })
            }
        })
        .await
    }

    /// The answer to a read whose first range the service could not satisfy: no bytes when the
    /// etag equals `if_none_match` or `start` is at or past the end, `None` when the blob has
    /// bytes at `start` after all (it changed meanwhile).
    async fn read_nothing(
        &self,
        name: &str,
        start: u64,
        if_none_match: Option<&str>,
    ) -> Result<Option<GetResult>> {
        let props = self.head(name).await?;
        if if_none_match == Some(props.etag.as_str()) || start >= props.size {
            return Ok(Some(no_bytes(props, if_none_match)));
        }
        Ok(None)
    }

    /// One attempt at reading `start..req_end` (to the end without `req_end`): the first chunk
    /// fixes the etag every further chunk must match.
    async fn read_once(
        &self,
        name: &str,
        start: u64,
        req_end: Option<u64>,
        inm: Option<&str>,
    ) -> Result<ReadOutcome> {
        let first_end = match req_end {
            Some(e) => e.min(start.saturating_add(READ_CHUNK)),
            None => start.saturating_add(READ_CHUNK),
        };
        let condition = inm.map(|e| Condition::NotMatch(e.to_string()));
        let (props, first) = match self.get_chunk(name, start..first_end, condition).await? {
            Chunk::NotModified => return Ok(ReadOutcome::Done(GetResult::NotModified)),
            Chunk::Unsatisfiable(err) => {
                return match self.read_nothing(name, start, inm).await? {
                    Some(r) => Ok(ReadOutcome::Done(r)),
                    None => match err {
                        Some(e) => Err(e),
                        None => Ok(ReadOutcome::Changed),
                    },
                }
            }
            Chunk::Data { props, data } => (props, data),
        };
        let want_end = req_end.unwrap_or(props.size).min(props.size).max(start);
        let want = usize::try_from(want_end - start).map_err(|_| {
            StoreError::Other(format!("azure get {name:?}: range too large for memory"))
        })?;
        if first.len() >= want {
            let data = first.slice(..want);
            return Ok(ReadOutcome::Done(GetResult::Found { props, data }));
        }
        let mut buf = BytesMut::with_capacity(want);
        buf.extend_from_slice(&first);
        let mut pos = start + first.len() as u64;
        while pos < want_end {
            let end = want_end.min(pos.saturating_add(READ_CHUNK));
            match self
                .get_chunk(name, pos..end, Some(Condition::Match(props.etag.clone())))
                .await
            {
                Ok(Chunk::Data { data, .. }) if !data.is_empty() => {
                    buf.extend_from_slice(&data);
                    pos += data.len() as u64;
                }
                Ok(Chunk::Data { .. }) => {
                    return Err(StoreError::Transient {
                        name: name.to_string(),
                        message: format!("get: empty answer at offset {pos}"),
                    })
                }
                Ok(_) | Err(StoreError::PreconditionFailed(_)) | Err(StoreError::NotFound(_)) => {
                    return Ok(ReadOutcome::Changed)
                }
                Err(e) => return Err(e),
            }
        }
        buf.truncate(want);
        Ok(ReadOutcome::Done(GetResult::Found {
            props,
            data: buf.freeze(),
        }))
    }
}

/// The answer to a read that yields no bytes: `NotModified` if the etag equals `if_none_match`,
/// else the properties with no data.
fn no_bytes(props: BlobProps, if_none_match: Option<&str>) -> GetResult {
    if if_none_match == Some(props.etag.as_str()) {
        GetResult::NotModified
    } else {
        GetResult::Found {
            props,
            data: Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some(ContentRange {
                start: 0,
                end: 9,
                total: 100
            })
        );
        assert_eq!(parse_content_range("bytes 0--1/0"), None);
        assert_eq!(parse_content_range("bytes */0"), None);
    }
}
