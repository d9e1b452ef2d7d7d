//! Our blobs are standard LZ4 frames: Python's `lz4.frame` (the reference C library) and the `lz4`
//! command-line tool decode what the codec writes, and the codec decodes what they write.

use std::io::Write;
use std::process::Command;

use remotedict::codec;

fn sample(len: usize) -> Vec<u8> {
    // Mixed content: compressible text with pseudo-random runs.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    (0..len)
        .map(|i| {
            if (i / 4096) % 3 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                b"remotedict "[i % 11]
            }
        })
        .collect()
}

fn python(script: &str, args: &[&std::path::Path]) -> std::process::Output {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn python_decodes_what_the_codec_writes() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 100_000, 5 << 20] {
        let data = sample(len);
        let (src, frame) = (dir.path().join("value"), dir.path().join("value.lz4"));
        std::fs::write(&src, &data).unwrap();
        let mut enc = codec::encoder(std::fs::File::create(&frame).unwrap());
        enc.write_all(&data).unwrap();
        enc.finish().unwrap();
        let out = python(
            "import sys, lz4.frame\n\
             got = lz4.frame.decompress(open(sys.argv[1], 'rb').read())\n\
             want = open(sys.argv[2], 'rb').read()\n\
             print('same' if got == want else 'different')",
            &[&frame, &src],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "same",
            "length {len}"
        );
        let cli = Command::new("lz4")
            .arg("-dc")
            .arg(&frame)
            .output()
            .expect("lz4 CLI runs");
        assert!(cli.status.success());
        assert_eq!(cli.stdout, data, "lz4 -d, length {len}");
    }
}

#[test]
fn codec_decodes_what_python_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(3 << 20);
    let src = dir.path().join("value");
    std::fs::write(&src, &data).unwrap();
    // Linked and independent blocks, with and without checksums, as other writers produce them.
    for (i, opts) in [
        "block_linked=True, content_checksum=False",
        "block_linked=False, content_checksum=True, block_size=lz4.frame.BLOCKSIZE_MAX4MB",
        "block_linked=True, content_checksum=True, store_size=True, block_checksum=True",
    ]
    .iter()
    .enumerate()
    {
        let frame = dir.path().join(format!("py{i}.lz4"));
        python(
            &format!(
                "import sys, lz4.frame\n\
                 open(sys.argv[2], 'wb').write(lz4.frame.compress(open(sys.argv[1], 'rb').read(), {opts}))"
            ),
            &[&src, &frame],
        );
        let stored = std::fs::read(&frame).unwrap();
        assert!(codec::is_lz4(&stored));
        assert_eq!(codec::decompress(&stored).unwrap(), data, "options {opts}");
    }
}

/// What the mount uploads — the frame plus its seek table in a skippable frame — is read by
/// Python's `lz4.frame` and the `lz4` tool unchanged.
#[tokio::test]
async fn uploaded_values_with_their_seek_table_stay_standard() {
    use remotedict::store::{local::LocalStore, BlobStore, GetResult, PutOptions};
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn BlobStore> =
        std::sync::Arc::new(LocalStore::new(dir.path().join("s")));
    store.create_container().await.unwrap();
    let data = sample(5 << 20);
    let src = dir.path().join("value");
    std::fs::write(&src, &data).unwrap();
    let cfg = remotedict::transfer::TransferConfig {
        block_size: 1 << 20,
        parallel: 2,
        read_parallel: 2,
        range_size: 1 << 20,
    };
    let file = std::fs::File::open(&src).unwrap();
    remotedict::transfer::upload_file(&store, "v", file, PutOptions::default(), &cfg)
        .await
        .unwrap();
    let GetResult::Found { data: stored, .. } = store.get("v", None, None).await.unwrap() else {
        panic!()
    };
    let frame = dir.path().join("v.lz4");
    std::fs::write(&frame, &stored).unwrap();
    let out = python(
        "import sys, lz4.frame\n\
         got = lz4.frame.decompress(open(sys.argv[1], 'rb').read())\n\
         print('same' if got == open(sys.argv[2], 'rb').read() else 'different')",
        &[&frame, &src],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "same");
    let cli = Command::new("lz4").arg("-dc").arg(&frame).output().unwrap();
    assert!(
        cli.status.success() && cli.stdout == data,
        "lz4 -d must skip the seek table"
    );
}
