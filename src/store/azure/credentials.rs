//! Opening an [`AzureStore`] from a storage connection string, or from an account name and a SAS
//! token: both come down to an endpoint and a SAS ([`AzureAuth::Key`] or [`AzureAuth::Sas`]).
//!
//! Two kinds of credential exist here: an account key (`UseDevelopmentStorage=true` stands for
//! the emulator's account and its well-known public key) and a shared access signature. The
//! connection string is parsed here, and its shape checked first: no error or log line of this
//! module quotes a key or a SAS, and every credential string goes to the store's
//! [`Redactor`](super::redact::Redactor).

use std::collections::HashMap;

use azure_core::credentials::Secret;

use super::{AzureAuth, AzureOptions, AzureStore, AzureTarget};
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

/// Where and how a connection string signs in.
pub(super) fn parse_connection_string(conn: &str) -> Result<(AzureTarget, AzureAuth, Vec<String>)> {
    check_connection_string_shape(conn)?;
    let cs: HashMap<&str, &str> = conn
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let protocol = match cs.get("DefaultEndpointsProtocol") {
        Some(&"http") => "http",
        _ => "https",
    };
    let mut secrets = Vec::new();

    if cs.get("UseDevelopmentStorage") == Some(&"true") {
        let endpoint = match cs.get("BlobEndpoint") {
            Some(ep) => check_endpoint(ep)?,
            None => EMULATOR_ENDPOINT.to_string(),
        };
        let account = cs
            .get("AccountName")
            .copied()
            .unwrap_or(EMULATOR_ACCOUNT)
            .to_string();
        let key = cs
            .get("AccountKey")
            .copied()
            .unwrap_or(EMULATOR_KEY)
            .to_string();
        check_account_key(&key)?;
        if key != EMULATOR_KEY {
            secrets.push(key.clone());
        }
        return Ok((
            AzureTarget { account, endpoint },
            AzureAuth::Key {
                key: Secret::new(key),
            },
            secrets,
        ));
    }

    let endpoint = match cs.get("BlobEndpoint") {
        Some(ep) => Some(check_endpoint(ep)?),
        None => None,
    };
    let account = match (cs.get("AccountName"), &endpoint) {
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
            let suffix = cs
                .get("EndpointSuffix")
                .copied()
                .unwrap_or("core.windows.net");
            format!("{protocol}://{account}.blob.{suffix}")
        }
    };

    let auth = if let Some(sas) = cs.get("SharedAccessSignature") {
        if cs.contains_key("AccountKey") {
            log::warn!("the Azure connection string has both AccountKey and SharedAccessSignature: using the SAS");
        }
        push_sas_secrets(&mut secrets, sas);
        AzureAuth::Sas {
            token: Secret::new(check_sas(sas)?),
        }
    } else if let Some(key) = cs.get("AccountKey") {
        if !cs.contains_key("AccountName") {
            return Err(StoreError::Other(
                "the Azure connection string has an AccountKey but no AccountName".into(),
            ));
        }
        check_account_key(key)?;
        secrets.push(key.to_string());
        AzureAuth::Key {
            key: Secret::new(key.to_string()),
        }
    } else {
        return Err(StoreError::Other(
            "the Azure connection string holds no credential: give AccountName and AccountKey, \
             or SharedAccessSignature, or UseDevelopmentStorage=true"
                .into(),
        ));
    };
    Ok((AzureTarget { account, endpoint }, auth, secrets))
}

impl AzureStore {
    /// Opens `container` with a storage connection string: the account-key form
    /// (`DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…[;EndpointSuffix=…|;BlobEndpoint=…]`),
    /// the SAS form (`BlobEndpoint=…;SharedAccessSignature=…`) or `UseDevelopmentStorage=true`.
    /// No request is made; errors never quote the string or its secrets.
    pub fn from_connection_string(conn: &str, container: &str, opts: AzureOptions) -> Result<Self> {
        let (target, auth, _) = parse_connection_string(conn)?;
        Self::open(target, auth, container, opts)
    }

    /// Opens `container` of the public-cloud account `account` with a SAS token (with or without
    /// its leading `?`). No request is made.
    pub fn from_sas_token(
        account: &str,
        sas_token: &str,
        container: &str,
        opts: AzureOptions,
    ) -> Result<Self> {
        let target = AzureTarget::for_account(account)?;
        let auth = AzureAuth::Sas {
            token: Secret::new(check_sas(sas_token)?),
        };
        Self::open(target, auth, container, opts)
    }
}

impl AzureStore {
    /// Where and how a connection string signs in (no request is made; errors never quote it).
    pub fn parse_connection_string(conn: &str) -> Result<(AzureTarget, AzureAuth)> {
        let (target, auth, _) = parse_connection_string(conn)?;
        Ok((target, auth))
    }

    /// Checks a SAS token (with or without its leading `?`) and returns it without the `?`.
    pub fn check_sas(sas: &str) -> Result<String> {
        check_sas(sas)
    }

    /// The endpoint and SAS of a SAS URL: an account's (`https://acct.blob.core.windows.net/?sv=…`)
    /// or a container's (`…/CONTAINER?sv=…`, when its last path segment is `container`).
    pub fn parse_sas_url(sas_url: &str, container: &str) -> Result<(AzureTarget, Secret)> {
        let bad = |why: &str| StoreError::Other(format!("the SAS URL {why}"));
        let mut url = url::Url::parse(sas_url.trim()).map_err(|_| bad("is not a URL"))?;
        let token = url
            .query()
            .map(str::to_string)
            .ok_or_else(|| bad("has no query string (the SAS: `?sv=…&sig=…`)"))?;
        let token = check_sas(&token)?;
        url.set_query(None);
        url.set_fragment(None);
        let mut path: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        if path.last().is_some_and(|last| last == container) {
            path.pop();
        }
        url.set_path(&path.join("/"));
        let target = AzureTarget::for_endpoint(url.as_str())?;
        Ok((target, Secret::new(token)))
    }
}

impl AzureTarget {
    /// The public-cloud endpoint of `account`.
    pub fn for_account(account: &str) -> Result<Self> {
        check_account_name(account)?;
        Ok(AzureTarget {
            account: account.to_string(),
            endpoint: format!("https://{account}.blob.core.windows.net"),
        })
    }

    /// The blob service at `endpoint` (any host: custom domains, private endpoints, sovereign
    /// clouds, Azure Stack, emulators); its account is the first label of the host, or the first
    /// path segment of an emulator's path-style URL.
    pub fn for_endpoint(endpoint: &str) -> Result<Self> {
        let endpoint = check_endpoint(endpoint)?;
        Ok(AzureTarget {
            account: account_from_endpoint(&endpoint),
            endpoint,
        })
    }
}

/// Checks a SAS token (with or without its leading `?`) and returns it without the `?`.
pub(super) fn check_sas(sas: &str) -> Result<String> {
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
    Ok(token.to_string())
}

/// Account names as Azure takes them.
fn check_account_name(a: &str) -> Result<()> {
    if (3..=24).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        // Not quoted when it could be a secret in the wrong place (a key is 88 characters).
        let shown = if a.len() <= 32 {
            format!("{a:?}")
        } else {
            format!("(a value of {} characters, not shown)", a.len())
        };
        Err(StoreError::Other(format!(
            "invalid storage account name {shown}: use 3 to 24 lower-case letters and digits"
        )))
    }
}

/// An account key must be non-empty base64.
fn check_account_key(key: &str) -> Result<()> {
    match azure_core::base64::decode(key.trim()) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => Err(StoreError::Other(
            "the AccountKey of the Azure connection string is not valid base64".into(),
        )),
    }
}

/// Checks a blob service endpoint (BlobEndpoint, --endpoint) and returns it without trailing `/`.
fn check_endpoint(ep: &str) -> Result<String> {
    let bad = |why: &str| {
        Err(StoreError::Other(format!(
            "the blob endpoint (BlobEndpoint, --endpoint or AZURE_STORAGE_BLOB_ENDPOINT) {why}"
        )))
    };
    let Ok(url) = url::Url::parse(ep) else {
        return bad("is not a valid URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("must be an http or https URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad("must not have a query string (pass a SAS as SharedAccessSignature or AZURE_STORAGE_SAS_TOKEN)");
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

/// Remembers a SAS and its signature (raw and percent-decoded) for redaction.
pub(super) fn push_sas_secrets(secrets: &mut Vec<String>, sas: &str) {
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
