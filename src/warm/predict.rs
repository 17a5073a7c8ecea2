//! Next-request prediction: from the journal's per-client sequences, the probability that a
//! request for A is followed by one for B (within a session), by URL and by route template.
//!
//! By URL, `P(B | A) = n(A → B) / (n(A) + 1)`: the `+ 1` keeps one lone observation from
//! reading as certainty (it reads 0.5). By template, a transition counts for the pair of
//! routes when B's path is B's template filled with A's parameters (`/items/{id}` →
//! `/items/{id}/reviews`), so a URL never seen before is predicted from its route's habits:
//! `P(route B | route A) = n(A → B same parameters) / (n(route A) + 1)`, counted over at least
//! [`MIN_TEMPLATE_SUPPORT`] transitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::journal::sequences::Transition;
use crate::policy::{expand, placeholders, Template};

/// Transitions a route pair needs before its template prediction is used.
pub const MIN_TEMPLATE_SUPPORT: u64 = 5;

/// A predicted next request.
#[derive(Debug, Clone)]
pub struct Next {
    /// Its cache key (`host/path?query`).
    pub key: Arc<str>,
    pub p: f32,
}

#[derive(Debug, Clone)]
struct ByTemplate {
    from: Template,
    /// B's template text, every placeholder captured by `from`.
    to: String,
    p: f32,
}

/// One prediction, as `GET /_tierd/warm` shows the strongest.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub from: String,
    pub to: String,
    pub p: f32,
    pub by: &'static str,
}

/// The model: what follows what. Built whole and swapped in (`ArcSwap`).
#[derive(Debug, Default)]
pub struct Model {
    urls: HashMap<u64, Vec<Next>>,
    templates: HashMap<String, Vec<ByTemplate>>,
    shown: Vec<Shown>,
}

/// The plain URL of a cache key (before any ` h:`/` u:` part) and its hash, as the journal
/// hashes it.
pub fn url_hash(key: &str) -> (u64, &str) {
    let plain = match memchr::memchr(b' ', key.as_bytes()) {
        Some(i) => &key[..i],
        None => key,
    };
    (xxhash_rust::xxh3::xxh3_64(plain.as_bytes()), plain)
}

impl Model {
    /// The model of `transitions` (with the number of client GETs per route, for templates),
    /// keeping predictions of probability `threshold` or more, at most `max` per URL.
    pub fn build(
        transitions: &[Transition],
        route_counts: &HashMap<String, u64>,
        threshold: f64,
        max: usize,
    ) -> Model {
        let mut urls: HashMap<u64, Vec<Next>> = HashMap::new();
        let mut pairs: HashMap<(&str, &str), u64> = HashMap::new();
        let mut shown = Vec::new();
        for t in transitions {
            let p = t.count as f64 / (t.from_count as f64 + 1.0);
            if p >= threshold {
                let key: Arc<str> = format!("{}{}", t.to_host, t.to_target).into();
                urls.entry(t.from).or_default().push(Next {
                    key: key.clone(),
                    p: p as f32,
                });
                shown.push(Shown {
                    from: format!("{}{}", t.from_host, t.from_target),
                    to: key.to_string(),
                    p: p as f32,
                    by: "url",
                });
            }
            if t.from_host == t.to_host && same_parameters(t) {
                *pairs
                    .entry((t.from_route.as_str(), t.to_route.as_str()))
                    .or_default() += t.count;
            }
        }
        for list in urls.values_mut() {
            list.sort_by(|a, b| b.p.total_cmp(&a.p));
            list.truncate(max);
        }
        let mut templates: HashMap<String, Vec<ByTemplate>> = HashMap::new();
        for ((from, to), n) in pairs {
            let total = route_counts.get(from).copied().unwrap_or(0);
            let p = n as f64 / (total as f64 + 1.0);
            if n < MIN_TEMPLATE_SUPPORT || p < threshold {
                continue;
            }
            let Ok(tpl) = Template::parse(from) else {
                continue;
            };
            templates
                .entry(from.to_owned())
                .or_default()
                .push(ByTemplate {
                    from: tpl,
                    to: to.to_owned(),
                    p: p as f32,
                });
            shown.push(Shown {
                from: from.to_owned(),
                to: to.to_owned(),
                p: p as f32,
                by: "template",
            });
        }
        for list in templates.values_mut() {
            list.sort_by(|a, b| b.p.total_cmp(&a.p));
            list.truncate(max);
        }
        shown.sort_by(|a, b| b.p.total_cmp(&a.p).then_with(|| a.from.cmp(&b.from)));
        Model {
            urls,
            templates,
            shown,
        }
    }

    /// Predictions held (by URL and by template).
    pub fn len(&self) -> usize {
        self.urls.values().map(Vec::len).sum::<usize>()
            + self.templates.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.templates.is_empty()
    }

    /// The strongest `n` predictions.
    pub fn strongest(&self, n: usize) -> &[Shown] {
        &self.shown[..n.min(self.shown.len())]
    }

    /// What usually follows a client's request for `key` on `route`: by URL, then by template,
    /// at most `max`, each once. `emit` gets each key and its probability.
    pub fn predict(&self, key: &str, route: &str, max: usize, mut emit: impl FnMut(&str, f32)) {
        let (hash, plain) = url_hash(key);
        let mut sent = 0;
        let by_url = self.urls.get(&hash);
        if let Some(list) = by_url {
            for n in list.iter().take(max) {
                emit(&n.key, n.p);
                sent += 1;
            }
        }
        if sent == max {
            return;
        }
        let Some(list) = self.templates.get(route) else {
            return;
        };
        let slash = memchr::memchr(b'/', plain.as_bytes()).unwrap_or(plain.len());
        let (host, target) = plain.split_at(slash);
        let path = target.split('?').next().unwrap_or(target);
        for t in list {
            if sent == max {
                break;
            }
            let Some(params) = t.from.matches(path) else {
                continue;
            };
            let next = format!("{host}{}", expand(&t.to, &params));
            if by_url.is_some_and(|l| l.iter().any(|n| *n.key == *next)) {
                continue;
            }
            emit(&next, t.p);
            sent += 1;
        }
    }
}

/// Whether B's path is B's route template filled with A's parameters (and B has no query).
fn same_parameters(t: &Transition) -> bool {
    if t.from_route == t.to_route || t.to_target.contains('?') || t.to_route.contains('*') {
        return false;
    }
    let (Ok(from), Ok(names)) = (Template::parse(&t.from_route), placeholders(&t.to_route)) else {
        return false;
    };
    if names.is_empty() || !names.iter().all(|n| from.has_param(n)) {
        return false;
    }
    let path = t.from_target.split('?').next().unwrap_or_default();
    match from.matches(path) {
        Some(params) => expand(&t.to_route, &params) == t.to_target,
        None => false,
    }
}

/// A lossy, lock-free memory of keys recently predicted or known fresh: the request path asks
/// it before queueing a prediction, so a popular URL does not queue the same fetch on every
/// request. One `u64` per slot: the key hash's high 32 bits, and until when (Unix seconds,
/// low 32 bits). Collisions only cost a redundant or a skipped check.
pub struct Recent {
    slots: Box<[AtomicU64]>,
}

impl Recent {
    pub fn new(slots: usize) -> Recent {
        let n = slots.next_power_of_two().max(64);
        Recent {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        &self.slots[(hash as usize) & (self.slots.len() - 1)]
    }

    /// True (and marks the key until `until`) when the key is not marked beyond `now`.
    pub fn claim(&self, key: &str, now: u64, until: u64) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        let slot = self.slot(hash);
        let v = slot.load(Ordering::Relaxed);
        if v >> 32 == hash >> 32 && (v & 0xffff_ffff) > now {
            return false;
        }
        slot.store(
            (hash >> 32 << 32) | (until & 0xffff_ffff),
            Ordering::Relaxed,
        );
        true
    }

    /// Marks the key until `until` (it is fresh in cache until then).
    pub fn mark(&self, key: &str, until: u64) {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        self.slot(hash).store(
            (hash >> 32 << 32) | (until & 0xffff_ffff),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(from: &str, from_route: &str, to: &str, to_route: &str, n: u64, of: u64) -> Transition {
        Transition {
            from: url_hash(&format!("h{from}")).0,
            from_host: "h".into(),
            from_target: from.into(),
            from_route: from_route.into(),
            to_host: "h".into(),
            to_target: to.into(),
            to_route: to_route.into(),
            count: n,
            from_count: of,
        }
    }

    fn predicted(m: &Model, key: &str, route: &str, max: usize) -> Vec<(String, f32)> {
        let mut out = Vec::new();
        m.predict(key, route, max, |k, p| out.push((k.to_owned(), p)));
        out
    }

    #[test]
    fn url_predictions_are_smoothed_counts_above_the_threshold_strongest_first() {
        let ts = [
            t("/a", "other", "/b", "other", 6, 9), // 0.6
            t("/a", "other", "/c", "other", 3, 9), // 0.3
            t("/a", "other", "/d", "other", 1, 9), // 0.1
            t("/x", "other", "/y", "other", 1, 1), // one sighting: 0.5
        ];
        let m = Model::build(&ts, &HashMap::new(), 0.25, 2);
        assert_eq!(
            predicted(&m, "h/a", "other", 5),
            [("h/b".to_owned(), 0.6), ("h/c".to_owned(), 0.3)]
        );
        assert_eq!(predicted(&m, "h/a", "other", 1).len(), 1);
        assert_eq!(
            predicted(&m, "h/x h:accept=1", "other", 2),
            [("h/y".to_owned(), 0.5)]
        );
        let strict = Model::build(&ts, &HashMap::new(), 0.55, 2);
        assert_eq!(predicted(&strict, "h/x", "other", 2), []);
        assert_eq!(strict.len(), 1);
    }

    #[test]
    fn template_predictions_carry_parameters_to_urls_never_seen() {
        let mut ts = Vec::new();
        for id in 1..=8 {
            ts.push(t(
                &format!("/items/{id}"),
                "/items/{id}",
                &format!("/items/{id}/reviews"),
                "/items/{id}/reviews",
                1,
                1,
            ));
        }
        // Another item's reviews is not the same parameters.
        ts.push(t(
            "/items/1",
            "/items/{id}",
            "/items/2/reviews",
            "/items/{id}/reviews",
            1,
            1,
        ));
        let counts = HashMap::from([("/items/{id}".to_owned(), 10)]);
        let m = Model::build(&ts, &counts, 0.6, 2);
        // 8 of 10 requests for an item were followed by its reviews: 8 / 11.
        let got = predicted(&m, "h/items/77?x=1", "/items/{id}", 2);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "h/items/77/reviews");
        assert!((got[0].1 - 8.0 / 11.0).abs() < 1e-6);
        assert_eq!(predicted(&m, "h/items/77", "other", 2), []);
        // Below the support, no template prediction.
        let few = Model::build(&ts[..4], &counts, 0.1, 2);
        assert_eq!(predicted(&few, "h/items/77", "/items/{id}", 2), []);
    }

    #[test]
    fn recent_claims_a_key_once_until_it_expires() {
        let r = Recent::new(1024);
        assert!(r.claim("h/a", 100, 105));
        assert!(!r.claim("h/a", 104, 110));
        assert!(r.claim("h/a", 105, 110));
        r.mark("h/b", 200);
        assert!(!r.claim("h/b", 150, 160));
        assert!(r.claim("h/b", 200, 210));
    }
}
