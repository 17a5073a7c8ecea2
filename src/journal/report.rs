//! Text renderings for the terminal: aligned tables, CSV, and the summary as `tierd report`
//! prints it.

use super::analytics::Summary;
use super::text::{bytes, percent};

/// Columns padded to their widest cell; numbers (cells that parse as one) right-aligned.
pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if c.parse::<f64>().is_ok()
                || c.ends_with('%') && c[..c.len() - 1].parse::<f64>().is_ok()
            {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(columns);
    out.push_str(&line(
        &width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// RFC 4180 CSV: a header line, then one line per row.
pub fn csv(columns: &[String], rows: &[Vec<String>]) -> String {
    let field = |c: &str| {
        if c.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_owned()
        }
    };
    let mut out = String::new();
    for r in std::iter::once(columns).chain(rows.iter().map(|r| &r[..])) {
        out.push_str(&r.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// The summary as readable tables.
pub fn render(s: &Summary) -> String {
    let mut out = format!(
        "tierd report: last {} ({} .. {})\n\n\
         requests {}   hits {}   hit ratio {}   refused {}\n\
         origin requests {} (saved {})   bytes saved {}\n\
         by tier: l1 {}   l2 {}   l3 {}   origin {}\n\n",
        s.window,
        s.since,
        s.until,
        s.requests,
        s.hits,
        percent(s.hit_ratio),
        s.refused,
        s.origin_requests,
        s.origin_requests_saved,
        bytes(s.bytes_saved),
        s.by_tier.l1,
        s.by_tier.l2,
        s.by_tier.l3,
        s.by_tier.origin,
    );
    if s.sample < 1.0 {
        out.push_str(&format!(
            "sampled: the counts are of {} of requests ([journal] sample)\n\n",
            percent(s.sample)
        ));
    }
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    out.push_str("Routes\n");
    out.push_str(&table(
        &cols(&[
            "route",
            "requests",
            "hit ratio",
            "p50 ms",
            "p99 ms",
            "bytes",
            "origin",
        ]),
        &s.by_route
            .iter()
            .map(|r| {
                vec![
                    r.route.clone(),
                    r.requests.to_string(),
                    percent(r.hit_ratio),
                    format!("{:.2}", r.p50_ms),
                    format!("{:.2}", r.p99_ms),
                    r.bytes.to_string(),
                    r.origin_requests.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    out.push_str("\nBy hour\n");
    out.push_str(&table(
        &cols(&["hour", "requests", "hits", "hit ratio"]),
        &s.by_hour
            .iter()
            .map(|h| {
                vec![
                    h.hour.clone(),
                    h.requests.to_string(),
                    h.hits.to_string(),
                    percent(h.hit_ratio),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    out.push_str("\nTop misses\n");
    out.push_str(&table(
        &cols(&["url", "misses", "last seen"]),
        &s.top_misses
            .iter()
            .map(|m| vec![m.url.clone(), m.misses.to_string(), m.last_seen.clone()])
            .collect::<Vec<_>>(),
    ));
    out.push_str("\nTTL advice\n");
    out.push_str(&table(
        &cols(&["route", "ttl s", "suggested s", "why"]),
        &s.ttl_advice
            .iter()
            .map(|a| {
                vec![
                    a.route.clone(),
                    a.current_ttl_s.to_string(),
                    a.suggested_ttl_s.to_string(),
                    a.reason.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_csv_quotes() {
        let cols = vec!["url".to_string(), "n".to_string()];
        let rows = vec![
            vec!["/a".to_string(), "10".to_string()],
            vec!["/longer".to_string(), "2".to_string()],
        ];
        assert_eq!(
            table(&cols, &rows),
            "url      n\n-------  --\n/a       10\n/longer   2\n"
        );
        assert_eq!(
            csv(&cols, &[vec!["a,\"b\"".to_string(), "1".to_string()]]),
            "url,n\n\"a,\"\"b\"\"\",1\n"
        );
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
