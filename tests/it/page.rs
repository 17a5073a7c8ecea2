//! The admin page (`GET /_tierd/`) in a real headless Chromium: it renders, its chart carries the
//! summary's figures hour by hour and is drawn (its bars' colour found in a screenshot, absent
//! before there was traffic), and it asks for the admin token when one is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tierd::clock::ManualClock;
use tierd::server::Gateway;

use crate::common::{self, Origin};
use crate::journal::{origin_reply, settings};

/// Debian's `chromium` (or `TIERD_CHROMIUM`); the test command installs it.
fn chromium() -> String {
    if let Ok(c) = std::env::var("TIERD_CHROMIUM") {
        return c;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return c.into();
        }
    }
    panic!("no headless browser: apt-get install chromium (scripts/test.sh does), or set TIERD_CHROMIUM");
}

/// Runs headless Chromium on `url` with `args` (at most 90 s), in its own profile directory,
/// off the test's runtime (the gateway answers on it); returns its standard output.
async fn browse(profile: &Path, url: &str, args: &[&str]) -> String {
    let (profile, url) = (profile.to_owned(), url.to_owned());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    actix_web::rt::task::spawn_blocking(move || browse_now(&profile, &url, &args))
        .await
        .unwrap()
}

fn browse_now(profile: &Path, url: &str, args: &[String]) -> String {
    let out = Command::new("timeout")
        .arg("90")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pixels of `rgb` in a PNG screenshot (8-bit RGB or RGBA, not interlaced).
fn pixels_of(png: &[u8], rgb: (u8, u8, u8)) -> usize {
    use std::io::Read as _;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    let mut data = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let body = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                assert_eq!(body[8], 8, "8 bits per sample");
                channels = match body[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
                assert_eq!(body[12], 0, "not interlaced");
            }
            b"IDAT" => data.extend_from_slice(body),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .expect("inflate");
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut found = 0;
    for y in 0..height {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let mut cur = line[1..].to_vec();
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            cur[i] = cur[i].wrapping_add(match line[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            });
        }
        found += cur
            .chunks(channels)
            .filter(|p| {
                p[0].abs_diff(rgb.0) <= 2 && p[1].abs_diff(rgb.1) <= 2 && p[2].abs_diff(rgb.2) <= 2
            })
            .count();
        prev = cur;
    }
    found
}

/// The value of `attr="..."` in each `<rect class="bar" ...>` of the DOM, in order.
fn bars(dom: &str) -> Vec<(String, u64, u64)> {
    let attr = |tag: &str, name: &str| -> String {
        let k = format!("{name}=\"");
        let i = tag.find(&k).unwrap_or_else(|| panic!("{name} in {tag}")) + k.len();
        tag[i..i + tag[i..].find('"').unwrap()].to_owned()
    };
    dom.split("<rect class=\"bar\"")
        .skip(1)
        .map(|t| {
            let tag = &t[..t.find('>').unwrap()];
            (
                attr(tag, "data-hour"),
                attr(tag, "data-requests").parse().unwrap(),
                attr(tag, "data-hits").parse().unwrap(),
            )
        })
        .collect()
}

fn screenshot_path() -> PathBuf {
    let dir = std::env::var_os("TIERD_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    dir.join("tierd-admin-page.png")
}

#[actix_web::test]
async fn the_admin_page_renders_in_chromium_with_the_summary_and_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let s = settings(&origin, dir.path());
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let page = format!("http://{}/_tierd/", gw.admin_addr);

    // Before any traffic: the page renders, with no bar, and none is drawn.
    let empty = browse(profile.path(), &page, &["--dump-dom"]).await;
    assert!(empty.contains("<h1>tierd</h1>"), "{empty}");
    assert!(bars(&empty).is_empty());
    let shot = screenshot_path();
    browse(
        profile.path(),
        &page,
        &[&format!("--screenshot={}", shot.display())],
    )
    .await;
    let blank = pixels_of(&std::fs::read(&shot).unwrap(), tierd::admin::PAGE_BAR_RGB);
    // Only the legend's swatch (10 x 10 px) has the bars' colour on a page without traffic.
    assert!(
        blank <= 100,
        "no bar drawn without traffic: {blank} pixels of their colour"
    );

    // Traffic in two hours with an hour between them.
    let c = common::client();
    let get = async |p: &str| {
        let r = common::send(c.get(format!("http://{}{p}", gw.addr))).await;
        assert_eq!(r.status, 200);
    };
    for p in ["/items/1", "/items/1", "/items/1", "/items/2", "/misc"] {
        get(p).await;
    }
    clock.advance(Duration::from_secs(2 * 3600));
    for p in ["/items/1", "/items/3", "/items/3", "/items/3"] {
        get(p).await;
    }
    let r = common::send(c.get(format!(
        "http://{}/_tierd/analytics/summary?window=24h",
        gw.admin_addr
    )))
    .await;
    let summary: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(summary["requests"], 9, "{summary}");

    let dom = browse(profile.path(), &page, &["--dump-dom"]).await;
    // The chart: one bar per hour with requests, each with the summary's figures for it.
    let expected: Vec<(String, u64, u64)> = summary["by_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["hour"].as_str().unwrap().to_owned(),
                h["requests"].as_u64().unwrap(),
                h["hits"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 2, "{summary}");
    assert_eq!(bars(&dom), expected);
    assert!(
        dom.contains("data-hours=\"25\""),
        "24 h window: 25 hour slots"
    );
    // The totals, the routes, the misses, the tiers.
    assert!(dom.contains("id=\"requests\">9<"), "{dom}");
    let ratio = summary["hit_ratio"].as_f64().unwrap();
    assert!(
        dom.contains(&format!("id=\"hit-ratio\">{:.1}%<", ratio * 100.0)),
        "{dom}"
    );
    assert!(dom.contains("data-route=\"/items/{id}\""));
    for m in summary["top_misses"].as_array().unwrap() {
        assert!(
            dom.contains(m["url"].as_str().unwrap()),
            "miss {m} on the page"
        );
    }
    assert!(dom.contains("data-tier=\"l1\""));
    assert!(dom.contains("data-tier=\"l3\""));
    assert!(!dom.contains("<script"), "no script on the page");

    // Drawn: the bars' colour is in the screenshot now.
    browse(
        profile.path(),
        &page,
        &[&format!("--screenshot={}", shot.display())],
    )
    .await;
    let drawn = pixels_of(&std::fs::read(&shot).unwrap(), tierd::admin::PAGE_BAR_RGB);
    // Two bars of 40% and 50% are some 30 x 90 px each.
    assert!(
        drawn > blank + 2000,
        "bars drawn: {drawn} pixels of their colour (the legend alone: {blank})"
    );
    println!("admin page screenshot: {}", shot.display());
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn the_admin_page_asks_for_the_token_and_takes_it_as_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let mut s = settings(&origin, dir.path());
    s.admin.token = "s3cret".into();
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let page = format!("http://{}/_tierd/", gw.admin_addr);
    let c = common::client();
    let none = common::send(c.get(&page)).await;
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic ")));
    let wrong = common::send(c.get(&page).basic_auth("ops", "nope")).await;
    assert_eq!(wrong.status, 401);
    let basic = common::send(c.get(&page).basic_auth("ops", "s3cret")).await;
    assert_eq!(basic.status, 200);
    assert!(basic.text().contains("<h1>tierd</h1>"));
    let bearer = common::send(c.get(&page).bearer_auth("s3cret")).await;
    assert_eq!(bearer.status, 200);
    // The admin listener's root and `/_tierd` lead to the page.
    for p in ["/", "/_tierd"] {
        let r = common::send(c.get(format!("http://{}{p}", gw.admin_addr))).await;
        assert!(
            [301, 302, 307, 308].contains(&r.status),
            "{p}: {}",
            r.status
        );
        assert_eq!(r.header("location").as_deref(), Some("/_tierd/"));
    }
    // A browser with the credentials in the URL gets the page.
    let profile = tempfile::tempdir().unwrap();
    let dom = browse(
        profile.path(),
        &format!("http://ops:s3cret@{}/_tierd/", gw.admin_addr),
        &["--dump-dom"],
    )
    .await;
    assert!(dom.contains("<h1>tierd</h1>"), "{dom}");
    gw.stop(true).await;
    origin.stop().await;
}
