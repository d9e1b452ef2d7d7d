//! The typed store configuration — which backend, which credential — and the one store factory,
//! [`open_store`], that the commands and the mount daemon share: it wraps every backend in the
//! one retry layer ([`RetryingStore`]), which `--retries` configures (`--request-timeout` bounds
//! each attempt inside the Azure backend).
//!
//! Which credential (documented in docs/AUTH.md): `--local` (flag or environment) wins. With
//! `--auth MODE` only that mode's sources are looked at, and a missing piece is an error that
//! names it. Without `--auth`, the first found of: `--connection-string-file`,
//! `AZURE_STORAGE_CONNECTION_STRING`, account + `AZURE_STORAGE_KEY`, `AZURE_STORAGE_SAS_URL`,
//! account or endpoint + `AZURE_STORAGE_SAS_TOKEN`, `AZURE_FEDERATED_TOKEN_FILE` (workload),
//! `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` (spn), `local` in the file,
//! `connection_string` in the file. Managed identity and the Azure CLI are never guessed (they
//! cannot be detected without a request): `--auth msi` or `--auth azcli`. With none of them there
//! is no store: an error that names what was looked at (never a silent local store).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Serialize, Serializer};

use super::error::ConfigError;
use super::settings::StoreSettings;
use azure_core::credentials::Secret as AzSecret;

use crate::store::azure::{
    AuthMode, AzureAuth, AzureOptions, AzureStore, AzureTarget, MsiId, TlsOptions, TokenSpec,
};
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
    /// `connection_string` in the configuration file.
    FileConnectionString(Secret),
    /// `AZURE_STORAGE_KEY` (with the account or endpoint).
    AccountKey(Secret),
    /// `AZURE_STORAGE_SAS_TOKEN` (with the account or endpoint).
    SasToken(Secret),
    /// `AZURE_STORAGE_SAS_URL`: the endpoint (and maybe the container) with a SAS.
    SasUrl(Secret),
    /// An Entra ID token (spn, msi, workload, azcli).
    Token {
        mode: AuthMode,
        spec: Box<TokenSpec>,
    },
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
            Credential::FileConnectionString(_) => {
                "connection_string from the configuration file (redacted)".into()
            }
            Credential::AccountKey(_) => "AZURE_STORAGE_KEY (redacted)".into(),
            Credential::SasToken(_) => "AZURE_STORAGE_SAS_TOKEN (redacted)".into(),
            Credential::SasUrl(_) => "AZURE_STORAGE_SAS_URL (redacted)".into(),
            Credential::Token { mode, .. } => format!("Entra ID token (--auth {mode})"),
        }
    }

    /// The sign-in mode it stands for, when known before the credential is read.
    pub fn mode(&self) -> Option<AuthMode> {
        match self {
            Credential::AccountKey(_) => Some(AuthMode::Key),
            Credential::SasToken(_) | Credential::SasUrl(_) => Some(AuthMode::Sas),
            Credential::Token { mode, .. } => Some(*mode),
            _ => None,
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
    Local { root: PathBuf },
    Azure {
        credential: Credential,
        /// `--account` or `AZURE_STORAGE_ACCOUNT`.
        account: Option<String>,
        /// `--endpoint` or `AZURE_STORAGE_BLOB_ENDPOINT` (wins over a connection string's).
        endpoint: Option<String>,
        /// `--ca-file`.
        ca_file: Option<PathBuf>,
    },
}

/// Everything needed to open the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreConfig {
    pub backend: Backend,
    /// `--auth`, when given.
    pub auth: Option<AuthMode>,
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
    /// AZURE_STORAGE_KEY (or AZURE_STORAGE_ACCESS_KEY), AZURE_STORAGE_SAS_URL.
    pub env_key: Option<Secret>,
    pub env_sas_url: Option<Secret>,
    /// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH,
    /// AZURE_CLIENT_CERTIFICATE_PASSWORD, AZURE_FEDERATED_TOKEN_FILE.
    pub env_token: TokenSpec,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl CredentialSources {
    /// Reads the `AZURE_*` variables.
    pub fn with_azure_env(mut self) -> Self {
        self.env_connection_string = env_nonempty("AZURE_STORAGE_CONNECTION_STRING").map(Secret);
        self.env_account = env_nonempty("AZURE_STORAGE_ACCOUNT");
        self.env_sas_token = env_nonempty("AZURE_STORAGE_SAS_TOKEN").map(Secret);
        self.env_key = env_nonempty("AZURE_STORAGE_KEY")
            .or_else(|| env_nonempty("AZURE_STORAGE_ACCESS_KEY"))
            .map(Secret);
        self.env_sas_url = env_nonempty("AZURE_STORAGE_SAS_URL").map(Secret);
        self.env_token = TokenSpec {
            tenant_id: env_nonempty("AZURE_TENANT_ID"),
            client_id: env_nonempty("AZURE_CLIENT_ID"),
            client_secret: env_nonempty("AZURE_CLIENT_SECRET").map(AzSecret::new),
            client_certificate_path: env_nonempty("AZURE_CLIENT_CERTIFICATE_PATH")
                .map(PathBuf::from),
            client_certificate_password: env_nonempty("AZURE_CLIENT_CERTIFICATE_PASSWORD")
                .map(AzSecret::new),
            federated_token_file: env_nonempty("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            msi_id: None,
        };
        self
    }
}

/// `--auth MODE` without what the mode needs.
fn incomplete(mode: AuthMode, what: &str) -> ConfigError {
    ConfigError::Incomplete(format!("--auth {mode}: {what}"))
}

const ACCOUNT_OR_ENDPOINT: &str = "give the account (--account or AZURE_STORAGE_ACCOUNT) or the \
     endpoint (--endpoint or AZURE_STORAGE_BLOB_ENDPOINT)";

impl StoreConfig {
    /// The typed store configuration from the layered settings and the credential sources.
    pub fn resolve(s: StoreSettings, src: CredentialSources) -> Result<Self, ConfigError> {
        let account = s.account.clone().or(src.env_account.clone());
        let located = account.is_some() || s.endpoint.is_some();
        let mut token = src.env_token.clone();
        token.msi_id = match (&s.msi_client_id, &s.msi_object_id, &s.msi_resource_id) {
            (Some(id), None, None) => Some(MsiId::ClientId(id.clone())),
            (None, Some(id), None) => Some(MsiId::ObjectId(id.clone())),
            (None, None, Some(id)) => Some(MsiId::ResourceId(id.clone())),
            (None, None, None) => None,
            _ => return Err(ConfigError::Incomplete(
                "give one of --msi-client-id, --msi-object-id and --msi-resource-id, not several"
                    .into(),
            )),
        };
        let azure = |credential| Backend::Azure {
            credential,
            account: account.clone(),
            endpoint: s.endpoint.clone(),
            ca_file: s.ca_file.clone(),
        };
        let token_mode = |mode: AuthMode| -> Result<Backend, ConfigError> {
            if !located {
                return Err(incomplete(mode, ACCOUNT_OR_ENDPOINT));
            }
            Ok(azure(Credential::Token {
                mode,
                spec: Box::new(token.clone()),
            }))
        };
        let backend = if let Some(root) = src.local_flag.clone() {
            Backend::Local { root }
        } else if let Some(mode) = s.auth {
            match mode {
                AuthMode::Key => {
                    if let Some(f) = &s.connection_string_file {
                        azure(Credential::ConnectionStringFile(f.clone()))
                    } else if let Some(c) = src.env_connection_string.clone() {
                        azure(Credential::EnvConnectionString(c))
                    } else if let (Some(k), true) = (src.env_key.clone(), located) {
                        azure(Credential::AccountKey(k))
                    } else if let Some(c) = src.file_connection_string.clone() {
                        azure(Credential::FileConnectionString(c))
                    } else {
                        return Err(incomplete(
                            mode,
                            "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and \
                             AZURE_STORAGE_KEY, or give --connection-string-file",
                        ));
                    }
                }
                AuthMode::Sas => {
                    if let Some(u) = src.env_sas_url.clone() {
                        azure(Credential::SasUrl(u))
                    } else if let (Some(t), true) = (src.env_sas_token.clone(), located) {
                        azure(Credential::SasToken(t))
                    } else if let Some(f) = &s.connection_string_file {
                        azure(Credential::ConnectionStringFile(f.clone()))
                    } else if let Some(c) = src.env_connection_string.clone() {
                        azure(Credential::EnvConnectionString(c))
                    } else if let Some(c) = src.file_connection_string.clone() {
                        azure(Credential::FileConnectionString(c))
                    } else {
                        return Err(incomplete(
                            mode,
                            "set AZURE_STORAGE_SAS_URL, or AZURE_STORAGE_SAS_TOKEN with the \
                             account (AZURE_STORAGE_ACCOUNT) or endpoint (--endpoint)",
                        ));
                    }
                }
                AuthMode::Spn | AuthMode::Msi | AuthMode::Workload | AuthMode::Azcli => {
                    token_mode(mode)?
                }
            }
        } else if let Some(f) = &s.connection_string_file {
            azure(Credential::ConnectionStringFile(f.clone()))
        } else if let Some(c) = src.env_connection_string.clone() {
            azure(Credential::EnvConnectionString(c))
        } else if let (Some(k), true) = (src.env_key.clone(), located) {
            azure(Credential::AccountKey(k))
        } else if let Some(u) = src.env_sas_url.clone() {
            azure(Credential::SasUrl(u))
        } else if let (Some(t), true) = (src.env_sas_token.clone(), located) {
            azure(Credential::SasToken(t))
        } else if token.federated_token_file.is_some() && located {
            token_mode(AuthMode::Workload)?
        } else if (token.client_secret.is_some() || token.client_certificate_path.is_some())
            && located
        {
            token_mode(AuthMode::Spn)?
        } else if let Some(root) = src.local_file.clone() {
            Backend::Local { root }
        } else if let Some(c) = src.file_connection_string.clone() {
            azure(Credential::FileConnectionString(c))
        } else {
            // No silent stand-in: a mount or fstab line that lost its credential must not
            // write to the local disk instead of Azure.
            return Err(ConfigError::NoStore);
        };
        Ok(StoreConfig {
            backend,
            auth: s.auth,
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
    let container = cfg.container.as_str();
    let (credential, account, endpoint, ca_file) = match &cfg.backend {
        Backend::Local { root } => return local_store(root, container),
        Backend::Azure {
            credential,
            account,
            endpoint,
            ca_file,
        } => (credential, account, endpoint, ca_file),
    };
    // A bad name is the flag's fault, not the credential's.
    crate::store::azure::check_container_name(container)
        .context("--container (or `container` in the configuration file)")?;
    let opts = AzureOptions {
        request_timeout: Duration::from_secs(cfg.request_timeout.max(1)),
        tls: TlsOptions {
            ca_file: ca_file.clone(),
        },
    };
    // Where, when the credential does not say: --endpoint, else the account's public endpoint.
    // (An endpoint names its account in its host or path; --account wins: a custom domain's
    // host says nothing of the account, whose name an account SAS is signed for.)
    let located = || -> Result<AzureTarget> {
        match (endpoint, account) {
            (Some(ep), Some(a)) => Ok(AzureTarget {
                account: a.clone(),
                ..AzureTarget::for_endpoint(ep)?
            }),
            (Some(ep), None) => Ok(AzureTarget::for_endpoint(ep)?),
            (None, Some(a)) => Ok(AzureTarget::for_account(a)?),
            (None, None) => bail!("{}", ACCOUNT_OR_ENDPOINT.replace("give", "Give")),
        }
    };
    let with_endpoint = |mut t: AzureTarget| -> Result<AzureTarget> {
        if let Some(ep) = endpoint {
            let given = AzureTarget::for_endpoint(ep)?;
            t.endpoint = given.endpoint;
        }
        Ok(t)
    };
    let (target, auth) = match credential {
        Credential::ConnectionStringFile(file) => {
            let conn = std::fs::read_to_string(file).with_context(|| {
                format!("reading the connection string file {}", file.display())
            })?;
            let (t, a) = AzureStore::parse_connection_string(conn.trim())?;
            (with_endpoint(t)?, a)
        }
        Credential::EnvConnectionString(conn) => {
            let (t, a) = AzureStore::parse_connection_string(conn.expose())
                .context("AZURE_STORAGE_CONNECTION_STRING is not usable")?;
            (with_endpoint(t)?, a)
        }
        Credential::FileConnectionString(conn) => {
            let (t, a) = AzureStore::parse_connection_string(conn.expose())
                .context("the connection string in the configuration file is not usable")?;
            (with_endpoint(t)?, a)
        }
        Credential::AccountKey(key) => (
            located()?,
            AzureAuth::Key {
                key: AzSecret::new(key.expose().to_string()),
            },
        ),
        Credential::SasToken(token) => (
            located()?,
            AzureAuth::Sas {
                token: AzSecret::new(
                    AzureStore::check_sas(token.expose())
                        .context("AZURE_STORAGE_SAS_TOKEN is not usable")?,
                ),
            },
        ),
        Credential::SasUrl(url) => {
            let (t, token) = AzureStore::parse_sas_url(url.expose(), container)
                .context("AZURE_STORAGE_SAS_URL is not usable")?;
            (with_endpoint(t)?, AzureAuth::Sas { token })
        }
        Credential::Token { mode, spec } => (
            located()?,
            AzureAuth::Token {
                mode: *mode,
                spec: (**spec).clone(),
            },
        ),
    };
    // `--auth key` or `--auth sas` with a connection string of the other kind: refused, never
    // a silent switch (a SAS asked for must not become full key access).
    if let Some(asked) = cfg.auth {
        if asked != auth.mode() {
            bail!(
                "--auth {asked} was asked for, but {} signs in with {}",
                credential.describe(),
                match auth.mode() {
                    AuthMode::Key => "an account key",
                    AuthMode::Sas => "a shared access signature",
                    _ => "a token",
                }
            );
        }
    }
    Ok(Arc::new(AzureStore::open(target, auth, container, opts)?))
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
