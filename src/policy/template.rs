//! Route templates: `/api/assessments/{id}`, `/static/{*rest}`.
//!
//! A template is a sequence of `/`-separated segments. A segment is a literal, a parameter
//! `{name}` (exactly one non-empty segment), or, last only, a tail `{*name}` (the rest of the
//! path, possibly empty). Matching is on the raw path as sent (percent-encoding kept), segment by
//! segment; the template string itself is the `route` metric label.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Tail(String),
}

/// A parsed route template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// Parameter values captured by a match, in template order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// Why a template is malformed; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `source`.
    ///
    /// ```
    /// use tierd::policy::Template;
    /// let t = Template::parse("/api/assessments/{id}").unwrap();
    /// let p = t.matches("/api/assessments/42").unwrap();
    /// assert_eq!(p.get("id"), Some("42"));
    /// assert!(t.matches("/api/assessments/42/extra").is_none());
    /// ```
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let err = |m: String| Err(TemplateError(m));
        if !source.starts_with('/') {
            return err(format!("'{source}' must start with '/'"));
        }
        if source.contains(['?', '#'])
            || source.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return err(format!(
                "'{source}' must be a path only (no query, fragment, spaces or control characters)"
            ));
        }
        let parts: Vec<&str> = source[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (tail, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if !valid_name(name) {
                    return err(format!(
                        "'{source}': parameter '{{{inner}}}' needs a name of letters, digits and '_', e.g. {{id}} or {{*rest}}"
                    ));
                }
                if names.contains(&name) {
                    return err(format!("'{source}': parameter '{name}' appears twice"));
                }
                names.push(name);
                if tail {
                    if i + 1 != parts.len() {
                        return err(format!(
                            "'{source}': the tail parameter '{{*{name}}}' must be the last segment"
                        ));
                    }
                    Segment::Tail(name.to_owned())
                } else {
                    Segment::Param(name.to_owned())
                }
            } else {
                // A glob is what people write for "everything below"; a literal `*` in a route
                // would only ever match a path with a `*` in it.
                if part.contains('*') {
                    return err(format!(
                        "'{source}': segment '{part}' is a glob; templates use {{name}} for one segment and {{*rest}} for the rest, e.g. /tenant/{{*rest}}"
                    ));
                }
                if part.contains(['{', '}']) {
                    return err(format!(
                        "'{source}': segment '{part}' mixes text and braces; a parameter is a whole segment, e.g. /files/{{name}}"
                    ));
                }
                Segment::Literal((*part).to_owned())
            };
            segments.push(seg);
        }
        Ok(Template {
            source: source.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template names the parameter `name`.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(n) | Segment::Tail(n) if n == name))
    }

    /// The parameters captured when `path` (no query) matches.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let rest = path.strip_prefix('/')?;
        let mut params = Params::default();
        let mut remaining = Some(rest);
        for seg in &self.segments {
            match seg {
                Segment::Tail(name) => {
                    params.pairs.push((name.as_str(), remaining?));
                    return Some(params);
                }
                _ => {
                    let r = remaining?;
                    let (part, next) = match r.find('/') {
                        Some(i) => (&r[..i], Some(&r[i + 1..])),
                        None => (r, None),
                    };
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Param(name) if !part.is_empty() => {
                            params.pairs.push((name.as_str(), part))
                        }
                        _ => return None,
                    }
                    remaining = next;
                }
            }
        }
        remaining.is_none().then_some(params)
    }
}

/// Replaces `{name}` placeholders in `text` with captured values.
pub fn expand(text: &str, params: &Params<'_>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                out.push_str(params.get(name).unwrap_or_default());
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{name}` placeholders in `text`, or an error for an unclosed brace.
pub fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("'{text}' has an unclosed '{{'"))?;
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("'{text}' has a '}}' without '{{'"));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_param_and_tail() {
        let t = Template::parse("/api/assessments/{id}").unwrap();
        assert_eq!(
            t.matches("/api/assessments/7").unwrap().get("id"),
            Some("7")
        );
        for miss in [
            "/api/assessments/",
            "/api/assessments",
            "/api/assessments/7/x",
            "/api/other/7",
            "",
        ] {
            assert!(t.matches(miss).is_none(), "{miss}");
        }
        let s = Template::parse("/static/{*rest}").unwrap();
        assert_eq!(
            s.matches("/static/a/b.css").unwrap().get("rest"),
            Some("a/b.css")
        );
        assert_eq!(s.matches("/static/").unwrap().get("rest"), Some(""));
        assert!(s.matches("/static").is_none());
        assert!(s.matches("/staticx/a").is_none());
        let root = Template::parse("/").unwrap();
        assert!(root.matches("/").is_some());
        assert!(root.matches("/a").is_none());
        let two = Template::parse("/u/{user}/posts/{post}").unwrap();
        let p = two.matches("/u/ann/posts/3").unwrap();
        assert_eq!((p.get("user"), p.get("post")), (Some("ann"), Some("3")));
    }

    #[test]
    fn malformed_templates_say_why() {
        for (bad, says) in [
            ("api/x", "must start with '/'"),
            ("/a/{id", "mixes text and braces"),
            ("/a/x{id}", "mixes text and braces"),
            (
                "/tenant/*",
                "is a glob; templates use {name} for one segment and {*rest}",
            ),
            ("/a/*.css", "is a glob"),
            ("/a/{}", "needs a name"),
            ("/a/{1x}", "needs a name"),
            ("/a/{*rest}/b", "must be the last segment"),
            ("/a/{id}/{id}", "appears twice"),
            ("/a?x=1", "path only"),
            ("/a b", "path only"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn expansion() {
        let t = Template::parse("/a/{id}/{*rest}").unwrap();
        let p = t.matches("/a/9/x/y").unwrap();
        assert_eq!(expand("assessment:{id}", &p), "assessment:9");
        assert_eq!(expand("/b/{rest}", &p), "/b/x/y");
        assert_eq!(placeholders("a:{id}:{rest}").unwrap(), vec!["id", "rest"]);
        assert!(placeholders("a:{id").is_err());
        assert!(placeholders("a:id}").is_err());
    }
}
