//! The command line: clap definitions and turning them (plus the environment) into a store and a
//! filesystem configuration. Credentials come from the environment or a file, never from argv.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::store::azure::{AzureOptions, AzureStore};
use crate::store::local::LocalStore;
use crate::store::{BlobStore, StoreError};

#[derive(Parser, Debug)]
#[command(
    name = "remotedict",
    version,
    about = "Mount a folder of an Azure Blob Storage container (or a local store) as a directory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a folder as a directory (daemonizes unless --foreground).
    Mount(Box<MountArgs>),
    /// Compare the index with the folder's blobs; report (exit code 1 when not clean) or repair.
    Fsck {
        #[command(flatten)]
        store: StoreArgs,
        /// Fix the index from the blobs (concurrent writers keep their updates).
        #[arg(long)]
        repair: bool,
    },
    /// List keys (from the index: instant), optionally under a prefix.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
        /// Only keys starting with this.
        prefix: Option<String>,
        /// Kind, size, stored size and mtime of each key.
        #[arg(short = 'l', long)]
        long: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write a key's value to FILE (or stdout, with `-` or nothing).
    Get {
        #[command(flatten)]
        store: StoreArgs,
        key: String,
        #[arg(value_name = "FILE|-")]
        dest: Option<String>,
    },
    /// Store values: `put KEY [FILE|-]`, or `put K1=F1 K2=F2 …` — all keys change in one index
    /// commit, or none does.
    Put {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(required = true, value_name = "KEY [FILE|-] | KEY=FILE...")]
        items: Vec<String>,
    },
    /// Remove keys (blobs and index entries).
    Rm {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Show a key's sizes, etag, times, mode and lease state.
    Stat {
        #[command(flatten)]
        store: StoreArgs,
        key: String,
    },
    /// Lock a key with a blob lease (like the original `lock_item`): prints the lease id.
    Lock {
        #[command(flatten)]
        store: StoreArgs,
        key: String,
        /// Seconds (15–60), or -1 for infinite; the lease is not renewed.
        #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
        duration: i64,
        /// Wait until the lock is free instead of failing at once.
        #[arg(long)]
        wait: bool,
    },
    /// Unlock a key: release the lease with its id, or break any lease without one.
    Unlock {
        #[command(flatten)]
        store: StoreArgs,
        key: String,
        #[arg(long)]
        lease_id: Option<String>,
    },
    /// Show what mounted daemons are doing: index size and age, cache use, leases held, uploads
    /// pending, errors (all remotedict mounts, or one).
    Status { mountpoint: Option<PathBuf> },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
    /// Unmount a remotedict mount (same as `fusermount3 -u MOUNTPOINT`).
    Unmount {
        /// The mount point to unmount.
        mountpoint: PathBuf,
    },
}

/// Where the data lives: Azure (credentials from the environment or a file) or a local store.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Azure container (or, with the local store, a subdirectory of it).
    #[arg(long, default_value = "remotedict", env = "REMOTEDICT_CONTAINER")]
    pub container: String,
    /// Folder inside the container whose keys are mounted (a blob-name prefix; empty: the whole container).
    #[arg(long, default_value = "", env = "REMOTEDICT_FOLDER")]
    pub folder: String,
    /// Read the Azure connection string from this file instead of AZURE_STORAGE_CONNECTION_STRING.
    #[arg(long, value_name = "FILE")]
    pub connection_string_file: Option<PathBuf>,
    /// Use the embedded local store in DIR (the default when no Azure credential is set;
    /// default DIR: $XDG_DATA_HOME/remotedict or ~/.local/share/remotedict).
    #[arg(long, value_name = "DIR", env = "REMOTEDICT_LOCAL")]
    pub local: Option<PathBuf>,
    /// Create the container if it does not exist.
    #[arg(long)]
    pub create_container: bool,
    /// Time limit of one request to Azure, in seconds (once more per 4 MiB it carries); a request
    /// that runs out is retried, then the operation fails with EIO.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub request_timeout: u64,
    /// Retries of a request that failed transiently.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// TOML configuration file (default: /etc/remotedict/config.toml for root, else
    /// $XDG_CONFIG_HOME/remotedict/config.toml, when it exists). Flags win over environment
    /// variables, which win over the file.
    #[arg(long, value_name = "FILE", env = "REMOTEDICT_CONFIG")]
    pub config: Option<PathBuf>,
    /// A connection string from the configuration file (never from the command line).
    #[arg(skip)]
    pub config_connection_string: Option<String>,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to mount on.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Stay in the foreground (log to stderr) instead of daemonizing.
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: ro, rw, allow_other, allow_root, uid=N, gid=N, default_permissions,
    /// auto_unmount; _netdev, nofail, noauto, auto, user, users, x-systemd.* are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// How long a listing or attribute may be served from the cached index, in seconds.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        env = "REMOTEDICT_INDEX_TTL"
    )]
    pub index_ttl: f64,
    /// Directory for staged writes and cached values (default: $XDG_CACHE_HOME/remotedict or ~/.cache/remotedict).
    #[arg(long, value_name = "DIR", env = "REMOTEDICT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Upper bound of the disk cache of decompressed values, in MiB.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    pub cache_size: u64,
    /// Length of the blob leases behind flock locks, in seconds (15–60, or -1 for infinite);
    /// renewed every third of it while held. A crashed holder's lock frees itself after this long.
    #[arg(
        long,
        default_value_t = 20,
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub lease_duration: i64,
    /// Before mounting, rebuild the index from the folder's blobs (for a container filled by
    /// other tools), as `remotedict fsck --repair` does.
    #[arg(long)]
    pub rebuild_index: bool,
    /// Print the configuration this mount would use (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log file when daemonized (default: CACHE_DIR/remotedict.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// Parsed `-o` options.
#[derive(Debug, Default, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub default_permissions: bool,
    pub auto_unmount: bool,
}

impl MountOptions {
    pub fn parse(opts: &[String]) -> Result<Self> {
        let mut m = MountOptions {
            default_permissions: true,
            ..Default::default()
        };
        for opt in opts
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let (name, value) = opt
                .split_once('=')
                .map_or((opt, None), |(n, v)| (n, Some(v)));
            let number = |v: Option<&str>| -> Result<u32> {
                v.and_then(|v| v.parse().ok()).with_context(|| {
                    format!("mount option {opt:?} needs a number, like {name}=1000")
                })
            };
            match name {
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                "allow_other" => m.allow_other = true,
                "allow_root" => m.allow_root = true,
                "uid" => m.uid = Some(number(value)?),
                "gid" => m.gid = Some(number(value)?),
                "default_permissions" => m.default_permissions = true,
                "auto_unmount" => m.auto_unmount = true,
                "_netdev" | "nofail" | "noauto" | "auto" | "user" | "users" | "nouser" | "dev"
                | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
                | "relatime" | "async" => {}
                n if n.starts_with("x-") || n.starts_with("comment=") => {}
                _ => bail!("unknown mount option {opt:?} (see `remotedict mount --help`)"),
            }
        }
        if m.allow_other && m.allow_root {
            bail!("mount options allow_other and allow_root exclude each other");
        }
        Ok(m)
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Default root of the embedded local store.
pub fn default_local_root() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map_or_else(|| home().join(".local/share"), PathBuf::from)
        .join("remotedict")
}

/// Default cache directory.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home().join(".cache"), PathBuf::from)
        .join("remotedict")
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Opens the store the arguments and environment point at; checks (or creates) the container.
pub async fn open_store(args: &StoreArgs) -> Result<Arc<dyn BlobStore>> {
    let opts = AzureOptions {
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        max_retries: args.retries,
    };
    let store: Arc<dyn BlobStore> = if let Some(dir) = &args.local {
        local_store(dir, &args.container)?
    } else if let Some(file) = &args.connection_string_file {
        let conn = std::fs::read_to_string(file)
            .with_context(|| format!("reading the connection string file {}", file.display()))?;
        Arc::new(AzureStore::from_connection_string(
            conn.trim(),
            &args.container,
            opts,
        )?)
    } else if let Some(conn) = env_nonempty("AZURE_STORAGE_CONNECTION_STRING") {
        Arc::new(
            AzureStore::from_connection_string(&conn, &args.container, opts)
                .context("AZURE_STORAGE_CONNECTION_STRING is not usable")?,
        )
    } else if let (Some(account), Some(sas)) = (
        env_nonempty("AZURE_STORAGE_ACCOUNT"),
        env_nonempty("AZURE_STORAGE_SAS_TOKEN"),
    ) {
        Arc::new(AzureStore::from_sas_token(
            &account,
            &sas,
            &args.container,
            opts,
        )?)
    } else if let Some(conn) = &args.config_connection_string {
        Arc::new(
            AzureStore::from_connection_string(conn, &args.container, opts)
                .context("the connection string in the configuration file is not usable")?,
        )
    } else {
        local_store(&default_local_root(), &args.container)?
    };
    let is_local = store.describe().starts_with("local:");
    match store.check_container().await {
        Ok(()) => {}
        Err(StoreError::ContainerNotFound(_)) if args.create_container || is_local => {
            store
                .create_container()
                .await
                .with_context(|| format!("creating {}", store.describe()))?;
            log::info!("created {}", store.describe());
        }
        Err(e @ StoreError::ContainerNotFound(_)) => {
            bail!("{}: {e}", store.describe())
        }
        Err(e) => bail!("cannot reach {}: {e}", store.describe()),
    }
    Ok(store)
}

fn local_store(root: &Path, container: &str) -> Result<Arc<dyn BlobStore>> {
    if container.is_empty() || container.contains('/') || container.starts_with('.') {
        bail!("container name {container:?} is not valid for the local store: use letters, digits and '-'");
    }
    Ok(Arc::new(LocalStore::new(root.join(container))))
}

/// `remotedict fsck [--repair]`: returns whether the folder is (now) consistent.
pub fn fsck(store_args: &StoreArgs, repair: bool) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let store = open_store(store_args).await?;
        let layout = crate::layout::Layout::new(&store_args.folder)?;
        let (report, blobs) = crate::fsck::check(&store, &layout).await?;
        for line in report.lines() {
            println!("{line}");
        }
        println!(
            "{}: {} keys in the index, {} blobs; {}",
            store.describe(),
            report.keys,
            report.blobs,
            if report.is_clean() {
                "clean"
            } else {
                "problems found"
            }
        );
        if report.is_clean() || !repair {
            return Ok(report.is_clean());
        }
        let n = crate::fsck::repair(&store, &layout, &report, &blobs).await?;
        println!("repaired: {n} index change(s)");
        Ok(true)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs one of the dictionary commands.
pub fn dict_command(command: Command) -> Result<()> {
    use crate::dict::{Dict, Endpoint};
    let rt = runtime()?;
    rt.block_on(async {
        let open = |store: StoreArgs| async move {
            let s = open_store(&store).await?;
            anyhow::Ok(Dict::new(s, crate::layout::Layout::new(&store.folder)?))
        };
        match command {
            Command::Ls {
                store,
                prefix,
                long,
                json,
            } => {
                let d = open(store).await?;
                let entries = d.ls(prefix.as_deref().unwrap_or("")).await?;
                print!("{}", Dict::render_ls(&entries, long, json));
            }
            Command::Get { store, key, dest } => {
                open(store)
                    .await?
                    .get(&key, Endpoint::parse(dest.as_deref()))
                    .await?;
            }
            Command::Put { store, items } => {
                let pairs: Vec<(String, Endpoint)> = if items.len() <= 2 && !items[0].contains('=')
                {
                    vec![(
                        items[0].clone(),
                        Endpoint::parse(items.get(1).map(String::as_str)),
                    )]
                } else {
                    items
                        .iter()
                        .map(|i| match i.split_once('=') {
                            Some((k, f)) => Ok((k.to_string(), Endpoint::parse(Some(f)))),
                            None => Err(anyhow::anyhow!(
                                "{i:?}: use KEY=FILE for each key when putting several"
                            )),
                        })
                        .collect::<Result<_>>()?
                };
                let n = open(store).await?.put(pairs).await?;
                log::info!("{n} key(s) stored in one index commit");
            }
            Command::Rm { store, keys } => open(store).await?.rm(&keys).await?,
            Command::Stat { store, key } => print!("{}", open(store).await?.stat(&key).await?),
            Command::Lock {
                store,
                key,
                duration,
                wait,
            } => {
                let d = crate::store::LeaseDuration::from_secs(duration)
                    .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
                println!("{}", open(store).await?.lock(&key, d, wait).await?);
            }
            Command::Unlock {
                store,
                key,
                lease_id,
            } => {
                open(store).await?.unlock(&key, lease_id.as_deref()).await?;
            }
            _ => bail!("not a dictionary command"),
        }
        Ok(())
    })
}

/// `remotedict completions SHELL` and `remotedict man`.
pub fn generate(command: Command) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match command {
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "remotedict", &mut buf);
            write_stdout(&buf)?;
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .context("rendering the man page")?;
            write_stdout(&buf)?;
        }
        _ => bail!("not a generator command"),
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(buf: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// `-o` options of a mount helper invocation that stand for `remotedict mount` flags.
const OWN_OPTIONS: &[&str] = &[
    "local",
    "connection_string_file",
    "index_ttl",
    "lease_duration",
    "cache_dir",
    "cache_size",
    "create_container",
    "log_file",
    "rebuild_index",
    "request_timeout",
    "retries",
    "config",
];

/// Turns a mount-helper invocation — `remotedict CONTAINER[/FOLDER] DIR -o OPTS`, as `mount -t
/// fuse.remotedict` (through mount.fuse) and fstab run it, or the same under the name
/// `mount.fuse.remotedict` — into `remotedict mount DIR --container … --folder … [flags] -o …`.
/// Any other command line is returned unchanged.
pub fn mount_helper_args(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().to_string());
    let first = argv
        .get(1)
        .map(|a| a.to_string_lossy().to_string())
        .unwrap_or_default();
    let known = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    let helper = name.as_deref().is_some_and(|n| n.starts_with("mount."))
        || (!known && !first.starts_with('-') && argv.len() >= 3);
    if !helper || argv.len() < 3 {
        return argv;
    }
    let source = first;
    let mountpoint = argv[2].clone();
    let (container, folder) = source
        .split_once('/')
        .map_or((source.as_str(), ""), |(c, f)| (c, f));
    let mut out: Vec<std::ffi::OsString> = vec![argv[0].clone(), "mount".into(), mountpoint];
    if !container.is_empty() {
        out.extend(["--container".into(), container.into()]);
    }
    out.extend(["--folder".into(), folder.into()]);
    let mut rest = argv[3..]
        .iter()
        .map(|a| a.to_string_lossy().to_string())
        .peekable();
    let mut passed = Vec::new();
    while let Some(arg) = rest.next() {
        if arg == "-o" {
            for opt in rest
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|o| !o.is_empty())
            {
                let (k, v) = opt
                    .split_once('=')
                    .map_or((opt, None), |(k, v)| (k, Some(v)));
                if OWN_OPTIONS.contains(&k) {
                    out.push(format!("--{}", k.replace('_', "-")).into());
                    if let Some(v) = v {
                        out.push(v.into());
                    }
                } else {
                    passed.push(opt.to_string());
                }
            }
        } else if arg.starts_with("--") {
            out.push(arg.into());
        } else {
            // mount.fuse may pass `-n` (no mtab) and the like.
            log::debug!("mount helper: ignoring argument {arg:?}");
        }
    }
    if !passed.is_empty() {
        out.extend(["-o".into(), passed.join(",").into()]);
    }
    out
}

/// Default location of the configuration file.
pub fn default_config_path() -> PathBuf {
    // SAFETY: a plain libc getter.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/etc/remotedict/config.toml")
    } else {
        std::env::var_os("XDG_CONFIG_HOME")
            .map_or_else(|| home().join(".config"), PathBuf::from)
            .join("remotedict/config.toml")
    }
}

/// Fills the settings neither a flag nor an environment variable gave from the TOML file.
pub fn apply_config(cli: &mut Cli, matches: &clap::ArgMatches) -> Result<()> {
    use clap::parser::ValueSource;
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let store = match &mut cli.command {
        Command::Mount(m) => &mut m.store,
        Command::Fsck { store, .. }
        | Command::Ls { store, .. }
        | Command::Get { store, .. }
        | Command::Put { store, .. }
        | Command::Rm { store, .. }
        | Command::Stat { store, .. }
        | Command::Lock { store, .. }
        | Command::Unlock { store, .. } => store,
        _ => return Ok(()),
    };
    let (path, explicit) = match &store.config {
        Some(p) => (p.clone(), true),
        None => (default_config_path(), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the configuration file {}", path.display()))
        }
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    let unset = |id: &str| {
        !matches!(
            sub.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let bad = |k: &str, want: &str| anyhow::anyhow!("{}: `{k}` must be {want}", path.display());
    let azure_env = env_nonempty("AZURE_STORAGE_CONNECTION_STRING").is_some()
        || env_nonempty("AZURE_STORAGE_SAS_TOKEN").is_some();
    for (k, v) in &table {
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(k, "a string"))
        };
        let int = || v.as_integer().ok_or_else(|| bad(k, "an integer"));
        match k.as_str() {
            "container" if unset("container") => store.container = text()?,
            "folder" if unset("folder") => store.folder = text()?,
            "local" if unset("local") && !azure_env && store.connection_string_file.is_none() => {
                store.local = Some(PathBuf::from(text()?))
            }
            "connection_string_file" if unset("connection_string_file") => {
                store.connection_string_file = Some(PathBuf::from(text()?))
            }
            "connection_string" => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    if std::fs::metadata(&path)
                        .map(|m| m.permissions().mode() & 0o077 != 0)
                        .unwrap_or(false)
                    {
                        log::warn!(
                            "{} holds a connection string but others can read it: chmod 600 it",
                            path.display()
                        );
                    }
                }
                store.config_connection_string = Some(text()?)
            }
            "create_container" if unset("create_container") => {
                store.create_container = v.as_bool().ok_or_else(|| bad(k, "true or false"))?
            }
            "request_timeout" if unset("request_timeout") => {
                store.request_timeout = int()?.try_into().map_err(|_| bad(k, "positive"))?
            }
            "retries" if unset("retries") => {
                store.retries = int()?.try_into().map_err(|_| bad(k, "positive"))?
            }
            _ => {}
        }
    }
    if let Command::Mount(m) = &mut cli.command {
        for (k, v) in &table {
            let text = || {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(k, "a string"))
            };
            match k.as_str() {
                "index_ttl" if unset("index_ttl") => {
                    m.index_ttl = v
                        .as_float()
                        .or_else(|| v.as_integer().map(|i| i as f64))
                        .ok_or_else(|| bad(k, "a number"))?
                }
                "lease_duration" if unset("lease_duration") => {
                    m.lease_duration = v.as_integer().ok_or_else(|| bad(k, "an integer"))?
                }
                "cache_dir" if unset("cache_dir") => m.cache_dir = Some(PathBuf::from(text()?)),
                "cache_size" if unset("cache_size") => {
                    m.cache_size = v
                        .as_integer()
                        .and_then(|i| u64::try_from(i).ok())
                        .ok_or_else(|| bad(k, "a positive integer"))?
                }
                "log_file" if unset("log_file") => m.log_file = Some(PathBuf::from(text()?)),
                "options" if unset("options") => m.options = vec![text()?],
                "container"
                | "folder"
                | "local"
                | "connection_string_file"
                | "connection_string"
                | "create_container"
                | "request_timeout"
                | "retries"
                | "index_ttl"
                | "lease_duration"
                | "cache_dir"
                | "cache_size"
                | "log_file"
                | "options" => {}
                other => log::warn!("{}: unknown setting `{other}` ignored", path.display()),
            }
        }
    }
    Ok(())
}

/// The configuration a mount would use, secrets redacted (`--print-config`).
pub fn print_config(m: &MountArgs) -> String {
    let st = &m.store;
    let credential = if st.local.is_some() {
        "none (local store)".to_string()
    } else if let Some(f) = &st.connection_string_file {
        format!("connection string from file {} (redacted)", f.display())
    } else if env_nonempty("AZURE_STORAGE_CONNECTION_STRING").is_some() {
        "AZURE_STORAGE_CONNECTION_STRING (redacted)".to_string()
    } else if env_nonempty("AZURE_STORAGE_SAS_TOKEN").is_some() {
        format!(
            "AZURE_STORAGE_ACCOUNT={} + AZURE_STORAGE_SAS_TOKEN (redacted)",
            env_nonempty("AZURE_STORAGE_ACCOUNT").unwrap_or_default()
        )
    } else if st.config_connection_string.is_some() {
        "connection_string from the configuration file (redacted)".to_string()
    } else {
        "none (embedded local store)".to_string()
    };
    let store = match &st.local {
        Some(d) => format!("local {}", d.join(&st.container).display()),
        None if credential.starts_with("none") => format!(
            "local {}",
            default_local_root().join(&st.container).display()
        ),
        None => format!("azure container {}", st.container),
    };
    format!(
        "mountpoint = {:?}\nstore = {store:?}\ncredential = {credential:?}\ncontainer = {:?}\nfolder = {:?}\n\
         create_container = {}\nrequest_timeout = {}\nretries = {}\nindex_ttl = {}\nlease_duration = {}\n\
         cache_dir = {:?}\ncache_size = {}\noptions = {:?}\nforeground = {}\nlog_file = {:?}\nconfig = {:?}\n",
        m.mountpoint.display().to_string(),
        st.container,
        st.folder,
        st.create_container,
        st.request_timeout,
        st.retries,
        m.index_ttl,
        m.lease_duration,
        m.cache_dir.clone().unwrap_or_else(default_cache_dir).display().to_string(),
        m.cache_size,
        m.options.join(","),
        m.foreground,
        m.log_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "CACHE_DIR/remotedict.log".into()),
        st.config.clone().unwrap_or_else(default_config_path).display().to_string(),
    )
}

/// `remotedict status [MOUNTPOINT]`: prints each mount's status file.
pub fn status(mountpoint: Option<&Path>) -> Result<()> {
    let mounts: Vec<PathBuf> = match mountpoint {
        Some(m) => vec![m.to_path_buf()],
        None => std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" remotedict:"))
            .filter_map(|l| {
                l.split(' ')
                    .nth(4)
                    .map(|p| PathBuf::from(p.replace("\\040", " ")))
            })
            .collect(),
    };
    if mounts.is_empty() {
        println!("no remotedict mounts");
    }
    for m in mounts {
        let file = m.join(crate::layout::RESERVED_DIR).join("status");
        match std::fs::read_to_string(&file) {
            Ok(text) => println!("{}:\n{text}", m.display()),
            Err(e) if mountpoint.is_some() => {
                bail!(
                    "{}: no status ({e}); is it a remotedict mount?",
                    m.display()
                )
            }
            Err(e) => println!("{}: no status ({e})\n", m.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<std::ffi::OsString> {
        v.iter().map(Into::into).collect()
    }

    #[test]
    fn mount_helper_invocations_become_mount_commands() {
        let got = mount_helper_args(args(&[
            "remotedict",
            "box/data/set",
            "/mnt/x",
            "-o",
            "rw,_netdev,local=/srv/rd,index_ttl=2,create_container,allow_other",
        ]));
        assert_eq!(
            got,
            args(&[
                "remotedict",
                "mount",
                "/mnt/x",
                "--container",
                "box",
                "--folder",
                "data/set",
                "--local",
                "/srv/rd",
                "--index-ttl",
                "2",
                "--create-container",
                "-o",
                "rw,_netdev,allow_other"
            ])
        );
        let got = mount_helper_args(args(&["/sbin/mount.fuse.remotedict", "box", "/mnt/x"]));
        assert_eq!(
            got,
            args(&[
                "/sbin/mount.fuse.remotedict",
                "mount",
                "/mnt/x",
                "--container",
                "box",
                "--folder",
                ""
            ])
        );
        let plain = args(&["remotedict", "ls", "--folder", "f"]);
        assert_eq!(mount_helper_args(plain.clone()), plain);
        let plain = args(&["remotedict", "mount", "/mnt", "-o", "ro"]);
        assert_eq!(mount_helper_args(plain.clone()), plain);
    }

    #[test]
    fn mount_options_are_checked() {
        let o =
            MountOptions::parse(&["ro,allow_other,uid=5,gid=6,_netdev,x-systemd.automount".into()])
                .unwrap();
        assert!(o.read_only && o.allow_other && o.uid == Some(5) && o.gid == Some(6));
        assert!(MountOptions::parse(&["uid=abc".into()])
            .unwrap_err()
            .to_string()
            .contains("needs a number"));
        assert!(MountOptions::parse(&["frobnicate".into()]).is_err());
        assert!(MountOptions::parse(&["allow_other,allow_root".into()]).is_err());
    }
}
