//! Policies end to end: CORS, IP restriction, size limits, header
//! transformers, and how global, service and route attachments combine.

mod common;

use common::*;
use serde_json::{Value, json};

fn policy(name: &str, config: Value) -> Value {
    json!({"name": name, "config": config})
}

fn cors() -> Value {
    policy(
        "cors",
        json!({
            "origins": ["https://app.example.com"],
            "methods": ["GET", "POST"],
            "headers": ["content-type", "x-api-key"],
            "exposed_headers": ["x-upstream"],
            "credentials": true,
            "max_age": "10m",
        }),
    )
}

#[tokio::test]
async fn cors_preflight_is_answered_without_reaching_the_upstream() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([{"name": "api", "paths": ["/api"], "policies": [cors()]}]),
    ))
    .await;
    let c = client();
    let preflight = |origin: &'static str, method: &'static str| {
        let c = c.clone();
        let url = gw.url("/api/orders");
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type"),
            ];
            c.request("OPTIONS", &url, &headers, empty()).await
        }
    };
    let r = preflight("https://app.example.com", "POST").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let vary: Vec<_> = r
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        vary.iter()
            .any(|v| v.contains("Access-Control-Request-Method")),
        "{vary:?}"
    );
    assert!(r.header("x-request-id").is_some());
    assert!(r.body.is_empty());
    // Refused preflights: unknown origin, method not allowed.
    assert_eq!(
        preflight("https://evil.example", "POST").await.problem(403),
        "cors_rejected"
    );
    assert_eq!(
        preflight("https://app.example.com", "DELETE")
            .await
            .problem(403),
        "cors_rejected"
    );
    assert_eq!(
        up.stats.requests(),
        0,
        "preflights never reach the upstream"
    );
    // OPTIONS without a preflight header is an ordinary request.
    let r = c
        .request(
            "OPTIONS",
            &gw.url("/api/orders"),
            &[("origin", "https://app.example.com")],
            empty(),
        )
        .await;
    assert_eq!(r.echo().method(), "OPTIONS");
    assert_eq!(up.stats.requests(), 1);
}

#[tokio::test]
async fn cors_headers_are_added_to_actual_responses() {
    let up = Upstream::echo("up").await;
    // CORS appends to the upstream's `Vary` and replaces its own fields.
    *up.control.response_headers.lock().expect("lock") = vec![
        ("vary".into(), "Accept-Encoding".into()),
        (
            "access-control-allow-origin".into(),
            "https://upstream.example".into(),
        ),
    ];
    let wildcard = policy("cors", json!({"origins": ["*"]}));
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([
            {"name": "api", "paths": ["/api"], "policies": [cors()]},
            {"name": "public", "paths": ["/public"], "policies": [wildcard]},
        ]),
    ))
    .await;
    let c = client();
    let r = c
        .request(
            "GET",
            &gw.url("/api/x"),
            &[("origin", "https://app.example.com")],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-upstream")
    );
    let vary: Vec<_> = r.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    assert_eq!(
        r.headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    up.control.response_headers.lock().expect("lock").clear();
    // The method list is for preflights; browsers enforce it, the gateway does not.
    let r = c
        .request(
            "DELETE",
            &gw.url("/api/x"),
            &[("origin", "https://app.example.com")],
            empty(),
        )
        .await;
    assert_eq!(r.echo().method(), "DELETE");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    for headers in [&[("origin", "https://evil.example")][..], &[]] {
        let r = c.request("GET", &gw.url("/api/x"), headers, empty()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{headers:?}");
    }
    let r = c
        .request(
            "GET",
            &gw.url("/public/x"),
            &[("origin", "https://anyone.example")],
            empty(),
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("vary"), None);
    assert_eq!(up.stats.requests(), 5);
}

#[tokio::test]
async fn ip_restriction_denies_and_allows_by_client_address() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([
            {"name": "private", "paths": ["/private"], "policies": [policy("ip_restriction", json!({"allow": ["10.0.0.0/8"]}))]},
            {"name": "local", "paths": ["/local"], "policies": [policy("ip_restriction", json!({"allow": ["127.0.0.0/8"]}))]},
            {"name": "blocked", "paths": ["/blocked"], "policies": [policy("ip_restriction", json!({"deny": ["127.0.0.1/32"]}))]},
            {"name": "deny-wins", "paths": ["/both"],
             "policies": [policy("ip_restriction", json!({"allow": ["127.0.0.0/8"], "deny": ["127.0.0.1/32"]}))]},
        ]),
    ))
    .await;
    let c = client();
    for path in ["/private", "/blocked", "/both"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.problem(403), "ip_forbidden", "{path}");
        assert!(
            r.json()["detail"]
                .as_str()
                .expect("detail")
                .contains("127.0.0.1")
        );
    }
    assert_eq!(up.stats.requests(), 0);
    assert_eq!(c.get(&gw.url("/local")).await.status, 200);
    assert_eq!(up.stats.requests(), 1);
}

#[tokio::test]
async fn ip_restriction_believes_forwarded_addresses_only_from_trusted_proxies() {
    let up = Upstream::echo("up").await;
    let cfg = one_service(
        &up.url(),
        json!([{"name": "private", "paths": ["/"], "policies": [policy("ip_restriction", json!({"allow": ["10.0.0.0/8"]}))]}]),
    );
    let spoof = [("x-forwarded-for", "10.1.2.3")];
    let untrusting = TestGateway::start(&cfg).await;
    assert_eq!(
        client()
            .request("GET", &untrusting.url("/x"), &spoof, empty())
            .await
            .problem(403),
        "ip_forbidden"
    );

    let mut s = settings();
    s.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
    let trusting = TestGateway::start_with(s, &cfg).await;
    let c = client();
    assert_eq!(
        c.request("GET", &trusting.url("/x"), &spoof, empty())
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&trusting.url("/x")).await.problem(403),
        "ip_forbidden"
    );
    let r = c
        .request(
            "GET",
            &trusting.url("/x"),
            &[("x-forwarded-for", "10.1.2.3, 203.0.113.7")],
            empty(),
        )
        .await;
    assert_eq!(
        r.problem(403),
        "ip_forbidden",
        "the right-most untrusted hop is the client"
    );
}

#[tokio::test]
async fn request_size_limit_applies_per_route() {
    let up = Upstream::echo("up").await;
    let limit = policy("request_size_limit", json!({"max_bytes": 100}));
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([
            {"name": "small", "paths": ["/small"], "policies": [limit]},
            {"name": "big", "paths": ["/big"]},
        ]),
    ))
    .await;
    let c = client();
    let r = c
        .request("POST", &gw.url("/small"), &[], full(vec![b'x'; 200]))
        .await;
    assert_eq!(r.problem(413), "payload_too_large");
    assert_eq!(up.stats.requests(), 0, "refused on the declared length");
    assert_eq!(
        c.request("POST", &gw.url("/small"), &[], full(vec![b'x'; 100]))
            .await
            .echo()
            .body_len(),
        100
    );
    assert_eq!(
        c.request("POST", &gw.url("/big"), &[], full(vec![b'x'; 200]))
            .await
            .echo()
            .body_len(),
        200
    );
    // Chunked bodies are cut while streaming.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(format!("POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{0}\r\n64\r\n{0}\r\n0\r\n\r\n", "y".repeat(100)))
        .await;
    assert_eq!(raw.response().await.problem(413), "payload_too_large");
    raw.closed().await;
}

#[tokio::test]
async fn request_and_response_transformers_change_headers() {
    let up = Upstream::echo("up").await;
    let request = policy(
        "request_transformer",
        json!({"remove": ["x-drop"], "set": {"x-set": "s"}, "add": {"x-add": "a", "x-present": "new"}, "append": {"x-multi": "2"}}),
    );
    let response = policy(
        "response_transformer",
        json!({"remove": ["x-upstream"], "set": {"x-resp": "r"}, "append": {"x-resp-multi": "2"}}),
    );
    *up.control.response_headers.lock().expect("lock") = vec![("x-resp-multi".into(), "1".into())];
    let cfg = json!({"services": [
        {"name": "up", "url": up.url(), "routes": [{"name": "t", "paths": ["/"], "policies": [request, response.clone()]}]},
        {"name": "down", "url": format!("http://127.0.0.1:{}", closed_port()), "routes": [{"name": "d", "paths": ["/down"], "policies": [response]}]},
    ]});
    let gw = TestGateway::start(&cfg).await;
    let headers = [
        ("x-drop", "1"),
        ("x-present", "old"),
        ("x-multi", "1"),
        ("x-set", "client"),
    ];
    let r = client()
        .request("GET", &gw.url("/x"), &headers, empty())
        .await;
    assert_eq!(r.header("x-resp"), Some("r"));
    assert_eq!(r.header("x-upstream"), None);
    let multi: Vec<_> = r
        .headers
        .get_all("x-resp-multi")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(multi, ["1", "2"]);
    let e = r.echo();
    assert_eq!(e.header("x-drop"), None);
    assert_eq!(e.header("x-set").as_deref(), Some("s"));
    assert_eq!(e.header("x-add").as_deref(), Some("a"));
    assert_eq!(e.header("x-present").as_deref(), Some("old"));
    assert_eq!(e.header_all("x-multi"), ["1", "2"]);
    // Response transformers also apply to the gateway's own answers on the route.
    let r = client().get(&gw.url("/down")).await;
    assert_eq!(r.problem(502), "upstream_unavailable");
    assert_eq!(r.header("x-resp"), Some("r"));
}

#[tokio::test]
async fn route_policies_replace_service_and_global_ones_of_the_same_name() {
    let up = Upstream::echo("up").await;
    let set = |level: &str, extra: Value| {
        let mut set = json!({"x-level": level});
        if let (Some(m), Some(e)) = (set.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        policy("request_transformer", json!({ "set": set }))
    };
    let cfg = json!({
        "policies": [
            set("global", json!({"x-global-only": "yes"})),
            policy("response_transformer", json!({"set": {"x-global-response": "1"}})),
        ],
        "services": [
            {"name": "plain", "url": up.url(), "routes": [{"name": "r1", "paths": ["/one"]}]},
            {"name": "custom", "url": up.url(), "policies": [set("service", json!({}))], "routes": [
                {"name": "r2", "paths": ["/two"]},
                {"name": "r3", "paths": ["/three"], "policies": [
                    set("route", json!({})),
                    policy("ip_restriction", json!({"allow": ["127.0.0.0/8"]})),
                ]},
                {"name": "r4", "paths": ["/four"], "policies": [policy("ip_restriction", json!({"allow": ["10.0.0.0/8"]}))]},
            ]},
        ],
    });
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    for (path, level, global_only) in [
        ("/one", "global", Some("yes")),
        ("/two", "service", None),
        ("/three", "route", None),
    ] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(
            r.header("x-global-response"),
            Some("1"),
            "{path}: policies of other names still apply"
        );
        let e = r.echo();
        assert_eq!(e.header("x-level").as_deref(), Some(level), "{path}");
        assert_eq!(e.header("x-global-only").as_deref(), global_only, "{path}");
    }
    // A route policy of another name adds to the inherited ones. It answers
    // in the access phase; the response phase still runs for every policy
    // (as `Policy::access` documents), so the global response transformer
    // applies to the gateway's own 403 too.
    let r = c.get(&gw.url("/four")).await;
    assert_eq!(r.problem(403), "ip_forbidden");
    assert_eq!(r.header("x-global-response"), Some("1"));
    assert_eq!(up.stats.requests(), 3);
}
