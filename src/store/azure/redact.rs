//! Keeping credentials out of the text that leaves the Azure backend.
//!
//! Messages are built from status and error codes wherever possible; whatever text of another
//! crate's still gets through (an I/O error quoting a URL, a service's error message) passes
//! through [`Redactor::scrub`] first, which cuts the query string off every URL (a SAS travels
//! there) and replaces every known secret of the store (account key, SAS, its signature in each
//! encoding) with `<redacted>`.

/// The secrets of one store, to be removed from any text passed on (defence in depth).
pub(super) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Remembers `secrets`, except strings shorter than 8 bytes (too short to be a credential,
    /// and likely to match ordinary text).
    pub(super) fn new(secrets: Vec<String>) -> Self {
        Redactor {
            secrets: secrets.into_iter().filter(|s| s.len() >= 8).collect(),
        }
    }

    /// Removes query strings from URLs and any known secret from `text`.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = strip_url_queries(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }
}

/// Replaces the query string of every http(s) URL in `text` with `?<redacted>`.
fn strip_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(at) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let url_part = &rest[at..];
        let end = url_part
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ']' | '`'))
            .unwrap_or(url_part.len());
        let token = &url_part[..end];
        match token.find('?') {
            Some(q) => {
                out.push_str(&token[..q]);
                out.push_str("?<redacted>");
            }
            None => out.push_str(token),
        }
        rest = &url_part[end..];
    }
}

/// The messages of an error and of its sources, each once, joined by `: ` (not scrubbed).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// `s` cut to at most `max_chars` characters, with `…` where it was cut.
pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_queries_are_stripped() {
        let s = "error sending request for url (https://a.blob.core.windows.net/c/b?sv=1&sig=SECRET): boom";
        let t = strip_url_queries(s);
        assert!(!t.contains("SECRET"), "{t}");
        assert!(
            t.contains("https://a.blob.core.windows.net/c/b?<redacted>)"),
            "{t}"
        );
    }
}
