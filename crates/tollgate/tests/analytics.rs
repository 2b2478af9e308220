//! Analytics end to end on a real node: a known mix of requests (statuses,
//! apps, routes, anonymous and unrouted) is counted exactly in the
//! roll-ups the admin API reports, per dimension, and agrees with the
//! node's own Prometheus counters; an organization's view holds only its
//! own traffic; raw events reach the JSON-lines file; `/metrics` passes
//! `promtool check metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::Running;
use tollgate_store::testing::{TempDirGuard, postgres_schema};

async fn admin(node: &Running, method: Method, path: &str, body: Option<Value>) -> Reply {
    call(method, &admin_url(node, path), Some(TOKEN), body.as_ref()).await
}

async fn created(node: &Running, path: &str, body: Value) -> Value {
    let r = admin(node, Method::POST, path, Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()
}

/// An organization with two apps, a key each: `(org, [(app, key)])`.
async fn customer(node: &Running, name: &str) -> (String, Vec<(String, String)>) {
    let org = created(node, "/orgs", json!({"name": name})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut apps = Vec::new();
    for app in ["web", "mobile"] {
        let id = created(node, &format!("/orgs/{org}/apps"), json!({"name": app})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = created(
            node,
            &format!("/orgs/{org}/apps/{id}/keys"),
            json!({"name": "k"}),
        )
        .await["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        apps.push((id, key));
    }
    (org, apps)
}

/// The node's analytics for the test's window, with extra filters.
async fn series(node: &Running, path: &str, filters: &str) -> Value {
    let from = chrono::Utc::now().timestamp_millis() - 10 * 60_000;
    let to = chrono::Utc::now().timestamp_millis() + 2 * 60_000;
    let r = admin(
        node,
        Method::GET,
        &format!("{path}?bucket=minute&from={from}&to={to}{filters}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

async fn total(node: &Running, filters: &str) -> (u64, u64) {
    let s = series(node, "/analytics", filters).await;
    let t = &s["totals"];
    (
        t["requests"].as_u64().unwrap(),
        t["errors"].as_u64().unwrap(),
    )
}

/// `tollgate_http_requests_total` by (route, status class).
async fn prometheus_requests(node: &Running) -> BTreeMap<(String, String), u64> {
    let r = get(&admin_url(node, "/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut out = BTreeMap::new();
    for line in r.text.lines() {
        let Some(rest) = line.strip_prefix("tollgate_http_requests_total{route=\"") else {
            continue;
        };
        let (route, rest) = rest.split_once("\",status_class=\"").unwrap();
        let (class, value) = rest.split_once("\"} ").unwrap();
        out.insert((route.to_owned(), class.to_owned()), value.parse().unwrap());
    }
    out
}

fn delta(
    after: &BTreeMap<(String, String), u64>,
    before: &BTreeMap<(String, String), u64>,
    route: &str,
    class: &str,
) -> u64 {
    let k = (route.to_owned(), class.to_owned());
    after.get(&k).copied().unwrap_or(0) - before.get(&k).copied().unwrap_or(0)
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn reconcile(node: Running) {
    let up = Upstream::start("up").await;
    let cfg = json!({"services": [
        {"name": "orders", "url": up.url(), "routes": [
            {"name": "orders", "paths": ["/orders"], "strip_path": false,
             "policies": [{"name": "auth", "config": {}}]},
            {"name": "public", "paths": ["/public"], "strip_path": false}
        ]},
        {"name": "broken", "url": format!("http://127.0.0.1:{}", closed_port()), "routes": [
            {"name": "broken", "paths": ["/broken"], "strip_path": false}
        ]}
    ]});
    let r = admin(&node, Method::PUT, "/config", Some(cfg)).await;
    assert!(r.status.is_success(), "{}", r.text);
    let (org, apps) = customer(&node, "acme").await;
    let (other_org, other_apps) = customer(&node, "globex").await;
    let proxy = proxy_of(&node);
    let url = |p: &str| format!("http://{proxy}{p}");
    // Wait until the configuration and the keys are live (these requests
    // are counted too: the assertions below compare before and after).
    for (_, key) in apps.iter().chain(&other_apps) {
        eventually(Duration::from_secs(5), "keys are live", || async {
            (get_with(&url("/orders/x"), &[("x-api-key", key)])
                .await
                .status
                == StatusCode::OK)
                .then_some(())
        })
        .await;
    }
    node.analytics.recorder.flush().await;
    let t0 = total(&node, "").await;
    let by_app0 = [
        total(&node, &format!("&app={}", apps[0].0)).await,
        total(&node, &format!("&app={}", apps[1].0)).await,
    ];
    let by_route0 = total(&node, "&route=public").await;
    let errors0 = total(&node, "&status=5xx").await;
    let org0 = series(&node, &format!("/orgs/{org}/analytics"), "").await["totals"]["requests"]
        .as_u64()
        .unwrap();
    let prom0 = prometheus_requests(&node).await;

    // The mix: 21 requests.
    for _ in 0..7 {
        assert_eq!(
            get_with(&url("/orders/1"), &[("x-api-key", &apps[0].1)])
                .await
                .status,
            200
        );
    }
    for _ in 0..4 {
        assert_eq!(
            get_with(&url("/orders/2"), &[("x-api-key", &apps[1].1)])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get_with(&url("/orders/3"), &[("x-api-key", &other_apps[0].1)])
            .await
            .status,
        200
    );
    for _ in 0..3 {
        assert_eq!(get(&url("/orders/4")).await.status, 401);
    }
    for _ in 0..2 {
        assert_eq!(get(&url("/public/5")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&url("/broken/6")).await.status, 502);
    }
    for _ in 0..2 {
        assert_eq!(get(&url("/nowhere")).await.status, 404);
    }
    node.analytics.recorder.flush().await;

    let (requests, errors) = total(&node, "").await;
    assert_eq!((requests - t0.0, errors - t0.1), (21, 2));
    for (i, want) in [(0, 7), (1, 4)] {
        let (r, e) = total(&node, &format!("&app={}", apps[i].0)).await;
        assert_eq!((r - by_app0[i].0, e - by_app0[i].1), (want, 0), "app {i}");
    }
    assert_eq!(total(&node, "&route=public").await.0 - by_route0.0, 2);
    let (r5, e5) = total(&node, "&status=5xx").await;
    assert_eq!((r5 - errors0.0, e5 - errors0.1), (2, 2));
    // The organization's own view: its two apps' 11 requests, nothing of
    // globex's, and no anonymous traffic.
    let org_series = series(&node, &format!("/orgs/{org}/analytics"), "").await;
    assert_eq!(
        org_series["totals"]["requests"].as_u64().unwrap() - org0,
        11
    );
    let leak = admin(
        &node,
        Method::GET,
        &format!("/orgs/{org}/analytics?org={other_org}"),
        None,
    )
    .await;
    assert_eq!(
        leak.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        leak.text
    );
    // Latency percentiles are there and ordered.
    let l = &org_series["totals"]["latency_ms"];
    let (p50, p99) = (l["p50"].as_f64().unwrap(), l["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{l}");

    // Prometheus counted the same requests.
    let prom = prometheus_requests(&node).await;
    assert_eq!(delta(&prom, &prom0, "orders", "2xx"), 12);
    assert_eq!(delta(&prom, &prom0, "orders", "4xx"), 3);
    assert_eq!(delta(&prom, &prom0, "public", "2xx"), 2);
    assert_eq!(delta(&prom, &prom0, "broken", "5xx"), 2);
    assert_eq!(delta(&prom, &prom0, "", "4xx"), 2);
    let prom_total: u64 = prom.values().sum::<u64>() - prom0.values().sum::<u64>();
    assert_eq!(prom_total, requests - t0.0);
    stop_node(node).await;
}

#[tokio::test]
async fn a_known_mix_is_counted_exactly_and_agrees_with_prometheus_on_sqlite() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_owned();
    reconcile(node(&["--data-dir", &data]).await).await;
}

#[tokio::test]
async fn a_known_mix_is_counted_exactly_and_agrees_with_prometheus_on_postgres() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let db = url_with_schema(&schema.url, &schema.schema);
    reconcile(node(&["--database-url", &db]).await).await;
}

#[tokio::test]
async fn raw_events_go_to_the_json_lines_file() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_owned();
    let file = dir.path().join("events").join("events.jsonl");
    let node = node(&[
        "--data-dir",
        &data,
        "--analytics-events-file",
        file.to_str().unwrap(),
    ])
    .await;
    let up = Upstream::start("up").await;
    let r = admin(
        &node,
        Method::PUT,
        "/config",
        Some(json!({"services": [{"name": "s", "url": up.url(), "routes": [{"name": "r", "paths": ["/"]}]}]})),
    )
    .await;
    assert!(r.status.is_success());
    let proxy = proxy_of(&node);
    eventually(Duration::from_secs(5), "the route is live", || async {
        routed(proxy, "/x").await.then_some(())
    })
    .await;
    let r = get_with(
        &format!("http://{proxy}/y"),
        &[("x-request-id", "req-analytics-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    node.analytics.recorder.flush().await;
    let text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ev = events
        .iter()
        .find(|e| e["request_id"] == "req-analytics-1")
        .unwrap_or_else(|| panic!("no event for the request in {text}"));
    assert_eq!(ev["route"], "r");
    assert_eq!(ev["service"], "s");
    assert_eq!(ev["method"], "GET");
    assert_eq!(ev["status"], 200);
    assert_eq!(ev["client_ip"], "127.0.0.1");
    assert_eq!(ev["bytes_out"].as_u64().unwrap(), r.text.len() as u64);
    assert!(ev["latency_ms"].as_f64().unwrap() >= ev["upstream_latency_ms"].as_f64().unwrap());
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    stop_node(node).await;
}

/// `promtool check metrics` on the node's `/metrics`, after traffic of
/// every kind. promtool comes with Debian's `prometheus` package; in CI it
/// must be there.
#[tokio::test]
async fn metrics_pass_promtool() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    if promtool.is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "promtool (Debian package prometheus) is required in CI"
        );
        eprintln!("skipping: promtool not found (apt install prometheus)");
        return;
    }
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_owned();
    let node = node(&["--data-dir", &data]).await;
    let up = Upstream::start("up").await;
    let cfg = json!({"services": [{"name": "s", "url": up.url(), "routes": [
        {"name": "r", "paths": ["/"], "policies": [
            {"name": "rate_limit", "config": {"limits": [{"name": "burst", "requests": 1000, "per": "1s", "by": "ip"}]}}
        ]}
    ]}]});
    let r = admin(&node, Method::PUT, "/config", Some(cfg)).await;
    assert!(r.status.is_success(), "{}", r.text);
    let proxy = proxy_of(&node);
    eventually(Duration::from_secs(5), "the route is live", || async {
        routed(proxy, "/x").await.then_some(())
    })
    .await;
    let _ = get(&format!("http://{proxy}/oauth2/nothing")).await;
    let text = get(&admin_url(&node, "/metrics")).await.text;
    for family in [
        "tollgate_http_requests_total",
        "tollgate_http_request_duration_seconds_bucket",
        "tollgate_upstream_target_healthy",
        "tollgate_ratelimit_decisions_total",
        "tollgate_analytics_events_dropped_total",
        "tollgate_config_revision",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = within("promtool", child.wait_with_output()).await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stop_node(node).await;
}
