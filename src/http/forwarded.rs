//! `Forwarded` (RFC 7239 §4): a list of elements, each `name=value` pairs separated by `;`,
//! values tokens or quoted strings (which may hold `,` and `;`).

/// Calls `f` once per element of one `Forwarded` field line, left to right, with its `for=`
/// value (unquoted), or `None` when the element has none or does not parse.
pub fn for_each_for(line: &[u8], mut f: impl FnMut(Option<Vec<u8>>)) {
    let mut rest = line;
    loop {
        let (element, next) = split_outside_quotes(rest, b',');
        if !element.trim_ascii().is_empty() {
            f(for_value(element));
        }
        match next {
            Some(n) => rest = n,
            None => return,
        }
    }
}

/// The `for=` value of one element; `None` when absent, repeated or malformed.
fn for_value(element: &[u8]) -> Option<Vec<u8>> {
    let mut found = None;
    let mut rest = element;
    loop {
        let (pair, next) = split_outside_quotes(rest, b';');
        let pair = pair.trim_ascii();
        if !pair.is_empty() {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return None;
            }
            let value = unquote(value)?;
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
        }
        match next {
            Some(n) => rest = n,
            None => return found,
        }
    }
}

/// `(before, Some(after))` at the first `sep` outside a quoted string, else `(all, None)`.
fn split_outside_quotes(s: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if !quoted && b == sep {
            return (&s[..i], Some(&s[i + 1..]));
        }
    }
    (s, None)
}

/// A token as it is, a quoted string without its quotes and escapes; `None` for anything else.
fn unquote(v: &[u8]) -> Option<Vec<u8>> {
    match v {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if escaped {
                    out.push(b);
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    return None;
                } else {
                    out.push(b);
                }
            }
            (!escaped).then_some(out)
        }
        _ if !v.is_empty() && v.iter().all(|&b| is_tchar(b)) => Some(v.to_vec()),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fors(line: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for_each_for(line.as_bytes(), |v| {
            out.push(v.map(|v| String::from_utf8(v).unwrap()))
        });
        out
    }

    #[test]
    fn elements_and_their_for_values() {
        assert_eq!(
            fors(r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#),
            [
                Some("192.0.2.60".into()),
                Some("[2001:db8:cafe::17]:4711".into())
            ]
        );
        assert_eq!(fors("for=unknown"), [Some("unknown".into())]);
        // A quoted value may hold the separators.
        assert_eq!(
            fors(r#"by="a,b;c";for=10.0.0.1"#),
            [Some("10.0.0.1".into())]
        );
        assert_eq!(fors(r#"for="10.0.0.\1""#), [Some("10.0.0.1".into())]);
        assert_eq!(fors(""), Vec::<Option<String>>::new());
        assert_eq!(fors(" , for=1.2.3.4 ,"), [Some("1.2.3.4".into())]);
    }

    #[test]
    fn malformed_elements_name_nobody() {
        for bad in [
            "proto=http",
            "for=1.2.3.4;for=5.6.7.8",
            "for=\"unterminated",
            "for=[::1]",
            "for",
            "f o r=1.2.3.4",
            "for=\"a\"b\"",
        ] {
            assert_eq!(fors(bad), [None], "{bad}");
        }
    }
}
