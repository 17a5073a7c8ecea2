//! Cache keys (RFC 9111 §2): the target URI. GET and HEAD share a key (a HEAD is answered from a
//! stored GET); `Vary` selection happens within the key's slot.

use actix_web::HttpRequest;

use crate::http::host;

/// The raw authority a request was made to ([`host::authority`]).
fn host_bytes(req: &HttpRequest) -> &[u8] {
    host::authority(req.uri(), req.headers()).unwrap_or_default()
}

/// The authority a request was made to, normalised ([`host::push_normalized`]).
pub fn request_host(req: &HttpRequest) -> String {
    host::normalized(host_bytes(req))
}

/// The key for a request: `host` + path + `?query`.
pub fn for_request(req: &HttpRequest) -> String {
    let host = host_bytes(req);
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut key = String::with_capacity(host.len() + pq.len());
    // A validated host holds no `/`: the first `/` of the key starts the path.
    host::push_normalized(&mut key, host);
    key.push_str(pq);
    key
}

/// The key for `path_and_query` on `host` (already lower-cased).
pub fn for_path(host: &str, path_and_query: &str) -> String {
    let mut key = String::with_capacity(host.len() + path_and_query.len());
    key.push_str(host);
    key.push_str(path_and_query);
    key
}

/// The key a `Location` / `Content-Location` value refers to, when it is on the same origin
/// (RFC 9111 §4.4): a path, or an absolute URI whose authority is `host`.
pub fn for_location(host: &str, value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if s.starts_with('/') && !s.starts_with("//") {
        return Some(for_path(host, s));
    }
    let uri: actix_web::http::Uri = s.parse().ok()?;
    let authority = uri.authority()?;
    if host::normalized(authority.as_str().as_bytes()) != host {
        return None;
    }
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Some(for_path(host, pq))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 9111 §4.4: only same-origin Location / Content-Location are invalidated.
    #[test]
    fn location_same_origin_only() {
        assert_eq!(
            for_location("api.test", b"/a/1").as_deref(),
            Some("api.test/a/1")
        );
        assert_eq!(
            for_location("api.test", b"http://API.test/a?x=1").as_deref(),
            Some("api.test/a?x=1")
        );
        assert_eq!(for_location("api.test", b"http://evil.test/a"), None);
        assert_eq!(for_location("api.test", b"//evil.test/a"), None);
        assert_eq!(for_location("api.test", b"\xff"), None);
        assert_eq!(for_location("api.test", b"relative"), None);
    }
}
