//! The `Cache-Status` response header (RFC 9211).

/// Why a request went forward to the origin (RFC 9211 §2.2 `fwd` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum Fwd {
    /// The cache was configured, or the request asked, not to use a stored response.
    Bypass,
    /// The request method is not served from storage.
    Method,
    /// No stored response for the URI.
    UriMiss,
    /// A stored response for the URI, but not for these request headers (`Vary`).
    VaryMiss,
    /// The request's own directives (`no-cache`, `max-age=0`) required going forward.
    Request,
    /// A stored response was stale and went forward to be validated or refreshed.
    Stale,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One `Cache-Status` member describing what tierd did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStatus {
    /// Served from storage without going forward.
    pub hit: bool,
    pub fwd: Option<Fwd>,
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds; negative when a stale response was served.
    pub ttl: Option<i64>,
    pub stored: bool,
    pub collapsed: bool,
    /// The tier that answered (`l1`, `l2`, `l3`).
    pub detail: Option<&'static str>,
}

/// The member name tierd uses.
pub const CACHE_NAME: &str = "tierd";

impl CacheStatus {
    /// A hit from a tier with `ttl` seconds of freshness left (negative: stale).
    pub fn hit(ttl: i64, tier: &'static str) -> Self {
        CacheStatus {
            hit: true,
            ttl: Some(ttl),
            detail: Some(tier),
            ..Default::default()
        }
    }

    /// Went forward for `fwd`.
    pub fn forward(fwd: Fwd) -> Self {
        CacheStatus {
            fwd: Some(fwd),
            ..Default::default()
        }
    }

    /// Renders the member, e.g. `tierd; hit; ttl=42; detail=l1`.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(56);
        s.push_str(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(f.as_str());
        }
        if let Some(st) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(itoa::Buffer::new().format(st));
        }
        if let Some(t) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(itoa::Buffer::new().format(t));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            s.push_str("; detail=");
            s.push_str(d);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 9211 §2: member syntax, parameters in a fixed order.
    #[test]
    fn renders_the_documented_forms() {
        assert_eq!(
            CacheStatus::hit(42, "l1").render(),
            "tierd; hit; ttl=42; detail=l1"
        );
        assert_eq!(
            CacheStatus::hit(-3, "l2").render(),
            "tierd; hit; ttl=-3; detail=l2"
        );
        let miss = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(200),
            stored: true,
            ..Default::default()
        };
        assert_eq!(miss.render(), "tierd; fwd=uri-miss; fwd-status=200; stored");
        let reval = CacheStatus {
            fwd: Some(Fwd::Stale),
            fwd_status: Some(304),
            ..Default::default()
        };
        assert_eq!(reval.render(), "tierd; fwd=stale; fwd-status=304");
        assert_eq!(
            CacheStatus::forward(Fwd::Bypass).render(),
            "tierd; fwd=bypass"
        );
        let collapsed = CacheStatus {
            hit: true,
            collapsed: true,
            ..Default::default()
        };
        assert_eq!(collapsed.render(), "tierd; hit; collapsed");
    }
}
