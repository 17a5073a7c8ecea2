//! The book (`docs/src`) against the code: every config key, metric and command is documented
//! in the reference and nothing documented is gone; every documented admin call answers; every
//! alert has a runbook page, a `runbook_url` pointing at it and promtool cases; every metric is on
//! a dashboard panel; every link between pages lands on a page and a heading.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::external;
use tierd::config::Settings;
use tierd::policy::{InvalidateConfig, KeyConfig, QuotaConfig, RuleConfig, TtlByFieldConfig};

/// Where the book is published; the alerts' `runbook_url` values start with it.
const SITE: &str = "https://tierd.github.io/tierd/";

fn read(rel: &str) -> String {
    std::fs::read_to_string(external::repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The backticked names in the first column of a Markdown table's rows.
fn table_keys(md: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in md.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                out.insert(part.to_owned());
            }
        }
    }
    out
}

/// Dotted paths of `v`'s leaves; the tables named in `leaves` count as one key (inline tables
/// documented whole, maps of user-chosen keys).
fn flatten(prefix: &str, v: &toml::Value, leaves: &[&str], out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) if !leaves.contains(&prefix) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, leaves, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

fn keys_of<T: serde::Serialize>(v: &T, leaves: &[&str]) -> BTreeSet<String> {
    let table = toml::Table::try_from(v).expect("serializable");
    let mut out = BTreeSet::new();
    flatten("", &toml::Value::Table(table), leaves, &mut out);
    out
}

fn same(what: &str, code: &BTreeSet<String>, documented: &BTreeSet<String>) {
    let missing: Vec<_> = code.difference(documented).collect();
    let gone: Vec<_> = documented.difference(code).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "{what}: not documented: {missing:?}; documented but not in the code: {gone:?}"
    );
}

#[test]
fn every_config_key_is_in_the_reference_and_every_documented_key_exists() {
    let mut s = Settings::default();
    // Keys whose default is unset are left out of a serialized config: set them.
    s.admin.token_file = Some(PathBuf::from("/run/secrets/token"));
    s.journal.enabled = Some(true);
    s.rules.clear();
    let mut keys = keys_of(&s, &[]);
    // `[[rules]]` have their own table (below).
    keys.remove("rules");
    same(
        "docs/src/reference/config.md",
        &keys,
        &table_keys(&read("docs/src/reference/config.md")),
    );

    // Every key of a rule, each optional one set.
    let rule = RuleConfig {
        name: Some("r".into()),
        path: "/a/{id}".into(),
        methods: Some(vec!["GET".into()]),
        ttl_seconds: Some(1),
        ttl_by_field: Some(TtlByFieldConfig {
            pointer: "/status".into(),
            default: Some(1),
            ..Default::default()
        }),
        stale_while_revalidate_seconds: Some(1),
        stale_if_error_seconds: Some(1),
        respect_client_no_cache: Some(true),
        key: KeyConfig {
            user: Some("authorization".into()),
            ..Default::default()
        },
        invalidate: Some(InvalidateConfig::default()),
        tiers: Some(vec!["l1".into()]),
        rate_limit: Some(QuotaConfig {
            requests_per_second: 1.0,
            burst: 1,
            dry_run: false,
        }),
        ..Default::default()
    };
    same(
        "docs/src/guide/rules.md (the rule keys)",
        &keys_of(
            &rule,
            &["ttl_by_status", "ttl_by_field", "invalidate", "rate_limit"],
        ),
        &table_keys(&read("docs/src/guide/rules.md")),
    );
}

#[test]
fn every_metric_is_in_the_reference_and_every_documented_metric_exists() {
    // Metric names are string literals where they are defined (`Opts::new("tierd_...")`).
    let mut code = BTreeSet::new();
    for f in external::files(&external::repo().join("src"), "rs") {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("\"tierd_") {
            let rest = &text[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            if rest[end..].starts_with('"') {
                code.insert(rest[..end].to_owned());
            }
        }
    }
    // Not metrics: the L3 file's schema table.
    code.remove("tierd_meta");
    let documented: BTreeSet<String> = table_keys(&read("docs/src/reference/metrics.md"))
        .into_iter()
        .filter(|k| k.starts_with("tierd_"))
        .collect();
    same("docs/src/reference/metrics.md", &code, &documented);

    // And every one is on a dashboard panel.
    let mut exprs = String::new();
    for e in std::fs::read_dir(external::repo().join("dashboards")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let d: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            for panel in d["panels"].as_array().unwrap() {
                for t in panel["targets"].as_array().into_iter().flatten() {
                    exprs.push_str(t["expr"].as_str().unwrap_or_default());
                    exprs.push('\n');
                }
            }
        }
    }
    // A whole name (or a histogram's series): `tierd_tier_connections` is not found in
    // `tierd_tier_connections_max`.
    let on_panel = |m: &str| {
        exprs.match_indices(m).any(|(i, _)| {
            let rest = &exprs[i + m.len()..];
            let rest = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| rest.strip_prefix(s))
                .unwrap_or(rest);
            !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let off_panels: Vec<_> = code.iter().filter(|m| !on_panel(m)).collect();
    assert!(
        off_panels.is_empty(),
        "on no dashboard panel: {off_panels:?}"
    );
}

#[test]
fn every_alert_has_a_runbook_page_and_a_runbook_url_to_it() {
    let rules = read("alerts/tierd.rules.yml");
    let summary = read("docs/src/SUMMARY.md");
    let mut alerts = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            assert!(current.is_none(), "{current:?} has no runbook_url");
            current = Some(name.to_owned());
        } else if let Some(url) = line.strip_prefix("runbook_url: ") {
            let name = current.take().expect("runbook_url outside an alert");
            let page = name.to_lowercase();
            assert_eq!(
                url.trim_matches('"'),
                format!("{SITE}runbooks/{page}.html"),
                "{name}"
            );
            assert!(
                external::repo()
                    .join(format!("docs/src/runbooks/{page}.md"))
                    .is_file(),
                "{name}: no docs/src/runbooks/{page}.md"
            );
            assert!(
                summary.contains(&format!("(runbooks/{page}.md)")),
                "{name}: not in SUMMARY.md"
            );
            alerts.insert(page);
        }
    }
    assert!(current.is_none(), "{current:?} has no runbook_url");
    assert!(alerts.len() >= 20, "{alerts:?}");
    // Every alert has promtool tests: at least one where it fires and one where it does not.
    let tests = read("alerts/tierd.rules.test.yml");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut name = String::new();
    for line in tests.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("alertname: ") {
            name = n.to_lowercase();
        } else if line == "exp_alerts: []" {
            silent.insert(name.clone());
        } else if line == "exp_alerts:" {
            fires.insert(name.clone());
        }
    }
    for a in &alerts {
        assert!(fires.contains(a), "{a}: no promtool test where it fires");
        assert!(
            silent.contains(a),
            "{a}: no promtool test where it stays silent"
        );
    }
    // No page for an alert that is gone.
    for e in std::fs::read_dir(external::repo().join("docs/src/runbooks")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let page = name.trim_end_matches(".md");
        assert!(
            page == "index" || alerts.contains(page),
            "docs/src/runbooks/{name} has no alert"
        );
    }
}

/// A heading's anchor as mdBook and GitHub make it.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut code = false;
    for line in md.lines() {
        if line.starts_with("```") {
            code = !code;
        } else if !code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_link_between_pages_lands_on_a_page_and_a_heading() {
    let root = external::repo();
    let mut pages = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    pages.extend(external::files(&root.join("docs/src"), "md"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            checked += 1;
            let Ok(dest_text) = std::fs::read_to_string(&dest) else {
                if !dest.exists() {
                    broken.push(format!("{}: {target}: no such file", page.display()));
                }
                continue;
            };
            if !anchor.is_empty()
                && dest.extension().is_some_and(|x| x == "md")
                && !anchors(&dest_text).contains(anchor)
            {
                broken.push(format!("{}: {target}: no such heading", page.display()));
            }
        }
    }
    assert!(checked > 50, "{checked} links");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The subcommands `tierd --help` lists, and those the reference's table shows, are the same.
#[test]
fn every_command_is_in_the_reference_and_every_documented_command_exists() {
    let out = crate::common::tierd_command()
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let listed = help
        .split_once("Commands:")
        .expect("a Commands section")
        .1
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let code: BTreeSet<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    let documented: BTreeSet<String> = table_keys(&read("docs/src/reference/cli.md"))
        .into_iter()
        .filter_map(|k| k.split_whitespace().nth(1).map(str::to_owned))
        .filter(|c| !c.starts_with('-'))
        .collect();
    same("docs/src/reference/cli.md", &code, &documented);
}

/// Every call the admin API reference documents answers on a running node's admin listener
/// (with the token): none is the listener's "no such route" or "method not allowed".
#[actix_web::test]
async fn every_documented_admin_call_exists() {
    use crate::common::{client, send, settings_for, Origin, Reply};
    use std::sync::Arc;
    let clock = Arc::new(tierd::clock::ManualClock::new());
    let origin = Origin::start(clock.clone(), |_, _| Reply::ok("x")).await;
    let mut s = settings_for(origin.addr);
    s.admin.token = "docs-token".into();
    let gw = tierd::server::Gateway::start(&s, clock, None)
        .await
        .unwrap();
    let mut calls = 0;
    for call in table_keys(&read("docs/src/reference/admin-api.md")) {
        let Some((method, target)) = call.split_once(' ') else {
            continue;
        };
        let path = target.split('?').next().unwrap_or(target);
        let url = format!("http://{}{path}", gw.admin_addr);
        let req = match method {
            "GET" => client().get(url),
            "HEAD" => client().head(url),
            "POST" => client().post(url),
            other => panic!("{call}: method {other}"),
        };
        let r = send(req.insert_header(("authorization", "Bearer docs-token"))).await;
        calls += 1;
        let unknown = r.status == 404 && r.text().contains("no such admin endpoint");
        assert!(
            !unknown && r.status != 405,
            "{call}: {} {}",
            r.status,
            r.text()
        );
    }
    assert!(calls >= 12, "{calls} calls documented");
    gw.stop(true).await;
    origin.stop().await;
}
