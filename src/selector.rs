//! What a purge selects ([`Selector`]), and the parts of a cache key it selects on. Below the
//! rules and the tiers: it imports nothing of tierd's.

/// A cache key split into the parts purges select on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub host: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
}

impl<'a> KeyParts<'a> {
    /// Splits `key`; `None` for a key tierd did not build.
    pub fn parse(key: &'a str) -> Option<KeyParts<'a>> {
        let url = key.split(' ').next()?;
        let slash = url.find('/')?;
        let (host, pq) = url.split_at(slash);
        let (path, query) = match pq.find('?') {
            Some(i) => (&pq[..i], &pq[i + 1..]),
            None => (pq, ""),
        };
        Some(KeyParts { host, path, query })
    }
}

/// The implicit tag every entry carries: its path, so a path is purged with every query string,
/// header variant and user scope, on every host.
pub fn path_tag(path: &str) -> String {
    let mut t = String::with_capacity(path.len() + 5);
    t.push_str("path:");
    t.push_str(path);
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
        }
    }

    /// The tag whose index lists every candidate, when there is one.
    pub fn index_tag(&self) -> Option<String> {
        match self {
            Selector::Tag(t) => Some(t.clone()),
            Selector::Url { path, .. } => Some(path_tag(path)),
            Selector::Prefix { .. } => None,
        }
    }

    /// The label used in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Tag(_) => "tag",
            Selector::Url { .. } => "url",
            Selector::Prefix { .. } => "prefix",
        }
    }
}
