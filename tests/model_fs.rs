//! Reference-model property test of the filesystem core (no kernel): random namespace operations
//! through `remotedict::fs::Fs` agree, in their outcome (Ok or errno) and in the tree they leave
//! (lookup, readdir and read of every path), with a plain model tree that follows POSIX (as Linux
//! answers). Names come from a tiny alphabet so operations collide. At the end of each case a
//! second `Fs` (another host, its own cache) over the same store sees the same tree.
//!
//! The test stands in for the kernel's path walk: it resolves every component with `lookup`
//! (ENOENT when missing, ENOTDIR through a non-directory) and hands `Fs` the parent's inode.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use remotedict::fs::{Attr, Fs, FsError, NodeKind, SetAttr};
use remotedict::index::SharedIndex;
use remotedict::layout::Layout;
use remotedict::store::BlobStore;

const ROOT: u64 = 1;
const NAMES: &[&str] = &["a", "b"];
const MAX_DEPTH: usize = 3;

/// The store the test runs on (one function, so another backend can be swapped in).
async fn test_store() -> (tempfile::TempDir, Arc<dyn BlobStore>) {
    common::local_store().await
}

/// The index TTL of the main test: longer than a case, so this host never revalidates its
/// index copy while its own commits are in flight (the short-TTL test below does).
const LONG_TTL: Duration = Duration::from_secs(3600);

fn fs_on(store: &Arc<dyn BlobStore>, cache: &std::path::Path, ttl: Duration) -> Fs {
    let cfg = common::fs_config(cache, 64 << 20);
    Fs::new(
        store.clone(),
        Layout::new("folder").expect("layout"),
        ttl,
        cfg,
    )
    .expect("fs")
}

// ---- the model ----

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

/// Path (components joined by `/`, the root is "") → node.
type Tree = BTreeMap<String, Node>;

type Path = Vec<&'static str>;

fn join(p: &[&str]) -> String {
    p.join("/")
}

type Outcome = Result<(), i32>;

/// The node at `p`, or the errno a path walk to it fails with.
fn model_lookup(t: &Tree, p: &[&str]) -> Result<Node, i32> {
    let mut node = Node::Dir; // the root
    for i in 0..p.len() {
        if node != Node::Dir {
            return Err(libc::ENOTDIR);
        }
        node = t.get(&join(&p[..=i])).cloned().ok_or(libc::ENOENT)?;
    }
    Ok(node)
}

/// Walks to the parent of `p`, which must be a directory.
fn model_parent(t: &Tree, p: &[&str]) -> Outcome {
    match model_lookup(t, &p[..p.len() - 1])? {
        Node::Dir => Ok(()),
        Node::File(_) => Err(libc::ENOTDIR),
    }
}

fn has_children(t: &Tree, path: &str) -> bool {
    let prefix = format!("{path}/");
    t.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

/// The node at `path` and everything under it, removed from the tree.
fn take_subtree(t: &mut Tree, path: &str) -> Vec<(String, Node)> {
    let prefix = format!("{path}/");
    let keys: Vec<String> = t
        .keys()
        .filter(|k| *k == path || k.starts_with(&prefix))
        .cloned()
        .collect();
    keys.into_iter()
        .map(|k| {
            let n = t.remove(&k).expect("listed key");
            (k, n)
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op<P = Path> {
    Create { path: P, excl: bool, trunc: bool },
    Write { path: P, offset: u64, data: Vec<u8> },
    Truncate { path: P, size: u64 },
    Rename { from: P, to: P, noreplace: bool },
    Unlink { path: P },
    Mkdir { path: P },
    Rmdir { path: P },
}

/// How a generated operation names a path: as is, or by what the tree holds when it runs (so
/// operations mostly meet what earlier ones made).
#[derive(Clone, Debug)]
enum Pick {
    Exact(Path),
    /// The n-th existing node (modulo their number; `Exact` when there are none).
    Existing(usize, Path),
    /// A name in the n-th existing directory (the root included) with room below it.
    ChildOf(usize, &'static str),
}

impl Pick {
    fn path(&self, t: &Tree) -> Path {
        let split = |k: &String| -> Path {
            k.split('/')
                .map(|c| *NAMES.iter().find(|n| **n == c).expect("a name of NAMES"))
                .collect()
        };
        match self {
            Pick::Exact(p) => p.clone(),
            Pick::Existing(_, p) if t.is_empty() => p.clone(),
            Pick::Existing(n, _) => split(t.keys().nth(n % t.len()).expect("in range")),
            Pick::ChildOf(n, name) => {
                let mut dirs: Vec<Path> = vec![vec![]];
                dirs.extend(
                    t.iter()
                        .filter(|(k, node)| **node == Node::Dir && k.split('/').count() < MAX_DEPTH)
                        .map(|(k, _)| split(k)),
                );
                let mut p = dirs[n % dirs.len()].clone();
                p.push(name);
                p
            }
        }
    }
}

impl Op<Pick> {
    /// The operation with its paths chosen from the tree as it is now.
    fn concrete(&self, t: &Tree) -> Op {
        match self {
            Op::Create { path, excl, trunc } => Op::Create {
                path: path.path(t),
                excl: *excl,
                trunc: *trunc,
            },
            Op::Write { path, offset, data } => Op::Write {
                path: path.path(t),
                offset: *offset,
                data: data.clone(),
            },
            Op::Truncate { path, size } => Op::Truncate {
                path: path.path(t),
                size: *size,
            },
            Op::Rename {
                from,
                to,
                noreplace,
            } => Op::Rename {
                from: from.path(t),
                to: to.path(t),
                noreplace: *noreplace,
            },
            Op::Unlink { path } => Op::Unlink { path: path.path(t) },
            Op::Mkdir { path } => Op::Mkdir { path: path.path(t) },
            Op::Rmdir { path } => Op::Rmdir { path: path.path(t) },
        }
    }
}

/// What POSIX (Linux) answers to `op`, applied to the model.
fn model_apply(t: &mut Tree, op: &Op) -> Outcome {
    match op {
        Op::Create { path, excl, trunc } => {
            model_parent(t, path)?;
            match t.get_mut(&join(path)) {
                Some(_) if *excl => Err(libc::EEXIST),
                Some(Node::Dir) => Err(libc::EISDIR),
                Some(Node::File(bytes)) => {
                    if *trunc {
                        bytes.clear();
                    }
                    Ok(())
                }
                None => {
                    t.insert(join(path), Node::File(Vec::new()));
                    Ok(())
                }
            }
        }
        Op::Write { path, offset, data } => match model_lookup(t, path)? {
            Node::Dir => Err(libc::EISDIR),
            Node::File(mut bytes) => {
                let (start, end) = (*offset as usize, *offset as usize + data.len());
                if !data.is_empty() && bytes.len() < end {
                    bytes.resize(end, 0);
                }
                if !data.is_empty() {
                    bytes[start..end].copy_from_slice(data);
                }
                t.insert(join(path), Node::File(bytes));
                Ok(())
            }
        },
        Op::Truncate { path, size } => match model_lookup(t, path)? {
            Node::Dir => Err(libc::EISDIR),
            Node::File(mut bytes) => {
                bytes.resize(*size as usize, 0);
                t.insert(join(path), Node::File(bytes));
                Ok(())
            }
        },
        Op::Unlink { path } => match model_lookup(t, path)? {
            Node::Dir => Err(libc::EISDIR),
            Node::File(_) => {
                t.remove(&join(path));
                Ok(())
            }
        },
        Op::Mkdir { path } => {
            model_parent(t, path)?;
            if t.contains_key(&join(path)) {
                return Err(libc::EEXIST);
            }
            t.insert(join(path), Node::Dir);
            Ok(())
        }
        Op::Rmdir { path } => match model_lookup(t, path)? {
            Node::File(_) => Err(libc::ENOTDIR),
            Node::Dir if has_children(t, &join(path)) => Err(libc::ENOTEMPTY),
            Node::Dir => {
                t.remove(&join(path));
                Ok(())
            }
        },
        Op::Rename {
            from,
            to,
            noreplace,
        } => model_rename(t, from, to, *noreplace),
    }
}

/// rename(2) / renameat2(2) with RENAME_NOREPLACE.
///
/// Where several errors apply, the model takes them in `Fs`'s order, which differs from Linux's
/// in two cases that only a caller without a kernel can see (the kernel makes these checks itself
/// before it asks FUSE): Linux answers EEXIST (RENAME_NOREPLACE onto an existing name) before
/// EINVAL (a directory into its own subtree), and ENOTEMPTY for a file moved onto one of its
/// own ancestors, where `Fs` says EINVAL first and EISDIR.
fn model_rename(t: &mut Tree, from: &[&str], to: &[&str], noreplace: bool) -> Outcome {
    model_parent(t, from)?;
    model_parent(t, to)?;
    let src = model_lookup(t, from)?;
    let (f, d) = (join(from), join(to));
    if d.starts_with(&format!("{f}/")) {
        return Err(libc::EINVAL); // into its own subtree
    }
    let dst = t.get(&d).cloned();
    if dst.is_some() && noreplace {
        // Linux says EEXIST even when both name the same file (`run` answers that as the
        // kernel does).
        return Err(libc::EEXIST);
    }
    if f == d {
        return Ok(());
    }
    match (&src, &dst) {
        (Node::File(_), Some(Node::Dir)) => return Err(libc::EISDIR),
        (Node::Dir, Some(Node::File(_))) => return Err(libc::ENOTDIR),
        // Also a move onto one of its own ancestors (never empty).
        (Node::Dir, Some(Node::Dir)) if has_children(t, &d) => return Err(libc::ENOTEMPTY),
        _ => {}
    }
    t.remove(&d);
    for (k, n) in take_subtree(t, &f) {
        t.insert(format!("{d}{}", &k[f.len()..]), n);
    }
    Ok(())
}

// ---- the filesystem ----

fn errno(e: FsError) -> i32 {
    e.errno()
}

/// The kernel's path walk: `lookup` of each component from the root.
async fn resolve(fs: &Fs, p: &[&str]) -> Result<Attr, i32> {
    let mut attr = fs.getattr(ROOT).await.map_err(errno)?;
    for name in p {
        if attr.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        attr = fs.lookup(attr.ino, name).await.map_err(errno)?;
    }
    Ok(attr)
}

/// The inode of the parent of `p`, which must be a directory.
async fn parent(fs: &Fs, p: &[&str]) -> Result<u64, i32> {
    let attr = resolve(fs, &p[..p.len() - 1]).await?;
    if attr.kind != NodeKind::Dir {
        return Err(libc::ENOTDIR);
    }
    Ok(attr.ino)
}

fn last<'a>(p: &[&'a str]) -> &'a str {
    p[p.len() - 1]
}

/// Runs `op` as the kernel would hand it to the filesystem.
async fn run(fs: &Fs, op: &Op) -> Outcome {
    match op {
        Op::Create { path, excl, trunc } => {
            let dir = parent(fs, path).await?;
            let mut flags = libc::O_WRONLY | libc::O_CREAT;
            if *excl {
                flags |= libc::O_EXCL;
            }
            if *trunc {
                flags |= libc::O_TRUNC;
            }
            let (_, fh) = fs
                .create(dir, last(path), 0o644, flags)
                .await
                .map_err(errno)?;
            fs.release(fh).await.map_err(errno)
        }
        Op::Write { path, offset, data } => {
            let attr = resolve(fs, path).await?;
            let fh = fs.open(attr.ino, libc::O_WRONLY).await.map_err(errno)?;
            let written = fs.write(fh, *offset, data).await.map_err(errno);
            let released = fs.release(fh).await.map_err(errno);
            match written? {
                n if n as usize == data.len() => released,
                n => panic!("short write: {n} of {}", data.len()),
            }
        }
        Op::Truncate { path, size } => {
            let attr = resolve(fs, path).await?;
            let set = SetAttr {
                size: Some(*size),
                ..Default::default()
            };
            fs.setattr(attr.ino, None, set)
                .await
                .map(drop)
                .map_err(errno)
        }
        Op::Rename {
            from,
            to,
            noreplace,
        } => {
            let src_dir = parent(fs, from).await?;
            let dst_dir = parent(fs, to).await?;
            // The kernel looks the source up first: a missing one is ENOENT without asking the
            // filesystem to rename (`Fs` itself answers Ok to renaming a missing name onto
            // itself: it checks `from == to` first).
            resolve(fs, from).await?;
            if *noreplace && from == to {
                // The kernel answers this too before FUSE is asked: renameat2(RENAME_NOREPLACE)
                // of a name onto itself is EEXIST in Linux, where `Fs` answers Ok.
                return Err(libc::EEXIST);
            }
            fs.rename(src_dir, last(from), dst_dir, last(to), *noreplace)
                .await
                .map_err(errno)
        }
        Op::Unlink { path } => {
            let dir = parent(fs, path).await?;
            fs.unlink(dir, last(path)).await.map_err(errno)
        }
        Op::Mkdir { path } => {
            let dir = parent(fs, path).await?;
            fs.mkdir(dir, last(path), 0o755)
                .await
                .map(drop)
                .map_err(errno)
        }
        Op::Rmdir { path } => {
            let dir = parent(fs, path).await?;
            fs.rmdir(dir, last(path)).await.map_err(errno)
        }
    }
}

fn all_paths() -> Vec<Path> {
    let mut out: Vec<Path> = vec![vec![]];
    let mut level: Vec<Path> = vec![vec![]];
    for _ in 0..MAX_DEPTH {
        level = level
            .iter()
            .flat_map(|p| {
                NAMES.iter().map(move |n| {
                    let mut q = p.clone();
                    q.push(n);
                    q
                })
            })
            .collect();
        out.extend(level.iter().cloned());
    }
    out
}

fn show(r: &Result<impl std::fmt::Debug, i32>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({})", std::io::Error::from_raw_os_error(*e)),
    }
}

/// What `fs` shows at every path (lookup, and read or readdir) agrees with the model.
async fn check_tree(fs: &Fs, t: &Tree) -> Result<(), String> {
    for p in all_paths() {
        let want = model_lookup(t, &p);
        let got = resolve(fs, &p).await;
        let path = format!("/{}", join(&p));
        let attr = match (&want, got) {
            (Err(w), Err(g)) if *w == g => continue,
            (Ok(_), Ok(attr)) => attr,
            (_, got) => {
                return Err(format!(
                    "lookup {path}: model {}, fs {}",
                    show(&want),
                    show(&got.map(|a| a.kind))
                ))
            }
        };
        match want {
            Ok(Node::File(bytes)) => {
                if attr.kind != NodeKind::File {
                    return Err(format!(
                        "{path}: a file in the model, {:?} in fs",
                        attr.kind
                    ));
                }
                if attr.size != bytes.len() as u64 {
                    return Err(format!(
                        "{path}: size {} in the model, {} in fs",
                        bytes.len(),
                        attr.size
                    ));
                }
                let read = fs
                    .read_all(attr.ino)
                    .await
                    .map_err(|e| format!("read {path}: {e}"))?;
                if read != bytes {
                    return Err(format!("read {path}: model {bytes:?}, fs {read:?}"));
                }
            }
            Ok(Node::Dir) => {
                if attr.kind != NodeKind::Dir {
                    return Err(format!("{path}: a dir in the model, {:?} in fs", attr.kind));
                }
                let fh = fs
                    .opendir(attr.ino)
                    .await
                    .map_err(|e| format!("opendir {path}: {e}"))?;
                let listed = fs.readdir(fh).map_err(|e| format!("readdir {path}: {e}"));
                fs.releasedir(fh);
                let got: Vec<(String, NodeKind)> = listed?
                    .iter()
                    .filter(|e| e.name != "." && e.name != "..")
                    .map(|e| (e.name.clone(), e.kind))
                    .collect();
                let want: Vec<(String, NodeKind)> = NAMES
                    .iter()
                    .filter_map(|n| {
                        let mut q = p.clone();
                        q.push(n);
                        t.get(&join(&q)).map(|node| {
                            let kind = match node {
                                Node::File(_) => NodeKind::File,
                                Node::Dir => NodeKind::Dir,
                            };
                            (n.to_string(), kind)
                        })
                    })
                    .collect();
                if got != want {
                    return Err(format!("readdir {path}: model {want:?}, fs {got:?}"));
                }
            }
            Err(_) => unreachable!("matched above"),
        }
    }
    Ok(())
}

async fn fs_follows_the_model(ops: Vec<Op<Pick>>, ttl: Duration) -> Result<(), TestCaseError> {
    let (_dir, store) = test_store().await;
    let cache = tempfile::tempdir().expect("cache dir");
    let fs = fs_on(&store, cache.path(), ttl);
    let mut tree = Tree::new();
    let mut done: Vec<Op> = Vec::new();
    for op in &ops {
        let op = op.concrete(&tree);
        done.push(op.clone());
        let want = model_apply(&mut tree, &op);
        let got = run(&fs, &op).await;
        prop_assert_eq!(
            show(&got),
            show(&want),
            "outcome (fs, then model) of the last of {:#?}",
            done
        );
        if let Err(e) = check_tree(&fs, &tree).await {
            return Err(TestCaseError::fail(format!("after {done:#?}: {e}")));
        }
    }
    fs.sync_index()
        .await
        .map_err(|e| TestCaseError::fail(format!("sync_index: {e}")))?;
    let other_cache = tempfile::tempdir().expect("cache dir");
    let other = fs_on(&store, other_cache.path(), ttl);
    if let Err(e) = check_tree(&other, &tree).await {
        let index = SharedIndex::new(
            store.clone(),
            Layout::new("folder").expect("layout").index_blob(),
            Duration::from_secs(1),
        );
        let listed = index.current().await.map(|i| {
            i.entries
                .iter()
                .map(|(k, e)| format!("{k}: {:?} {} bytes, etag {}", e.kind, e.size, e.etag))
                .collect::<Vec<_>>()
        });
        return Err(TestCaseError::fail(format!(
            "another host's view after {done:#?}: {e}; the index blob lists {listed:?}"
        )));
    }
    Ok(())
}

// ---- generators ----

fn exact() -> impl Strategy<Value = Path> {
    let name = || prop::sample::select(NAMES);
    prop_oneof![
        2 => prop::collection::vec(name(), 1),
        2 => prop::collection::vec(name(), 2),
        1 => prop::collection::vec(name(), MAX_DEPTH),
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => exact().prop_map(Pick::Exact),
        5 => (any::<usize>(), exact()).prop_map(|(n, p)| Pick::Existing(n, p)),
        3 => (any::<usize>(), prop::sample::select(NAMES)).prop_map(|(n, name)| Pick::ChildOf(n, name)),
    ]
}

fn op() -> impl Strategy<Value = Op<Pick>> {
    prop_oneof![
        3 => (pick(), any::<bool>(), any::<bool>())
            .prop_map(|(path, excl, trunc)| Op::Create { path, excl, trunc }),
        3 => (pick(), 0u64..6, prop::collection::vec(any::<u8>(), 0..5))
            .prop_map(|(path, offset, data)| Op::Write { path, offset, data }),
        1 => (pick(), 0u64..8).prop_map(|(path, size)| Op::Truncate { path, size }),
        3 => (pick(), pick(), any::<bool>())
            .prop_map(|(from, to, noreplace)| Op::Rename { from, to, noreplace }),
        2 => pick().prop_map(|path| Op::Unlink { path }),
        3 => pick().prop_map(|path| Op::Mkdir { path }),
        2 => pick().prop_map(|path| Op::Rmdir { path }),
    ]
}

fn run_case(ops: Vec<Op<Pick>>, ttl: Duration) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(fs_follows_the_model(ops, ttl))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn namespace_operations_follow_the_model(ops in prop::collection::vec(op(), 5..=30)) {
        run_case(ops, LONG_TTL)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The same with a 200 ms index TTL, so lookups revalidate while this host's commits are in
    /// flight. It used to fail now and then (twice in about 7,500 cases) when a revalidation
    /// overtook the commit of a close's entry: the closed file vanished from this host's
    /// listing, or a later unlink of it was lost. 3,000 cases passed after the fix.
    #[test]
    fn namespace_operations_follow_the_model_with_a_short_ttl(
        ops in prop::collection::vec(op(), 5..=30)
    ) {
        run_case(ops, Duration::from_millis(200))?;
    }
}
