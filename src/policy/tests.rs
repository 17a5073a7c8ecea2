use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;

use super::*;

fn rule(toml: &str) -> RuleConfig {
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

fn compile(toml: &str) -> Result<RuleSet, String> {
    RuleSet::compile(&[rule(toml)], &Metrics::new())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn first_match_wins_and_methods_filter() {
    let rules = RuleSet::compile(
        &[
            rule("name = \"one\"\npath = \"/a/{id}\"\nttl_seconds = 5"),
            rule("name = \"two\"\npath = \"/a/{id}\"\nttl_seconds = 9"),
            rule("name = \"w\"\npath = \"/a/{id}\"\nmethods = [\"PUT\", \"delete\"]\ninvalidate = { tags = [\"a:{id}\"] }"),
        ],
        &Metrics::new(),
    )
    .unwrap();
    assert_eq!(rules.find(&Method::GET, "/a/1").unwrap().rule().name, "one");
    assert_eq!(
        rules.find(&Method::HEAD, "/a/1").unwrap().rule().name,
        "one"
    );
    let w = rules.find(&Method::DELETE, "/a/1").unwrap();
    assert_eq!(w.rule().name, "w");
    assert_eq!(w.invalidations(), vec![Selector::Tag("a:1".into())]);
    assert!(rules.find(&Method::POST, "/a/1").is_none());
    assert!(rules.find(&Method::GET, "/b").is_none());
}

#[test]
fn ttl_by_field_follows_the_body() {
    let rules = compile(
        r#"path = "/a/{id}"
           ttl_seconds = 30
           ttl_by_field = { pointer = "/state/name", values = { in_progress = 60, completed = 300, failed = 0, "true" = 7, "3" = 8 } }"#,
    )
    .unwrap();
    let r = rules.find(&Method::GET, "/a/1").unwrap().rule();
    let cases: [(&[u8], Option<u64>); 8] = [
        (br#"{"state":{"name":"in_progress"}}"#, Some(60)),
        (br#"{"state":{"name":"completed"}}"#, Some(300)),
        (br#"{"state":{"name":"failed"}}"#, Some(0)),
        (br#"{"state":{"name":true}}"#, Some(7)),
        (br#"{"state":{"name":3}}"#, Some(8)),
        (br#"{"state":{"name":"other"}}"#, None),
        (br#"{"state":{}}"#, None),
        (b"not json", None),
    ];
    for (body, want) in cases {
        assert_eq!(
            r.ttl_from_body(body),
            want,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(r.freshness(200), LifetimeOverride::FromBody);
    // Non-2xx: ttl_seconds for default-cacheable statuses, the origin otherwise.
    assert_eq!(r.freshness(404), LifetimeOverride::Fixed(30));
    assert_eq!(r.freshness(500), LifetimeOverride::Origin);
    assert_eq!(r.fallback_ttl(200), Some(30));
    let d = compile(
        r#"path = "/a"
        ttl_by_field = { pointer = "/s", values = { x = 1 }, default = 9 }"#,
    )
    .unwrap();
    let r = d.find(&Method::GET, "/a").unwrap().rule();
    assert_eq!(r.ttl_from_body(b"{}"), Some(9));
    assert_eq!(r.ttl_from_body(b"garbage"), Some(9));
}

#[test]
fn per_status_ttls_win() {
    let rules = compile(
        r#"path = "/a"
           ttl_seconds = 300
           ttl_by_status = { 404 = 10, 503 = 2, 410 = 0 }"#,
    )
    .unwrap();
    let r = rules.find(&Method::GET, "/a").unwrap().rule();
    assert_eq!(r.freshness(200), LifetimeOverride::Fixed(300));
    assert_eq!(r.freshness(404), LifetimeOverride::Fixed(10));
    assert_eq!(r.freshness(503), LifetimeOverride::Fixed(2));
    assert_eq!(r.freshness(410), LifetimeOverride::Fixed(0));
    assert_eq!(r.freshness(500), LifetimeOverride::Origin);
}

#[test]
fn bypass_refresh_and_key_query() {
    let rules = compile(
        r#"path = "/r/{id}"
           bypass_query_params = ["category", "min_*"]
           refresh_query_params = ["force_refresh"]
           bypass_headers = ["x-debug"]
           key = { ignore_query_params = ["utm_*"], sort_query_params = true }"#,
    )
    .unwrap();
    let r = rules.find(&Method::GET, "/r/1").unwrap().rule();
    let none = HeaderMap::new();
    assert_eq!(r.bypass("category=x", &none), Some(Bypass::QueryParam));
    assert_eq!(r.bypass("a=1&min_score=3", &none), Some(Bypass::QueryParam));
    assert_eq!(r.bypass("cat%65gory=x", &none), Some(Bypass::QueryParam));
    assert_eq!(r.bypass("categoryx=1", &none), None);
    assert_eq!(
        r.bypass("", &headers(&[("X-Debug", "1")])),
        Some(Bypass::Header)
    );
    assert!(r.refresh("force_refresh=1"));
    assert!(!r.refresh("force=1"));
    assert_eq!(
        r.key_query("b=2&utm_source=x&a=1&force_refresh=1"),
        "a=1&b=2"
    );
    assert_eq!(r.key_query("utm_medium=y"), "");
    let h = headers(&[]);
    assert_eq!(
        compose_key("api.test", "/r/1", "b=2&a=1", r, &h),
        "api.test/r/1?a=1&b=2"
    );
    assert_eq!(
        compose_key("api.test", "/r/1", "utm_x=1", r, &h),
        "api.test/r/1"
    );
}

#[test]
fn user_scope_and_header_keys() {
    let rules = compile(
        r#"path = "/me"
           key = { user = "authorization", headers = ["accept-language"] }"#,
    )
    .unwrap();
    let r = rules.find(&Method::GET, "/me").unwrap().rule();
    let a = compose_key(
        "h",
        "/me",
        "",
        r,
        &headers(&[("authorization", "Bearer alice"), ("accept-language", "fr")]),
    );
    let b = compose_key(
        "h",
        "/me",
        "",
        r,
        &headers(&[("authorization", "Bearer bob"), ("accept-language", "fr")]),
    );
    let anon = compose_key("h", "/me", "", r, &headers(&[("accept-language", "fr")]));
    assert_ne!(a, b);
    assert!(
        !a.contains("alice"),
        "the key must not carry the credential: {a}"
    );
    assert_eq!(anon, "h/me h:accept-language=fr");
    assert!(a.starts_with("h/me h:accept-language=fr u:"), "{a}");
    assert_eq!(
        KeyParts::parse(&a).unwrap(),
        KeyParts {
            host: "h",
            path: "/me",
            query: "",
            user: Some(user_digest(b"Bearer alice").as_str()),
        }
    );
    // The selector a user purge builds selects exactly that user's key, on every route.
    assert!(Selector::user("Bearer alice").matches_key(&a));
    assert!(!Selector::user("Bearer alice").matches_key(&b));
    assert!(!Selector::user("Bearer alice").matches_key(&anon));
    assert!(Selector::All.matches_key(&anon));
    let hdr = compile("path = \"/me\"\nkey = { user = \"header:X-User-Id\" }").unwrap();
    let r = hdr.find(&Method::GET, "/me").unwrap().rule();
    assert_eq!(
        r.user_value(&headers(&[("x-user-id", "7")])),
        Some(&b"7"[..])
    );
    assert_eq!(r.user_value(&headers(&[("authorization", "x")])), None);
}

#[test]
fn selectors_match_keys() {
    let url = Selector::Url {
        host: None,
        path: "/a".into(),
        query: None,
    };
    assert!(url.matches_key("h/a"));
    assert!(url.matches_key("h2/a?x=1 u:ff"));
    assert!(!url.matches_key("h/ab"));
    let exact = Selector::Url {
        host: Some("h".into()),
        path: "/a".into(),
        query: Some("x=1".into()),
    };
    assert!(exact.matches_key("h/a?x=1 u:ff"));
    assert!(!exact.matches_key("h/a"));
    assert!(!exact.matches_key("other/a?x=1"));
    let prefix = Selector::Prefix {
        host: None,
        prefix: "/api/".into(),
    };
    assert!(prefix.matches_key("h/api/x?y"));
    assert!(!prefix.matches_key("h/apix"));
    assert!(!prefix.matches_key("garbage"));
    let user = Selector::User("ff".into());
    assert_eq!(user.index_tag().as_deref(), Some("user:ff"));
    assert!(user.matches_key("h/a?x=1 h:accept=%20x u:ff"));
    assert!(!user.matches_key("h/a?x=1 u:ffa"));
    assert!(!user.matches_key("h/u:ff"), "a path is not a user scope");
    assert!(!user.matches_key("h/a h:x-u=u:ff"), "nor a header value");
    assert_eq!(Selector::All.index_tag(), None);
}

#[test]
fn bad_rules_name_the_rule_and_key() {
    for (toml, says) in [
        ("name = \"x\"\npath = \"/a/{id\"", "rules[0] (\"x\"): path:"),
        (
            "path = \"/a\"\nttl_seconds = -5",
            "rules[0] (path \"/a\"): ttl_seconds = -5: a TTL must be 0 or more",
        ),
        (
            "path = \"/a\"\nttl_by_status = { abc = 5 }",
            "ttl_by_status: 'abc'",
        ),
        (
            "path = \"/a\"\nttl_by_status = { 304 = 5 }",
            "ttl_by_status: '304'",
        ),
        (
            "path = \"/a\"\nttl_by_field = { pointer = \"status\", values = { a = 1 } }",
            "not a JSON pointer",
        ),
        (
            "path = \"/a\"\nttl_by_field = { pointer = \"/a~2\", values = { a = 1 } }",
            "~0",
        ),
        (
            "path = \"/a\"\nttl_by_field = { pointer = \"/s\", values = { a = -1 } }",
            "ttl_by_field.values.a = -1",
        ),
        ("path = \"/a\"\nmethods = [\"FETCH\"]", "methods: 'FETCH'"),
        (
            "path = \"/a/{id}\"\ntags = [\"t:{nope}\"]",
            "tags[0]: '{nope}' is not a parameter",
        ),
        ("path = \"/a\"\ntags = [\"has space\"]", "tags[0]"),
        (
            "path = \"/a\"\ninvalidate = { tags = [\"x\"] }",
            "invalidate: has no effect",
        ),
        (
            "path = \"/a\"\nmethods = [\"PUT\"]\ninvalidate = { paths = [\"nope\"] }",
            "invalidate.paths[0]",
        ),
        (
            "path = \"/a\"\nmethods = [\"PUT\"]\nttl_seconds = 5",
            "no GET",
        ),
        (
            "path = \"/a\"\nkey = { user = \"cookie\" }",
            "key.user: 'cookie'",
        ),
        ("path = \"/a\"\ntiers = [\"l2\"]", "must include \"l1\""),
        ("path = \"/a\"\ntiers = [\"l9\"]", "tiers: 'l9'"),
        ("path = \"\"", "path: missing"),
    ] {
        let e = compile(toml).unwrap_err();
        assert!(e.contains(says), "{toml}\n => {e}");
    }
}
