//! Conversions between the store's types and azure_core's: blob properties, etags, lease ids and
//! metadata.
//!
//! Etags are normalised to the quoted form Azure uses in headers (listings return them unquoted),
//! so an etag from `list` compares equal to one from `get` or `put`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::SystemTime;

use azure_core::prelude::LeaseId;
use azure_storage_blobs::blob::Blob;

use crate::store::{BlobProps, LeaseState, Metadata, Result, StoreError};

/// The properties of `blob` under our `name`, with `size` as its size (a ranged GET's answer
/// carries the range's length, not the blob's).
pub(super) fn props_from_blob(name: &str, blob: &Blob, size: u64) -> BlobProps {
    let p = &blob.properties;
    let lease_state = match p.lease_state {
        Some(azure_core::LeaseState::Leased) => LeaseState::Leased,
        Some(azure_core::LeaseState::Expired) => LeaseState::Expired,
        Some(azure_core::LeaseState::Breaking) => LeaseState::Breaking,
        Some(azure_core::LeaseState::Broken) => LeaseState::Broken,
        Some(azure_core::LeaseState::Available) | None => LeaseState::Available,
    };
    let lease_infinite = lease_state == LeaseState::Leased
        && matches!(p.lease_duration, Some(azure_core::LeaseDuration::Infinite));
    let metadata: Metadata = blob
        .metadata
        .iter()
        .flat_map(|m: &HashMap<String, String>| m.iter())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    BlobProps {
        name: name.to_string(),
        size,
        etag: quote_etag(p.etag.as_ref()),
        last_modified: SystemTime::from(p.last_modified),
        metadata,
        lease_state,
        lease_infinite,
    }
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

/// A lease id as Azure takes it (a UUID).
pub(super) fn parse_lease_id(id: Option<&str>) -> Result<Option<LeaseId>> {
    match id {
        None => Ok(None),
        Some(s) => LeaseId::from_str(s.trim()).map(Some).map_err(|_| {
            StoreError::Other(format!("lease id {s:?} is not a UUID, as Azure requires"))
        }),
    }
}

/// Our metadata as Azure request headers; `None` when empty. Names must be C# identifiers and
/// values printable ASCII (they travel as HTTP headers).
pub(super) fn to_azure_metadata(
    m: &Metadata,
) -> Result<Option<azure_core::request_options::Metadata>> {
    if m.is_empty() {
        return Ok(None);
    }
    let mut out = azure_core::request_options::Metadata::new();
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
}
