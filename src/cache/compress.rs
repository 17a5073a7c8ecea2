//! Compression of stored responses (`[compression]`): one compressed copy per entry, made when
//! the response is stored, so no hit pays a codec; identity clients get the body as the
//! origin sent it (L1 keeps both; the tiers below keep the compressed copy only and decode it
//! once when it comes back up).

use std::io::{Read, Write};

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;

use crate::http::cache_control::CacheControl;
use crate::http::encoding::Coding;

/// What to compress, and how.
#[derive(Debug, Clone)]
pub struct Compression {
    pub coding: Coding,
    pub level: u32,
    /// Smaller bodies are stored as they are.
    pub min_bytes: usize,
    /// Media types compressed: `text/*`, `application/json`, `application/*+json`.
    pub types: Vec<String>,
}

/// The compressed copy of a stored body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub coding: Coding,
    pub body: Bytes,
    /// The entry's strong `ETag` with the coding appended (`"abc-gzip"`): a strong validator
    /// names one sequence of bytes (RFC 9110 §8.8.1). A weak one is kept as it is.
    pub etag: Option<HeaderValue>,
    /// The stored headers' `Vary` lists `Accept-Encoding` already.
    pub vary_listed: bool,
}

impl Compression {
    /// Whether a response with these headers and `len` bytes of body is compressed: a 200 the
    /// origin sent unencoded, of a listed type, at least `min_bytes`, without `no-transform`.
    pub fn applies(&self, status: StatusCode, h: &HeaderMap, len: usize) -> bool {
        if status != StatusCode::OK || len < self.min_bytes {
            return false;
        }
        let identity = h
            .get_all(header::CONTENT_ENCODING)
            .all(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
        if !identity || h.contains_key(header::CONTENT_RANGE) {
            return false;
        }
        if CacheControl::parse(h.get_all(header::CACHE_CONTROL).map(|v| v.as_bytes())).no_transform
        {
            return false;
        }
        let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| type_matches(t, &media))
    }

    /// The compressed copy of `body`, when it is smaller.
    pub fn encode(
        &self,
        body: &[u8],
        etag: Option<&HeaderValue>,
        stored: &[(header::HeaderName, HeaderValue)],
    ) -> Option<Encoded> {
        let compressed = compress(self.coding, self.level, body).ok()?;
        if compressed.len() >= body.len() {
            return None;
        }
        Some(Encoded::new(self.coding, compressed, etag, stored))
    }
}

impl Encoded {
    pub fn new(
        coding: Coding,
        body: Bytes,
        etag: Option<&HeaderValue>,
        stored: &[(header::HeaderName, HeaderValue)],
    ) -> Self {
        let vary_listed = stored.iter().any(|(n, v)| {
            *n == header::VARY
                && v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|f| f.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"))
        });
        Encoded {
            coding,
            body,
            etag: etag.map(|e| coded_etag(e, coding)),
            vary_listed,
        }
    }
}

/// `"abc"` → `"abc-gzip"`; a weak tag is the same for every coding.
fn coded_etag(etag: &HeaderValue, coding: Coding) -> HeaderValue {
    let v = etag.as_bytes();
    if v.starts_with(b"W/") || v.len() < 2 || !v.ends_with(b"\"") {
        return etag.clone();
    }
    let mut out = Vec::with_capacity(v.len() + 5);
    out.extend_from_slice(&v[..v.len() - 1]);
    out.push(b'-');
    out.extend_from_slice(coding.as_str().as_bytes());
    out.push(b'"');
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| etag.clone())
}

/// `text/*`, `application/*+json` or an exact `type/subtype`.
fn type_matches(pattern: &str, media: &str) -> bool {
    let pattern = pattern.trim();
    match pattern.split_once("/*") {
        Some((ty, rest)) => {
            let Some((mty, sub)) = media.split_once('/') else {
                return false;
            };
            mty.eq_ignore_ascii_case(ty) && (rest.is_empty() || sub.ends_with(rest))
        }
        None => pattern.eq_ignore_ascii_case(media),
    }
}

/// Compresses `body` with `coding` at `level`.
pub fn compress(coding: Coding, level: u32, body: &[u8]) -> std::io::Result<Bytes> {
    match coding {
        Coding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3 + 64),
                flate2::Compression::new(level),
            );
            enc.write_all(body)?;
            Ok(Bytes::from(enc.finish()?))
        }
        Coding::Br => {
            let mut out = Vec::with_capacity(body.len() / 3 + 64);
            {
                let mut enc = brotli::CompressorWriter::new(&mut out, 4096, level, 22);
                enc.write_all(body)?;
                enc.flush()?;
            }
            Ok(Bytes::from(out))
        }
    }
}

/// Decompresses a stored copy that must come to exactly `len` bytes (a record that does not
/// is damaged, and an error).
pub fn decompress(coding: Coding, body: &[u8], len: usize) -> std::io::Result<Bytes> {
    let mut out = Vec::with_capacity(len);
    let limit = len as u64 + 1;
    match coding {
        Coding::Gzip => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)?,
        Coding::Br => brotli::Decompressor::new(body, 4096)
            .take(limit)
            .read_to_end(&mut out)?,
    };
    if out.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "decoded length differs from the recorded one",
        ));
    }
    Ok(Bytes::from(out))
}

/// The default `compression.types`.
pub fn default_types() -> Vec<String> {
    [
        "text/*",
        "application/json",
        "application/*+json",
        "application/javascript",
        "application/xml",
        "application/*+xml",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                header::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    fn gzip() -> Compression {
        Compression {
            coding: Coding::Gzip,
            level: 6,
            min_bytes: 10,
            types: default_types(),
        }
    }

    #[test]
    fn what_is_compressed() {
        let c = gzip();
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert!(c.applies(StatusCode::OK, &json, 100));
        assert!(!c.applies(StatusCode::OK, &json, 9), "under min_bytes");
        assert!(!c.applies(StatusCode::NOT_FOUND, &json, 100));
        for (ct, yes) in [
            ("text/html", true),
            ("application/problem+json", true),
            ("application/atom+xml", true),
            ("image/svg+xml", true),
            ("image/png", false),
            ("application/octet-stream", false),
            ("application/jsonx", false),
        ] {
            let h = headers(&[("content-type", ct)]);
            assert_eq!(c.applies(StatusCode::OK, &h, 100), yes, "{ct}");
        }
        let encoded = headers(&[("content-type", "text/plain"), ("content-encoding", "gzip")]);
        assert!(!c.applies(StatusCode::OK, &encoded, 100));
        let nt = headers(&[
            ("content-type", "text/plain"),
            ("cache-control", "max-age=5, no-transform"),
        ]);
        assert!(!c.applies(StatusCode::OK, &nt, 100));
        assert!(!c.applies(StatusCode::OK, &headers(&[]), 100), "no type");
    }

    #[test]
    fn round_trips_and_etags() {
        let body =
            "{\"items\": [".to_owned() + &"{\"k\": 1, \"v\": \"xxxxxxxx\"},".repeat(50) + "]}";
        for coding in [Coding::Gzip, Coding::Br] {
            let z = compress(coding, 5, body.as_bytes()).unwrap();
            assert!(z.len() < body.len() / 4, "{coding:?}: {}", z.len());
            assert_eq!(decompress(coding, &z, body.len()).unwrap(), body.as_bytes());
            assert!(
                decompress(coding, &z, body.len() - 1).is_err(),
                "length checked"
            );
            assert!(decompress(coding, b"garbage", 10).is_err());
        }
        let strong = HeaderValue::from_static("\"abc\"");
        assert_eq!(coded_etag(&strong, Coding::Br), "\"abc-br\"");
        let weak = HeaderValue::from_static("W/\"abc\"");
        assert_eq!(coded_etag(&weak, Coding::Gzip), "W/\"abc\"");
        let tiny = gzip().encode(b"ab", None, &[]);
        assert!(tiny.is_none(), "kept only when smaller");
    }
}
