//! The settings a user can give, each declared once: its flag, environment variable, default and
//! help text (clap), and its key in the configuration file (serde, the field's name). `cli`
//! flattens these into its commands; `config` layers them.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

/// Where the data lives: Azure (credentials from the environment or a file) or a local store.
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Azure container (or, with the local store, a subdirectory of it).
    #[arg(long, default_value = "remotedict", env = "REMOTEDICT_CONTAINER")]
    pub container: String,
    /// Folder inside the container whose keys are mounted (a blob-name prefix; empty: the whole container).
    #[arg(long, default_value = "", env = "REMOTEDICT_FOLDER")]
    pub folder: String,
    /// Read the Azure connection string from this file instead of AZURE_STORAGE_CONNECTION_STRING.
    #[arg(long, value_name = "FILE")]
    pub connection_string_file: Option<PathBuf>,
    /// Use the embedded local store in DIR instead of Azure (`--local` alone:
    /// $XDG_DATA_HOME/remotedict or ~/.local/share/remotedict). Without it and without an Azure
    /// credential there is no store: an error, never a silent local one.
    #[arg(
        long,
        value_name = "DIR",
        env = "REMOTEDICT_LOCAL",
        num_args = 0..=1,
        default_missing_value = super::store::default_local_root_arg()
    )]
    pub local: Option<PathBuf>,
    /// How to sign in to Azure: key, sas, spn, msi, workload or azcli (blobfuse2's names).
    /// Without it the first credential found is used (docs/AUTH.md gives the order); msi and
    /// azcli are used only when asked for.
    #[arg(long, value_enum, env = "REMOTEDICT_AUTH")]
    pub auth: Option<crate::store::azure::AuthMode>,
    /// Storage account name (default: AZURE_STORAGE_ACCOUNT); the endpoint is then
    /// https://ACCOUNT.blob.core.windows.net.
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Blob service endpoint, for custom domains, private endpoints, sovereign clouds, Azure Stack
    /// and emulators (for example https://acct.blob.core.usgovcloudapi.net).
    #[arg(long, value_name = "URL", env = "AZURE_STORAGE_BLOB_ENDPOINT")]
    pub endpoint: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (which include SSL_CERT_FILE).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// With --auth msi: the client id of a user-assigned managed identity.
    #[arg(long, value_name = "ID")]
    pub msi_client_id: Option<String>,
    /// With --auth msi: the object (principal) id of a user-assigned managed identity.
    #[arg(long, value_name = "ID")]
    pub msi_object_id: Option<String>,
    /// With --auth msi: the Azure resource id of a user-assigned managed identity.
    #[arg(long, value_name = "ID")]
    pub msi_resource_id: Option<String>,
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
}

/// How a mount serves the folder.
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountSettings {
    /// Mount options: ro, rw, allow_other, allow_root, uid=N, gid=N, default_permissions,
    /// auto_unmount; _netdev, nofail, noauto, auto, user, users, x-systemd.* are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    #[serde(deserialize_with = "one_or_many")]
    pub options: Vec<String>,
    /// How long a listing or attribute may be served from the cached index, in seconds.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        env = "REMOTEDICT_INDEX_TTL"
    )]
    pub index_ttl: f64,
    /// Size of the index journal, in KiB, from which a writer compacts it into a new snapshot
    /// (once it is also half the snapshot's size).
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    pub index_compact_kib: u64,
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
    /// Log file when daemonized (default: CACHE_DIR/remotedict.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Size from which the log file is rotated (FILE.1 … FILE.3 kept), in MiB; 0: never.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub log_max_mib: u64,
    /// Serve Prometheus metrics on http://ADDR/metrics (for example 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// The file says `options = "a,b"`; flags give `-o a -o b`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The keys a settings struct accepts in the file: its clap argument ids, which are its fields'
/// names.
pub fn keys<A: Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("keys"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}
