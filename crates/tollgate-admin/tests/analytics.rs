//! `/analytics` and `/orgs/{org}/analytics` over stored roll-up rows, on
//! both backends: minute rows of several nodes merge into hour and day
//! buckets with exact counts and merged percentiles, filters narrow the
//! rows, an organization sees only its own, and malformed queries are 4xx
//! problems.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tollgate_analytics::Sketch;
use tollgate_store::RollupRow;

const HOUR: i64 = 3_600_000;
/// 2025-12-01T00:00:00Z
const DAY0: i64 = 1_764_547_200_000;

fn sketch(us: f64, n: usize) -> String {
    let mut s = Sketch::new();
    for _ in 0..n {
        s.add(us);
    }
    s.encode()
}

fn row(node: &str, at: i64, org: &str, route: &str, class: i16, n: usize, us: f64) -> RollupRow {
    RollupRow {
        node: node.into(),
        bucket_start: at - at.rem_euclid(60_000),
        org_id: org.into(),
        app_id: String::new(),
        route: route.into(),
        status_class: class,
        requests: n as i64,
        errors: if class == 5 { n as i64 } else { 0 },
        bytes_in: 0,
        bytes_out: 100 * n as i64,
        latency: sketch(us, n),
        upstream_latency: sketch(us * 0.8, n),
    }
}

fn ok(r: Reply) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

tollgate_store::backend_tests! {
    async fn series_merge_rows_of_nodes_and_minutes(store) {
        let org = store.create_org("acme", "Acme").await.unwrap().id.as_str().to_owned();
        store
            .upsert_rollups(&[
                // 90 fast requests on node a, 10 slow ones on node b, same hour.
                row("a", DAY0 + 60_000, &org, "orders", 2, 90, 1_000.0),
                row("b", DAY0 + 30 * 60_000, &org, "orders", 2, 10, 100_000.0),
                row("b", DAY0 + 31 * 60_000, &org, "orders", 5, 5, 2_000.0),
                // Another organization's and an anonymous caller's traffic, next hour.
                row("a", DAY0 + HOUR + 5, "org_other", "billing", 2, 7, 500.0),
                row("a", DAY0 + HOUR + 5, "", "", 4, 3, 50.0),
            ])
            .await
            .unwrap();
        let api = Api::start(store).await;
        let q = format!("from={DAY0}&to={}", DAY0 + 2 * HOUR);

        let s = ok(api.get(&format!("/analytics?{q}&bucket=hour")).await);
        assert_eq!(s["bucket"], "hour");
        assert_eq!(s["from"], "2025-12-01T00:00:00Z");
        let b = s["buckets"].as_array().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["start"], "2025-12-01T00:00:00Z");
        assert_eq!(b[0]["requests"], 105);
        assert_eq!(b[0]["errors"], 5);
        assert_eq!(b[0]["bytes_out"], 10_500);
        // p50 from the fast rows, p99 from the slow ones: merged sketches,
        // not averaged percentiles.
        let p50 = b[0]["latency_ms"]["p50"].as_f64().unwrap();
        let p99 = b[0]["latency_ms"]["p99"].as_f64().unwrap();
        assert!((p50 - 1.0).abs() <= 0.011, "{p50}");
        assert!((p99 - 100.0).abs() <= 1.01, "{p99}");
        assert_eq!(b[1]["requests"], 10);
        assert_eq!(s["totals"]["requests"], 115);
        assert!((s["totals"]["error_rate"].as_f64().unwrap() - 5.0 / 115.0).abs() < 1e-9);

        // Minute buckets: every minute of the range, empty ones included.
        let s = ok(api.get(&format!("/analytics?{q}&bucket=minute")).await);
        assert_eq!(s["buckets"].as_array().unwrap().len(), 120);
        assert_eq!(s["buckets"][1]["requests"], 90);
        assert_eq!(s["buckets"][2]["requests"], 0);
        assert_eq!(s["buckets"][2]["latency_ms"], Value::Null);

        // Filters.
        let total = |v: Value| v["totals"]["requests"].as_u64().unwrap();
        assert_eq!(total(ok(api.get(&format!("/analytics?{q}&route=billing")).await)), 7);
        assert_eq!(total(ok(api.get(&format!("/analytics?{q}&status=5xx")).await)), 5);
        assert_eq!(total(ok(api.get(&format!("/analytics?{q}&status=4xx")).await)), 3);
        assert_eq!(total(ok(api.get(&format!("/analytics?{q}&org={org}")).await)), 105);

        // The organization's own view.
        let mine = ok(api.get(&format!("/orgs/{org}/analytics?{q}&bucket=day")).await);
        assert_eq!(total(mine), 105);
        let r = api.get(&format!("/orgs/{org}/analytics?{q}&org=org_01jfzzzzzzzzzzzzzzzzzzzzzz")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.code(), "validation_failed");
        let r = api.get("/orgs/org_01jfzzzzzzzzzzzzzzzzzzzzzz/analytics").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

        // Malformed queries are the client's mistake.
        for bad in [
            "bucket=week".to_owned(),
            "from=yesterday".to_owned(),
            format!("from={}&to={DAY0}", DAY0 + 1),
            format!("from=0&to={}&bucket=minute", 365 * 24 * HOUR),
            "status=7xx".to_owned(),
            "org=acme".to_owned(),
        ] {
            let r = api.get(&format!("/analytics?{bad}")).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text);
            assert_eq!(r.code(), "validation_failed", "{bad}");
        }
        // The token is needed, as everywhere.
        let r = api.call_as(Method::GET, "/analytics", None, "", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}
