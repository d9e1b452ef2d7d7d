//! Shared access signatures on every request: a SAS the user gave, or an *account SAS* signed
//! here with an account key.
//!
//! The maintained Azure SDK signs no request with an account key (shared-key signing): it takes
//! token credentials, or a SAS in the URL. An account key is served by signing an account SAS
//! locally (HMAC-SHA256 of the string-to-sign of the "Create an account SAS" REST reference), valid
//! for [`SAS_LIFETIME`] and signed again when less than [`SAS_RENEW_BEFORE`] of it remains, so a
//! long mount never presents an expired one. The same signing serves Azurite's well-known key.
//!
//! [`SasPolicy`] adds the SAS's parameters to the query of each request, as its last step before
//! the transport. No SAS or key appears in a log line or an error of this module.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::store::{Result, StoreError};

/// How long a locally signed account SAS is valid (it travels in URLs, which proxies may log:
/// short-lived).
const SAS_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// A locally signed SAS is signed again when less than this much of it remains.
const SAS_RENEW_BEFORE: Duration = Duration::from_secs(30 * 60);
/// How far back a signed SAS starts (clock skew between this host and the service).
const CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// The service version of the SAS we sign (its string-to-sign includes the encryption scope).
const SAS_VERSION: &str = "2025-11-05";

/// Where the SAS of the requests comes from.
pub(super) enum SasSource {
    /// A SAS the user gave (query string without `?`).
    Fixed(Secret),
    /// Signed here with the account key.
    AccountKey {
        account: String,
        key: Secret,
        /// Whether the SAS may be used over plain HTTP (an `http` endpoint: emulators).
        allow_http: bool,
        /// The current SAS and when it expires.
        current: Mutex<Option<(Secret, OffsetDateTime)>>,
    },
}

impl std::fmt::Debug for SasSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SasSource::Fixed(_) => f.write_str("SasSource::Fixed(redacted)"),
            SasSource::AccountKey { account, .. } => {
                write!(f, "SasSource::AccountKey({account}, redacted)")
            }
        }
    }
}

impl SasSource {
    /// A source signing with the account key `key` (base64) of `account`; checks the key.
    pub(super) fn account_key(account: &str, key: &str, allow_http: bool) -> Result<Self> {
        let source = SasSource::AccountKey {
            account: account.to_string(),
            key: Secret::new(key.trim().to_string()),
            allow_http,
            current: Mutex::new(None),
        };
        // Fails now, not on the first request, when the key is not base64.
        source.token()?;
        Ok(source)
    }

    /// The SAS to present now (query string without `?`).
    pub(super) fn token(&self) -> Result<Secret> {
        match self {
            SasSource::Fixed(s) => Ok(s.clone()),
            SasSource::AccountKey {
                account,
                key,
                allow_http,
                current,
            } => {
                let now = OffsetDateTime::now_utc();
                let mut guard = crate::mutex::lock(current);
                if let Some((sas, expiry)) = guard.as_ref() {
                    if *expiry - now > SAS_RENEW_BEFORE {
                        return Ok(sas.clone());
                    }
                }
                let expiry = now + SAS_LIFETIME;
                let sas = sign_account_sas(account, key, now - CLOCK_SKEW, expiry, *allow_http)?;
                log::debug!("signed an account SAS for {account}, valid until {expiry}");
                *guard = Some((sas.clone(), expiry));
                Ok(sas)
            }
        }
    }
}

/// A time as a SAS takes it: `2026-01-02T03:04:05Z`.
fn sas_time(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// An account SAS for the blob service's containers and blobs (read, write, delete, list, add,
/// create), valid from `start` to `expiry`, over HTTPS only unless `allow_http`.
fn sign_account_sas(
    account: &str,
    key: &Secret,
    start: OffsetDateTime,
    expiry: OffsetDateTime,
    allow_http: bool,
) -> Result<Secret> {
    let protocol = if allow_http { "https,http" } else { "https" };
    let (permissions, services, resource_types) = ("rwdlac", "b", "co");
    let (st, se) = (sas_time(start), sas_time(expiry));
    // accountname, permissions, services, resource types, start, expiry, IP, protocol, version,
    // encryption scope; each followed by a newline.
    let to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n{st}\n{se}\n\n{protocol}\n{SAS_VERSION}\n\n"
    );
    let sig = azure_core::hmac::hmac_sha256(&to_sign, key).map_err(|_| {
        StoreError::Other(
            "the account key is not valid base64 (check AccountKey or AZURE_STORAGE_KEY)".into(),
        )
    })?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", permissions)
        .append_pair("st", &st)
        .append_pair("se", &se)
        .append_pair("spr", protocol)
        .append_pair("sig", &sig)
        .finish();
    Ok(Secret::new(query))
}

/// Adds the SAS of its [`SasSource`] to each request's query (once: a request sent again keeps
/// the one it has).
#[derive(Debug)]
pub(super) struct SasPolicy(pub(super) Arc<SasSource>);

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "no policy after the SAS policy",
            ));
        };
        let url = request.url_mut();
        if !url.query_pairs().any(|(k, _)| k == "sig") {
            let sas = self.0.token().map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    e.to_string(),
                )
            })?;
            let sas = sas.secret().trim_start_matches('?');
            let query = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{sas}"),
                _ => sas.to_string(),
            };
            url.set_query(Some(&query));
        }
        first.send(ctx, request, rest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_documented_string() {
        // The signature of a known string-to-sign with the emulator's public key, computed
        // independently (Python: hmac.new(b64decode(key), s, sha256)).
        let key = Secret::new(
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        );
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let expiry = OffsetDateTime::from_unix_timestamp(1_800_003_600).unwrap();
        let sas = sign_account_sas("devstoreaccount1", &key, start, expiry, true).unwrap();
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(sas.secret().as_bytes())
                .into_owned()
                .collect();
        assert_eq!(pairs["st"], "2027-01-15T08:00:00Z");
        assert_eq!(pairs["se"], "2027-01-15T09:00:00Z");
        assert_eq!(pairs["sig"], EXPECTED_SIG);
    }

    /// See `signs_the_documented_string`.
    const EXPECTED_SIG: &str = "fH2n7wWCT8Q+ySzm4LooS2Car467QhLHyB6nL5QFn4U=";

    #[test]
    fn a_bad_key_is_named() {
        let e = SasSource::account_key("acct", "not base64!", false).unwrap_err();
        assert!(e.to_string().contains("not valid base64"), "{e}");
    }

    #[test]
    fn the_signed_sas_is_reused_until_near_expiry() {
        let s = SasSource::account_key("acct", "a2V5a2V5a2V5", false).unwrap();
        let SasSource::AccountKey { current, .. } = &s else {
            panic!("an account-key source")
        };
        let now = OffsetDateTime::now_utc();
        // Far from its expiry: the SAS held is handed out again.
        *crate::mutex::lock(current) = Some((Secret::new("held"), now + SAS_LIFETIME));
        assert_eq!(s.token().unwrap().secret(), "held");
        // Within the renewal margin: a new one is signed.
        *crate::mutex::lock(current) = Some((Secret::new("held"), now + SAS_RENEW_BEFORE / 2));
        let fresh = s.token().unwrap();
        assert!(fresh.secret().contains("sig="), "{}", fresh.secret());
    }
}
