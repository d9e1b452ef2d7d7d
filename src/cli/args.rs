//! The command line's clap definitions. The settings themselves (flags that are also
//! configuration-file keys) are declared in `config::settings` and flattened in here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{MountSettings, StoreSettings};

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

/// The mount page's part on fstab and `mount -t fuse.remotedict` (also `mount --help`).
const FSTAB_HELP: &str = "\
From fstab or `mount -t fuse.remotedict CONTAINER[/FOLDER] DIR -o OPTIONS`, each setting flag \
above is an option with `_` for `-`: local=DIR, connection_string_file=FILE, auth=MODE, \
account=NAME, endpoint=URL, ca_file=FILE, msi_client_id=ID, msi_object_id=ID, msi_resource_id=ID, index_ttl=SECS, \
index_compact_kib=KIB, lease_duration=SECS, cache_dir=DIR, cache_size=MIB, create_container, \
log_file=FILE, log_max_mib=MIB, request_timeout=SECS, retries=N, metrics=ADDR, config=FILE, rebuild_index. \
Kernel options: ro, rw, allow_other, allow_root, uid=N, gid=N, default_permissions, \
auto_unmount. Accepted and ignored (for mount(8) and systemd): _netdev, nofail, noauto, auto, \
user, users, x-systemd.*. Example line: \
`mycontainer/myfolder /mnt/data fuse.remotedict _netdev,nofail,allow_other,connection_string_file=/etc/remotedict/conn 0 0`. \
Signals: SIGTERM saves pending changes and unmounts; SIGHUP reopens the log file and re-reads \
the configuration and credential file; SIGUSR2 switches debug logging on and off.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a folder as a directory (daemonizes unless --foreground).
    #[command(after_long_help = FSTAB_HELP)]
    Mount(Box<MountArgs>),
    /// Compare the index with the folder's blobs; report (exit code 1 when not clean) or repair.
    Fsck {
        #[command(flatten)]
        store: StoreArgs,
        /// Fix the index from the blobs (concurrent writers keep their updates).
        #[arg(long)]
        repair: bool,
        /// Write the index in the newest format now (a format-1 index is otherwise upgraded by
        /// the first write of a mount), compacting its journal; mounts keep running.
        #[arg(long)]
        upgrade: bool,
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
    /// Show what mounted daemons are doing: index size and age, cache use, locks held and
    /// waited for, uploads pending, the last errors, the metrics address (all remotedict mounts,
    /// or one).
    Status {
        mountpoint: Option<PathBuf>,
        /// Print the status snapshots as one JSON array (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout: remotedict(1), or with COMMAND, remotedict-COMMAND(1).
    Man {
        /// A subcommand whose page to print (mount, fsck, ls, get, put, rm, stat, lock, unlock,
        /// status, unmount).
        command: Option<String>,
    },
    /// Unmount a remotedict mount (same as `fusermount3 -u MOUNTPOINT`).
    Unmount {
        /// The mount point to unmount.
        mountpoint: PathBuf,
    },
}

/// The store flags every store command takes, and the configuration file.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    #[command(flatten)]
    pub settings: StoreSettings,
    /// TOML configuration file (default: /etc/remotedict/config.toml for root, else
    /// $XDG_CONFIG_HOME/remotedict/config.toml, when it exists). Flags win over environment
    /// variables, which win over the file.
    #[arg(long, value_name = "FILE", env = "REMOTEDICT_CONFIG")]
    pub config: Option<PathBuf>,
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
    #[command(flatten)]
    pub settings: MountSettings,
    /// Before mounting, rebuild the index from the folder's blobs (for a container filled by
    /// other tools), as `remotedict fsck --repair` does.
    #[arg(long)]
    pub rebuild_index: bool,
    /// Print the configuration this mount would use (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}
