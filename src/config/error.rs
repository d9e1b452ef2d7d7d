//! What can be wrong with the configuration: the file cannot be read, is not TOML, holds a key
//! no setting has or a value of the wrong type. Each error names the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML", path.display())]
    NotToml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: unknown setting `{key}` (known: {known})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    /// `kind` says what was found and what was wanted; a string found is not quoted (it could
    /// be a secret in the wrong place).
    #[error("{}: `{key}`: {kind}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        kind: String,
    },
    #[error(
        "no store to use: no credential was found (looked at --connection-string-file, \
         AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or \
         AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_SAS_URL, AZURE_FEDERATED_TOKEN_FILE, \
         AZURE_CLIENT_SECRET and AZURE_CLIENT_CERTIFICATE_PATH with an account or endpoint, and \
         `connection_string_file`, `connection_string` and `local` in the configuration file); \
         set one of them, pass --auth msi or --auth azcli with --account, or pass --local DIR to \
         use the embedded local store in DIR"
    )]
    NoStore,
    /// A sign-in mode, or its options, lacks a piece: the message names it.
    #[error("{0}")]
    Incomplete(String),
    #[error("the settings do not serialize to a table")]
    NotATable,
    #[error("printing the configuration")]
    Print(#[source] toml::ser::Error),
}
