//! The typed store configuration — which backend, which credential — and the one store factory,
//! [`open_store`], that the commands and the mount daemon share: it wraps every backend in the
//! one retry layer ([`RetryingStore`]), which `--retries` configures (`--request-timeout` bounds
//! each attempt inside the Azure backend).
//!
//! Credential precedence (documented in the README): `--local` (flag or environment) >
//! `--connection-string-file` > `AZURE_STORAGE_CONNECTION_STRING` > `AZURE_STORAGE_ACCOUNT` +
//! `AZURE_STORAGE_SAS_TOKEN` > `local` in the file > `connection_string` in the file. With none
//! of them there is no store: an error that names what was looked at (never a silent local store).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Serialize, Serializer};

use super::error::ConfigError;
use super::settings::StoreSettings;
use crate::store::azure::{AzureOptions, AzureStore};
use crate::store::local::LocalStore;
use crate::store::metered::MeteredStore;
use crate::store::retry::Backoff;
use crate::store::retrying::RetryingStore;
use crate::store::swappable::SwappableStore;
use crate::store::{BlobStore, StoreError};

/// A secret (connection string, SAS token): its `Debug` and `Serialize` never show it.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the store constructor only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(redacted)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("(redacted)")
    }
}

/// Where an Azure credential comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// `--connection-string-file FILE`: read when the store is opened.
    ConnectionStringFile(PathBuf),
    /// `AZURE_STORAGE_CONNECTION_STRING`.
    EnvConnectionString(Secret),
    /// `AZURE_STORAGE_ACCOUNT` + `AZURE_STORAGE_SAS_TOKEN`.
    SasToken { account: String, token: Secret },
    /// `connection_string` in the configuration file.
    FileConnectionString(Secret),
}

impl Credential {
    /// What the credential is, never its secret.
    pub fn describe(&self) -> String {
        match self {
            Credential::ConnectionStringFile(f) => {
                format!("connection string from file {} (redacted)", f.display())
            }
            Credential::EnvConnectionString(_) => {
                "AZURE_STORAGE_CONNECTION_STRING (redacted)".into()
            }
            Credential::SasToken { account, .. } => {
                format!("AZURE_STORAGE_ACCOUNT={account} + AZURE_STORAGE_SAS_TOKEN (redacted)")
            }
            Credential::FileConnectionString(_) => {
                "connection_string from the configuration file (redacted)".into()
            }
        }
    }
}

impl Serialize for Credential {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.describe())
    }
}

/// Which store: a local directory or an Azure container.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Backend {
    /// The embedded local store: containers are subdirectories of `root`.
    Local {
        root: PathBuf,
    },
    Azure {
        credential: Credential,
    },
}

/// Everything needed to open the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreConfig {
    pub backend: Backend,
    pub container: String,
    pub folder: String,
    pub create_container: bool,
    pub request_timeout: u64,
    pub retries: u32,
}

/// Where the backend may come from, besides the layered settings.
#[derive(Debug, Default, Clone)]
pub struct CredentialSources {
    /// `local` from a flag or the environment (it wins over any credential).
    pub local_flag: Option<PathBuf>,
    /// `local` from the configuration file.
    pub local_file: Option<PathBuf>,
    /// `connection_string` from the configuration file.
    pub file_connection_string: Option<Secret>,
    /// AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_SAS_TOKEN.
    pub env_connection_string: Option<Secret>,
    pub env_account: Option<String>,
    pub env_sas_token: Option<Secret>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl CredentialSources {
    /// Reads the `AZURE_STORAGE_*` variables.
    pub fn with_azure_env(mut self) -> Self {
        self.env_connection_string = env_nonempty("AZURE_STORAGE_CONNECTION_STRING").map(Secret);
        self.env_account = env_nonempty("AZURE_STORAGE_ACCOUNT");
        self.env_sas_token = env_nonempty("AZURE_STORAGE_SAS_TOKEN").map(Secret);
        self
    }
}

impl StoreConfig {
    /// The typed store configuration from the layered settings and the credential sources.
    pub fn resolve(s: StoreSettings, src: CredentialSources) -> Result<Self, ConfigError> {
        let azure_env = src.env_connection_string.is_some() || src.env_sas_token.is_some();
        // The file's `local` yields to any credential from a flag or the environment.
        let local_file = src
            .local_file
            .filter(|_| !azure_env && s.connection_string_file.is_none());
        let backend = if let Some(root) = src.local_flag {
            Backend::Local { root }
        } else if let Some(f) = s.connection_string_file {
            Backend::Azure {
                credential: Credential::ConnectionStringFile(f),
            }
        } else if let Some(c) = src.env_connection_string {
            Backend::Azure {
                credential: Credential::EnvConnectionString(c),
            }
        } else if let (Some(account), Some(token)) = (src.env_account, src.env_sas_token) {
            Backend::Azure {
                credential: Credential::SasToken { account, token },
            }
        } else if let Some(root) = local_file {
            Backend::Local { root }
        } else if let Some(c) = src.file_connection_string {
            Backend::Azure {
                credential: Credential::FileConnectionString(c),
            }
        } else {
            // No silent stand-in: a mount or fstab line that lost its credential must not
            // write to the local disk instead of Azure.
            return Err(ConfigError::NoStore);
        };
        Ok(StoreConfig {
            backend,
            container: s.container,
            folder: s.folder,
            create_container: s.create_container,
            request_timeout: s.request_timeout,
            retries: s.retries,
        })
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// [`default_local_root`] as the value of a bare `--local` (clap wants a `'static` text).
pub fn default_local_root_arg() -> &'static str {
    static ROOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| default_local_root().to_string_lossy().into_owned())
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

/// Opens the store the configuration points at; checks (or creates) the container.
pub async fn open_store(cfg: &StoreConfig) -> Result<Arc<dyn BlobStore>> {
    let backend = Arc::new(MeteredStore::new(open_backend(cfg)?));
    // Every backend's requests are retried in one place, which recognises a retried write's own
    // earlier success (see `store::retrying`).
    let store: Arc<dyn BlobStore> =
        Arc::new(RetryingStore::new(backend, Backoff::new(cfg.retries)));
    check_or_create(&store, cfg).await?;
    Ok(store)
}

/// Opens the store as [`open_store`] does, with its backend behind a [`SwappableStore`] that a
/// reload ([`reopen_backend`]) can point at a backend with a new credential.
pub async fn open_swappable_store(
    cfg: &StoreConfig,
) -> Result<(Arc<dyn BlobStore>, Arc<SwappableStore>)> {
    let swappable = Arc::new(SwappableStore::new(open_backend(cfg)?));
    let store: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(
        Arc::new(MeteredStore::new(swappable.clone())),
        Backoff::new(cfg.retries),
    ));
    check_or_create(&store, cfg).await?;
    Ok((store, swappable))
}

/// A new backend for `cfg` (its credential read again), once it has shown it can read the
/// container; never creates it.
pub async fn reopen_backend(cfg: &StoreConfig) -> Result<Arc<dyn BlobStore>> {
    let backend = open_backend(cfg)?;
    RetryingStore::new(backend.clone(), Backoff::new(cfg.retries))
        .check_container()
        .await
        .with_context(|| format!("{} cannot be read", backend.describe()))?;
    Ok(backend)
}

/// The backend `cfg` points at, not yet checked or retried. Reads a credential file.
fn open_backend(cfg: &StoreConfig) -> Result<Arc<dyn BlobStore>> {
    let opts = AzureOptions {
        request_timeout: Duration::from_secs(cfg.request_timeout.max(1)),
        ..Default::default()
    };
    let container = cfg.container.as_str();
    if matches!(cfg.backend, Backend::Azure { .. }) {
        // A bad name is the flag's fault, not the credential's.
        crate::store::azure::check_container_name(container)
            .context("--container (or `container` in the configuration file)")?;
    }
    Ok(match &cfg.backend {
        Backend::Local { root, .. } => local_store(root, container)?,
        Backend::Azure { credential } => Arc::new(match credential {
            Credential::ConnectionStringFile(file) => {
                let conn = std::fs::read_to_string(file).with_context(|| {
                    format!("reading the connection string file {}", file.display())
                })?;
                AzureStore::from_connection_string(conn.trim(), container, opts)?
            }
            Credential::EnvConnectionString(conn) => {
                AzureStore::from_connection_string(conn.expose(), container, opts)
                    .context("AZURE_STORAGE_CONNECTION_STRING is not usable")?
            }
            Credential::SasToken { account, token } => {
                AzureStore::from_sas_token(account, token.expose(), container, opts)?
            }
            Credential::FileConnectionString(conn) => {
                AzureStore::from_connection_string(conn.expose(), container, opts)
                    .context("the connection string in the configuration file is not usable")?
            }
        }),
    })
}

/// Checks that the container can be read; creates it when it is missing and `cfg` allows it.
async fn check_or_create(store: &Arc<dyn BlobStore>, cfg: &StoreConfig) -> Result<()> {
    let is_local = matches!(cfg.backend, Backend::Local { .. });
    match store.check_container().await {
        Ok(()) => {}
        Err(StoreError::ContainerNotFound(_)) if cfg.create_container || is_local => {
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
    Ok(())
}

fn local_store(root: &Path, container: &str) -> Result<Arc<dyn BlobStore>> {
    if container.is_empty() || container.contains('/') || container.starts_with('.') {
        bail!("container name {container:?} is not valid for the local store: use letters, digits and '-'");
    }
    Ok(Arc::new(LocalStore::new(root.join(container))))
}
