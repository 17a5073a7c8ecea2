//! Per-response caching instructions from a handler.

use std::time::Duration;

use actix_web::HttpResponse;

/// What a handler tells the cache about its own response, carried in the response's extensions
/// (never sent to the client). It wins over a matching rule's TTL; tags add to the rule's.
///
/// ```
/// use actix_web::HttpResponse;
/// use tierd::CacheDirective;
///
/// async fn item() -> HttpResponse {
///     let mut res = HttpResponse::Ok().json(serde_json::json!({"id": 42, "status": "completed"}));
///     CacheDirective::secs(300).tag("item:42").apply(&mut res);
///     res
/// }
///
/// async fn quote() -> HttpResponse {
///     let mut res = HttpResponse::Ok().body("changes every request");
///     CacheDirective::no_store().apply(&mut res);
///     res
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDirective {
    pub(crate) ttl: Option<u64>,
    pub(crate) tags: Vec<String>,
    pub(crate) no_store: bool,
}

impl CacheDirective {
    /// Store the response for `ttl` (whole seconds; under one second: not stored), whatever its
    /// `Cache-Control` says (as a rule's `ttl_seconds` would).
    pub fn ttl(ttl: Duration) -> Self {
        CacheDirective {
            ttl: Some(ttl.as_secs()),
            ..CacheDirective::default()
        }
    }

    /// Store the response for `secs` seconds.
    pub fn secs(secs: u64) -> Self {
        CacheDirective::ttl(Duration::from_secs(secs))
    }

    /// Do not store the response (it is still answered, and marked `fwd=...` in `Cache-Status`).
    pub fn no_store() -> Self {
        CacheDirective {
            no_store: true,
            ..CacheDirective::default()
        }
    }

    /// Tags to purge the stored response by (as a rule's `tags`), with no TTL of its own: the
    /// rule's or the response's headers decide how long.
    pub fn tags<I, T>(tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        CacheDirective {
            tags: tags.into_iter().map(Into::into).collect(),
            ..CacheDirective::default()
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Attaches the directive to `res` (replacing one attached before).
    pub fn apply(self, res: &mut HttpResponse) {
        res.extensions_mut().insert(self);
    }

    /// Whether it forbids storing.
    pub(crate) fn forbids_store(&self) -> bool {
        self.no_store || self.ttl == Some(0)
    }
}
