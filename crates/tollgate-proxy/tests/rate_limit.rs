//! The `rate_limit` policy end to end with in-process counters: route
//! limits by address, header and attachment; plans through subscriptions
//! (rates, the monthly quota, APIs and scopes the plan allows, a plan
//! change); concurrency; the IETF fields and the 429 problem. Redis and
//! two-node behaviour are covered by the binary's tests.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_core::config::PlanLimits;
use tollgate_core::ids::SubscriptionId;
use tollgate_limits::SubscriptionEntry;
use tollgate_limits::calendar;

fn rate_limit(config: Value) -> Value {
    json!({"name": "rate_limit", "config": config})
}

fn auth(scopes: &[&str]) -> Value {
    json!({"name": "auth", "config": {"scopes": scopes}})
}

fn subscribe(gw: &TestGateway, c: &Caller, plan: &str, overrides: PlanLimits) -> SubscriptionId {
    let id = SubscriptionId::new();
    gw.gw.env().catalog.upsert_subscription(SubscriptionEntry {
        id: id.clone(),
        org: c.org.clone(),
        app: None,
        key: None,
        plan: plan.into(),
        api: None,
        overrides,
        timezone: chrono_tz::Tz::UTC,
    });
    id
}

async fn call(url: &str, c: Option<&Caller>, extra: &[(&str, &str)]) -> Reply {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    let bearer;
    if let Some(c) = c {
        bearer = format!("Bearer {}", c.secret);
        headers.push(("authorization", &bearer));
    }
    client().request("GET", url, &headers, empty()).await
}

fn config_with(up: &Upstream, routes: Value, plans: Value) -> Value {
    let mut v = one_service(&up.url(), routes);
    v["plans"] = plans;
    v
}

#[tokio::test]
async fn a_route_limit_by_address_answers_429_with_the_ietf_fields() {
    let up = Upstream::echo("up").await;
    // An upstream's own fields of these names give way to the gateway's.
    *up.control.response_headers.lock().unwrap() = vec![
        ("RateLimit".into(), "\"up\";r=9;t=1".into()),
        ("ratelimit-policy".into(), "\"up\";q=10".into()),
    ];
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([{"name": "api", "paths": ["/api"], "policies": [rate_limit(json!({
            "limits": [{"requests": 3, "per": "1m", "by": "ip"}]
        }))]}]),
    ))
    .await;
    for left in [2, 1, 0] {
        let r = get(&gw.url("/api")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"1m\";q=3;w=60"));
        let state = r.header("ratelimit").expect("RateLimit field");
        assert!(state.starts_with(&format!("\"1m\";r={left};t=")), "{state}");
        for name in ["ratelimit", "ratelimit-policy"] {
            assert_eq!(r.headers.get_all(name).iter().count(), 1, "{name}");
        }
    }
    let r = get(&gw.url("/api")).await;
    assert_eq!(r.problem(429), "rate_limited");
    // One request per 20 s: the next one is due in 20 s at most, never sooner.
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((19..=20).contains(&retry), "Retry-After {retry}");
    assert!(r.header("ratelimit").unwrap().starts_with("\"1m\";r=0;t="));
    assert_eq!(
        up.stats.requests(),
        3,
        "the refused request never reached the upstream"
    );
}

#[tokio::test]
async fn the_ietf_fields_reach_every_answer_and_a_response_transformer_sees_them() {
    let up = Upstream::echo("up").await;
    *up.control.response_headers.lock().unwrap() =
        vec![("RateLimit".into(), "\"up\";r=9;t=1".into())];
    let limit = || {
        rate_limit(json!({
            "limits": [{"name": "burst", "requests": 5, "per": "1m", "by": "ip"}]
        }))
    };
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([
            {"name": "small", "paths": ["/small"], "policies": [
                limit(),
                {"name": "request_size_limit", "config": {"max_bytes": 4}},
            ]},
            {"name": "shaped", "paths": ["/shaped"], "policies": [
                limit(),
                {"name": "response_transformer", "config": {
                    "remove": ["ratelimit-policy"], "append": {"ratelimit": "extra"}
                }},
            ]},
        ]),
    ))
    .await;
    // A later policy's own answer carries them: the request was counted.
    let r = client()
        .request("POST", &gw.url("/small"), &[], full(vec![b'x'; 10]))
        .await;
    assert_eq!(r.problem(413), "payload_too_large");
    assert_eq!(r.header("ratelimit-policy"), Some("\"burst\";q=5;w=60"));
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"burst\";r=4;t=")
    );
    // A response transformer finds the gateway's fields in the map, with
    // the upstream's own of that name already replaced.
    let r = get(&gw.url("/shaped")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), None);
    let values: Vec<_> = r.headers.get_all("ratelimit").iter().collect();
    assert_eq!(values.len(), 2, "{values:?}");
    assert!(values[0].to_str().unwrap().starts_with("\"burst\";r=4;t="));
    assert_eq!(values[1], "extra");
    assert_eq!(
        r.header("x-upstream"),
        Some("up"),
        "the upstream's own pass"
    );
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
}

#[tokio::test]
async fn limits_by_header_count_each_value_apart_and_global_limits_span_routes() {
    let up = Upstream::echo("up").await;
    let mut cfg = one_service(
        &up.url(),
        json!([
            {"name": "a", "paths": ["/a"]},
            {"name": "b", "paths": ["/b"]},
            {"name": "t", "paths": ["/t"], "policies": [rate_limit(json!({
                "limits": [{"name": "tenant", "requests": 1, "per": "1h", "by": "header:X-Tenant"}]
            }))]},
        ]),
    );
    cfg["policies"] = json!([rate_limit(json!({
        "limits": [{"name": "all", "requests": 2, "per": "1h", "by": "route"}]
    }))]);
    let gw = TestGateway::start(&cfg).await;
    // The global limit is one budget for /a and /b together.
    assert_eq!(get(&gw.url("/a")).await.status, 200);
    assert_eq!(get(&gw.url("/b")).await.status, 200);
    assert_eq!(get(&gw.url("/a")).await.problem(429), "rate_limited");
    // A route's own policy replaces the global one, and counts per header value.
    let t = gw.url("/t");
    assert_eq!(call(&t, None, &[("x-tenant", "one")]).await.status, 200);
    assert_eq!(call(&t, None, &[("x-tenant", "two")]).await.status, 200);
    assert_eq!(
        call(&t, None, &[("x-tenant", "one")]).await.problem(429),
        "rate_limited"
    );
    let long = "x".repeat(500);
    assert_eq!(call(&t, None, &[("x-tenant", &long)]).await.status, 200);
    assert_eq!(
        call(&t, None, &[("x-tenant", &long)]).await.problem(429),
        "rate_limited"
    );
}

#[tokio::test]
async fn a_monthly_quota_admits_exactly_its_size_and_says_so() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&config_with(
        &up,
        json!([{"name": "api", "paths": ["/api"], "policies": [auth(&[]), rate_limit(json!({}))]}]),
        json!([{"name": "starter", "limits": {"monthly_quota": 5, "per_second": 100}}]),
    ))
    .await;
    let c = add_key(&gw, &[]);
    subscribe(&gw, &c, "starter", PlanLimits::default());
    let url = gw.url("/api");
    for left in (0..5).rev() {
        let r = call(&url, Some(&c), &[]).await;
        assert_eq!(r.status, 200);
        let state = r.header("ratelimit").unwrap();
        assert!(
            state.contains(&format!("\"plan-month\";r={left};t=")),
            "{state}"
        );
    }
    let r = call(&url, Some(&c), &[]).await;
    assert_eq!(r.problem(429), "quota_exceeded");
    assert!(
        r.header("ratelimit-policy")
            .unwrap()
            .contains("\"plan-month\";q=5"),
    );
    // Retry-After points at the month's end (UTC here), never before it.
    let (_, end) = calendar::month_of(tollgate_limits_now(), chrono_tz::Tz::UTC);
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    let left = (end - tollgate_limits_now()) / 1_000_000;
    assert!(retry >= left && retry <= left + 2, "{retry} vs {left}");
    assert_eq!(up.stats.requests(), 5);
}

fn tollgate_limits_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test]
async fn a_rate_limit_and_an_exhausted_quota_are_told_apart() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&config_with(
        &up,
        json!([{"name": "api", "paths": ["/api"], "policies": [auth(&[]), rate_limit(json!({}))]}]),
        json!([{"name": "free", "limits": {"per_minute": 1, "monthly_quota": 100}}]),
    ))
    .await;
    let c = add_key(&gw, &[]);
    subscribe(&gw, &c, "free", PlanLimits::default());
    let url = gw.url("/api");
    assert_eq!(call(&url, Some(&c), &[]).await.status, 200);
    let r = call(&url, Some(&c), &[]).await;
    assert_eq!(r.problem(429), "rate_limited");
    assert!(r.json()["detail"].as_str().unwrap().contains("plan-minute"));
}

#[tokio::test]
async fn a_plan_change_and_an_override_apply_to_the_next_request() {
    let up = Upstream::echo("up").await;
    let routes =
        json!([{"name": "api", "paths": ["/api"], "policies": [auth(&[]), rate_limit(json!({}))]}]);
    let gw = TestGateway::start(&config_with(
        &up,
        routes.clone(),
        json!([{"name": "p", "limits": {"monthly_quota": 1}}]),
    ))
    .await;
    let c = add_key(&gw, &[]);
    subscribe(&gw, &c, "p", PlanLimits::default());
    let url = gw.url("/api");
    assert_eq!(call(&url, Some(&c), &[]).await.status, 200);
    assert_eq!(
        call(&url, Some(&c), &[]).await.problem(429),
        "quota_exceeded"
    );
    // The operator raises the plan's quota: the month's count carries on.
    gw.install(
        &config_with(
            &up,
            routes,
            json!([{"name": "p", "limits": {"monthly_quota": 3}}]),
        ),
        2,
    );
    assert_eq!(call(&url, Some(&c), &[]).await.status, 200);
    assert_eq!(call(&url, Some(&c), &[]).await.status, 200);
    assert_eq!(
        call(&url, Some(&c), &[]).await.problem(429),
        "quota_exceeded"
    );
    // A key-level subscription overrides the organization's plan for that key.
    gw.gw.env().catalog.upsert_subscription(SubscriptionEntry {
        id: SubscriptionId::new(),
        org: c.org.clone(),
        app: Some(c.app.clone()),
        key: Some(c.key.clone()),
        plan: "p".into(),
        api: None,
        overrides: PlanLimits {
            monthly_quota: Some(2),
            ..Default::default()
        },
        timezone: chrono_tz::Tz::UTC,
    });
    assert_eq!(call(&url, Some(&c), &[]).await.status, 200);
    let r = call(&url, Some(&c), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit-policy").unwrap().contains("q=2"));
    assert_eq!(
        call(&url, Some(&c), &[]).await.problem(429),
        "quota_exceeded"
    );
}

#[tokio::test]
async fn subscriptions_plans_apis_and_scopes_gate_access() {
    let up = Upstream::echo("up").await;
    let mut cfg = config_with(
        &up,
        json!([
            {"name": "open", "paths": ["/open"], "policies": [auth(&[]), rate_limit(json!({"subscription": "required"}))]},
            {"name": "admin", "paths": ["/admin"], "policies": [auth(&["admin"]), rate_limit(json!({"subscription": "required"}))]},
        ]),
        json!([
            {"name": "basic", "scopes": ["read"]},
            {"name": "elsewhere", "apis": ["other"]},
        ]),
    );
    cfg["services"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "other", "url": up.url()}));
    let gw = TestGateway::start(&cfg).await;
    let c = add_key(&gw, &["read", "admin"]);
    let r = call(&gw.url("/open"), Some(&c), &[]).await;
    assert_eq!(r.problem(403), "subscription_required");
    let sub = subscribe(&gw, &c, "basic", PlanLimits::default());
    assert_eq!(call(&gw.url("/open"), Some(&c), &[]).await.status, 200);
    // The route needs `admin`, which the key has but the plan does not allow.
    let r = call(&gw.url("/admin"), Some(&c), &[]).await;
    assert_eq!(r.problem(403), "not_in_plan");
    assert!(r.json()["detail"].as_str().unwrap().contains("admin"));
    // A plan for other APIs does not cover this one.
    gw.gw.env().catalog.remove_subscription(&sub);
    subscribe(&gw, &c, "elsewhere", PlanLimits::default());
    let r = call(&gw.url("/open"), Some(&c), &[]).await;
    assert_eq!(r.problem(403), "not_in_plan");
}

#[tokio::test]
async fn a_concurrency_limit_holds_slots_until_the_response() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([{"name": "api", "paths": ["/"], "policies": [rate_limit(json!({
            "concurrency": {"max": 2, "by": "route"}
        }))]}]),
    ))
    .await;
    let held = [spawn_get(gw.url("/hold/1")), spawn_get(gw.url("/hold/2"))];
    up.stats.wait_requests(2).await;
    let r = get(&gw.url("/x")).await;
    assert_eq!(r.problem(429), "concurrency_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.header("ratelimit-policy")
            .unwrap()
            .contains("\"concurrency\";q=2;qu=\"concurrency\"")
    );
    up.control.open_gate();
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    let r = get(&gw.url("/x")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"concurrency\";r=1"));
}

#[tokio::test]
async fn headers_can_be_turned_off_and_unlimited_routes_send_none() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([
            {"name": "quiet", "paths": ["/quiet"], "policies": [rate_limit(json!({
                "limits": [{"requests": 1, "per": "1h", "by": "ip"}], "headers": false
            }))]},
            {"name": "free", "paths": ["/free"]},
        ]),
    ))
    .await;
    let r = get(&gw.url("/quiet")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit").is_none());
    let r = get(&gw.url("/quiet")).await;
    assert_eq!(r.problem(429), "rate_limited");
    assert!(r.header("retry-after").is_some());
    assert!(
        get(&gw.url("/free"))
            .await
            .header("ratelimit-policy")
            .is_none()
    );
}

#[tokio::test]
async fn a_sliding_window_limit_counts_and_refuses() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([{"name": "api", "paths": ["/"], "policies": [rate_limit(json!({
            "limits": [{"name": "win", "requests": 2, "per": "1h", "algorithm": "sliding_window", "by": "ip"}]
        }))]}]),
    ))
    .await;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let r = get(&gw.url("/")).await;
    assert_eq!(r.problem(429), "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 7200, "{retry}");
}
