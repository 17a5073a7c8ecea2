//! The origin a gateway forwards to, from `upstream.url`.

/// Where requests go, parsed from `upstream.url`.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` or `https://host:port`
    pub origin: String,
    /// Path prefix prepended to every request path (no trailing slash).
    pub prefix: String,
}

impl Target {
    /// Parses an `http[s]://host[:port][/prefix]` URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: actix_web::http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(other) => {
                return Err(format!(
                    "scheme '{other}' is not supported; use http:// or https://"
                ))
            }
            None => return Err("missing scheme; use http://host:port".into()),
        };
        let authority = uri.authority().ok_or("missing host")?;
        if uri.query().is_some() {
            return Err("must not have a query string".into());
        }
        Ok(Target {
            origin: format!("{scheme}://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}
