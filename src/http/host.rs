//! The authority a request names (RFC 9110 §7.2, RFC 3986 §3.2.2): validated once at the edge
//! (a `Host` that is not a `host[:port]` gets 400) and normalised the same way wherever a cache
//! key or a purge selector is built, so that equivalent spellings share one key and no spelling
//! can reach into another key's path.

use actix_web::http::header::{HeaderMap, HOST};
use actix_web::http::Uri;

/// The raw authority a request names (RFC 9112 §3.2.2): the target's authority when the target
/// is in absolute form (`GET http://victim.test/x`; a `Host` field is then ignored), else the
/// `Host` field. The cache key, purges and the request forwarded to the origin all take the host
/// from here, so what is stored under a host is what the origin answered for that host.
pub fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    match uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => headers.get(HOST).map(|h| h.as_bytes()),
    }
}

/// Whether `raw` is a valid `host[:port]`: a registered name (letters, digits, `-._~`, `%`-escapes
/// and sub-delimiters), an IPv4 address, or an IP literal in brackets, then an optional decimal
/// port. No `/ ? # @`, whitespace, control or non-ASCII bytes.
pub fn is_valid(raw: &[u8]) -> bool {
    split(raw).is_some()
}

/// Host and port (possibly empty) of a valid authority.
fn split(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    if raw.is_empty() || raw.len() > 255 {
        return None;
    }
    let (host, port) = if raw[0] == b'[' {
        let end = raw.iter().position(|&b| b == b']')?;
        let inner = &raw[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match &raw[end + 1..] {
            [] => (&raw[..=end], &[][..]),
            [b':', port @ ..] => (&raw[..=end], port),
            _ => return None,
        }
    } else {
        let (host, port) = match raw.iter().rposition(|&b| b == b':') {
            Some(i) => (&raw[..i], &raw[i + 1..]),
            None => (raw, &[][..]),
        };
        if host.is_empty() || !host.iter().all(|&b| reg_name_byte(b)) {
            return None;
        }
        (host, port)
    };
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((host, port))
}

fn reg_name_byte(b: u8) -> bool {
    REG_NAME[usize::from(b)]
}

/// The bytes of a registered name (RFC 3986 §3.2.2: unreserved, `%` and sub-delimiters), as a
/// table: every request's host is checked twice (the guard, the key).
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    t
};

/// Appends the normalised authority to `out`: lower-case, without a trailing dot, without the
/// default port (80, the gateway speaks plain HTTP) or an empty one. An invalid authority (the
/// guard answers those with 400 before they get here) is appended with every byte that could
/// reach into a path replaced by `_`.
pub fn push_normalized(out: &mut String, raw: &[u8]) {
    match split(raw) {
        Some((host, port)) => {
            let host = host.strip_suffix(b".").unwrap_or(host);
            // A valid authority is ASCII (`split` checked every byte).
            let start = out.len();
            out.push_str(std::str::from_utf8(host).unwrap_or_default());
            out[start..].make_ascii_lowercase();
            if !port.is_empty() && port != b"80" {
                out.push(':');
                out.push_str(std::str::from_utf8(port).unwrap_or_default());
            }
        }
        None => {
            for &b in raw {
                out.push(if reg_name_byte(b) || b == b':' {
                    char::from(b.to_ascii_lowercase())
                } else {
                    '_'
                });
            }
        }
    }
}

/// The normalised authority as a new string.
pub fn normalized(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len());
    push_normalized(&mut s, raw);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 9110 §7.2, RFC 3986 §3.2.2: what a Host may be.
    #[test]
    fn valid_and_invalid_hosts() {
        for ok in [
            "victim.test",
            "victim.test:8080",
            "VICTIM.test.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "a-b_c~d",
            "xn--bcher-kva.example",
        ] {
            assert!(is_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "victim.test/account",
            "victim.test?x",
            "victim.test#x",
            "user@victim.test",
            "victim.test:80:80",
            "victim.test:8o",
            "victim.test:123456",
            "vic tim.test",
            "victim.test\t",
            "[::1",
            "[]",
            "[::1]x",
            ":80",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_valid("bücher.test".as_bytes()));
        assert!(!is_valid(b"victim\x00.test"));
        assert!(!is_valid(b"victim\xff.test"));
    }

    // Equivalent spellings share one key: case, a trailing dot, the default port.
    #[test]
    fn normalisation() {
        for same in [
            "victim.test",
            "VICTIM.TEST",
            "victim.test.",
            "victim.test:80",
            "victim.test:",
        ] {
            assert_eq!(normalized(same.as_bytes()), "victim.test", "{same}");
        }
        assert_eq!(normalized(b"Victim.Test:8080"), "victim.test:8080");
        assert_eq!(normalized(b"[::1]:80"), "[::1]");
        assert_eq!(normalized(b"victim.test/account"), "victim.test_account");
    }
}
