//! `Cache-Control` parsing (RFC 9111 §5.2), tolerant of malformed input.
//!
//! Parsing never fails: unknown directives are ignored, and a directive whose argument is invalid
//! or repeated is recorded as [`Delta::Invalid`], which freshness treats as "already stale"
//! (RFC 9111 §4.2.1, §1.2.2).

/// The largest delta-seconds value kept; larger values are clamped (RFC 9111 §1.2.2).
pub const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// A delta-seconds argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A valid, possibly clamped, number of seconds.
    Valid(u64),
    /// Missing, malformed or conflicting (duplicate) argument.
    Invalid,
}

impl Delta {
    /// The number of seconds, with invalid treated as zero (stale).
    pub fn secs_or_zero(self) -> u64 {
        match self {
            Delta::Valid(s) => s,
            Delta::Invalid => 0,
        }
    }
}

/// A directive that may be unqualified or carry a list of field names (`no-cache="Set-Cookie"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FieldList {
    /// The directive applies to the whole response.
    #[default]
    All,
    /// The directive applies to the named fields only (lower-cased).
    Fields(Vec<String>),
}

/// The parsed directives of one message's `Cache-Control` header lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheControl {
    pub max_age: Option<Delta>,
    pub s_maxage: Option<Delta>,
    pub no_store: bool,
    pub no_cache: Option<FieldList>,
    pub private: Option<FieldList>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub immutable: bool,
    pub only_if_cached: bool,
    pub stale_while_revalidate: Option<Delta>,
    pub stale_if_error: Option<Delta>,
    /// Request `max-stale`: `Some(None)` means any staleness is acceptable.
    pub max_stale: Option<Option<Delta>>,
    pub min_fresh: Option<Delta>,
}

impl CacheControl {
    /// Parses every line of the header (several lines are one comma-separated list).
    pub fn parse<'a, I>(lines: I) -> Self
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut cc = CacheControl::default();
        for line in lines {
            for (name, arg) in Directives::new(line) {
                cc.apply(name, arg);
            }
        }
        cc
    }

    /// True when no directive was recognised.
    pub fn is_empty(&self) -> bool {
        *self == CacheControl::default()
    }

    fn apply(&mut self, name: &[u8], arg: Option<Arg<'_>>) {
        let eq = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if eq("max-age") {
            set_delta(&mut self.max_age, arg);
        } else if eq("s-maxage") {
            set_delta(&mut self.s_maxage, arg);
        } else if eq("no-store") {
            self.no_store = true;
        } else if eq("no-cache") {
            merge_fields(&mut self.no_cache, arg);
        } else if eq("private") {
            merge_fields(&mut self.private, arg);
        } else if eq("public") {
            self.public = true;
        } else if eq("must-revalidate") {
            self.must_revalidate = true;
        } else if eq("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if eq("must-understand") {
            self.must_understand = true;
        } else if eq("no-transform") {
            self.no_transform = true;
        } else if eq("immutable") {
            self.immutable = true;
        } else if eq("only-if-cached") {
            self.only_if_cached = true;
        } else if eq("stale-while-revalidate") {
            set_delta(&mut self.stale_while_revalidate, arg);
        } else if eq("stale-if-error") {
            set_delta(&mut self.stale_if_error, arg);
        } else if eq("min-fresh") {
            set_delta(&mut self.min_fresh, arg);
        } else if eq("max-stale") {
            self.max_stale = Some(match (self.max_stale, arg) {
                (None, None) => None,
                (None, Some(a)) => Some(parse_delta(a)),
                // Repeated: conflicting, so the most conservative reading.
                _ => Some(Delta::Valid(0)),
            });
        }
    }
}

fn set_delta(slot: &mut Option<Delta>, arg: Option<Arg<'_>>) {
    *slot = Some(match (*slot, arg) {
        (None, Some(a)) => parse_delta(a),
        // A repeated directive or one without its argument: invalid (treated as stale).
        _ => Delta::Invalid,
    });
}

fn merge_fields(slot: &mut Option<FieldList>, arg: Option<Arg<'_>>) {
    let new = match arg {
        None => FieldList::All,
        Some(a) => {
            let fields: Vec<String> = a
                .text()
                .split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .filter(|f| !f.is_empty())
                .collect();
            if fields.is_empty() {
                FieldList::All
            } else {
                FieldList::Fields(fields)
            }
        }
    };
    *slot = Some(match (slot.take(), new) {
        (None, n) => n,
        (Some(FieldList::All), _) | (_, FieldList::All) => FieldList::All,
        (Some(FieldList::Fields(mut a)), FieldList::Fields(b)) => {
            a.extend(b);
            FieldList::Fields(a)
        }
    });
}

/// Parses delta-seconds: 1*DIGIT, clamped to [`MAX_DELTA_SECONDS`]. Quoted values are accepted
/// (a common sender error, and RFC 9111 §5.2 asks recipients to accept both forms).
pub fn parse_delta(arg: Arg<'_>) -> Delta {
    let bytes = arg.raw();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Delta::Invalid;
    }
    let mut value: u64 = 0;
    for b in bytes {
        value = value.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if value > MAX_DELTA_SECONDS {
            return Delta::Valid(MAX_DELTA_SECONDS);
        }
    }
    Delta::Valid(value)
}

/// A directive argument: a token or the inside of a quoted-string (escapes kept raw).
#[derive(Debug, Clone, Copy)]
pub struct Arg<'a>(&'a [u8]);

impl<'a> Arg<'a> {
    fn raw(&self) -> &'a [u8] {
        self.0
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(self.0).into_owned()
    }
}

/// Iterates `name[=value]` directives of one comma-separated line, honouring quoted strings.
struct Directives<'a> {
    rest: &'a [u8],
}

impl<'a> Directives<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self { rest: line }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a [u8], Option<Arg<'a>>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // The name runs to '=' or ','.
            let end = self
                .rest
                .iter()
                .position(|&b| b == b'=' || b == b',')
                .unwrap_or(self.rest.len());
            let name = trim(&self.rest[..end]);
            let mut arg = None;
            if end < self.rest.len() && self.rest[end] == b'=' {
                let after = &self.rest[end + 1..];
                let lead = after.len() - trim_start_len(after);
                let after_ws = &after[lead..];
                if after_ws.first() == Some(&b'"') {
                    // Quoted string: up to the closing unescaped quote.
                    let body = &after_ws[1..];
                    let mut i = 0;
                    let mut close = None;
                    while i < body.len() {
                        match body[i] {
                            b'\\' => i += 2,
                            b'"' => {
                                close = Some(i);
                                break;
                            }
                            _ => i += 1,
                        }
                    }
                    match close {
                        Some(c) => {
                            arg = Some(Arg(&body[..c]));
                            let tail = &body[c + 1..];
                            let comma = tail.iter().position(|&b| b == b',');
                            self.rest = match comma {
                                Some(p) => &tail[p + 1..],
                                None => &[],
                            };
                        }
                        None => {
                            // Unterminated quote: the rest of the line is garbage.
                            arg = Some(Arg(b""));
                            self.rest = &[];
                        }
                    }
                } else {
                    let comma = after.iter().position(|&b| b == b',');
                    let (value, rest) = match comma {
                        Some(p) => (&after[..p], &after[p + 1..]),
                        None => (after, &[][..]),
                    };
                    arg = Some(Arg(trim(value)));
                    self.rest = rest;
                }
            } else {
                self.rest = if end < self.rest.len() {
                    &self.rest[end + 1..]
                } else {
                    &[]
                };
            }
            if name.is_empty() {
                continue;
            }
            return Some((name, arg));
        }
    }
}

fn trim_start_len(s: &[u8]) -> usize {
    s.iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|p| s.len() - p)
        .unwrap_or(0)
}

/// Parses delta-seconds from raw header bytes (surrounding whitespace allowed).
pub fn parse_delta_bytes(v: &[u8]) -> Delta {
    parse_delta(Arg(trim(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> CacheControl {
        CacheControl::parse([s.as_bytes()])
    }

    // RFC 9111 §5.2: directives are case-insensitive, comma-separated, optional arguments.
    #[test]
    fn parses_the_common_directives() {
        let c = cc("Public, MAX-AGE=60, s-maxage=30, must-revalidate, stale-while-revalidate=5");
        assert!(c.public && c.must_revalidate);
        assert_eq!(c.max_age, Some(Delta::Valid(60)));
        assert_eq!(c.s_maxage, Some(Delta::Valid(30)));
        assert_eq!(c.stale_while_revalidate, Some(Delta::Valid(5)));
    }

    // RFC 9111 §4.2.1: duplicate max-age is a conflict; treat as stale.
    #[test]
    fn duplicate_max_age_is_invalid() {
        assert_eq!(cc("max-age=60, max-age=60").max_age, Some(Delta::Invalid));
        let two_lines = CacheControl::parse([&b"max-age=1"[..], &b"max-age=2"[..]]);
        assert_eq!(two_lines.max_age, Some(Delta::Invalid));
    }

    // RFC 9111 §1.2.2: invalid delta-seconds; very large values clamp to 2^31.
    #[test]
    fn delta_seconds_validation_and_clamping() {
        let table = [
            ("max-age=abc", Some(Delta::Invalid)),
            ("max-age=-1", Some(Delta::Invalid)),
            ("max-age=", Some(Delta::Invalid)),
            ("max-age", Some(Delta::Invalid)),
            ("max-age=1.5", Some(Delta::Invalid)),
            ("max-age=\"30\"", Some(Delta::Valid(30))),
            (
                "max-age=99999999999999999999999",
                Some(Delta::Valid(MAX_DELTA_SECONDS)),
            ),
            ("max-age=2147483649", Some(Delta::Valid(MAX_DELTA_SECONDS))),
            ("max-age=0", Some(Delta::Valid(0))),
        ];
        for (input, want) in table {
            assert_eq!(cc(input).max_age, want, "{input}");
        }
    }

    // RFC 9111 §5.2.2.4 / §5.2.2.7: qualified no-cache and private carry field names.
    #[test]
    fn qualified_field_lists() {
        let c = cc("no-cache=\"Set-Cookie, X-Foo\", private=\"x-bar\"");
        assert_eq!(
            c.no_cache,
            Some(FieldList::Fields(vec!["set-cookie".into(), "x-foo".into()]))
        );
        assert_eq!(c.private, Some(FieldList::Fields(vec!["x-bar".into()])));
        assert_eq!(cc("private").private, Some(FieldList::All));
        assert_eq!(
            cc("no-cache, no-cache=\"a\"").no_cache,
            Some(FieldList::All)
        );
    }

    #[test]
    fn garbage_never_panics_and_is_ignored() {
        for g in [
            "",
            ",,,",
            "=",
            "=5",
            "\"",
            "max-age=\"",
            "no-cache=\"unterminated",
            "\u{0}\u{1}",
            "max-age=5,,,public",
            ";;;;",
        ] {
            let _ = cc(g);
        }
        let c = cc(",, max-age=5 ,,public ,");
        assert_eq!(c.max_age, Some(Delta::Valid(5)));
        assert!(c.public);
        let bytes = CacheControl::parse([&[
            0xff, 0xfe, b',', b'n', b'o', b'-', b's', b't', b'o', b'r', b'e',
        ][..]]);
        assert!(bytes.no_store);
    }

    // RFC 9111 §5.2.1: request directives.
    #[test]
    fn request_directives() {
        let c = cc("max-stale, min-fresh=10, only-if-cached, no-cache");
        assert_eq!(c.max_stale, Some(None));
        assert_eq!(c.min_fresh, Some(Delta::Valid(10)));
        assert!(c.only_if_cached);
        assert_eq!(c.no_cache, Some(FieldList::All));
        assert_eq!(cc("max-stale=5").max_stale, Some(Some(Delta::Valid(5))));
    }
}
