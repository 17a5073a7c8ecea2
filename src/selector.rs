//! What a purge selects ([`Selector`]), and the parts of a cache key it selects on. Below the
//! rules and the tiers: it imports nothing of tierd's.

/// Longest URL a purge or a lookup may name.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// A URL given to a purge or a lookup, split as keys and selectors split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl {
    /// Lower-cased; `None` for a bare path.
    pub host: Option<String>,
    pub path: String,
    /// Without the `?`.
    pub query: Option<String>,
}

/// Parses `http://host/path?query` or `/path?query` (a fragment is dropped); `what` names the
/// field in the error.
pub fn parse_key_url(text: &str, what: &str) -> Result<KeyUrl, String> {
    if text.is_empty() {
        return Err(format!(
            "{what} is empty; give a path such as \"/api/items/1\" or an absolute URL"
        ));
    }
    if text.len() > MAX_URL_BYTES {
        return Err(format!(
            "{what} is {} bytes; at most {MAX_URL_BYTES}",
            text.len()
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} must be printable ASCII without spaces (percent-encode the rest)"
        ));
    }
    let (host, rest) = if let Some(after) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    {
        let slash = after.find('/').unwrap_or(after.len());
        let host = &after[..slash];
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(format!("{what}: '{text}' has no usable host"));
        }
        let rest = if slash == after.len() {
            "/"
        } else {
            &after[slash..]
        };
        (Some(host.to_ascii_lowercase()), rest)
    } else if text.starts_with('/') && !text.starts_with("//") {
        (None, text)
    } else {
        return Err(format!(
            "{what}: '{text}' is neither a path starting with '/' nor an http:// URL"
        ));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (rest.to_owned(), None),
    };
    Ok(KeyUrl { host, path, query })
}

/// A cache key split into the parts purges select on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub host: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
    /// The user scope's digest, for a key a rule's `key.user` scoped.
    pub user: Option<&'a str>,
}

impl<'a> KeyParts<'a> {
    /// Splits `key`; `None` for a key tierd did not build.
    pub fn parse(key: &'a str) -> Option<KeyParts<'a>> {
        let mut parts = key.split(' ');
        let url = parts.next()?;
        let slash = url.find('/')?;
        let (host, pq) = url.split_at(slash);
        let (path, query) = match pq.find('?') {
            Some(i) => (&pq[..i], &pq[i + 1..]),
            None => (pq, ""),
        };
        // Keyed header values have their spaces escaped, so each part is one space apart.
        let user = parts.find_map(|p| p.strip_prefix("u:"));
        Some(KeyParts {
            host,
            path,
            query,
            user,
        })
    }
}

/// `value` without the spaces and tabs around it (a header value never has them, RFC 9110 §5.5).
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// A stable, non-reversible identifier for a per-user scope value (SHA-256, 128 bits, hex): what
/// a user-scoped key holds instead of the value.
pub fn user_digest(value: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(value);
    let mut out = String::with_capacity(32);
    for b in &d[..16] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The implicit tag every entry carries: its path, so a path is purged with every query string,
/// header variant and user scope, on every host.
pub fn path_tag(path: &str) -> String {
    let mut t = String::with_capacity(path.len() + 5);
    t.push_str("path:");
    t.push_str(path);
    t
}

/// The implicit tag every user-scoped entry carries: its user scope's digest, so one user's
/// entries are purged through the same per-tag index as a tag (no scan of the keyspace).
pub fn user_tag(digest: &str) -> String {
    let mut t = String::with_capacity(digest.len() + 5);
    t.push_str("user:");
    t.push_str(digest);
    t
}

/// What a purge selects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Selector {
    /// Entries carrying the tag.
    Tag(String),
    /// Entries for `path` (and `query`, when given: exactly that normalised query), on `host`
    /// or on every host.
    Url {
        host: Option<String>,
        path: String,
        query: Option<String>,
    },
    /// Entries whose path starts with `prefix` (literal), on `host` or on every host.
    Prefix {
        host: Option<String>,
        prefix: String,
    },
    /// Entries scoped to one user (a rule's `key.user`): the digest of the value the scope
    /// reads, as the key holds it ([`Selector::user`] computes it).
    User(String),
    /// Every entry.
    All,
}

impl Selector {
    /// Entries carrying `tag` (a rule's `tags`, the origin's `Surrogate-Key`, a
    /// [`CacheDirective`](crate::CacheDirective)'s or a value's tags).
    pub fn tag(tag: impl Into<String>) -> Selector {
        Selector::Tag(tag.into())
    }

    /// Entries for `path`, every query string and every host.
    pub fn path(path: impl Into<String>) -> Selector {
        Selector::Url {
            host: None,
            path: path.into(),
            query: None,
        }
    }

    /// Entries whose path starts with `prefix`, on every host.
    pub fn prefix(prefix: impl Into<String>) -> Selector {
        Selector::Prefix {
            host: None,
            prefix: prefix.into(),
        }
    }

    /// Entries scoped to the user whose `key.user` header holds `value` (`Bearer ...` for
    /// `authorization`, the header's value for `header:<name>`): on every route and variant.
    /// Only the value's digest is kept, so the value itself never reaches a log or a message;
    /// spaces and tabs around it are not part of it, as they are not of a header value.
    pub fn user(value: impl AsRef<[u8]>) -> Selector {
        Selector::User(user_digest(trim_ows(value.as_ref())))
    }

    /// Whether an entry stored under `key` is selected (tags aside: a tag selector matches the
    /// entries its index lists).
    pub fn matches_key(&self, key: &str) -> bool {
        let Some(k) = KeyParts::parse(key) else {
            return false;
        };
        match self {
            Selector::Tag(_) => true,
            Selector::Url { host, path, query } => {
                host.as_deref().is_none_or(|h| h == k.host)
                    && k.path == path
                    && query.as_deref().is_none_or(|q| q == k.query)
            }
            Selector::Prefix { host, prefix } => {
                host.as_deref().is_none_or(|h| h == k.host) && k.path.starts_with(prefix.as_str())
            }
            Selector::User(digest) => k.user == Some(digest.as_str()),
            Selector::All => true,
        }
    }

    /// The tag whose index lists every candidate, when there is one.
    pub fn index_tag(&self) -> Option<String> {
        match self {
            Selector::Tag(t) => Some(t.clone()),
            Selector::Url { path, .. } => Some(path_tag(path)),
            Selector::User(digest) => Some(user_tag(digest)),
            Selector::Prefix { .. } | Selector::All => None,
        }
    }

    /// The label used in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Tag(_) => "tag",
            Selector::Url { .. } => "url",
            Selector::Prefix { .. } => "prefix",
            Selector::User(_) => "user",
            Selector::All => "all",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_not_part_of_a_header_value() {
        assert_eq!(trim_ows(b" \tBearer a b\t "), b"Bearer a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"7"), b"7");
        assert_eq!(Selector::user(" Bearer a "), Selector::user("Bearer a"));
    }

    #[test]
    fn urls() {
        let u = parse_key_url("http://API.test:8080/a/b?x=1#f", "url").unwrap();
        assert_eq!(u.host.as_deref(), Some("api.test:8080"));
        assert_eq!((u.path.as_str(), u.query.as_deref()), ("/a/b", Some("x=1")));
        let p = parse_key_url("/a", "url").unwrap();
        assert_eq!((p.host, p.path.as_str(), p.query), (None, "/a", None));
        assert_eq!(parse_key_url("http://h", "url").unwrap().path, "/");
        for bad in ["", "a/b", "//evil/a", "http:///a", "/a b", "ftp://h/a"] {
            assert!(parse_key_url(bad, "url").is_err(), "{bad}");
        }
    }
}
