//! Which blob, block and container names the Azure backend accepts.
//!
//! A name Azure or the URL layer would silently alter is refused up front
//! ([`StoreError::InvalidName`]), so a blob is never written under a name other than the one asked
//! for.

use crate::store::{Result, StoreError};

/// Azure's limit on blob names, in characters.
const MAX_NAME_CHARS: usize = 1024;

/// Rejects blob names Azure or the URL layer would alter or refuse: the crate builds the URL
/// from the `/`-separated segments (percent-encoding each), dropping `.`/`..` segments and
/// leading or trailing `/`, and Azure strips trailing dots and turns `\` into `/`.
pub(super) fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad("longer than 1024 characters");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if name.contains('\\') {
        return bad("contains `\\`, which Azure turns into `/`");
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return bad("empty path segment (leading, trailing or doubled `/`)");
        }
        if segment.ends_with('.') {
            return bad("a path segment ends with `.`, which Azure strips");
        }
    }
    Ok(())
}

/// Block ids of `name`'s block uploads: 1 to 64 bytes.
pub(super) fn check_block_id(name: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 {
        return Err(StoreError::Other(format!(
            "block id {id:?} of {name:?} must be 1 to 64 bytes long"
        )));
    }
    Ok(())
}

/// Container names as Azure takes them (or `$root`).
pub fn check_container_name(c: &str) -> Result<()> {
    let ok = (3..=63).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && c.bytes().next().is_some_and(|b| b != b'-')
        && c.bytes().last().is_some_and(|b| b != b'-')
        && !c.contains("--");
    if ok || c == "$root" {
        Ok(())
    } else {
        Err(StoreError::Other(format!(
            "invalid container name {c:?}: use 3 to 63 lower-case letters, digits and single hyphens, \
             starting and ending with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("a/b c#d%e?f/ü").is_ok());
        for bad in [
            "", "/a", "a/", "a//b", "a/./b", "a/../b", "a.", "a\\b", "a\nb",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
