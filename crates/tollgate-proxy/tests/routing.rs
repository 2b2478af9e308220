//! Routing through the real server: path, host, method and header rules,
//! specificity, path rewriting, the Host header, and routing errors.

mod common;

use common::*;
use serde_json::{Value, json};

/// Starts one echo upstream per route (named after the route), each route in
/// its own service, and a gateway over them.
async fn gateway_with_routes(routes: Vec<Value>) -> (TestGateway, Vec<Upstream>) {
    let mut ups = Vec::new();
    let mut services = Vec::new();
    for route in routes {
        let name = route["name"].as_str().expect("route name").to_owned();
        let up = Upstream::echo(&name).await;
        services.push(json!({"name": format!("svc-{name}"), "url": up.url(), "routes": [route]}));
        ups.push(up);
    }
    let gw = TestGateway::start(&json!({ "services": services })).await;
    (gw, ups)
}

async fn get_host(c: &Client, url: &str, host: &str) -> Reply {
    c.request("GET", url, &[("host", host)], empty()).await
}

#[tokio::test]
async fn prefix_exact_and_template_paths_route_to_their_services() {
    let (gw, _ups) = gateway_with_routes(vec![
        json!({"name": "prefix", "paths": ["/api"]}),
        json!({"name": "exact", "paths": ["=/api/status"]}),
        json!({"name": "template", "paths": ["/users/{id}/orders"], "strip_path": false}),
    ])
    .await;
    let c = client();
    let cases = [
        ("/api/things", "prefix", "/things"),
        ("/api", "prefix", "/"),
        ("/api/status", "exact", "/"),
        ("/api/status/more", "prefix", "/status/more"),
        ("/users/42/orders", "template", "/users/42/orders"),
    ];
    for (path, route, upstream_path) in cases {
        let r = c.get(&gw.url(path)).await;
        let echo = r.echo();
        assert_eq!((path, echo.id()), (path, route));
        assert_eq!((path, echo.path()), (path, upstream_path));
    }
    // Prefixes match on segment boundaries; templates match whole segments.
    for path in ["/apix", "/users/42", "/users//orders", "/users/42/orders/7"] {
        assert_eq!(
            c.get(&gw.url(path)).await.problem(404),
            "no_route",
            "{path}"
        );
    }
}

#[tokio::test]
async fn host_rules_match_exact_names_then_wildcards() {
    let (gw, _ups) = gateway_with_routes(vec![
        json!({"name": "wild", "hosts": ["*.example.com"]}),
        json!({"name": "exact-host", "hosts": ["api.example.com"]}),
        json!({"name": "suffix-wild", "hosts": ["api.example.*"]}),
        json!({"name": "fallback", "paths": ["/"]}),
    ])
    .await;
    let c = client();
    let url = gw.url("/x");
    for (host, route) in [
        ("a.example.com", "wild"),
        ("deep.a.example.com", "wild"),
        ("api.example.com", "exact-host"),
        ("API.Example.COM:8443", "exact-host"),
        ("api.example.org", "suffix-wild"),
        ("example.com", "fallback"),
        ("other.test", "fallback"),
    ] {
        assert_eq!(
            get_host(&c, &url, host).await.upstream(),
            route,
            "Host: {host}"
        );
    }
}

#[tokio::test]
async fn method_and_header_rules_select_routes() {
    let (gw, _ups) = gateway_with_routes(vec![
        json!({"name": "get-only", "paths": ["/m"], "methods": ["GET"]}),
        json!({"name": "post-only", "paths": ["/m"], "methods": ["POST"]}),
        json!({"name": "v2", "paths": ["/h"], "headers": {"x-version": ["v2", "v3"]}}),
        json!({"name": "h-default", "paths": ["/h"]}),
    ])
    .await;
    let c = client();
    assert_eq!(c.get(&gw.url("/m")).await.upstream(), "get-only");
    assert_eq!(
        c.request("POST", &gw.url("/m/x"), &[], full("b"))
            .await
            .upstream(),
        "post-only"
    );
    assert_eq!(
        c.request("GET", &gw.url("/h"), &[("x-version", "V2")], empty())
            .await
            .upstream(),
        "v2"
    );
    assert_eq!(
        c.request("GET", &gw.url("/h"), &[("x-version", "v3")], empty())
            .await
            .upstream(),
        "v2"
    );
    assert_eq!(
        c.request("GET", &gw.url("/h"), &[("x-version", "v4")], empty())
            .await
            .upstream(),
        "h-default"
    );
    assert_eq!(c.get(&gw.url("/h")).await.upstream(), "h-default");
}

#[tokio::test]
async fn wrong_method_is_405_method_not_allowed() {
    let (gw, ups) = gateway_with_routes(vec![
        json!({"name": "get-only", "paths": ["/m"], "methods": ["GET", "HEAD"]}),
        json!({"name": "post-only", "paths": ["/m"], "methods": ["POST"]}),
    ])
    .await;
    let c = client();
    let r = c.request("DELETE", &gw.url("/m"), &[], empty()).await;
    assert_eq!(r.problem(405), "method_not_allowed");
    // RFC 9110 15.5.6: a 405 lists what the target accepts.
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("get-only")
    );
    let r = c.request("PUT", &gw.url("/m/1"), &[], full("x")).await;
    assert_eq!(r.problem(405), "method_not_allowed");
    assert!(ups.iter().all(|u| u.stats.requests() == 0));
    // A path nobody routes is still a 404, whatever the method.
    assert_eq!(
        c.request("DELETE", &gw.url("/other"), &[], empty())
            .await
            .problem(404),
        "no_route"
    );
}

#[tokio::test]
async fn most_specific_route_wins_regardless_of_order() {
    // Listed from least to most specific, so first-match would get it wrong.
    let (gw, _ups) = gateway_with_routes(vec![
        json!({"name": "catch-all", "paths": ["/"]}),
        json!({"name": "a", "paths": ["/a"]}),
        json!({"name": "a-post", "paths": ["/a"], "methods": ["POST"]}),
        json!({"name": "a-b", "paths": ["/a/b"]}),
        json!({"name": "a-b-c-exact", "paths": ["=/a/b/c"]}),
        json!({"name": "a-item", "paths": ["/a/{id}"]}),
        json!({"name": "host-a", "hosts": ["h.test"], "paths": ["/"]}),
    ])
    .await;
    let c = client();
    for (path, route) in [
        ("/x", "catch-all"),
        ("/a/z/y", "a"),
        ("/a/z", "a-item"),
        ("/a/b/z", "a-b"),
        ("/a/b/c", "a-b-c-exact"),
        ("/a/b/c/d", "a-b"),
    ] {
        assert_eq!(c.get(&gw.url(path)).await.upstream(), route, "{path}");
    }
    assert_eq!(
        c.request("POST", &gw.url("/a/z/y"), &[], full("x"))
            .await
            .upstream(),
        "a-post"
    );
    assert_eq!(
        get_host(&c, &gw.url("/a/b/c"), "h.test").await.upstream(),
        "host-a"
    );
}

#[tokio::test]
async fn strip_path_true_removes_the_prefix_and_false_keeps_it() {
    let (gw, _ups) = gateway_with_routes(vec![
        json!({"name": "strip", "paths": ["/s"]}),
        json!({"name": "keep", "paths": ["/k"], "strip_path": false}),
        json!({"name": "slash", "paths": ["/t/"]}),
    ])
    .await;
    let c = client();
    for (path, upstream_path) in [
        ("/s/x/y", "/x/y"),
        ("/s", "/"),
        ("/s/", "/"),
        ("/k/x", "/k/x"),
        ("/k", "/k"),
        ("/t/x", "/x"),
    ] {
        assert_eq!(
            c.get(&gw.url(path)).await.echo().path(),
            upstream_path,
            "{path}"
        );
    }
}

#[tokio::test]
async fn service_url_base_path_is_prepended() {
    let up = Upstream::echo("base").await;
    let cfg = json!({"services": [
        {"name": "based", "url": format!("{}/base", up.url()), "routes": [
            {"name": "strip", "paths": ["/svc"]},
            {"name": "keep", "paths": ["/raw"], "strip_path": false},
        ]},
        {"name": "slash", "url": format!("{}/v1/", up.url()), "routes": [{"name": "slash", "paths": ["/slash"]}]},
        {"name": "targets", "targets": [{"target": up.target()}], "path": "/t", "routes": [{"name": "t", "paths": ["/tg"]}]},
    ]});
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    for (path, upstream_path) in [
        ("/svc/items", "/base/items"),
        ("/svc", "/base"),
        ("/raw/x", "/base/raw/x"),
        ("/slash/a", "/v1/a"),
        ("/tg/a", "/t/a"),
    ] {
        assert_eq!(
            c.get(&gw.url(path)).await.echo().path(),
            upstream_path,
            "{path}"
        );
    }
}

#[tokio::test]
async fn query_string_is_preserved() {
    let up = Upstream::echo("q").await;
    let cfg = json!({"services": [{"name": "q", "url": format!("{}/base", up.url()), "routes": [{"name": "q", "paths": ["/api"]}]}]});
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    let e = c
        .get(&gw.url("/api/search?q=a%20b&tag=1&tag=2&empty=&x=%2F"))
        .await
        .echo();
    assert_eq!(e.path(), "/base/search");
    assert_eq!(e.query(), Some("q=a%20b&tag=1&tag=2&empty=&x=%2F"));
    let e = c.get(&gw.url("/api?only=1")).await.echo();
    assert_eq!((e.path(), e.query()), ("/base", Some("only=1")));
    assert_eq!(c.get(&gw.url("/api/none")).await.echo().query(), None);
}

#[tokio::test]
async fn preserve_host_chooses_between_client_host_and_target() {
    let up = Upstream::echo("h").await;
    let cfg = one_service(
        &up.url(),
        json!([
            {"name": "keep-host", "paths": ["/keep"], "preserve_host": true},
            {"name": "target-host", "paths": ["/target"]},
        ]),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    let e = get_host(&c, &gw.url("/keep"), "client.example.com")
        .await
        .echo();
    assert_eq!(e.header("host").as_deref(), Some("client.example.com"));
    assert_eq!(
        e.header("x-forwarded-host").as_deref(),
        Some("client.example.com")
    );
    let e = get_host(&c, &gw.url("/target"), "client.example.com")
        .await
        .echo();
    assert_eq!(e.header("host"), Some(up.target()));
    assert_eq!(
        e.header("x-forwarded-host").as_deref(),
        Some("client.example.com")
    );
}

#[tokio::test]
async fn no_route_is_404_problem_json() {
    let up = Upstream::echo("x").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([{"name": "api", "paths": ["/api"]}]),
    ))
    .await;
    let r = get(&gw.url("/nothing/here")).await;
    assert_eq!(r.problem(404), "no_route");
    let body = r.json();
    assert_eq!(body["type"], "https://tollgate.dev/problems/no_route");
    assert_eq!(body["title"], "No route matches this request");
    let id = r.header("x-request-id").expect("request id");
    assert_eq!(body["request_id"], id);
    assert_eq!(up.stats.requests(), 0);
}

#[tokio::test]
async fn dot_segment_paths_are_400() {
    let up = Upstream::echo("x").await;
    let gw = TestGateway::start(&one_service(
        &up.url(),
        json!([{"name": "api", "paths": ["/"]}]),
    ))
    .await;
    for target in [
        "/a/../b",
        "/a/%2e%2e/b",
        "/a/%2E%2e/b",
        "/a/.%2E/b",
        "/a/./b",
        "/a/%2e/b",
        "/..",
        "/a/..",
    ] {
        let mut raw = Raw::connect(gw.addr).await;
        raw.send(format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ))
        .await;
        assert_eq!(raw.response().await.problem(400), "bad_request", "{target}");
    }
    assert_eq!(up.stats.requests(), 0);
    // Dots inside a segment are ordinary characters.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /a/..b/c.d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(raw.response().await.echo().path(), "/a/..b/c.d");
}
