//! `GET /_tierd/`: the analytics summary and the tiers' health on one page for a person.
//!
//! Server-rendered HTML with its style inline: no script, no external font, image or style
//! sheet (the Content-Security-Policy forbids them), so it reads the same with JavaScript off and
//! behind an air gap. The hit-ratio chart is an SVG drawn here, one bar per hour of the window,
//! each bar carrying its figures (`data-*`, and a tooltip), with the same figures as a table.
//! Every text that came from a request (URLs, routes) is escaped.
//!
//! With `admin.token` set the page asks for it: HTTP Basic (any user name, the token as the
//! password), which a browser prompts for, or the usual `Authorization: Bearer`.

use std::fmt::Write as _;
#[cfg(feature = "duckdb")]
use std::time::UNIX_EPOCH;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{hit_counts, node, token_given, AdminOptions};
use crate::cache::CacheState;
use crate::journal::text::{bytes, count, percent};
#[cfg(feature = "duckdb")]
use crate::journal::text::{format_utc, parse_utc};
use crate::store::TierName;

/// The chart's colours; the bar colour is used for nothing else on the page (the browser check
/// finds the bars in a screenshot by it).
pub const BAR_RGB: (u8, u8, u8) = (0x2f, 0x9e, 0x44);

#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    window: Option<String>,
}

pub(super) async fn page(
    req: HttpRequest,
    st: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
    q: web::Query<PageQuery>,
) -> HttpResponse {
    if !opts.token.is_empty() && !token_given(&req, &opts) {
        tracing::warn!(path = req.path(), peer = ?req.peer_addr(), "admin page refused: missing or wrong token");
        return HttpResponse::Unauthorized()
            .insert_header((
                header::WWW_AUTHENTICATE,
                "Basic realm=\"tierd admin\", charset=\"UTF-8\"",
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/plain; charset=utf-8")
            .body("the admin token is required: any user name, the token as the password\n");
    }
    let window = q.window.as_deref().unwrap_or("24h");
    let name = node_name(&st);
    let mut html = String::with_capacity(32 * 1024);
    head(&mut html, name.as_deref());
    let analytics = analytics(&st, window).await;
    let _ = write!(
        html,
        "<header><h1>tierd</h1><div class=\"sub\"><span id=\"node\">{}</span> · window: <nav aria-label=\"window\">",
        esc(name.as_deref().unwrap_or("this node"))
    );
    for w in ["1h", "24h", "7d"] {
        if w == window {
            let _ = write!(html, "<strong>{w}</strong> ");
        } else {
            let _ = write!(html, "<a href=\"?window={w}\">{w}</a> ");
        }
    }
    html.push_str("</nav></div></header><main>");
    match &analytics {
        Analytics::Summary(s) => summary_sections(&mut html, s),
        Analytics::Message(m) => {
            let _ = write!(html, "<p class=\"note\" id=\"journal-note\">{}</p>", esc(m));
        }
    }
    tiers(&mut html, &st);
    html.push_str(
        "</main><footer>The same figures as JSON: <a href=\"analytics/summary\">analytics/summary</a> · \
         <a href=\"stats\">stats</a> · <a href=\"/metrics\">/metrics</a>. The page refreshes every minute.</footer></body></html>\n",
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

/// The name this node goes by: its journal's `node`, else its id on the purge bus.
fn node_name(st: &CacheState) -> Option<String> {
    #[cfg(feature = "duckdb")]
    if let Some(j) = &st.journal {
        return Some(j.options().node.clone());
    }
    node(st)
}

enum Analytics {
    #[cfg(feature = "duckdb")]
    Summary(Box<crate::journal::Summary>),
    #[cfg(not(feature = "duckdb"))]
    #[allow(dead_code)]
    Summary(Box<std::convert::Infallible>),
    Message(String),
}

async fn analytics(st: &CacheState, window: &str) -> Analytics {
    #[cfg(feature = "duckdb")]
    {
        let Some(journal) = &st.journal else {
            return Analytics::Message(
                "The access journal is off, so there are no analytics: set [journal] enabled = true."
                    .into(),
            );
        };
        let Some(w) = crate::journal::Window::parse(window) else {
            return Analytics::Message(format!("The window '{window}' is not one of 1h, 24h, 7d."));
        };
        match journal.summary(w, journal.now()).await {
            Ok(s) => Analytics::Summary(Box::new(s)),
            Err(e) => {
                tracing::error!(error = %e, "admin page: analytics summary failed");
                Analytics::Message(
                    "The journal could not be read (see the log and tierd_journal_failed).".into(),
                )
            }
        }
    }
    #[cfg(not(feature = "duckdb"))]
    {
        let _ = (st, window);
        Analytics::Message("This build has no access journal (the duckdb feature is off).".into())
    }
}

fn head(html: &mut String, node: Option<&str>) {
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"60\"><title>tierd{}{}</title><style>{STYLE}</style></head><body>",
        if node.is_some() { " · " } else { "" },
        esc(node.unwrap_or(""))
    );
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#1d2125;background:#fff}
h1{font-size:24px;margin:0}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5c636a;margin:2px 0 12px}nav{display:inline}nav a,nav strong{margin-right:6px}
.legend{color:#5c636a;font-size:13px;margin:2px 0 0}.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;vertical-align:baseline}
.off{color:#6c757d}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #dee2e6;border-radius:6px;padding:10px 14px;min-width:150px}
.card .label{display:block;color:#5c636a;font-size:13px}.card .value{font-size:22px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{color:#495057;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.url{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.note{background:#fff3cd;border:1px solid #ffe69c;padding:8px 12px;border-radius:6px}
.ok{color:#2b7a3b}.bad{color:#b02a37;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#5c636a}
footer{margin:32px 0 8px;color:#5c636a;font-size:13px}
details{margin-top:6px}
";

#[cfg(feature = "duckdb")]
fn summary_sections(html: &mut String, s: &crate::journal::Summary) {
    if s.sample < 1.0 {
        let _ = write!(
            html,
            "<p class=\"note\" id=\"sampled\">The journal keeps {} of requests ([journal] sample): counts are of that sample, ratios and percentiles estimate the whole.</p>",
            percent(s.sample)
        );
    }
    let _ = write!(
        html,
        "<section id=\"totals\" class=\"cards\" aria-label=\"totals, {window}\">\
         {}{}{}{}{}</section>",
        card("requests", "Requests", &count(s.requests)),
        card("hit-ratio", "Hit ratio", &percent(s.hit_ratio)),
        card(
            "origin-saved",
            "Origin requests saved",
            &count(s.origin_requests_saved)
        ),
        card("bytes-saved", "Bytes saved", &bytes(s.bytes_saved)),
        card("refused", "Refused", &count(s.refused)),
        window = esc(&s.window),
    );
    chart(html, s);
    html.push_str("<section id=\"routes\"><h2>Top routes</h2>");
    if s.by_route.is_empty() {
        html.push_str("<p>No requests in this window.</p>");
    } else {
        html.push_str("<table><thead><tr><th>Route</th><th class=\"n\">Requests</th><th class=\"n\">Hit ratio</th><th class=\"n\">p50</th><th class=\"n\">p99</th><th class=\"n\">Bytes</th><th class=\"n\">Origin requests</th></tr></thead><tbody>");
        for r in &s.by_route {
            let _ = write!(
                html,
                "<tr data-route=\"{}\"><td class=\"url\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2} ms</td><td class=\"n\">{:.2} ms</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&r.route),
                esc(&r.route),
                count(r.requests),
                percent(r.hit_ratio),
                r.p50_ms,
                r.p99_ms,
                bytes(r.bytes),
                count(r.origin_requests)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</section><section id=\"misses\"><h2>Top misses</h2>");
    if s.top_misses.is_empty() {
        html.push_str("<p>No misses in this window.</p>");
    } else {
        html.push_str("<table><thead><tr><th>URL</th><th class=\"n\">Misses</th><th>Last seen (UTC)</th></tr></thead><tbody>");
        for m in &s.top_misses {
            let _ = write!(
                html,
                "<tr><td class=\"url\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&m.url),
                count(m.misses),
                esc(&m.last_seen)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</section><section id=\"advice\"><h2>TTL advice</h2>");
    if s.ttl_advice.is_empty() {
        html.push_str("<p>No advice yet: it needs routes whose URLs were requested more than once in the window.</p>");
    } else {
        html.push_str("<table><thead><tr><th>Route</th><th class=\"n\">TTL now</th><th class=\"n\">Suggested</th><th>Why</th></tr></thead><tbody>");
        for a in &s.ttl_advice {
            let _ = write!(
                html,
                "<tr><td class=\"url\">{}</td><td class=\"n\">{} s</td><td class=\"n\">{} s</td><td>{}</td></tr>",
                esc(&a.route),
                a.current_ttl_s,
                a.suggested_ttl_s,
                esc(&a.reason)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</section>");
}

#[cfg(not(feature = "duckdb"))]
fn summary_sections(_: &mut String, s: &std::convert::Infallible) {
    match *s {}
}

/// One bar per hour from the window's first hour to its last; hours without requests stay
/// empty.
#[cfg(feature = "duckdb")]
fn chart(html: &mut String, s: &crate::journal::Summary) {
    const W: f64 = 1000.0;
    const H: f64 = 240.0;
    const LEFT: f64 = 44.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 28.0;
    let (Some(since), Some(until)) = (parse_utc(&s.since), parse_utc(&s.until)) else {
        return;
    };
    let first = since / 3600;
    let last = until / 3600;
    let slots = (last - first + 1) as usize;
    let by_hour: std::collections::HashMap<u64, &crate::journal::HourRow> = s
        .by_hour
        .iter()
        .filter_map(|h| parse_utc(&h.hour).map(|t| (t / 3600, h)))
        .collect();
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    let slot_w = plot_w / slots as f64;
    let max_requests = s.by_hour.iter().map(|h| h.requests).max().unwrap_or(0);
    let (r, g, b) = BAR_RGB;
    let _ = write!(
        html,
        "<section id=\"chart\"><h2>Hit ratio by hour (UTC)</h2>\
         <svg viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"hit ratio per hour over the last {}; bars are hit ratio, the line is requests (peak {})\" data-hours=\"{slots}\">",
        esc(&s.window),
        max_requests
    );
    for pct in [0u32, 25, 50, 75, 100] {
        let y = TOP + plot_h * (1.0 - f64::from(pct) / 100.0);
        let _ = write!(
            html,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e9ecef\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{pct}%</text>",
            W - 8.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let label_every = match slots {
        0..=13 => 1,
        14..=30 => 3,
        31..=80 => 6,
        _ => 24,
    };
    let mut line = String::new();
    for i in 0..slots {
        let hour = first + i as u64;
        let x = LEFT + slot_w * i as f64;
        if let Some(h) = by_hour.get(&hour) {
            let bh = plot_h * h.hit_ratio.clamp(0.0, 1.0);
            let _ = write!(
                html,
                "<rect class=\"bar\" data-hour=\"{hour_s}\" data-requests=\"{req}\" data-hits=\"{hits}\" data-hit-ratio=\"{ratio}\" \
                 x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{bh:.2}\" fill=\"rgb({r},{g},{b})\">\
                 <title>{hour_s}: {req} requests, {pct} hits</title></rect>",
                x + slot_w * 0.1,
                TOP + plot_h - bh,
                slot_w * 0.8,
                hour_s = esc(&h.hour),
                req = h.requests,
                hits = h.hits,
                ratio = h.hit_ratio,
                pct = percent(h.hit_ratio),
            );
        }
        if max_requests > 0 {
            let n = by_hour.get(&hour).map_or(0, |h| h.requests);
            let y = TOP + plot_h * (1.0 - n as f64 / max_requests as f64);
            let _ = write!(line, "{:.1},{y:.1} ", x + slot_w / 2.0);
        }
        if i % label_every == 0 {
            let t = UNIX_EPOCH + std::time::Duration::from_secs(hour * 3600);
            let text = format_utc(t);
            // `YYYY-MM-DDTHH:MM:SSZ`: the hour, and the day where a day starts.
            let label = if slots > 30 || hour % 24 == 0 {
                format!("{} {}h", &text[5..10], &text[11..13])
            } else {
                format!("{}:00", &text[11..13])
            };
            let _ = write!(
                html,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
                x + slot_w / 2.0,
                H - 8.0
            );
        }
    }
    if max_requests > 0 && slots > 1 {
        let _ = write!(
            html,
            "<polyline class=\"requests\" points=\"{}\" fill=\"none\" stroke=\"#4263eb\" stroke-width=\"1.5\"/>",
            line.trim_end()
        );
    }
    html.push_str("</svg>");
    let _ = write!(
        html,
        "<p class=\"legend\"><span class=\"swatch\" style=\"background:rgb({r},{g},{b})\"></span>hit ratio (left axis)\
         <span class=\"swatch\" style=\"background:#4263eb;height:2px;vertical-align:middle\"></span>requests per hour (top line: {max_requests})</p>"
    );
    html.push_str("<details><summary>The chart's figures</summary><table id=\"hours\"><thead><tr><th>Hour (UTC)</th><th class=\"n\">Requests</th><th class=\"n\">Hits</th><th class=\"n\">Hit ratio</th></tr></thead><tbody>");
    for h in &s.by_hour {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&h.hour),
            h.requests,
            h.hits,
            percent(h.hit_ratio)
        );
    }
    html.push_str("</tbody></table></details></section>");
}

/// The tiers: state, size and hit ratio since start; and the journal's own health.
fn tiers(html: &mut String, st: &CacheState) {
    let hits = hit_counts(st);
    html.push_str("<section id=\"tiers\"><h2>Tiers</h2><table><thead><tr><th>Tier</th><th>State</th><th class=\"n\">Entries</th><th class=\"n\">Bytes</th><th class=\"n\">Hits</th><th class=\"n\">Misses</th><th class=\"n\">Hit ratio since start</th></tr></thead><tbody>");
    let row = |html: &mut String, name: TierName, state: &str, cls: &str, e: String, b: String| {
        let h = &hits[name.as_str()];
        let _ = write!(
            html,
            "<tr data-tier=\"{n}\"><td>{n}</td><td class=\"{cls}\">{}</td><td class=\"n\">{e}</td><td class=\"n\">{b}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(state),
            count(h["hits"].as_u64().unwrap_or(0)),
            count(h["misses"].as_u64().unwrap_or(0)),
            percent(h["hit_ratio"].as_f64().unwrap_or(0.0)),
            n = name.as_str(),
        );
    };
    // One row per tier in tier order: its state, size and hit ratio; failed and off tiers too.
    let mut rows: Vec<(TierName, String, &str, String, String)> = Vec::new();
    for t in st.store.stats() {
        let circuit_open = t.circuit.is_some_and(|c| c.as_str() == "open");
        let (state, cls) = match (circuit_open, t.healthy) {
            (true, _) => ("circuit open", "bad"),
            (false, false) if t.name == TierName::L2 => ("unreachable", "bad"),
            (false, false) => ("reopening", "bad"),
            _ => ("ok", "ok"),
        };
        let (e, b) = match t.stats {
            Some(s) => (count(s.entries), bytes(s.bytes)),
            None => ("shared".into(), "shared".into()),
        };
        rows.push((t.name, state.into(), cls, e, b));
    }
    for (name, reason) in st.store.failed_tiers() {
        rows.push((
            *name,
            format!("failed: {reason}"),
            "bad",
            "-".into(),
            "-".into(),
        ));
    }
    for name in TierName::ALL {
        if !rows.iter().any(|r| r.0 == name) {
            rows.push((name, "off".into(), "off", "-".into(), "-".into()));
        }
    }
    rows.sort_by_key(|r| TierName::ALL.iter().position(|t| *t == r.0));
    for (name, state, cls, e, b) in rows {
        row(html, name, &state, cls, e, b);
    }
    html.push_str("</tbody></table>");
    journal_health(html, st);
    html.push_str("</section>");
}

fn journal_health(html: &mut String, st: &CacheState) {
    #[cfg(feature = "duckdb")]
    if let Some(j) = &st.journal {
        let m = j.metrics();
        let failed = m.failed.get() != 0;
        let _ = write!(
            html,
            "<p id=\"journal\">Journal: <span class=\"{}\">{}</span>, {} rows written, {} dropped, file {}.</p>",
            if failed { "bad" } else { "ok" },
            if failed { "cannot write its file" } else { "ok" },
            count(m.written_total()),
            count(m.dropped_total()),
            bytes(u64::try_from(m.file_bytes.get()).unwrap_or(0)),
        );
    }
    let _ = (html, st);
}

#[cfg(feature = "duckdb")]
fn card(id: &str, label: &str, value: &str) -> String {
    format!("<div class=\"card\"><span class=\"label\">{label}</span><span class=\"value\" id=\"{id}\">{value}</span></div>")
}

/// HTML-escapes text for element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_requests_is_escaped() {
        assert_eq!(
            esc("a.example/x?q=<script>alert('1')</script>&b=\"c\""),
            "a.example/x?q=&lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt;&amp;b=&quot;c&quot;"
        );
    }
}
