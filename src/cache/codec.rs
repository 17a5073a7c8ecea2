//! The binary encoding of a [`Slot`] for the tiers below L1 (Redis, DuckDB).
//!
//! Compact and versioned: a record starts with a magic byte and a format version, so bytes from
//! an older tierd, another program or a torn write decode to an error (a miss), never a panic.
//!
//! ```text
//! record   = magic:u8 version:u8 tier_expires_ms:u64le keep_until_ms:u64le
//!            n:varint variant{n}
//! variant  = status:u16le response_time_ms:varint initial_age:varint lifetime:varint
//!            swr:varint sie:varint flags:u8 [etag:bytes] [last_modified:bytes]
//!            [coding:u8 identity_len:varint]                 -- when the body is compressed
//!            n:varint (name:bytes value:bytes){n}          -- headers
//!            n:varint (name:bytes present:u8 [value:bytes]){n}  -- vary selection
//!            n:varint tag:bytes{n}
//!            body:bytes                                     -- compressed when flagged
//! bytes    = len:varint data
//! ```
//!
//! A compressed entry's record holds the compressed copy only (`[compression]`); decoding
//! restores the identity body from it, checked against `identity_len`. Version 1 records (no
//! compression) are read as they are.
//!
//! `tier_expires_ms` is when the tier holding the record must stop serving it (the entry's own
//! keep time, capped by the tier's TTL cap); `keep_until_ms` is the entry's own keep time, which
//! a promotion into a faster tier carries over. Times are milliseconds since the Unix epoch from
//! the cache's clock, so `Age` stays correct whichever tier answers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::{BufMut, Bytes, BytesMut};

use super::compress::{decompress, Encoded};
use super::entry::{CachedResponse, Slot};
use crate::http::encoding::Coding;

const MAGIC: u8 = 0x74; // 't'
/// The record format this build writes and reads. Bump it on any layout change; the Redis key
/// prefix carries it too, so two versions sharing a Redis never read each other's records.
pub const FORMAT_VERSION: u8 = 2;
/// Older versions this build still reads (their layout is a subset of this one's).
const READS_VERSIONS: [u8; 2] = [1, FORMAT_VERSION];
const HEADER_LEN: usize = 2 + 8 + 8;

const F_NO_CACHE: u8 = 1;
const F_NO_STALE: u8 = 1 << 1;
const F_ORIGIN_ETAG: u8 = 1 << 2;
const F_ETAG: u8 = 1 << 3;
const F_LAST_MODIFIED: u8 = 1 << 4;
const F_ENCODED: u8 = 1 << 5;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a tierd record")]
    Foreign,
    #[error("record format version {0}, this build reads {FORMAT_VERSION}")]
    Version(u8),
    #[error("record truncated")]
    Truncated,
    #[error("record malformed: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// A bounded label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeError::Foreign => "foreign",
            DecodeError::Version(_) => "version",
            DecodeError::Truncated => "truncated",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Encodes `slot`, kept until `keep_until`, for a tier that must drop it at `tier_expires`.
pub fn encode(slot: &Slot, keep_until: SystemTime, tier_expires: SystemTime) -> Bytes {
    let size: usize = slot.variants.iter().map(|v| v.weight() + 64).sum::<usize>() + HEADER_LEN + 8;
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(MAGIC);
    out.put_u8(FORMAT_VERSION);
    out.put_u64_le(millis(tier_expires));
    out.put_u64_le(millis(keep_until));
    put_varint(&mut out, slot.variants.len() as u64);
    for v in slot.variants.iter() {
        encode_variant(&mut out, v);
    }
    out.freeze()
}

fn encode_variant(out: &mut BytesMut, v: &CachedResponse) {
    out.put_u16_le(v.status.as_u16());
    put_varint(out, millis(v.response_time));
    put_varint(out, v.initial_age);
    put_varint(out, v.lifetime);
    put_varint(out, v.stale_while_revalidate);
    put_varint(out, v.stale_if_error);
    let mut flags = 0;
    if v.no_cache {
        flags |= F_NO_CACHE;
    }
    if v.no_stale {
        flags |= F_NO_STALE;
    }
    if v.origin_etag {
        flags |= F_ORIGIN_ETAG;
    }
    if v.etag.is_some() {
        flags |= F_ETAG;
    }
    if v.last_modified.is_some() {
        flags |= F_LAST_MODIFIED;
    }
    if v.encoded.is_some() {
        flags |= F_ENCODED;
    }
    out.put_u8(flags);
    if let Some(e) = &v.etag {
        put_bytes(out, e.as_bytes());
    }
    if let Some(lm) = &v.last_modified {
        put_bytes(out, lm.as_bytes());
    }
    if let Some(enc) = &v.encoded {
        out.put_u8(match enc.coding {
            Coding::Gzip => 0,
            Coding::Br => 1,
        });
        put_varint(out, v.body.len() as u64);
    }
    put_varint(out, v.headers.len() as u64);
    for (n, val) in v.headers.iter() {
        put_bytes(out, n.as_str().as_bytes());
        put_bytes(out, val.as_bytes());
    }
    put_varint(out, v.vary.len() as u64);
    for (n, val) in v.vary.iter() {
        put_bytes(out, n.as_str().as_bytes());
        match val {
            Some(b) => {
                out.put_u8(1);
                put_bytes(out, b);
            }
            None => out.put_u8(0),
        }
    }
    put_varint(out, v.tags.len() as u64);
    for t in v.tags.iter() {
        put_bytes(out, t.as_bytes());
    }
    match &v.encoded {
        Some(enc) => put_bytes(out, &enc.body),
        None => put_bytes(out, &v.body),
    }
}

/// The tier expiry of a record, read without decoding the rest.
pub fn tier_expires(record: &[u8]) -> Result<SystemTime, DecodeError> {
    check_header(record)?;
    Ok(from_millis(read_u64(&record[2..10])))
}

/// A decoded record.
#[derive(Debug)]
pub struct Decoded {
    pub slot: Slot,
    /// When the tier that held the record had to stop serving it.
    pub tier_expires: SystemTime,
    /// When the entry itself is no longer kept anywhere.
    pub keep_until: SystemTime,
}

/// Decodes a record; the slot's `keep_for` is what remains of its keep time at `now`. Bodies
/// share `record`'s buffer (no copy).
pub fn decode(record: Bytes, now: SystemTime) -> Result<Decoded, DecodeError> {
    check_header(&record)?;
    let tier_expires = from_millis(read_u64(&record[2..10]));
    let keep_until = from_millis(read_u64(&record[10..18]));
    let mut r = Reader {
        buf: &record,
        pos: HEADER_LEN,
    };
    let n = r.count()?;
    if n == 0 {
        return Err(DecodeError::Malformed("no variants"));
    }
    let mut variants = Vec::with_capacity(n);
    for _ in 0..n {
        variants.push(Arc::new(decode_variant(&mut r)?));
    }
    if r.pos != record.len() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    let keep_for = keep_until
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1));
    Ok(Decoded {
        slot: Slot::kept_for(variants, keep_for),
        tier_expires,
        keep_until,
    })
}

fn check_header(record: &[u8]) -> Result<(), DecodeError> {
    match record {
        [MAGIC, v, ..] if READS_VERSIONS.contains(v) && record.len() >= HEADER_LEN => Ok(()),
        [MAGIC, v, ..] if READS_VERSIONS.contains(v) => Err(DecodeError::Truncated),
        [MAGIC, v, ..] => Err(DecodeError::Version(*v)),
        _ => Err(DecodeError::Foreign),
    }
}

fn decode_variant(r: &mut Reader<'_>) -> Result<CachedResponse, DecodeError> {
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Malformed("status"))?;
    let response_time = from_millis(r.varint()?);
    let initial_age = r.varint()?;
    let lifetime = r.varint()?;
    let stale_while_revalidate = r.varint()?;
    let stale_if_error = r.varint()?;
    let flags = r.u8()?;
    let etag = if flags & F_ETAG != 0 {
        Some(r.header_value()?)
    } else {
        None
    };
    let last_modified = if flags & F_LAST_MODIFIED != 0 {
        Some(r.header_value()?)
    } else {
        None
    };
    let coded = if flags & F_ENCODED != 0 {
        let coding = match r.u8()? {
            0 => Coding::Gzip,
            1 => Coding::Br,
            _ => return Err(DecodeError::Malformed("coding")),
        };
        let len = usize::try_from(r.varint()?).map_err(|_| DecodeError::Malformed("length"))?;
        Some((coding, len))
    } else {
        None
    };
    let n = r.count()?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        headers.push((r.header_name()?, r.header_value()?));
    }
    let n = r.count()?;
    let mut vary = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.header_name()?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?),
            _ => return Err(DecodeError::Malformed("vary")),
        };
        vary.push((name, value));
    }
    let n = r.count()?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        let b = r.slice()?;
        tags.push(
            std::str::from_utf8(b)
                .map_err(|_| DecodeError::Malformed("tag"))?
                .to_owned(),
        );
    }
    let (body, encoded) = match coded {
        None => (r.bytes()?, None),
        Some((coding, len)) => {
            let compressed = r.bytes()?;
            let body = decompress(coding, &compressed, len)
                .map_err(|_| DecodeError::Malformed("compressed body"))?;
            let enc = Encoded::new(coding, compressed, etag.as_ref(), &headers);
            (body, Some(enc))
        }
    };
    Ok(CachedResponse {
        status,
        headers: headers.into_boxed_slice(),
        body,
        response_time,
        initial_age,
        lifetime,
        stale_while_revalidate,
        stale_if_error,
        no_cache: flags & F_NO_CACHE != 0,
        no_stale: flags & F_NO_STALE != 0,
        etag,
        origin_etag: flags & F_ORIGIN_ETAG != 0,
        last_modified,
        vary: vary.into_boxed_slice(),
        tags: tags.into_boxed_slice(),
        encoded,
    })
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.put_slice(b);
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint"))
    }

    /// A count of items that each take at least one byte, so a corrupt count can't make the
    /// decoder allocate more than the record holds.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn slice(&mut self) -> Result<&[u8], DecodeError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(self.buf.slice(start..self.pos))
    }

    fn header_name(&mut self) -> Result<HeaderName, DecodeError> {
        HeaderName::from_bytes(self.slice()?).map_err(|_| DecodeError::Malformed("header name"))
    }

    fn header_value(&mut self) -> Result<HeaderValue, DecodeError> {
        HeaderValue::from_maybe_shared(self.bytes()?)
            .map_err(|_| DecodeError::Malformed("header value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header;

    fn entry(body: &'static str, vary: Option<&'static str>) -> CachedResponse {
        CachedResponse {
            status: StatusCode::OK,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, HeaderValue::from_static("\"v1\"")),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=60"),
                ),
            ]
            .into_boxed_slice(),
            body: Bytes::from_static(body.as_bytes()),
            response_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            initial_age: 3,
            lifetime: 60,
            stale_while_revalidate: 5,
            stale_if_error: 300,
            no_cache: false,
            no_stale: true,
            etag: Some(HeaderValue::from_static("\"v1\"")),
            origin_etag: true,
            last_modified: None,
            vary: match vary {
                Some(v) => vec![
                    (
                        header::ACCEPT_LANGUAGE,
                        Some(Bytes::from_static(v.as_bytes())),
                    ),
                    (header::ACCEPT_ENCODING, None),
                ]
                .into_boxed_slice(),
                None => Box::new([]),
            },
            tags: vec!["assessment:7".to_owned(), "all".to_owned()].into_boxed_slice(),
            encoded: None,
        }
    }

    fn slot() -> Slot {
        Slot::kept_for(
            vec![
                Arc::new(entry("{\"a\":1}", Some("en"))),
                Arc::new(entry("x", Some("fr"))),
            ],
            Duration::from_secs(100),
        )
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_010);
        let keep_until = now + Duration::from_secs(100);
        let tier_expires = now + Duration::from_secs(30);
        let bytes = encode(&slot(), keep_until, tier_expires);
        let d = decode(bytes.clone(), now + Duration::from_secs(40)).expect("decodes");
        assert_eq!(d.tier_expires, tier_expires);
        assert_eq!(d.keep_until, keep_until);
        assert_eq!(d.slot.keep_for, Duration::from_secs(60));
        assert_eq!(tier_expires_of(&bytes), tier_expires);
        let (a, b) = (&d.slot.variants[0], &slot().variants[0].clone());
        assert_eq!(a.status, b.status);
        assert_eq!(a.headers, b.headers);
        assert_eq!(a.body, b.body);
        assert_eq!(a.response_time, b.response_time);
        assert_eq!(
            (
                a.initial_age,
                a.lifetime,
                a.stale_while_revalidate,
                a.stale_if_error
            ),
            (3, 60, 5, 300)
        );
        assert_eq!((a.no_cache, a.no_stale, a.origin_etag), (false, true, true));
        assert_eq!(a.etag, b.etag);
        assert_eq!(a.last_modified, None);
        assert_eq!(a.vary, b.vary);
        assert_eq!(a.tags, b.tags);
        assert_eq!(d.slot.variants[1].body, Bytes::from_static(b"x"));
        assert_eq!(
            d.slot.weight as usize,
            a.weight() + d.slot.variants[1].weight()
        );
    }

    #[test]
    fn a_compressed_entry_stores_only_its_compressed_copy_and_decodes_whole() {
        let body = "{\"k\": \"vvvvvvvvvvvvvvvv\"}, ".repeat(100);
        for coding in [Coding::Gzip, Coding::Br] {
            let mut e = entry("", None);
            e.body = Bytes::from(body.clone());
            let z = crate::cache::compress::compress(coding, 5, body.as_bytes()).unwrap();
            e.encoded = Some(Encoded::new(coding, z.clone(), e.etag.as_ref(), &e.headers));
            let s = Slot::kept_for(vec![Arc::new(e)], Duration::from_secs(100));
            let now = UNIX_EPOCH + Duration::from_secs(1_700_000_010);
            let bytes = encode(
                &s,
                now + Duration::from_secs(100),
                now + Duration::from_secs(30),
            );
            assert!(
                bytes.len() < z.len() + 300,
                "{coding:?}: {} bytes",
                bytes.len()
            );
            let d = decode(bytes.clone(), now).expect("decodes");
            let v = &d.slot.variants[0];
            assert_eq!(v.body, body.as_bytes(), "{coding:?}");
            let enc = v.encoded.as_ref().expect("compressed copy kept");
            assert_eq!((enc.coding, &enc.body), (coding, &z));
            assert_eq!(
                enc.etag.as_ref().map(|e| e.as_bytes().to_vec()),
                Some(format!("\"v1-{}\"", coding.as_str()).into_bytes())
            );
            // A flipped byte in a gzip body fails its CRC-32: a malformed record, never a wrong
            // body. (Brotli carries no checksum; the stores' own integrity covers it.)
            if coding == Coding::Gzip {
                let mut damaged = bytes.to_vec();
                let at = damaged.len() - 10;
                damaged[at] ^= 0xff;
                assert!(decode(Bytes::from(damaged), now).is_err());
            }
        }
    }

    #[test]
    fn version_1_records_still_decode() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_010);
        let mut bytes = encode(&slot(), now + Duration::from_secs(100), now).to_vec();
        bytes[1] = 1;
        assert!(decode(Bytes::from(bytes), now).is_ok());
    }

    fn tier_expires_of(b: &[u8]) -> SystemTime {
        tier_expires(b).expect("header")
    }

    #[test]
    fn keep_for_never_drops_below_a_second() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let bytes = encode(&slot(), now, now);
        let d = decode(bytes, now + Duration::from_secs(10)).expect("decodes");
        assert_eq!(d.slot.keep_for, Duration::from_secs(1));
    }

    #[test]
    fn old_foreign_and_damaged_bytes_are_errors_not_panics() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let good = encode(&slot(), now, now);
        let mut old = good.to_vec();
        old[1] = 0;
        assert_eq!(
            decode(Bytes::from(old), now).err(),
            Some(DecodeError::Version(0))
        );
        assert_eq!(
            decode(Bytes::from_static(b"{\"json\":true}"), now).err(),
            Some(DecodeError::Foreign)
        );
        assert_eq!(decode(Bytes::new(), now).err(), Some(DecodeError::Foreign));
        // Every truncation of a valid record fails cleanly.
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut), now).is_err(), "cut at {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(decode(Bytes::from(trailing), now).is_err());
        // Flipping any single byte never panics (it may still decode when the byte is a time).
        for i in 0..good.len() {
            let mut b = good.to_vec();
            b[i] ^= 0xff;
            let _ = decode(Bytes::from(b), now);
        }
    }
}
