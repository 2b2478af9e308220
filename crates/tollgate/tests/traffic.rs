//! Traffic control across real nodes: two gateways sharing Redis admit
//! exactly a plan's monthly quota and a route's limit under concurrent load;
//! the usage API shows the count the gateway enforces; a Redis outage
//! follows each route's `on_backend_error` and recovers by itself; an
//! in-process quota survives a restart; plan and subscription changes made
//! through the admin API apply to the next requests.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::Running;
use tollgate_limits::testing::{RedisServer, shared_redis};
use tollgate_store::testing::{TempDirGuard, postgres_schema};

fn unique(tag: &str) -> String {
    format!("{tag}-{}", &tollgate_core::ids::OrgId::new().as_str()[20..])
}

async fn admin(node: &Running, method: Method, path: &str, body: Option<Value>) -> Reply {
    call(method, &admin_url(node, path), Some(TOKEN), body.as_ref()).await
}

/// Creates an organization, an app and a key through the admin API, and
/// subscribes the organization to `plan`. Returns `(org id, subscription id, key)`.
async fn customer(node: &Running, plan: &str) -> (String, String, String) {
    let org = admin(
        node,
        Method::POST,
        "/orgs",
        Some(json!({"name": unique("acme"), "display_name": "Acme"})),
    )
    .await;
    assert_eq!(org.status, StatusCode::CREATED, "{}", org.text);
    let org = org.json()["id"].as_str().unwrap().to_owned();
    let app = admin(
        node,
        Method::POST,
        &format!("/orgs/{org}/apps"),
        Some(json!({"name": "app"})),
    )
    .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);
    let app = app.json()["id"].as_str().unwrap().to_owned();
    let key = admin(
        node,
        Method::POST,
        &format!("/orgs/{org}/apps/{app}/keys"),
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
    let key = key.json()["secret"].as_str().unwrap().to_owned();
    let sub = admin(
        node,
        Method::POST,
        &format!("/orgs/{org}/subscriptions"),
        Some(json!({"plan": plan})),
    )
    .await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.text);
    let sub = sub.json()["id"].as_str().unwrap().to_owned();
    (org, sub, key)
}

async fn with_key(node: &Running, path: &str, key: &str) -> Reply {
    get_with(
        &format!("http://{}{path}", proxy_of(node)),
        &[("x-api-key", key)],
    )
    .await
}

/// Waits until `node` admits `key` on `path` (one admitted request).
async fn until_admitted(node: &Running, path: &str, key: &str) {
    eventually(
        DEADLINE,
        "the key and its subscription to reach the node",
        || async { (with_key(node, path, key).await.status == StatusCode::OK).then_some(()) },
    )
    .await;
}

async fn quota_used(node: &Running, org: &str) -> Value {
    let r = admin(node, Method::GET, &format!("/orgs/{org}/usage"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["items"][0]["quota"].clone()
}

async fn put_config(node: &Running, cfg: &Value) {
    let r = admin(node, Method::PUT, "/config", Some(cfg.clone())).await;
    assert!(r.status.is_success(), "{}", r.text);
}

fn metered_config(upstream: &str, plan: &str, quota: u64, shared_route: &str) -> Value {
    json!({
        "plans": [{"name": plan, "limits": {"monthly_quota": quota}}],
        "services": [{
            "name": "orders", "url": upstream,
            "routes": [
                {"name": "metered", "paths": ["/metered"], "strip_path": false, "policies": [
                    {"name": "auth", "config": {}},
                    {"name": "rate_limit", "config": {"subscription": "required"}},
                ]},
                {"name": shared_route, "paths": ["/shared"], "strip_path": false, "policies": [
                    {"name": "rate_limit", "config": {"limits": [{"requests": 25, "per": "1h", "by": "route"}]}},
                ]},
            ],
        }],
    })
}

/// Sends `per_task` requests from each of 16 tasks, alternating nodes;
/// returns (admitted, refused codes).
async fn hammer(
    nodes: [&Running; 2],
    path: &str,
    key: Option<&str>,
    per_task: usize,
) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let url = format!("http://{}{path}", proxy_of(nodes[t % 2]));
        let key = key.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..per_task {
                let headers: Vec<(&str, &str)> =
                    key.iter().map(|k| ("x-api-key", k.as_str())).collect();
                let r = get_with(&url, &headers).await;
                out.push(if r.status == StatusCode::OK {
                    None
                } else {
                    Some(r.problem_code())
                });
            }
            out
        }));
    }
    let (mut admitted, mut refused) = (0, Vec::new());
    for t in tasks {
        for r in t.await.unwrap() {
            match r {
                None => admitted += 1,
                Some(code) => refused.push(code),
            }
        }
    }
    (admitted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_admit_exactly_the_quota_and_the_route_limit() {
    let Some(redis) = shared_redis().await else {
        return;
    };
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let db = url_with_schema(&schema.url, &schema.schema);
    let args = ["--database-url", db.as_str(), "--redis-url", redis.as_str()];
    let (a, b) = (node(&args).await, node(&args).await);
    let up = Upstream::start("metered").await;
    let plan = unique("metered");
    let shared = unique("shared");
    put_config(&a, &metered_config(&up.url(), &plan, 40, &shared)).await;
    let (org, _, key) = customer(&a, &plan).await;
    until_admitted(&a, "/metered", &key).await;
    until_admitted(&b, "/metered", &key).await;
    let before = quota_used(&a, &org).await["used"].as_u64().unwrap();
    assert_eq!(before, 2, "each node's first admitted request counted once");

    let (admitted, refused) = hammer([&a, &b], "/metered", Some(&key), 6).await;
    assert_eq!(
        admitted as u64,
        40 - before,
        "exactly the quota is admitted"
    );
    assert!(refused.iter().all(|c| c == "quota_exceeded"), "{refused:?}");
    // Both admin APIs read the counter the gateways enforced.
    for n in [&a, &b] {
        let q = quota_used(n, &org).await;
        assert_eq!(
            (q["used"].as_u64(), q["remaining"].as_u64()),
            (Some(40), Some(0)),
            "{q}"
        );
    }

    // A route limit shared by everyone, across both nodes.
    eventually(DEADLINE, "the shared route on node B", || async {
        routed(proxy_of(&b), "/shared").await.then_some(())
    })
    .await;
    let (admitted, refused) = hammer([&a, &b], "/shared", None, 4).await;
    // `routed` made one request on node B; it counted.
    assert_eq!(admitted, 24, "exactly the route limit is admitted");
    assert!(refused.iter().all(|c| c == "rate_limited"), "{refused:?}");
    stop_node(a).await;
    stop_node(b).await;
}

/// A node on SQLite in a fresh directory (kept while the guard lives) with
/// its limiter on `redis`, a 200 ms Redis timeout and `extra` arguments.
async fn node_on_private_redis(redis: &RedisServer, extra: &[&str]) -> (TempDirGuard, Running) {
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_owned();
    let url = redis.url();
    let mut args = vec![
        "--data-dir",
        &data,
        "--redis-url",
        &url,
        "--redis-timeout-ms",
        "200",
    ];
    args.extend_from_slice(extra);
    let n = node(&args).await;
    (dir, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_follows_each_routes_mode_and_recovers() {
    let Some(mut redis) = RedisServer::on_free_port() else {
        return;
    };
    redis.start();
    let (_dir, n) = node_on_private_redis(&redis, &[]).await;
    let up = Upstream::start("outage").await;
    let limit = |mode: &str| {
        json!([{"name": "rate_limit", "config": {"on_backend_error": mode,
            "limits": [{"requests": 1000, "per": "1m", "by": "ip"}]}}])
    };
    put_config(&n, &json!({"services": [{"name": "api", "url": up.url(), "routes": [
        {"name": "open", "paths": ["/open"], "strip_path": false, "policies": limit("open")},
        {"name": "closed", "paths": ["/closed"], "strip_path": false, "policies": limit("closed")},
    ]}]}))
    .await;
    let proxy = proxy_of(&n);
    eventually(DEADLINE, "both routes", || async {
        (routed(proxy, "/open").await && routed(proxy, "/closed").await).then_some(())
    })
    .await;
    let r = get(&format!("http://{proxy}/closed")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.contains_key("ratelimit"));

    redis.stop();
    let r = get(&format!("http://{proxy}/open")).await;
    assert_eq!(r.status, StatusCode::OK, "fail open: {}", r.text);
    assert!(!r.headers.contains_key("ratelimit"), "nothing was counted");
    let r = get(&format!("http://{proxy}/closed")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.problem_code(), "limiter_unavailable");
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    let m = call(Method::GET, &admin_url(&n, "/metrics"), None, None)
        .await
        .text;
    assert!(
        m.contains("tollgate_ratelimit_backend_up{backend=\"redis\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("tollgate_ratelimit_backend_failures_total{mode=\"open\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("tollgate_ratelimit_backend_failures_total{mode=\"closed\"} 0"),
        "{m}"
    );

    redis.start();
    eventually(
        Duration::from_secs(10),
        "limits to be checked again",
        || async {
            let r = get(&format!("http://{proxy}/closed")).await;
            (r.status == StatusCode::OK && r.headers.contains_key("ratelimit")).then_some(())
        },
    )
    .await;
    let m = call(Method::GET, &admin_url(&n, "/metrics"), None, None)
        .await
        .text;
    assert!(
        m.contains("tollgate_ratelimit_backend_up{backend=\"redis\"} 1"),
        "{m}"
    );
    stop_node(n).await;
}

/// The rate-limit counters in the Redis at `url`, each with its time to
/// live in milliseconds.
async fn limit_counters(url: &str) -> Vec<(String, i64)> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tg:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((k, ttl));
    }
    out
}

/// `--redis-sync-ms`: rates are decided in the node and synced to Redis in
/// the background; a Redis outage leaves them counted (no `on_backend_error`)
/// and the sync loop reports it, and the counts reach Redis once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_node_limits_rates_through_a_redis_outage_and_syncs_after_it() {
    let Some(mut redis) = RedisServer::on_free_port() else {
        return;
    };
    redis.start();
    let url = redis.url();
    let (_dir, n) = node_on_private_redis(&redis, &["--redis-sync-ms", "20"]).await;
    let up = Upstream::start("synced").await;
    put_config(
        &n,
        &json!({"services": [{"name": "api", "url": up.url(), "routes": [
            {"name": "closed", "paths": ["/closed"], "strip_path": false, "policies": [
                {"name": "rate_limit", "config": {"on_backend_error": "closed",
                    "limits": [{"requests": 30, "per": "1h", "by": "route"}]}}]},
        ]}]}),
    )
    .await;
    let proxy = proxy_of(&n);
    eventually(DEADLINE, "the route", || async {
        routed(proxy, "/closed").await.then_some(())
    })
    .await;
    let metrics = || async {
        call(Method::GET, &admin_url(&n, "/metrics"), None, None)
            .await
            .text
    };

    redis.stop();
    // Counted in the node while Redis is away: 29 left after `routed`'s one.
    let mut admitted = 0;
    for _ in 0..40 {
        let r = get(&format!("http://{proxy}/closed")).await;
        match r.status {
            StatusCode::OK => {
                assert!(r.headers.contains_key("ratelimit"), "counted");
                admitted += 1;
            }
            s => {
                assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
                assert_eq!(r.problem_code(), "rate_limited");
            }
        }
    }
    assert_eq!(admitted, 29);
    eventually(
        Duration::from_secs(10),
        "the failed sync to show",
        || async {
            metrics()
                .await
                .contains("tollgate_ratelimit_backend_up{backend=\"redis\"} 0")
                .then_some(())
        },
    )
    .await;
    assert!(
        metrics()
            .await
            .contains("tollgate_ratelimit_backend_failures_total{mode=\"closed\"} 0"),
        "no request met the closed mode"
    );

    // Back (empty: the test server keeps nothing): the node's 30 reach it.
    redis.start();
    eventually(Duration::from_secs(10), "a sync to get through", || async {
        metrics()
            .await
            .contains("tollgate_ratelimit_backend_up{backend=\"redis\"} 1")
            .then_some(())
    })
    .await;
    let counters = limit_counters(&url).await;
    assert_eq!(counters.len(), 1, "{counters:?}");
    let ttl_ms = counters[0].1;
    // 29 or 30 requests at 2 min each (`routed`'s one may have reached the
    // first server): the allowance is whole again in about an hour.
    assert!(ttl_ms > 3_400_000 && ttl_ms <= 3_600_000, "{ttl_ms} ms");
    stop_node(n).await;
}

/// A synced node's last counts reach Redis when it shuts down, even when
/// its next periodic sync is far off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_node_hands_its_counts_to_redis_at_shutdown() {
    let Some(mut redis) = RedisServer::on_free_port() else {
        return;
    };
    redis.start();
    // An hour between syncs: only the one at start (with nothing to add)
    // and the one at shutdown happen during the test.
    let (_dir, n) = node_on_private_redis(&redis, &["--redis-sync-ms", "3600000"]).await;
    let up = Upstream::start("synced-shutdown").await;
    put_config(
        &n,
        &json!({"services": [{"name": "api", "url": up.url(), "routes": [
            {"name": "limited", "paths": ["/limited"], "strip_path": false, "policies": [
                {"name": "rate_limit", "config": {
                    "limits": [{"requests": 30, "per": "1h", "by": "route"}]}}]},
        ]}]}),
    )
    .await;
    let proxy = proxy_of(&n);
    eventually(DEADLINE, "the route", || async {
        routed(proxy, "/limited").await.then_some(())
    })
    .await;
    for _ in 0..9 {
        let r = get(&format!("http://{proxy}/limited")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let before = limit_counters(&redis.url()).await;
    assert!(before.is_empty(), "synced before shutdown: {before:?}");

    stop_node(n).await;
    let counters = limit_counters(&redis.url()).await;
    assert_eq!(counters.len(), 1, "{counters:?}");
    let ttl_ms = counters[0].1;
    // 10 requests at 2 min each.
    assert!(ttl_ms > 1_190_000 && ttl_ms <= 1_200_000, "{ttl_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_quota_survives_a_restart() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_owned();
    let first = node(&["--data-dir", &data]).await;
    let up = Upstream::start("local").await;
    put_config(&first, &metered_config(&up.url(), "p", 5, "s")).await;
    let (org, _, key) = customer(&first, "p").await;
    until_admitted(&first, "/metered", &key).await;
    for _ in 0..2 {
        assert_eq!(
            with_key(&first, "/metered", &key).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(quota_used(&first, &org).await["used"], 3);
    stop_node(first).await;

    let second = node(&["--data-dir", &data]).await;
    assert_eq!(
        quota_used(&second, &org).await["used"],
        3,
        "the count was kept"
    );
    for _ in 0..2 {
        assert_eq!(
            with_key(&second, "/metered", &key).await.status,
            StatusCode::OK
        );
    }
    let r = with_key(&second, "/metered", &key).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.problem_code(), "quota_exceeded");
    let q = quota_used(&second, &org).await;
    assert_eq!(
        (q["used"].as_u64(), q["remaining"].as_u64()),
        (Some(5), Some(0))
    );
    stop_node(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_subscription_changes_apply_to_the_next_requests() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_owned();
    let n = node(&["--data-dir", &data]).await;
    let up = Upstream::start("plans").await;
    put_config(&n, &metered_config(&up.url(), "p", 1, "s")).await;
    let (org, sub, key) = customer(&n, "p").await;
    until_admitted(&n, "/metered", &key).await;
    let r = with_key(&n, "/metered", &key).await;
    assert_eq!(r.problem_code(), "quota_exceeded");

    // The operator raises the plan's quota: the month's count carries on.
    let r = admin(
        &n,
        Method::PUT,
        "/plans/p",
        Some(json!({"name": "p", "limits": {"monthly_quota": 2}})),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.text);
    eventually(DEADLINE, "the new quota to apply", || async {
        (with_key(&n, "/metered", &key).await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(
        with_key(&n, "/metered", &key).await.problem_code(),
        "quota_exceeded"
    );

    // An override on the subscription raises it for this customer only.
    let r = admin(
        &n,
        Method::PATCH,
        &format!("/orgs/{org}/subscriptions/{sub}"),
        Some(json!({"overrides": {"monthly_quota": 3}})),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.text);
    eventually(DEADLINE, "the override to apply", || async {
        (with_key(&n, "/metered", &key).await.status == StatusCode::OK).then_some(())
    })
    .await;
    let q = quota_used(&n, &org).await;
    assert_eq!(
        (q["limit"].as_u64(), q["used"].as_u64()),
        (Some(3), Some(3)),
        "{q}"
    );

    // Without a subscription the route refuses the caller.
    let r = admin(
        &n,
        Method::DELETE,
        &format!("/orgs/{org}/subscriptions/{sub}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    eventually(DEADLINE, "the deletion to apply", || async {
        let r = with_key(&n, "/metered", &key).await;
        (r.status == StatusCode::FORBIDDEN && r.problem_code() == "subscription_required")
            .then_some(())
    })
    .await;
    stop_node(n).await;
}
