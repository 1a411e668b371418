use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::*;
use crate::config::LimitConfig;
use crate::{Decision, Outcome, Request, RequestId, RouteLimit, Timestamp, TrafficControl};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn bm(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::preset("backmarket")?.with_env("BM_RATE_LIMIT", &env(pairs))
}

fn bm_err(pairs: &[(&str, &str)]) -> String {
    bm(pairs).unwrap_err().to_string()
}

fn window(max: u64, per: Duration) -> LimitConfig {
    LimitConfig::Window { max, per, hold: crate::config::WindowHold::Completion }
}

/// The limits a request took: those whose `used` grew.
fn taken(config: &Config, method: &str, url: &str) -> BTreeSet<String> {
    let mut tc = TrafficControl::new(config.clone()).unwrap();
    let t0 = Timestamp::from_millis(0);
    let before = tc.snapshot(t0);
    let decision = tc.try_acquire(t0, Request::http(method, url));
    assert!(matches!(decision, Decision::Go(_)), "{method} {url}: {decision:?}");
    let after = tc.snapshot(t0);
    after.limits.iter().zip(&before.limits).filter(|(a, b)| a.used > b.used).map(|(a, _)| a.name.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

// ---- presets ----

#[test]
fn every_preset_parses_validates_and_builds() {
    assert_eq!(PRESETS.iter().map(|p| p.name).collect::<Vec<_>>(), ["backmarket", "keepa", "baselinker"]);
    for p in PRESETS {
        let config = p.config().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        config.validate().unwrap();
        assert_eq!(Config::from_json(&config.to_json()).unwrap(), config, "{}", p.name);
        assert_eq!(preset(p.name).unwrap(), config);
        assert_eq!(Config::preset(&p.name.to_uppercase()).unwrap(), config);
        TrafficControl::new(config).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        // A preset with no override is itself.
        assert_eq!(p.config_with_env(BTreeMap::<String, String>::new()).unwrap(), p.config().unwrap());
    }
}

#[test]
fn unknown_preset_names_the_field_and_lists_the_known_ones() {
    let e = preset("amazon").unwrap_err();
    assert_eq!(e.field(), "preset");
    assert_eq!(
        e.to_string(),
        "invalid config at preset: unknown preset \"amazon\": the presets are backmarket, keepa, baselinker"
    );
}

#[test]
fn backmarket_has_the_seeds_safe_values() {
    let c = preset("backmarket").unwrap();
    assert_eq!(c.limits["global"], window(150, Duration::from_secs(10)));
    assert_eq!(c.limits["catalog"], window(15, Duration::from_secs(10)));
    assert_eq!(c.limits["competitor"], window(2, Duration::from_secs(1)));
    assert_eq!(c.limits["care"], window(300, Duration::from_secs(60)));
    assert_eq!(c.limits["ingestion"], window(2000, Duration::from_secs(3600)));
    assert_eq!(c.global, ["global"]);
}

#[test]
fn backmarket_routes_map_the_seeds_endpoints_to_their_limits() {
    let c = preset("backmarket").unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("POST", "/ws/listings/42", &["global", "catalog"]),
        ("post", "https://www.backmarket.fr/ws/listings/42?key=secret", &["global", "catalog"]),
        // Creating listings (a data ingestion) also takes the hourly SKU-line limit.
        ("POST", "/ws/listings", &["global", "catalog", "ingestion"]),
        ("POST", "/ws/listings/", &["global", "catalog", "ingestion"]),
        // Every method on /ws/listings counts on catalog, as the seed's route map says.
        ("GET", "/ws/listings/42", &["global", "catalog"]),
        ("GET", "/ws/listings?page=2", &["global", "catalog"]),
        ("PATCH", "/ws/listings/42", &["global", "catalog"]),
        ("GET", "/ws/backbox/v1/competitors/42", &["global", "competitor"]),
        ("GET", "https://www.backmarket.fr/ws/backbox/v1/competitors/42", &["global", "competitor"]),
        ("GET", "/ws/sav/orders", &["global", "care"]),
        ("POST", "/ws/sav/messages/7", &["global", "care"]),
        ("GET", "/ws/orders", &["global"]),
    ];
    for (method, url, want) in cases {
        assert_eq!(taken(&c, method, url), set(want), "{method} {url}");
    }
}

#[test]
fn backmarket_catalog_runs_at_15_per_10_seconds_after_completion() {
    let mut tc = TrafficControl::new(preset("backmarket").unwrap()).unwrap();
    let t0 = Timestamp::from_millis(0);
    for i in 0..15 {
        let d = tc.try_acquire(t0, Request::http("POST", format!("/ws/listings/{i}")));
        assert!(matches!(d, Decision::Go(_)), "{i}: {d:?}");
    }
    let d = tc.try_acquire(t0, Request::http("POST", "/ws/listings/15"));
    // Only a completion (or the leases' end, 60 s) starts a window's count-down.
    assert_eq!(d, Decision::Wait { until: Some(Timestamp::from_millis(60_000)) });
    // Reads wait too: they take the catalog limit.
    assert!(matches!(tc.try_acquire(t0, Request::http("GET", "/ws/listings/15")), Decision::Wait { .. }));
    for i in 1..=15 {
        let _ = tc.complete(Timestamp::from_millis(300), RequestId(i), Outcome::status(200));
    }
    let d = tc.try_acquire(Timestamp::from_millis(300), Request::http("POST", "/ws/listings/15"));
    assert_eq!(d, Decision::Wait { until: Some(Timestamp::from_millis(10_300)) });
}

#[test]
fn keepa_has_a_budget_and_route_costs_as_data() {
    let c = preset("keepa").unwrap();
    assert_eq!(
        c.limits["tokens"],
        LimitConfig::Budget {
            refill: 20,
            per: Duration::from_secs(60),
            max: 1200,
            floor: 0,
            initial: None,
            warn_below: None
        }
    );
    assert!(c.global.is_empty());
    let route = |name: &str| c.routes.iter().find(|r| r.name == name).unwrap();
    let fixed = |name: &str| match &route(name).limits[..] {
        [RouteLimit::WithCost { limit, cost }] if limit == "tokens" => *cost,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(fixed("token"), 0);
    assert_eq!(fixed("deals"), 5);
    assert_eq!(fixed("bestsellers"), 50);
    for per_item in ["product", "category", "seller", "other"] {
        assert_eq!(route(per_item).limits, [RouteLimit::Name("tokens".into())], "{per_item}");
    }
    for fixed_one in ["category", "seller", "other"] {
        assert_eq!(route(fixed_one).cost, crate::config::RouteCost::Fixed(1), "{fixed_one}");
    }
    // A product request costs 1 per ASIN, plus the offers and buybox extras per ASIN.
    assert!(matches!(
        &route("product").cost,
        crate::config::RouteCost::Count { count, factor: 1, extras, plus: 0, max: None }
            if count == "asin" && extras.len() == 2
    ));
}

#[test]
fn keepa_routes_spend_their_costs() {
    let t0 = Timestamp::from_millis(0);
    let mut tc = TrafficControl::new(preset("keepa").unwrap()).unwrap();
    // The balance is unknown at start; /token costs nothing, so it goes to learn it.
    let d = tc.try_acquire(t0, Request::http("GET", "https://api.keepa.com/token?key=secret"));
    assert!(matches!(d, Decision::Go(_)), "{d:?}");
    tc.sync_budget(t0, "tokens", 1000, None).unwrap();
    let used = |tc: &mut TrafficControl| tc.snapshot(t0).limits[0].used;
    let base = used(&mut tc);
    let cases: &[(Request, u64)] = &[
        (Request::http("GET", "https://api.keepa.com/token?key=secret"), 0),
        (Request::http("GET", "/bestsellers?domain=1&category=281052"), 50),
        (Request::http("GET", "/deals?selection={}"), 5),
        (Request::http("GET", "/product?asin=B0"), 1),
        // Per-ASIN counting by the host for now: the request's cost replaces the route's 1.
        (Request::http("GET", "/product?asin=B0,B1,B2").cost(3), 3),
        (Request::http("GET", "/category?category=0"), 1),
        (Request::http("GET", "/seller?seller=A1"), 1),
        (Request::http("GET", "/query?selection={}").cost(10), 10),
        // A fixed route cost wins over the request's.
        (Request::http("GET", "/bestsellers").cost(1), 50),
    ];
    let mut total = base;
    for (request, cost) in cases {
        let d = tc.try_acquire(t0, request);
        assert!(matches!(d, Decision::Go(_)), "{request:?}: {d:?}");
        total += cost;
        assert_eq!(used(&mut tc), total, "{request:?}");
    }
}

#[test]
fn baselinker_runs_at_90_per_minute() {
    let c = preset("baselinker").unwrap();
    assert_eq!(c.limits["requests"], window(90, Duration::from_secs(60)));
    assert_eq!(taken(&c, "POST", "https://api.baselinker.com/connector.php"), set(&["requests"]));
    assert_eq!(taken(&c, "GET", "/anything"), set(&["requests"]));
    let mut tc = TrafficControl::new(c).unwrap();
    let t0 = Timestamp::from_millis(0);
    for _ in 0..90 {
        assert!(matches!(tc.try_acquire(t0, Request::http("POST", "/connector.php")), Decision::Go(_)));
    }
    let d = tc.try_acquire(t0, Request::http("POST", "/connector.php"));
    assert_eq!(d, Decision::Wait { until: Some(Timestamp::from_millis(60_000)) });
}

// ---- environment overrides ----

#[test]
fn each_seed_variable_overrides_its_limit() {
    for (limit, name) in [("GLOBAL", "global"), ("CATALOG", "catalog"), ("COMPETITOR", "competitor"), ("CARE", "care")]
    {
        let default = preset("backmarket").unwrap().limits[name];
        let LimitConfig::Window { max: default_max, per: default_per, .. } = default else { panic!() };

        let c = bm(&[(&format!("BM_RATE_LIMIT_{limit}_MAX_REQUESTS"), "7")]).unwrap();
        assert_eq!(c.limits[name], window(7, default_per), "{limit}");

        let c = bm(&[(&format!("BM_RATE_LIMIT_{limit}_INTERVAL_MS"), "2500")]).unwrap();
        assert_eq!(c.limits[name], window(default_max, Duration::from_millis(2500)), "{limit}");

        let c = bm(&[
            (&format!("BM_RATE_LIMIT_{limit}_INTERVAL_MS"), " 5000 "),
            (&format!("BM_RATE_LIMIT_{limit}_MAX_REQUESTS"), "3"),
        ])
        .unwrap();
        assert_eq!(c.limits[name], window(3, Duration::from_secs(5)), "{limit}");
        // The other limits keep the preset's values.
        let untouched = preset("backmarket").unwrap();
        for (other, l) in &c.limits {
            if other != name {
                assert_eq!(*l, untouched.limits[other], "{limit} touched {other}");
            }
        }
    }
}

#[test]
fn overrides_take_effect_in_the_controller() {
    let c = bm(&[("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS", "2"), ("BM_RATE_LIMIT_CATALOG_INTERVAL_MS", "1000")]).unwrap();
    let mut tc = TrafficControl::new(c).unwrap();
    let t0 = Timestamp::from_millis(0);
    for _ in 0..2 {
        assert!(matches!(tc.try_acquire(t0, Request::http("POST", "/ws/listings/1")), Decision::Go(_)));
    }
    let d = tc.try_acquire(t0, Request::http("POST", "/ws/listings/1"));
    assert_eq!(d, Decision::Wait { until: Some(Timestamp::from_millis(60_000)) });
    let _ = tc.complete(t0, RequestId(1), Outcome::status(200));
    let d = tc.try_acquire(t0, Request::http("POST", "/ws/listings/1"));
    assert_eq!(d, Decision::Wait { until: Some(Timestamp::from_millis(1000)) });
}

#[test]
fn the_whole_environment_may_be_handed_over() {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("PATH".into(), "/usr/bin".into());
    vars.insert("BM_API_KEY".into(), "secret".into());
    vars.insert("BM_RATE_LIMIT".into(), "not a variable of ours: no trailing field".into());
    vars.insert("KEEPA_RATE_LIMIT_TOKENS_FLOOR".into(), "100".into());
    vars.insert("BM_RATE_LIMIT_CARE_MAX_REQUESTS".into(), "250".into());
    let c = Preset::named("backmarket").unwrap().config_with_env(&vars).unwrap();
    assert_eq!(c.limits["care"], window(250, Duration::from_secs(60)));
    // Iterators of owned pairs and of &str pairs work too.
    let c2 = apply_env(preset("backmarket").unwrap(), "BM_RATE_LIMIT", vars.clone()).unwrap();
    assert_eq!(c2, c);
    let c3 = apply_env(preset("backmarket").unwrap(), "BM_RATE_LIMIT_", [("BM_RATE_LIMIT_CARE_MAX", "250")]).unwrap();
    assert_eq!(c3, c);
}

#[test]
fn invalid_values_name_the_variable_and_the_reason() {
    assert_eq!(
        bm_err(&[("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS", "abc")]),
        "invalid config at env BM_RATE_LIMIT_CATALOG_MAX_REQUESTS: \"abc\" is not a whole number"
    );
    for bad in ["-1", "1.5", "15 requests", "1e3"] {
        let e = bm_err(&[("BM_RATE_LIMIT_GLOBAL_MAX_REQUESTS", bad)]);
        assert!(e.contains("env BM_RATE_LIMIT_GLOBAL_MAX_REQUESTS") && e.contains("not a whole number"), "{e}");
    }
    assert_eq!(
        bm_err(&[("BM_RATE_LIMIT_CARE_INTERVAL_MS", "60s")]),
        "invalid config at env BM_RATE_LIMIT_CARE_INTERVAL_MS: \"60s\" is not a whole number of milliseconds"
    );
    let e = bm_err(&[("BM_RATE_LIMIT_CARE_PER", "soon")]);
    assert!(e.contains("env BM_RATE_LIMIT_CARE_PER") && e.contains("not a duration"), "{e}");
    let err = bm(&[("BM_RATE_LIMIT_COMPETITOR_MAX_REQUESTS", "x")]).unwrap_err();
    assert_eq!(err.field(), "env BM_RATE_LIMIT_COMPETITOR_MAX_REQUESTS");
    assert_eq!(err.code(), "CONFIG");
}

#[test]
fn the_overridden_config_is_validated_again() {
    assert_eq!(
        bm_err(&[("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS", "0")]),
        "invalid config at env BM_RATE_LIMIT_CATALOG_MAX_REQUESTS: sets limits.catalog.max, which must be at least 1"
    );
    let e = bm_err(&[("BM_RATE_LIMIT_GLOBAL_INTERVAL_MS", "0")]);
    assert!(e.contains("env BM_RATE_LIMIT_GLOBAL_INTERVAL_MS") && e.contains("limits.global.per"), "{e}");
    // The error is on another field of the limit: it names the variable that caused it.
    let e =
        Preset::named("keepa").unwrap().config_with_env(env(&[("KEEPA_RATE_LIMIT_TOKENS_FLOOR", "1200")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid config at limits.tokens.max: must be above the floor (after env KEEPA_RATE_LIMIT_TOKENS_FLOOR)"
    );
}

#[test]
fn unknown_variables_under_the_prefix_are_errors_that_help() {
    let e = bm_err(&[("BM_RATE_LIMIT_CATALOG_MAX_REQUEST", "10")]);
    assert_eq!(
        e,
        "invalid config at env BM_RATE_LIMIT_CATALOG_MAX_REQUEST: \"MAX_REQUEST\" is not a field of limit \"catalog\"; \
         its fields are MAX, MAX_REQUESTS, PER, PER_MS, INTERVAL_MS, HOLD"
    );
    let e = bm_err(&[("BM_RATE_LIMIT_CATALOGUE_MAX_REQUESTS", "10")]);
    assert!(
        e.starts_with("invalid config at env BM_RATE_LIMIT_CATALOGUE_MAX_REQUESTS: names no limit")
            && e.contains("CARE, CATALOG, COMPETITOR, GLOBAL"),
        "{e}"
    );
    let e = bm_err(&[("BM_RATE_LIMIT_CATALOG_CAPACITY", "10")]);
    assert!(e.contains("\"catalog\" is a window limit, which has no capacity"), "{e}");
    let e = bm_err(&[("BM_RATE_LIMIT_ENABLED", "1")]);
    assert!(e.contains("env BM_RATE_LIMIT_ENABLED") && e.contains("names no limit"), "{e}");
}

#[test]
fn empty_values_count_as_unset() {
    assert_eq!(
        bm(&[("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS", ""), ("BM_RATE_LIMIT_TYPO", "  ")]).unwrap(),
        preset("backmarket").unwrap()
    );
}

#[test]
fn two_spellings_of_one_field_must_agree() {
    let c = bm(&[("BM_RATE_LIMIT_CARE_MAX", "100"), ("BM_RATE_LIMIT_CARE_MAX_REQUESTS", "100")]).unwrap();
    assert_eq!(c.limits["care"], window(100, Duration::from_secs(60)));
    let c = bm(&[("BM_RATE_LIMIT_CARE_PER", "30s"), ("BM_RATE_LIMIT_CARE_INTERVAL_MS", "30000")]).unwrap();
    assert_eq!(c.limits["care"], window(300, Duration::from_secs(30)));
    assert_eq!(
        bm_err(&[("BM_RATE_LIMIT_CARE_MAX", "100"), ("BM_RATE_LIMIT_CARE_MAX_REQUESTS", "200")]),
        "invalid config at env BM_RATE_LIMIT_CARE_MAX_REQUESTS: \"200\" disagrees with BM_RATE_LIMIT_CARE_MAX, \
         which sets the same field"
    );
}

#[test]
fn errors_do_not_depend_on_the_maps_order() {
    let pairs = [("BM_RATE_LIMIT_ZZZ_MAX", "1"), ("BM_RATE_LIMIT_AAA_MAX", "1"), ("BM_RATE_LIMIT_GLOBAL_MAX", "x")];
    let from_hash: HashMap<&str, &str> = pairs.into_iter().collect();
    for _ in 0..8 {
        let e = apply_env(preset("backmarket").unwrap(), "BM_RATE_LIMIT", &from_hash).unwrap_err();
        assert_eq!(e.field(), "env BM_RATE_LIMIT_AAA_MAX");
    }
}

#[test]
fn every_kind_and_field_can_be_overridden() {
    let c = Preset::named("keepa")
        .unwrap()
        .config_with_env(env(&[
            ("KEEPA_RATE_LIMIT_TOKENS_FLOOR", "50"),
            ("KEEPA_RATE_LIMIT_TOKENS_INITIAL", "600"),
            ("KEEPA_RATE_LIMIT_TOKENS_REFILL", "60"),
            ("KEEPA_RATE_LIMIT_TOKENS_MAX", "3600"),
            ("KEEPA_RATE_LIMIT_TOKENS_PER", "2m"),
        ]))
        .unwrap();
    assert_eq!(
        c.limits["tokens"],
        LimitConfig::Budget {
            refill: 60,
            per: Duration::from_secs(120),
            max: 3600,
            floor: 50,
            initial: Some(600),
            warn_below: None
        }
    );

    let custom = Config::from_json(
        r#"{"limits":{
            "api-burst": {"kind":"token_bucket","capacity":10,"refill":1,"per":"1s"},
            "in_flight": {"kind":"concurrency","max":4}
        }}"#,
    )
    .unwrap();
    let c = custom
        .with_env(
            "APP",
            &env(&[
                ("APP_API_BURST_CAPACITY", "20"),
                ("APP_API_BURST_REFILL", "2"),
                ("APP_API_BURST_PER_MS", "500"),
                ("APP_IN_FLIGHT_MAX_REQUESTS", "8"),
                ("APP_QUEUE_MAX_WAITING", "1000"),
                ("APP_RESERVATION_TTL", "45s"),
                ("APP_LEASE_TTL_MS", "90000"),
            ]),
        )
        .unwrap();
    assert_eq!(
        c.limits["api-burst"],
        LimitConfig::TokenBucket { capacity: 20, refill: 2, per: Duration::from_millis(500) }
    );
    assert_eq!(c.limits["in_flight"], LimitConfig::Concurrency { max: 8 });
    assert_eq!(c.queue.max_waiting, 1000);
    assert_eq!(c.reservation_ttl, Duration::from_secs(45));
    assert_eq!(c.lease_ttl, Duration::from_secs(90));
    let e = Config::from_json(r#"{"limits":{"c":{"kind":"concurrency","max":4}}}"#)
        .unwrap()
        .with_env("APP", &env(&[("APP_C_PER", "1s")]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid config at env APP_C_PER: limit \"c\" is a concurrency limit, which has no per; \
         its fields are MAX, MAX_REQUESTS"
    );
}

#[test]
fn two_limits_with_one_variable_name_are_ambiguous() {
    let c = Config::from_json(
        r#"{"limits":{"a-b":{"kind":"window","max":1,"per":"1s"},"a_b":{"kind":"window","max":1,"per":"1s"}}}"#,
    )
    .unwrap();
    let e = c.with_env("APP", &env(&[("APP_A_B_MAX", "2")])).unwrap_err();
    assert!(e.to_string().contains("ambiguous") && e.to_string().contains("limits.a-b.max"), "{e}");
}

#[test]
fn an_empty_prefix_is_refused() {
    let e = preset("backmarket").unwrap().with_env("", &env(&[])).unwrap_err();
    assert_eq!(e.field(), "env prefix");
    let e = preset("backmarket").unwrap().with_env("_", &env(&[])).unwrap_err();
    assert_eq!(e.field(), "env prefix");
}

// ---- TOML ----

const BACKMARKET_TOML: &str = r#"
global = ["global"]

[limits.global]
kind = "window"
max = 150
per = "10s"

[limits.catalog]
kind = "window"
max = 15
per = 10000          # milliseconds, as in JSON

[limits.competitor]
kind = "window"
max = 2
per = "1000ms"

[limits.care]
kind = "window"
max = 300
per = "1m"

[[routes]]
name = "competitors"
path = "^/ws/backbox/v1/competitors"
limits = ["competitor"]

[limits.ingestion]
kind = "window"
max = 2000
per = "1h"

[[routes]]
name = "catalog_ingestion"
method = "POST"
path = "^/ws/listings/?$"
limits = [{ limit = "global", cost = 1 }, { limit = "catalog", cost = 1 }, "ingestion"]

[[routes]]
name = "listings"
path = "^/ws/listings"
limits = ["catalog"]

[[routes]]
name = "care"
path = "^/ws/sav"
limits = ["care"]
"#;

#[test]
fn toml_and_json_of_the_same_config_are_equal() {
    assert_eq!(Config::from_toml(BACKMARKET_TOML).unwrap(), preset("backmarket").unwrap());

    let keepa = r#"
        [limits.tokens]
        kind = "budget"
        refill = 20
        per = "1m"
        max = 1200
        floor = 0

        [[routes]]
        name = "token"
        path = "^/token/?$"
        limits = [{ limit = "tokens", cost = 0 }]
        status = { path = "/token", query = ["key"] }
        [[routes]]
        name = "product"
        path = "^/product/?$"
        limits = ["tokens"]
        cost = { count = "asin", factor = 1, extras = [{ param = "offers", cost = 6, per = 10 }, { param = "buybox", cost = 2 }] }
        [[routes]]
        name = "deals"
        path = "^/deals/?$"
        limits = [{ limit = "tokens", cost = 5 }]
        [[routes]]
        name = "bestsellers"
        path = "^/bestsellers/?$"
        limits = [{ limit = "tokens", cost = 50 }]
        [[routes]]
        name = "category"
        path = "^/category/?$"
        limits = ["tokens"]
        [[routes]]
        name = "seller"
        path = "^/seller/?$"
        limits = ["tokens"]
        [[routes]]
        name = "other"
        path = ".*"
        limits = ["tokens"]
    "#;
    assert_eq!(Config::from_toml(keepa).unwrap(), preset("keepa").unwrap());

    let full = r#"
        reservation_ttl = "45s"
        lease_ttl = 90000
        [limits.a]
        kind = "token_bucket"
        capacity = 5
        refill = 1
        per = 250
        [limits.b]
        kind = "concurrency"
        max = 3
        [queue]
        max_waiting = 10
        [events]
        query = "redact"
    "#;
    let json = r#"{
        "reservation_ttl": "45s", "lease_ttl": 90000,
        "limits": {"a": {"kind":"token_bucket","capacity":5,"refill":1,"per":250}, "b": {"kind":"concurrency","max":3}},
        "queue": {"max_waiting": 10}, "events": {"query": "redact"}
    }"#;
    assert_eq!(Config::from_toml(full).unwrap(), Config::from_json(json).unwrap());
}

#[test]
fn toml_syntax_errors_name_the_line_and_column() {
    let e = Config::from_toml("[limits.a]\nkind = \"window\"\nmax = = 3\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
    assert!(e.field().starts_with("line 3, column "), "{e}");
    let e = Config::from_toml("[limits.a\nkind = \"window\"\n").unwrap_err();
    assert!(e.field().starts_with("line 1, column "), "{e}");
    let e = Config::from_toml("[limits.a]\nmax = 1\nmax = 2\n").unwrap_err();
    assert!(e.field().starts_with("line 3, column "), "{e}");
}

#[test]
fn toml_errors_name_the_field_like_json() {
    let e = Config::from_toml("[limits.a]\nkind = \"window\"\nmax = 0\nper = \"1s\"\n").unwrap_err();
    assert_eq!(e.to_string(), "invalid config at limits.a.max: must be at least 1");
    let e = Config::from_toml("[limits.a]\nkind = \"window\"\nmax = 1\nper = \"soon\"\n").unwrap_err();
    assert!(e.field().starts_with("limits.a") && e.to_string().contains("not a duration"), "{e}");
    let e = Config::from_toml("[limits.a]\nkind = \"window\"\nmax = 1\nper = \"1s\"\nburst = 3\n").unwrap_err();
    assert!(e.field().starts_with("limits.a") && e.to_string().contains("burst"), "{e}");
    let e = Config::from_toml("[limits.a]\nkind = \"window\"\nmax = 1\nper = \"1s\"\n[[routes]]\nname = \"r\"\npath = \"^/x\"\nlimits = [\"b\"]\n")
        .unwrap_err();
    assert!(e.field() == "routes[0].limits[0]" && e.to_string().contains("\"b\""), "{e}");
    let e = Config::from_toml("limits = 3\n").unwrap_err();
    assert_eq!(e.field(), "limits", "{e}");
    let e = Config::from_toml("[queue]\nmax_waiting = \"many\"\n[limits.a]\nkind = \"concurrency\"\nmax = 1\n")
        .unwrap_err();
    assert_eq!(e.field(), "queue.max_waiting", "{e}");
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn the_feedback_settings_and_a_windows_hold_have_variables_too() {
    let c = bm(&[
        ("BM_RATE_LIMIT_FEEDBACK_BLOCK", "15s"),
        ("BM_RATE_LIMIT_FEEDBACK_MAX_BLOCK_MS", "60000"),
        ("BM_RATE_LIMIT_FEEDBACK_COOLDOWN", "2m"),
        ("BM_RATE_LIMIT_FEEDBACK_MAX_RETRIES", "5"),
        ("BM_RATE_LIMIT_FEEDBACK_JITTER_PERCENT", "20"),
        ("BM_RATE_LIMIT_COMPETITOR_HOLD", "go"),
    ])
    .unwrap();
    assert_eq!(c.feedback.block, Duration::from_secs(15));
    assert_eq!(c.feedback.max_block, Duration::from_secs(60));
    assert_eq!(c.feedback.cooldown, Duration::from_secs(120));
    assert_eq!(c.feedback.max_retries, 5);
    assert!((c.feedback.jitter - 0.2).abs() < 1e-9);
    assert!(matches!(c.limits["competitor"], LimitConfig::Window { hold: crate::config::WindowHold::Go, .. }));
    let e = bm_err(&[("BM_RATE_LIMIT_CATALOG_HOLD", "arrival")]);
    assert!(e.contains("BM_RATE_LIMIT_CATALOG_HOLD") && e.contains("completion or go"), "{e}");
    let e = bm_err(&[("BM_RATE_LIMIT_FEEDBACK_JITTER_PERCENT", "500")]);
    assert!(e.contains("BM_RATE_LIMIT_FEEDBACK_JITTER_PERCENT"), "{e}");
}

#[test]
fn keepas_status_request_is_made_from_any_request_to_the_api() {
    let c = preset("keepa").unwrap();
    assert_eq!(
        c.status_url("https://api.keepa.com/product?key=K&asin=B0").as_deref(),
        Some("https://api.keepa.com/token?key=K")
    );
    assert_eq!(c.status_url("/deals?domain=1").as_deref(), Some("/token"));
    assert_eq!(preset("backmarket").unwrap().status_url("https://x/ws/listings"), None);
    let e = Config::from_json(
        r#"{"limits":{"b":{"kind":"budget","refill":1,"per":"1m","max":5}},"routes":[{"name":"t","path":"^/t","limits":[{"limit":"b","cost":0}],"status":{"path":"t"}}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("routes[0].status.path"), "{e}");
}
