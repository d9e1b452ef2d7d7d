//! Opening an [`AzureStore`]: from a storage connection string, or from an account name and a SAS
//! token.
//!
//! Two kinds of credential exist: an account key (shared-key signing; `UseDevelopmentStorage=true`
//! stands for the emulator's account and its well-known public key) and a shared access signature.
//! The connection string's shape is checked here before the crate parses it, since the crate's
//! parse errors quote the whole string: no error or log line of this module quotes a key or a SAS,
//! and every credential string goes to the store's [`Redactor`](super::redact::Redactor).

use azure_core::auth::Secret;
use azure_storage::{ConnectionString, EndpointProtocol, StorageCredentials};

use super::{AzureOptions, AzureStore};
use crate::store::{Result, StoreError};

/// The account Azurite and the storage emulator use.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// The well-known, public key of the emulator account (not a secret).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// Keys the Azure connection-string parser accepts.
const KNOWN_KEYS: &[&str] = &[
    "AccountName",
    "AccountKey",
    "SharedAccessSignature",
    "EndpointSuffix",
    "DefaultEndpointsProtocol",
    "UseDevelopmentStorage",
    "DevelopmentStorageProxyUri",
    "BlobEndpoint",
    "BlobSecondaryEndpoint",
    "TableEndpoint",
    "TableSecondaryEndpoint",
    "QueueEndpoint",
    "QueueSecondaryEndpoint",
    "FileEndpoint",
    "FileSecondaryEndpoint",
];

impl AzureStore {
    /// Opens `container` with a storage connection string: the account-key form
    /// (`DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…[;EndpointSuffix=…|;BlobEndpoint=…]`),
    /// the SAS form (`BlobEndpoint=…;SharedAccessSignature=…`) or `UseDevelopmentStorage=true`.
    /// No request is made; errors never quote the string or its secrets.
    pub fn from_connection_string(conn: &str, container: &str, opts: AzureOptions) -> Result<Self> {
        check_connection_string_shape(conn)?;
        let cs = ConnectionString::new(conn).map_err(|_| {
            StoreError::Other(
                "invalid Azure storage connection string: expected Key=Value pairs separated by `;`".into(),
            )
        })?;
        let protocol = match cs.default_endpoints_protocol {
            Some(EndpointProtocol::Http) => "http",
            _ => "https",
        };
        let mut secrets = Vec::new();

        if cs.use_development_storage == Some(true) {
            let endpoint = match cs.blob_endpoint {
                Some(ep) => check_endpoint(ep)?,
                None => EMULATOR_ENDPOINT.to_string(),
            };
            let account = cs.account_name.unwrap_or(EMULATOR_ACCOUNT).to_string();
            let key = cs.account_key.unwrap_or(EMULATOR_KEY).to_string();
            check_account_key(&key)?;
            if key != EMULATOR_KEY {
                secrets.push(key.clone());
            }
            let creds = StorageCredentials::access_key(account.clone(), Secret::new(key));
            return Self::build(account, endpoint, creds, container, opts, secrets);
        }

        let endpoint = match cs.blob_endpoint {
            Some(ep) => Some(check_endpoint(ep)?),
            None => None,
        };
        let account = match (cs.account_name, &endpoint) {
            (Some(name), _) => name.to_string(),
            (None, Some(ep)) => account_from_endpoint(ep),
            (None, None) => {
                return Err(StoreError::Other(
                    "the Azure connection string has neither AccountName nor BlobEndpoint".into(),
                ))
            }
        };
        let endpoint = match endpoint {
            Some(ep) => ep,
            None => {
                check_account_name(&account)?;
                let suffix = cs.endpoint_suffix.unwrap_or("core.windows.net");
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };

        let creds = if let Some(sas) = cs.sas {
            if cs.account_key.is_some() {
                log::warn!("the Azure connection string has both AccountKey and SharedAccessSignature: using the SAS");
            }
            push_sas_secrets(&mut secrets, sas);
            sas_credentials(sas)?
        } else if let Some(key) = cs.account_key {
            if cs.account_name.is_none() {
                return Err(StoreError::Other(
                    "the Azure connection string has an AccountKey but no AccountName".into(),
                ));
            }
            check_account_key(key)?;
            secrets.push(key.to_string());
            StorageCredentials::access_key(account.clone(), Secret::new(key.to_string()))
        } else {
            return Err(StoreError::Other(
                "the Azure connection string holds no credential: give AccountName and AccountKey, \
                 or SharedAccessSignature, or UseDevelopmentStorage=true"
                    .into(),
            ));
        };
        Self::build(account, endpoint, creds, container, opts, secrets)
    }

    /// Opens `container` of the public-cloud account `account` with a SAS token (with or without
    /// its leading `?`). No request is made.
    pub fn from_sas_token(
        account: &str,
        sas_token: &str,
        container: &str,
        opts: AzureOptions,
    ) -> Result<Self> {
        check_account_name(account)?;
        let mut secrets = Vec::new();
        push_sas_secrets(&mut secrets, sas_token);
        let creds = sas_credentials(sas_token)?;
        let endpoint = format!("https://{account}.blob.core.windows.net");
        Self::build(
            account.to_string(),
            endpoint,
            creds,
            container,
            opts,
            secrets,
        )
    }
}

/// Account names as Azure takes them.
fn check_account_name(a: &str) -> Result<()> {
    if (3..=24).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(StoreError::Other(format!(
            "invalid storage account name {a:?}: use 3 to 24 lower-case letters and digits"
        )))
    }
}

/// An account key must be non-empty base64.
fn check_account_key(key: &str) -> Result<()> {
    match azure_core::base64::decode(key) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => Err(StoreError::Other(
            "the AccountKey of the Azure connection string is not valid base64".into(),
        )),
    }
}

/// Checks a BlobEndpoint and returns it without trailing `/`.
fn check_endpoint(ep: &str) -> Result<String> {
    let bad = |why: &str| {
        Err(StoreError::Other(format!(
            "the BlobEndpoint of the Azure connection string {why}"
        )))
    };
    let Ok(url) = url::Url::parse(ep) else {
        return bad("is not a valid URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("must be an http or https URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad("must not have a query string (pass a SAS as SharedAccessSignature)");
    }
    if url.host_str().is_none() {
        return bad("has no host");
    }
    Ok(ep.trim_end_matches('/').to_string())
}

/// The account name implied by an endpoint: the first path segment for the path-style URLs of
/// emulators (`http://127.0.0.1:10000/devstoreaccount1`), else the host's first label.
fn account_from_endpoint(ep: &str) -> String {
    let Ok(url) = url::Url::parse(ep) else {
        return "unknown".into();
    };
    let first_segment = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty());
    let host = url.host_str().unwrap_or("");
    let is_ip_or_local = host.parse::<std::net::IpAddr>().is_ok()
        || host.starts_with('[')
        || host == "localhost"
        || !host.contains('.');
    match (first_segment, is_ip_or_local) {
        (Some(seg), true) => seg.to_string(),
        _ => host
            .split('.')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    }
}

/// The credentials of a SAS token (with or without its leading `?`).
fn sas_credentials(sas: &str) -> Result<StorageCredentials> {
    let token = sas.trim().trim_start_matches('?');
    if token.is_empty() || !token.contains('=') {
        return Err(StoreError::Other(
            "the shared access signature is not a query string (`sv=…&sig=…`)".into(),
        ));
    }
    if !token.split('&').any(|kv| kv.starts_with("sig=")) {
        log::warn!(
            "the shared access signature has no `sig` parameter: requests will probably be refused"
        );
    }
    StorageCredentials::sas_token(token).map_err(|_| {
        StoreError::Other("the shared access signature is not a valid query string".into())
    })
}

/// Remembers a SAS and its signature (raw and percent-decoded) for redaction.
fn push_sas_secrets(secrets: &mut Vec<String>, sas: &str) {
    let token = sas.trim().trim_start_matches('?');
    secrets.push(token.to_string());
    for kv in token.split('&') {
        if let Some(sig) = kv.strip_prefix("sig=") {
            secrets.push(sig.to_string());
            let decoded: String = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            secrets.push(decoded.clone());
            secrets.push(url::form_urlencoded::byte_serialize(decoded.as_bytes()).collect());
        }
    }
}

/// Validates the `Key=Value;…` shape ourselves, because the crate's parse errors quote the whole
/// string (and with it the key or SAS).
fn check_connection_string_shape(conn: &str) -> Result<()> {
    let bad = |why: String| {
        Err(StoreError::Other(format!(
            "invalid Azure storage connection string: {why}"
        )))
    };
    let mut any = false;
    for part in conn.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        any = true;
        let Some((key, value)) = part.split_once('=') else {
            return bad("a part is not of the form Key=Value".into());
        };
        let key = key.trim();
        if key.is_empty() {
            return bad("a part has an empty key".into());
        }
        let shown = show_key(key);
        if value.trim().is_empty() {
            return bad(format!("{shown} has no value"));
        }
        if !KNOWN_KEYS.contains(&key) {
            return bad(format!("unknown key {shown} (expected e.g. AccountName, AccountKey, BlobEndpoint, SharedAccessSignature)"));
        }
        if key == "UseDevelopmentStorage" && !matches!(value.trim(), "true" | "false") {
            return bad("UseDevelopmentStorage must be true or false".into());
        }
        if key == "DefaultEndpointsProtocol" && !matches!(value.trim(), "http" | "https") {
            return bad("DefaultEndpointsProtocol must be http or https".into());
        }
    }
    if !any {
        return bad("it is empty".into());
    }
    Ok(())
}

/// A key of a connection string as it may be shown: known keys and short words only, since a
/// misplaced secret could stand where a key is expected.
fn show_key(key: &str) -> String {
    if KNOWN_KEYS.contains(&key)
        || (key.len() <= 32 && key.chars().all(|c| c.is_ascii_alphabetic()))
    {
        format!("`{key}`")
    } else {
        "(a key not shown)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobStore;

    #[test]
    fn garbled_connection_strings_do_not_leak() {
        let key = "Zm9vYmFyYmF6cXV4cXV1eHNlY3JldGtleXNlY3JldGtleQ==";
        for conn in [
            format!("AccountName=acc;AccountKey={key};Bogus"),
            format!("AccountName=acc;{key}"),
            format!("AccountName=acc;AccountKey={key};BlobEndpoint=not a url"),
            format!("AccountName=acc;AccountKey=;SharedAccessSignature=sv=1&sig={key}"),
            format!("SharedAccessSignature=sv=1&sig={key};Foo=bar"),
        ] {
            let err = AzureStore::from_connection_string(&conn, "cont", AzureOptions::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.is_empty(), "accepted {conn}");
            assert!(!err.contains(key) && !err.contains("Zm9vYmFy"), "{err}");
        }
    }

    #[test]
    fn connection_string_forms() {
        let azurite = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
            AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
            BlobEndpoint=http://127.0.0.1:10999/devstoreaccount1;";
        let s = AzureStore::from_connection_string(azurite, "cont", AzureOptions::default());
        assert_eq!(
            s.as_ref().map(|s| s.endpoint().to_string()).ok().as_deref(),
            Some("http://127.0.0.1:10999/devstoreaccount1")
        );
        let s = AzureStore::from_connection_string(
            "UseDevelopmentStorage=true",
            "cont",
            AzureOptions::default(),
        );
        assert_eq!(
            s.map(|s| s.describe()).ok().as_deref(),
            Some("azure://devstoreaccount1/cont")
        );
        let s = AzureStore::from_connection_string(
            "BlobEndpoint=https://acc.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig=abc%2Bdef",
            "cont",
            AzureOptions::default(),
        );
        assert_eq!(
            s.map(|s| s.describe()).ok().as_deref(),
            Some("azure://acc/cont")
        );
    }
}
