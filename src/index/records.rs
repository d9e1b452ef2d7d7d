//! Records of a format-2 journal (docs/FORMAT.md): each append to the journal blob is one
//! record, one batch of changes applied whole.
//!
//! A record is `RDJR`, the payload's length (u32 LE), its CRC-32 (u32 LE, as zlib computes it),
//! then the payload: a 16-byte batch id (unique, so two batches never have the same bytes and a
//! retried append can recognise its own), an op count, and the ops. An op puts a key's entry,
//! removes a key, or *seals* the journal: it is the journal's last record and names the
//! generation that follows. Decoding never panics; an incomplete record at the end is left for
//! later (it is not there yet), a complete one that does not check out is an error.

use super::format::{
    put_bytes, put_entry, put_varint, read_entry, Entry, IndexFormatError, Reader,
};
use super::Index;

/// Magic at the start of every record.
pub const RECORD_MAGIC: &[u8; 4] = b"RDJR";

/// Bytes before a record's payload: magic, length, CRC.
const HEADER: usize = 12;

/// One change a record makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Adds or replaces the entry of a key.
    Put(String, Entry),
    /// Removes a key.
    Remove(String),
    /// The journal ends here; generation `next` follows, with the same entries (its snapshot
    /// holds exactly what this journal adds up to).
    Seal { next: String },
    /// The journal ends here; generation `next` follows with the entries of its snapshot
    /// (which replace these: a batch too large for one record, or a repair).
    SealReplaced { next: String },
}

const TAG_PUT: u8 = 1;
const TAG_REMOVE: u8 = 2;
const TAG_SEAL: u8 = 3;
const TAG_SEAL_REPLACED: u8 = 4;

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub batch: [u8; 16],
    pub ops: Vec<Op>,
}

impl Record {
    /// The generation the record hands over to, if it seals the journal: its name, and whether
    /// the entries are replaced by that generation's snapshot.
    pub fn seal(&self) -> Option<(&str, bool)> {
        self.ops.iter().find_map(|op| match op {
            Op::Seal { next } => Some((next.as_str(), false)),
            Op::SealReplaced { next } => Some((next.as_str(), true)),
            _ => None,
        })
    }
}

/// A fresh batch id.
pub fn new_batch() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// The batch id of an encoded record.
pub fn batch_of(record: &[u8]) -> [u8; 16] {
    let mut batch = [0u8; 16];
    if let Some(b) = record.get(HEADER..HEADER + 16) {
        batch.copy_from_slice(b);
    }
    batch
}

/// The bytes of one record.
pub fn encode_record(batch: [u8; 16], ops: &[Op]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(32 + ops.len() * 64);
    payload.extend_from_slice(&batch);
    put_varint(&mut payload, ops.len() as u64);
    for op in ops {
        match op {
            Op::Put(key, entry) => {
                payload.push(TAG_PUT);
                put_bytes(&mut payload, key.as_bytes());
                put_entry(&mut payload, entry);
            }
            Op::Remove(key) => {
                payload.push(TAG_REMOVE);
                put_bytes(&mut payload, key.as_bytes());
            }
            Op::Seal { next } => {
                payload.push(TAG_SEAL);
                put_bytes(&mut payload, next.as_bytes());
            }
            Op::SealReplaced { next } => {
                payload.push(TAG_SEAL_REPLACED);
                put_bytes(&mut payload, next.as_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the complete records at the start of `buf`; returns each with the offset where it
/// ends, and how many bytes they take (an incomplete record at the end is not counted).
#[allow(clippy::type_complexity)]
pub fn decode_records(buf: &[u8]) -> Result<(Vec<(Record, usize)>, usize), IndexFormatError> {
    let mut records = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= HEADER {
        let at = |what: &str| IndexFormatError::Corrupt(format!("journal: {what} at byte {pos}"));
        if &buf[pos..pos + 4] != RECORD_MAGIC {
            return Err(at("bad record magic"));
        }
        let len = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        let crc = u32::from_le_bytes([buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]]);
        let Some(end) = (pos + HEADER).checked_add(len as usize) else {
            return Err(at("record length out of range"));
        };
        if end > buf.len() {
            break;
        }
        let payload = &buf[pos + HEADER..end];
        if crc32fast::hash(payload) != crc {
            return Err(at("record checksum mismatch"));
        }
        records.push((
            decode_payload(payload).map_err(|e| at(&e.to_string()))?,
            end,
        ));
        pos = end;
    }
    Ok((records, pos))
}

fn decode_payload(payload: &[u8]) -> Result<Record, IndexFormatError> {
    if payload.len() < 16 {
        return Err(IndexFormatError::Corrupt(
            "record shorter than its batch id".into(),
        ));
    }
    let mut batch = [0u8; 16];
    batch.copy_from_slice(&payload[..16]);
    let mut r = Reader {
        buf: payload,
        pos: 16,
    };
    let count = r.varint()?;
    let mut ops = Vec::new();
    for _ in 0..count {
        let tag = r.byte()?;
        let text = |r: &mut Reader<'_>, what: &str| -> Result<String, IndexFormatError> {
            let b = r.bytes()?;
            String::from_utf8(b.to_vec()).map_err(|_| r.err(&format!("{what} is not UTF-8")))
        };
        let op = match tag {
            TAG_PUT => {
                let key = text(&mut r, "key")?;
                Op::Put(key, read_entry(&mut r)?)
            }
            TAG_REMOVE => Op::Remove(text(&mut r, "key")?),
            TAG_SEAL => Op::Seal {
                next: text(&mut r, "generation")?,
            },
            TAG_SEAL_REPLACED => Op::SealReplaced {
                next: text(&mut r, "generation")?,
            },
            _ => return Err(r.err("unknown op")),
        };
        if matches!(&op, Op::Put(k, _) | Op::Remove(k) if k.is_empty()) {
            return Err(r.err("empty key"));
        }
        ops.push(op);
    }
    if r.pos != payload.len() {
        return Err(r.err("trailing bytes after the last op"));
    }
    Ok(Record { batch, ops })
}

/// Applies a record's puts and removes to `index` (a seal changes no entry).
pub fn apply_record(index: &mut Index, record: &Record) {
    for op in &record.ops {
        match op {
            Op::Put(key, entry) => {
                index.entries.insert(key.clone(), entry.clone());
            }
            Op::Remove(key) => {
                index.entries.remove(key);
            }
            Op::Seal { .. } | Op::SealReplaced { .. } => {}
        }
    }
}

/// The ops that turn `before` into `after`, for the keys in `keys` (the only ones that differ).
pub fn diff<'a>(before: &Index, after: &Index, keys: impl IntoIterator<Item = &'a str>) -> Vec<Op> {
    let mut seen = std::collections::HashSet::new();
    let mut ops = Vec::new();
    for key in keys {
        if !seen.insert(key) {
            continue;
        }
        match (before.entries.get(key), after.entries.get(key)) {
            (b, Some(a)) if b.as_ref() != Some(&a) => ops.push(Op::Put(key.to_string(), a)),
            (Some(_), None) => ops.push(Op::Remove(key.to_string())),
            _ => {}
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        Entry::file(i, i, i as i64, format!("\"0x{i:X}\""))
    }

    #[test]
    fn records_round_trip_and_an_incomplete_tail_waits() {
        let a = encode_record(
            [1; 16],
            &[Op::Put("a/b".into(), entry(1)), Op::Remove("c".into())],
        );
        let b = encode_record([2; 16], &[Op::Seal { next: "g2".into() }]);
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        let (recs, used) = decode_records(&buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].0.batch, [1; 16]);
        assert_eq!(recs[0].1, a.len());
        assert_eq!(recs[1].0.seal(), Some(("g2", false)));
        for cut in 0..buf.len() {
            let (recs, used) = decode_records(&buf[..cut]).unwrap();
            let whole = usize::from(cut >= a.len()) + usize::from(cut == buf.len());
            assert_eq!(recs.len(), whole, "cut at {cut}");
            assert!(used <= cut);
        }
    }

    #[test]
    fn a_flipped_bit_is_an_error_not_a_panic() {
        let rec = encode_record([7; 16], &[Op::Put("k".into(), entry(9))]);
        for i in 0..rec.len() {
            let mut b = rec.clone();
            b[i] ^= 0x10;
            let r = decode_records(&b);
            assert!(
                r.as_ref().map_or(true, |(recs, _)| recs.is_empty()),
                "flip at {i} decoded: {r:?}"
            );
        }
    }

    #[test]
    fn diff_gives_the_changed_keys_only() {
        let mut before = Index::default();
        before.entries.insert("same".into(), entry(1));
        before.entries.insert("gone".into(), entry(2));
        before.entries.insert("changed".into(), entry(3));
        let mut after = before.clone();
        after.entries.remove("gone");
        after.entries.insert("changed".into(), entry(4));
        after.entries.insert("new".into(), entry(5));
        let ops = diff(
            &before,
            &after,
            ["same", "gone", "changed", "new", "new", "absent"],
        );
        assert_eq!(
            ops,
            vec![
                Op::Remove("gone".into()),
                Op::Put("changed".into(), entry(4)),
                Op::Put("new".into(), entry(5)),
            ]
        );
        let mut replay = before.clone();
        apply_record(
            &mut replay,
            &Record {
                batch: [0; 16],
                ops,
            },
        );
        assert_eq!(replay, after);
    }
}
