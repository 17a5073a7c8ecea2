//! Looking an entry up without serving it or promoting it: `GET`/`HEAD /_tierd/entry` and
//! [`Cache::contains`](crate::Cache::contains). The key is built as the middleware builds it for
//! a `GET` of the URL, with the user scope and keyed header values the caller names.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;

use super::codec::Decoded;
use super::key;
use super::CacheState;
use crate::http::host;
use crate::policy;
use crate::selector::{parse_key_url, trim_ows, MAX_URL_BYTES};
use crate::store::{TierError, TierName};

/// The entry a client's `GET` of a URL would be served from: the URL as clients send it
/// (`http://<host>/path?query`, the host included since keys hold it), and, for routes whose
/// key holds them, the user scope and keyed header values.
///
/// ```
/// let lookup = tierd::Lookup::new("http://api.test/me/orders")
///     .user("Bearer eyJhbGciOi...")
///     .header("accept-language", "fr");
/// # let _ = lookup;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    url: String,
    user: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
}

impl Lookup {
    /// The entry for `url`, shared by every user.
    pub fn new(url: impl Into<String>) -> Lookup {
        Lookup {
            url: url.into(),
            user: None,
            headers: Vec::new(),
        }
    }

    /// The value the route's `key.user` reads (the whole `Authorization` value, or the
    /// header's for `header:<name>`), as a request from that user sends it.
    #[must_use]
    pub fn user(mut self, value: impl Into<Vec<u8>>) -> Lookup {
        self.user = Some(value.into());
        self
    }

    /// A request header, for the route's `key.headers` (other headers are ignored).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Lookup {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<&str> for Lookup {
    fn from(url: &str) -> Lookup {
        Lookup::new(url)
    }
}

impl From<String> for Lookup {
    fn from(url: String) -> Lookup {
        Lookup::new(url)
    }
}

/// What each tier holds for a lookup.
#[derive(Debug)]
pub struct Inspected {
    /// The cache key.
    pub key: String,
    /// The template of the rule the URL matched.
    pub route: Option<String>,
    /// L1 first, then each configured tier: its slot, nothing, or why it could not answer.
    pub tiers: Vec<(TierName, Result<Option<Decoded>, TierError>)>,
}

impl Inspected {
    /// Whether some tier holds the entry (one variant or more).
    pub fn cached(&self) -> bool {
        self.tiers.iter().any(|(_, r)| matches!(r, Ok(Some(_))))
    }

    /// Whether no tier holds it and some tier could not say: the answer is not known.
    pub fn unknown(&self) -> bool {
        !self.cached() && self.tiers.iter().any(|(_, r)| r.is_err())
    }
}

impl CacheState {
    /// The key and route a client's `GET` of `lookup` would use; an error names what is wrong
    /// with it.
    pub fn lookup_key(&self, lookup: &Lookup) -> Result<(String, Option<String>), String> {
        let u = parse_key_url(&lookup.url, "url")?;
        let Some(raw_host) = u.host else {
            return Err(
                "url must be absolute (http://<host as clients send it>/path): keys include the host"
                    .into(),
            );
        };
        let host = host::normalized(raw_host.as_bytes());
        let query = u.query.unwrap_or_default();
        let mut headers = HeaderMap::new();
        for (name, value) in &lookup.headers {
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header '{name}' is not a header name"))?;
            let v = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("header {n}: the value is not a valid header value"))?;
            headers.append(n, v);
        }
        let rules = self.rules.load();
        let matched = rules.find(&Method::GET, &u.path);
        let Some(m) = matched else {
            if lookup.user.is_some() {
                return Err(format!(
                    "user: no rule matches {}, so its entries are shared; leave user out",
                    u.path
                ));
            }
            let target = if query.is_empty() {
                u.path
            } else {
                format!("{}?{query}", u.path)
            };
            return Ok((key::for_path(&host, &target), None));
        };
        let rule = m.rule();
        if let Some(user) = &lookup.user {
            let Some(name) = rule.user_header() else {
                return Err(format!(
                    "user: the rule for {} ({}) has no key.user, so its entries are shared; leave user out",
                    u.path, rule.template.as_str()
                ));
            };
            if user.len() > MAX_URL_BYTES {
                return Err(format!("user: at most {MAX_URL_BYTES} bytes"));
            }
            let v = HeaderValue::from_bytes(trim_ows(user))
                .map_err(|_| format!("user: not a valid {name} header value"))?;
            headers.insert(name.clone(), v);
        }
        Ok((
            policy::compose_key(&host, &u.path, &query, rule, &headers),
            Some(rule.template.as_str().to_owned()),
        ))
    }

    /// What every tier holds for `lookup`, without promoting or counting a lookup.
    pub async fn inspect(&self, lookup: &Lookup) -> Result<Inspected, String> {
        let (key, route) = self.lookup_key(lookup)?;
        let mut tiers = Vec::with_capacity(3);
        for name in TierName::ALL {
            if name != TierName::L1 && self.store.tier(name).is_none() {
                continue;
            }
            tiers.push((name, self.store.peek(name, &key).await));
        }
        Ok(Inspected { key, route, tiers })
    }
}
