//! What a pass warms: the configured URLs, then the most popular URLs of the journal. Pure.

use serde::Serialize;

use crate::journal::sequences::Popular;

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Source {
    /// `[warming] urls`.
    Config,
    /// Popularity in the journal.
    Popular,
    /// Predicted to follow a request a client just made.
    Predicted,
}

/// One URL a pass will warm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub host: String,
    /// `/path?query`.
    pub target: String,
    pub source: Source,
    /// The decayed request count (popular), 0 for configured URLs.
    pub score: f64,
    /// Requests in the window (popular), 0 for configured URLs.
    pub requests: u64,
}

impl Candidate {
    /// The cache key of a plain URL: `host/path?query`.
    pub fn key(&self) -> String {
        format!("{}{}", self.host, self.target)
    }
}

/// The plan of a pass: every configured URL, then up to `top` popular URLs not configured,
/// most popular first (the journal's order).
pub fn plan(config: &[(String, String)], popular: &[Popular], top: usize) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::with_capacity(config.len() + top.min(popular.len()));
    let mut seen = std::collections::HashSet::new();
    for (host, target) in config {
        if seen.insert((host.as_str(), target.as_str())) {
            out.push(Candidate {
                host: host.clone(),
                target: target.clone(),
                source: Source::Config,
                score: 0.0,
                requests: 0,
            });
        }
    }
    let mut taken = 0;
    for p in popular {
        if taken == top {
            break;
        }
        if seen.insert((p.host.as_str(), p.target.as_str())) {
            out.push(Candidate {
                host: p.host.clone(),
                target: p.target.clone(),
                source: Source::Popular,
                score: p.score,
                requests: p.requests,
            });
            taken += 1;
        }
    }
    out
}

/// `http://host[:port]/path?query` or `host/path?query` as (host, target); `None` when it has
/// no host or no path, or a byte a request line cannot carry.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let slash = rest.find('/')?;
    let (host, target) = rest.split_at(slash);
    if host.is_empty() || !sendable(host) || !sendable(target) || target.contains('#') {
        return None;
    }
    Some((host.to_ascii_lowercase(), target.to_owned()))
}

/// Visible ASCII only: what a request line and a `Host` header can carry as they are.
pub fn sendable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn popular(target: &str, score: f64) -> Popular {
        Popular {
            host: "a.example".into(),
            target: target.into(),
            route: "other".into(),
            requests: score as u64,
            score,
        }
    }

    #[test]
    fn configured_urls_come_first_then_the_top_popular_ones_once() {
        let config = vec![("a.example".to_owned(), "/home".to_owned())];
        let pop = [
            popular("/items/1", 9.0),
            popular("/home", 8.0),
            popular("/items/2", 7.0),
            popular("/items/3", 6.0),
        ];
        let p = plan(&config, &pop, 2);
        let got: Vec<(&str, Source)> = p.iter().map(|c| (c.target.as_str(), c.source)).collect();
        assert_eq!(
            got,
            [
                ("/home", Source::Config),
                ("/items/1", Source::Popular),
                ("/items/2", Source::Popular)
            ]
        );
        assert_eq!(p[1].key(), "a.example/items/1");
        assert!(plan(&[], &pop, 0).is_empty());
    }

    #[test]
    fn urls_parse_into_host_and_target() {
        let ok = |u: &str, h: &str, t: &str| {
            assert_eq!(parse_url(u), Some((h.to_owned(), t.to_owned())), "{u}")
        };
        ok(
            "http://API.example:8080/a?b=1",
            "api.example:8080",
            "/a?b=1",
        );
        ok("https://api.example/", "api.example", "/");
        ok("api.example/x", "api.example", "/x");
        for bad in [
            "/no-host",
            "http://host-only",
            "http://h/a b",
            "http://h/a#frag",
            "h/\u{e9}",
            "",
        ] {
            assert_eq!(parse_url(bad), None, "{bad:?}");
        }
    }
}
