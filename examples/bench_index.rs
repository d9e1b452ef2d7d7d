//! Index format at scale: encode, decode and size for N entries (default 1,000,000).
//! Run through `scripts/bench-index [N]`.

use std::time::Instant;

use remotedict::index::{decode, encode, format::encode_body, Entry, Index};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut index = Index::default();
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!(
            "project{}/batch-{:04}/item-{i:08}.json",
            i % 37,
            (i / 1000) % 10_000
        );
        let size = x % 10_000_000;
        let entry = Entry::file(
            size,
            size / 3,
            1_764_000_000_000_000_000 + (x % 1_000_000_000_000) as i64,
            format!("\"0x8DE{:013X}\"", x >> 12),
        );
        index.entries.insert(key, entry);
    }
    let t = Instant::now();
    let body = encode_body(&index);
    let body_time = t.elapsed();
    let t = Instant::now();
    let blob = encode(&index);
    let encode_time = t.elapsed();
    let t = Instant::now();
    let back = decode(&blob).expect("decodes");
    let decode_time = t.elapsed();
    assert_eq!(back.entries.len(), n);
    println!("entries:            {n}");
    println!(
        "body (uncompressed): {:.1} MiB ({:.1} bytes/entry)",
        body.len() as f64 / 1048576.0,
        body.len() as f64 / n as f64
    );
    println!(
        "blob (LZ4 frame):    {:.1} MiB ({:.1} bytes/entry)",
        blob.len() as f64 / 1048576.0,
        blob.len() as f64 / n as f64
    );
    println!(
        "encode body:         {:.0} ms",
        body_time.as_secs_f64() * 1000.0
    );
    println!(
        "encode + compress:   {:.0} ms",
        encode_time.as_secs_f64() * 1000.0
    );
    println!(
        "decompress + decode: {:.0} ms",
        decode_time.as_secs_f64() * 1000.0
    );
}
