//! Conversions between the store's types and the Azure SDK's: blob properties (from response
//! headers, or from a listing's items), etags, lease ids and metadata.
//!
//! Etags are normalised to the quoted form Azure uses in headers (listings return them unquoted),
//! so an etag from `list` compares equal to one from `get` or `put`.

use std::collections::HashMap;
use std::time::SystemTime;

use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::Etag;
use azure_storage_blob::models::{
    BlobItem, LeaseDuration as AzLeaseDuration, LeaseState as AzLeaseState,
};

use crate::store::{BlobProps, LeaseState, Metadata, Result, StoreError};

pub(super) const ETAG: HeaderName = HeaderName::from_static("etag");
pub(super) const LAST_MODIFIED: HeaderName = HeaderName::from_static("last-modified");
pub(super) const CONTENT_LENGTH: HeaderName = HeaderName::from_static("content-length");
pub(super) const CONTENT_RANGE: HeaderName = HeaderName::from_static("content-range");
const LEASE_STATE: HeaderName = HeaderName::from_static("x-ms-lease-state");
const LEASE_DURATION: HeaderName = HeaderName::from_static("x-ms-lease-duration");
pub(super) const LEASE_ID: HeaderName = HeaderName::from_static("x-ms-lease-id");
const META_PREFIX: &str = "x-ms-meta-";

fn lease_state(s: &str) -> LeaseState {
    match s.to_ascii_lowercase().as_str() {
        "leased" => LeaseState::Leased,
        "expired" => LeaseState::Expired,
        "breaking" => LeaseState::Breaking,
        "broken" => LeaseState::Broken,
        _ => LeaseState::Available,
    }
}

/// The properties of blob `name` from the headers of a GET or HEAD answer, with `size` as its size
/// (a ranged GET's answer carries the range's length, not the blob's).
pub(super) fn props_from_headers(name: &str, h: &Headers, size: u64) -> BlobProps {
    let lease_state = h
        .get_optional_str(&LEASE_STATE)
        .map(lease_state)
        .unwrap_or_default();
    let lease_infinite = lease_state == LeaseState::Leased
        && h.get_optional_str(&LEASE_DURATION)
            .is_some_and(|d| d.eq_ignore_ascii_case("infinite"));
    let metadata: Metadata = h
        .iter()
        .filter_map(|(k, v)| {
            k.as_str()
                .strip_prefix(META_PREFIX)
                .map(|m| (m.to_ascii_lowercase(), v.as_str().to_string()))
        })
        .collect();
    BlobProps {
        name: name.to_string(),
        size,
        etag: quote_etag(h.get_optional_str(&ETAG).unwrap_or("")),
        last_modified: h
            .get_optional_str(&LAST_MODIFIED)
            .and_then(|t| azure_core::time::parse_rfc7231(t).ok())
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        metadata,
        lease_state,
        lease_infinite,
    }
}

/// The properties of one item of a listing.
pub(super) fn props_from_item(item: &BlobItem) -> Option<BlobProps> {
    let name = item.name.clone()?;
    let p = item.properties.as_ref();
    let lease_state = match p.and_then(|p| p.lease_state.as_ref()) {
        Some(AzLeaseState::Leased) => LeaseState::Leased,
        Some(AzLeaseState::Expired) => LeaseState::Expired,
        Some(AzLeaseState::Breaking) => LeaseState::Breaking,
        Some(AzLeaseState::Broken) => LeaseState::Broken,
        _ => LeaseState::Available,
    };
    let lease_infinite = lease_state == LeaseState::Leased
        && matches!(
            p.and_then(|p| p.lease_duration.as_ref()),
            Some(AzLeaseDuration::Infinite)
        );
    let metadata: Metadata = item
        .metadata
        .as_ref()
        .and_then(|m| m.values.as_ref())
        .into_iter()
        .flat_map(|m: &HashMap<String, String>| m.iter())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    Some(BlobProps {
        name,
        size: p.and_then(|p| p.content_length).unwrap_or(0),
        etag: quote_etag(p.and_then(|p| p.etag.as_ref()).map_or("", |e| e.as_ref())),
        last_modified: p
            .and_then(|p| p.last_modified)
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        metadata,
        lease_state,
        lease_infinite,
    })
}

/// Etags in the quoted form Azure sends in headers (`"0x8D…"`); listings send them bare.
pub(super) fn quote_etag(etag: &str) -> String {
    let e = etag.trim();
    if e == "*" || (e.len() >= 2 && e.starts_with('"') && e.ends_with('"')) || e.starts_with("W/") {
        e.to_string()
    } else {
        format!("\"{e}\"")
    }
}

/// An etag as a condition header.
pub(super) fn etag(e: &str) -> Etag {
    Etag::from(quote_etag(e))
}

/// The etag of an answer's headers, quoted.
pub(super) fn etag_of(h: &Headers) -> String {
    quote_etag(h.get_optional_str(&ETAG).unwrap_or(""))
}

/// A lease id as Azure takes it (a UUID).
pub(super) fn parse_lease_id(id: Option<&str>) -> Result<Option<String>> {
    match id {
        None => Ok(None),
        Some(s) => uuid::Uuid::parse_str(s.trim())
            .map(|u| Some(u.hyphenated().to_string()))
            .map_err(|_| {
                StoreError::Other(format!("lease id {s:?} is not a UUID, as Azure requires"))
            }),
    }
}

/// Our metadata as Azure request headers; `None` when empty. Names must be C# identifiers and
/// values printable ASCII (they travel as HTTP headers).
pub(super) fn to_azure_metadata(m: &Metadata) -> Result<Option<HashMap<String, String>>> {
    if m.is_empty() {
        return Ok(None);
    }
    let mut out = HashMap::new();
    for (k, v) in m {
        let valid_name = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(StoreError::Other(format!(
                "metadata name {k:?} is not valid for Azure (letters, digits and `_`, not starting with a digit)"
            )));
        }
        if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) || v.trim() != v {
            return Err(StoreError::Other(format!(
                "metadata value of {k:?} must be printable ASCII without leading or trailing spaces"
            )));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quote_etag("0x8D1"), "\"0x8D1\"");
        assert_eq!(quote_etag("\"0x8D1\""), "\"0x8D1\"");
        assert_eq!(quote_etag("*"), "*");
    }

    #[test]
    fn properties_come_from_headers() {
        let mut h = Headers::new();
        h.insert("etag", "\"0x1\"");
        h.insert("x-ms-lease-state", "leased");
        h.insert("x-ms-lease-duration", "infinite");
        h.insert("x-ms-meta-remotedict_mode".to_string(), "0644".to_string());
        h.insert("last-modified", "Mon, 07 Dec 2026 03:00:00 GMT");
        let p = props_from_headers("a", &h, 5);
        assert_eq!(p.etag, "\"0x1\"");
        assert_eq!(p.lease_state, LeaseState::Leased);
        assert!(p.lease_infinite);
        assert_eq!(
            p.metadata.get("remotedict_mode").map(String::as_str),
            Some("0644")
        );
        assert!(p.last_modified > SystemTime::UNIX_EPOCH);
    }
}
