//! `/metrics` as tests read it: one parser, and lookups that fail loudly when a series is
//! missing (a renamed metric must fail its test, not read as zero).

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One exported sample.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format (enough of it for tierd's output).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("label pair");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("sample value"),
            }
        })
        .collect()
}

/// One scrape of `/metrics`: the text and its samples.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the series of `name` that carry every label in `labels`; panics when none
    /// exists (a missing family is a failure, not a zero).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            !matching.is_empty(),
            "no series {name}{labels:?} in /metrics"
        );
        matching.iter().map(|s| s.value).sum()
    }

    /// The values `label` takes on `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Scrape {
    /// Parses exposition text (an in-process registry's, say).
    pub fn from_text(text: String) -> Scrape {
        let samples = parse(&text);
        Scrape { text, samples }
    }
}

/// Scrapes the admin listener at `admin`.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let text = super::send(super::client().get(format!("http://{admin}/metrics")))
        .await
        .text();
    Scrape::from_text(text)
}

/// The sum of the series of `name` with `labels` at `admin`; panics when there is none.
pub async fn metric_at(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(admin).await.sum(name, labels)
}

/// Whether that sum becomes `want` within `within` (polled, never slept on).
pub async fn metric_reaches(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    within: std::time::Duration,
) -> bool {
    super::eventually(within, async || {
        metric_at(admin, name, labels).await == want
    })
    .await
}
