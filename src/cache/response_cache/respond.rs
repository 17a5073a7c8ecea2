//! Responses built from stored entries, and their `Age` and `Cache-Status`.

use super::*;

/// The `Cache-Status` header name (RFC 9211).
pub fn cache_status_header() -> HeaderName {
    HeaderName::from_static("cache-status")
}

/// The response for an entry that was built but not stored.
pub(super) fn respond_uncached(
    entry: &CachedResponse,
    status: CacheStatus,
    request: &HeaderMap,
) -> HttpResponse {
    respond(entry, entry.initial_age, status, request)
}

pub(super) fn status_value(s: CacheStatus) -> HeaderValue {
    HeaderValue::try_from(s.render()).unwrap_or_else(|_| HeaderValue::from_static("tierd"))
}

/// Builds the response for a stored entry: its compressed copy for a client whose
/// `Accept-Encoding` admits its coding, the body as the origin sent it otherwise.
pub(super) fn respond(
    entry: &CachedResponse,
    age: u64,
    status: CacheStatus,
    request: &HeaderMap,
) -> HttpResponse {
    let coded = entry
        .encoded
        .as_ref()
        .filter(|enc| crate::http::encoding::accepts(request, enc.coding));
    let body = coded.map_or_else(|| entry.body.clone(), |enc| enc.body.clone());
    let mut res = HttpResponse::with_body(entry.status, body).map_into_boxed_body();
    let h = res.headers_mut();
    match coded {
        None => {
            for (n, v) in entry.headers.iter() {
                h.append(n.clone(), v.clone());
            }
        }
        Some(enc) => {
            for (n, v) in entry.headers.iter() {
                if *n == header::ETAG {
                    if let Some(tag) = &enc.etag {
                        h.append(header::ETAG, tag.clone());
                        continue;
                    }
                }
                h.append(n.clone(), v.clone());
            }
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(enc.coding.as_str()),
            );
        }
    }
    if let Some(enc) = &entry.encoded {
        if !enc.vary_listed {
            h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
    }
    h.insert(header::AGE, age_value(age));
    h.append(cache_status_header(), status_value(status));
    res
}

/// `Age` values up to an hour, made once: `HeaderValue::from(u64)` allocates, and every hit
/// sends one.
pub(super) fn age_value(age: u64) -> HeaderValue {
    const PREBUILT: u64 = 3600;
    static AGES: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..=PREBUILT).map(HeaderValue::from).collect());
    match usize::try_from(age).ok().and_then(|i| AGES.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(age),
    }
}

pub(super) fn with_status(mut res: HttpResponse, status: CacheStatus) -> HttpResponse {
    append_status(res.headers_mut(), status);
    res
}

pub(super) fn append_status(h: &mut HeaderMap, status: CacheStatus) {
    h.append(cache_status_header(), status_value(status));
}

/// The `Cache-Status` of a response that went forward: the origin's status, or, when tierd
/// answered because the origin failed (502, 504), what failed.
pub(super) fn forwarded(fwd: Fwd, res: &HttpResponse) -> CacheStatus {
    match res.extensions().get::<UpstreamFailure>() {
        Some(UpstreamFailure(kind)) => CacheStatus {
            fwd: Some(fwd),
            detail: Some(kind.cache_status_detail()),
            ..Default::default()
        },
        None => CacheStatus {
            fwd: Some(fwd),
            fwd_status: Some(res.status().as_u16()),
            ..Default::default()
        },
    }
}

pub(super) fn storable_ttl(entry: &CachedResponse, age: u64) -> i64 {
    crate::http::freshness::ttl(entry.lifetime, age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_values_are_the_decimal_seconds_prebuilt_or_not() {
        for age in [0, 1, 59, 3599, 3600, 3601, 86_400, u64::MAX] {
            assert_eq!(age_value(age).to_str().ok(), Some(age.to_string().as_str()));
        }
    }
}
