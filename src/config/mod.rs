//! One typed configuration, filled in layers: each setting's default, then the TOML file, then
//! its `REMOTEDICT_*` environment variable, then its flag — only flags and variables actually
//! given count, so a default never hides the file. clap reads flags and variables (only the
//! variables settings declare: other `REMOTEDICT_*` ones are never looked at) and says where each
//! value came from; figment layers them over the file. The file may hold only known keys.
//!
//! Settings are declared once, in [`settings`]; [`store`] turns them into the typed store
//! configuration and opens the store. `--print-config` prints [`MountConfig`] itself, so what it
//! shows is what the mount uses.

pub mod error;
pub mod settings;
pub mod store;

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ConfigError;
pub use settings::{MountSettings, StoreSettings};
pub use store::{
    default_cache_dir, default_config_path, default_local_root, open_store, open_swappable_store,
    reopen_backend, Backend, Credential, CredentialSources, Secret, StoreConfig,
};

/// The one key of the file that has no flag: a credential never goes on a command line.
const FILE_ONLY_KEYS: &[&str] = &["connection_string"];

/// What `remotedict mount` uses, as `--print-config` prints it (secrets redacted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    /// The configuration file looked at (it need not exist).
    pub config: PathBuf,
    pub foreground: bool,
    pub rebuild_index: bool,
    pub options: Vec<String>,
    pub index_ttl: f64,
    pub index_compact_kib: u64,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub lease_duration: i64,
    pub log_file: PathBuf,
    pub log_max_mib: u64,
    /// Where the Prometheus metrics are served, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    pub store: StoreConfig,
}

impl MountConfig {
    /// The configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(ConfigError::Print)
    }
}

/// The configuration file: where it is and what it holds.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    table: Option<toml::Table>,
    text: String,
}

impl ConfigFile {
    /// Reads `explicit` (an error if missing) or the default file (skipped if missing) and
    /// refuses keys no setting has.
    pub fn read(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, must_exist) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (default_config_path(), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile {
                    path,
                    table: None,
                    text: String::new(),
                })
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(path, text)
    }

    /// A file's contents, checked for unknown keys.
    pub fn parse(path: PathBuf, text: String) -> Result<Self, ConfigError> {
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(source) => return Err(ConfigError::NotToml { path, source }),
        };
        let known = known_keys();
        if let Some(key) = table.keys().find(|k| !known.contains(k)) {
            return Err(ConfigError::UnknownKey {
                path,
                key: key.clone(),
                known: known.join(", "),
            });
        }
        Ok(ConfigFile {
            path,
            table: Some(table),
            text,
        })
    }

    fn figment(&self) -> Figment {
        Figment::from(Toml::string(&self.text))
    }

    /// A value of the wrong type: only the file can hold one (clap checked flags and
    /// variables), so the error names the file and the key.
    fn bad(&self, e: figment::Error) -> ConfigError {
        ConfigError::BadValue {
            path: self.path.clone(),
            key: e.path.last().cloned().unwrap_or_default(),
            kind: match &e.kind {
                figment::error::Kind::InvalidType(figment::error::Actual::Str(_), want) => {
                    format!("found a string, expected {want}")
                }
                kind => kind.to_string(),
            },
        }
    }

    fn has(&self, key: &str) -> bool {
        self.table.as_ref().is_some_and(|t| t.contains_key(key))
    }

    /// `connection_string`, warning when others may read the file.
    fn connection_string(&self) -> Result<Option<Secret>, ConfigError> {
        if !self.has("connection_string") {
            return Ok(None);
        }
        let conn: String = self
            .figment()
            .extract_inner("connection_string")
            .map_err(|e| self.bad(e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if std::fs::metadata(&self.path)
                .map(|m| m.permissions().mode() & 0o077 != 0)
                .unwrap_or(false)
            {
                log::warn!(
                    "{} holds a connection string but others can read it: chmod 600 it",
                    self.path.display()
                );
            }
        }
        Ok(Some(Secret::new(conn)))
    }
}

/// Every key the file may hold.
pub fn known_keys() -> Vec<String> {
    let mut keys = settings::keys::<StoreSettings>();
    keys.extend(settings::keys::<MountSettings>());
    keys.extend(FILE_ONLY_KEYS.iter().map(|k| k.to_string()));
    keys
}

/// `given` (what clap parsed: flags, environment, defaults) layered with the file: default <
/// file < environment < flag, by where clap found each value.
fn layered<T: Serialize + DeserializeOwned>(
    given: &T,
    matches: &ArgMatches,
    file: &ConfigFile,
) -> Result<T, ConfigError> {
    let all = Value::serialize(given)
        .ok()
        .and_then(|v| v.into_dict())
        .ok_or(ConfigError::NotATable)?;
    let from = |source: ValueSource| -> Dict {
        all.iter()
            .filter(|(k, _)| matches.value_source(k) == Some(source))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Figment::from(Serialized::defaults(all.clone()))
        .merge(file.figment())
        .merge(Serialized::defaults(from(ValueSource::EnvVariable)))
        .merge(Serialized::defaults(from(ValueSource::CommandLine)))
        .extract()
        .map_err(|e| file.bad(e))
}

/// The store configuration from the store flags of a command (`matches` are that command's).
pub fn store_config(
    given: &StoreSettings,
    matches: &ArgMatches,
    file: &ConfigFile,
) -> Result<StoreConfig, ConfigError> {
    store_config_with(
        given,
        matches,
        file,
        CredentialSources::default().with_azure_env(),
    )
}

fn store_config_with(
    given: &StoreSettings,
    matches: &ArgMatches,
    file: &ConfigFile,
    mut sources: CredentialSources,
) -> Result<StoreConfig, ConfigError> {
    let settings = layered(given, matches, file)?;
    let above_file = matches!(
        matches.value_source("local"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    sources.local_flag = settings.local.clone().filter(|_| above_file);
    sources.local_file = settings.local.clone().filter(|_| !above_file);
    sources.file_connection_string = file.connection_string()?;
    StoreConfig::resolve(settings, sources)
}

/// What a mount command gave besides settings.
#[derive(Debug, Clone)]
pub struct MountRequest<'a> {
    pub mountpoint: &'a Path,
    pub foreground: bool,
    pub rebuild_index: bool,
    pub store: &'a StoreSettings,
    pub mount: &'a MountSettings,
}

/// The whole configuration of `remotedict mount`.
pub fn mount_config(
    req: MountRequest<'_>,
    matches: &ArgMatches,
    file: &ConfigFile,
) -> Result<MountConfig, ConfigError> {
    mount_config_with(
        req,
        matches,
        file,
        CredentialSources::default().with_azure_env(),
    )
}

fn mount_config_with(
    req: MountRequest<'_>,
    matches: &ArgMatches,
    file: &ConfigFile,
    sources: CredentialSources,
) -> Result<MountConfig, ConfigError> {
    let store = store_config_with(req.store, matches, file, sources)?;
    let m = layered(req.mount, matches, file)?;
    let cache_dir = m.cache_dir.unwrap_or_else(default_cache_dir);
    Ok(MountConfig {
        mountpoint: req.mountpoint.to_path_buf(),
        config: file.path.clone(),
        foreground: req.foreground,
        rebuild_index: req.rebuild_index,
        options: m.options,
        index_ttl: m.index_ttl,
        index_compact_kib: m.index_compact_kib,
        log_file: m
            .log_file
            .unwrap_or_else(|| cache_dir.join("remotedict.log")),
        cache_dir,
        cache_size: m.cache_size,
        lease_duration: m.lease_duration,
        log_max_mib: m.log_max_mib,
        metrics: m.metrics,
        store,
    })
}

#[cfg(test)]
mod tests;
