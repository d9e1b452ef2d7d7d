//! Where things live in the container: keys ↔ blob names, the index blob's name, and which keys
//! are valid.
//!
//! A key `k` of folder `f` is the blob `f/k`, exactly as the original RemoteDict library stored
//! it, so other Azure tools see plain names. Keys may contain `/` (nested directories). The first
//! path component `.remotedict` is reserved for our own blobs (the index), so no key can collide
//! with them; the original library's own index (`index/<folder>/main_index`) lies outside the
//! folder and is never written.

/// Reserved first component of a key: remotedict's own blobs live under it.
pub const RESERVED_DIR: &str = ".remotedict";

/// Longest blob name Azure accepts, in characters.
pub const MAX_BLOB_NAME_CHARS: usize = 1024;

/// Longest path component FUSE (and Linux) accepts, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {0:?} is too long: a blob name holds at most 1024 characters, a path component 255 bytes")]
    TooLong(String),
    #[error("key {key:?} is not valid: {reason}")]
    Invalid { key: String, reason: &'static str },
    #[error("folder {folder:?} is not valid: {reason}")]
    InvalidFolder {
        folder: String,
        reason: &'static str,
    },
}

/// The mapping between one mounted folder's keys and blob names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Blob-name prefix of every key: `folder/`, or empty for the container's root.
    prefix: String,
}

impl Layout {
    /// `folder` is a blob-name prefix such as `data` or `team/data`; leading and trailing `/` are
    /// ignored, and an empty folder means the container's root.
    pub fn new(folder: &str) -> Result<Self, KeyError> {
        let trimmed = folder.trim_matches('/');
        let bad = |reason| {
            Err(KeyError::InvalidFolder {
                folder: folder.to_string(),
                reason,
            })
        };
        if trimmed.contains('\0') {
            return bad("it contains a NUL character");
        }
        if trimmed.split('/').any(|c| c == "." || c == "..") {
            return bad("it contains a '.' or '..' component");
        }
        if trimmed.contains("//") {
            return bad("it contains an empty component ('//')");
        }
        if trimmed.chars().count() > 512 {
            return bad("it is longer than 512 characters");
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Ok(Layout { prefix })
    }

    /// The folder, without trailing `/` (empty for the container root).
    pub fn folder(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    /// Prefix of every blob of this folder, for listings.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The blob holding `key`.
    pub fn blob_name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// The key a blob name stands for, if it belongs to this folder and is not one of our own.
    pub fn key_of<'a>(&self, blob: &'a str) -> Option<&'a str> {
        let key = blob.strip_prefix(self.prefix.as_str())?;
        (validate_key(key).is_ok() && !key.ends_with('/')).then_some(key)
    }

    /// The index blob of this folder.
    pub fn index_blob(&self) -> String {
        format!("{}{RESERVED_DIR}/index", self.prefix)
    }

    /// Checks that `key` fits this folder: valid components and a blob name Azure accepts.
    pub fn check_key(&self, key: &str) -> Result<(), KeyError> {
        validate_key(key)?;
        if self.prefix.chars().count() + key.chars().count() > MAX_BLOB_NAME_CHARS {
            return Err(KeyError::TooLong(key.to_string()));
        }
        Ok(())
    }
}

/// Checks a key on its own: `/`-separated components, none empty, `.` or `..`, none over 255
/// bytes, no NUL, and not under the reserved `.remotedict/`.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    let bad = |reason| {
        Err(KeyError::Invalid {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.contains('\0') {
        return bad("it contains a NUL character");
    }
    if key.chars().count() > MAX_BLOB_NAME_CHARS {
        return Err(KeyError::TooLong(key.to_string()));
    }
    for (i, c) in key.split('/').enumerate() {
        if c.is_empty() {
            return bad("it has an empty path component (leading, trailing or double '/')");
        }
        if c == "." || c == ".." {
            return bad("'.' and '..' cannot be path components");
        }
        if c.len() > MAX_COMPONENT_BYTES {
            return Err(KeyError::TooLong(key.to_string()));
        }
        if c.ends_with('.') {
            return bad(
                "Azure drops trailing dots from path components; rename it without the final '.'",
            );
        }
        if c.contains('\\') {
            return bad("Azure turns '\\' into '/'; use another character");
        }
        if c.chars().any(char::is_control) {
            return bad("it contains a control character");
        }
        if i == 0 && c == RESERVED_DIR {
            return bad("'.remotedict' is reserved for remotedict's own index");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_follow_the_original_library() {
        let l = Layout::new("myfolder").unwrap();
        assert_eq!(l.blob_name("example"), "myfolder/example");
        assert_eq!(l.blob_name("a/b.txt"), "myfolder/a/b.txt");
        assert_eq!(l.key_of("myfolder/a/b.txt"), Some("a/b.txt"));
        assert_eq!(l.key_of("other/a"), None);
        assert_eq!(l.key_of("myfolder/.remotedict/index"), None);
        assert_eq!(Layout::new("/x/y/").unwrap().blob_name("k"), "x/y/k");
        assert_eq!(Layout::new("").unwrap().blob_name("k"), "k");
    }

    #[test]
    fn index_never_collides_with_a_key_or_the_python_index() {
        let l = Layout::new("f").unwrap();
        let idx = l.index_blob();
        assert_ne!(idx, "index/f/main_index");
        let key = l.key_of(&idx);
        assert_eq!(key, None);
        assert!(l.check_key(".remotedict/index").is_err());
        assert!(
            l.check_key("sub/.remotedict/index").is_ok(),
            "only the top component is reserved"
        );
    }

    #[test]
    fn rejects_names_that_cannot_be_stored() {
        let l = Layout::new("f").unwrap();
        for k in [
            "",
            "a//b",
            "/a",
            "a/",
            "..",
            "a/../b",
            "./a",
            "a\0b",
            "notes.",
            "a\\b",
            "tab\there",
        ] {
            assert!(
                matches!(l.check_key(k), Err(KeyError::Invalid { .. })),
                "{k:?} should be invalid"
            );
        }
        assert!(matches!(
            l.check_key(&"x".repeat(256)),
            Err(KeyError::TooLong(_))
        ));
        let long: String = (0..6)
            .map(|_| "y".repeat(200))
            .collect::<Vec<_>>()
            .join("/");
        assert!(matches!(l.check_key(&long), Err(KeyError::TooLong(_))));
        assert!(l.check_key("ok name with spaces #%?é").is_ok());
        assert!(Layout::new("a/../b").is_err());
    }
}
