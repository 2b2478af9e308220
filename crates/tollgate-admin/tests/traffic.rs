//! Traffic control in the admin API over a real socket, on SQLite and
//! PostgreSQL: plans, organizations' time zones, subscriptions and the
//! usage endpoint, with every status code they answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_admin::{QuotaUsage, UsageReader};
use tollgate_core::ids::SubscriptionId;

mod common;

use common::*;

impl Reply {
    #[track_caller]
    fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
    /// Asserts a problem with this status and code; returns its body.
    #[track_caller]
    fn problem(self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        self.json()
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The `path`s of a problem's field errors.
fn paths(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| s(&e["path"]))
        .collect()
}

impl Api {
    async fn delete(&self, path: &str) -> Reply {
        self.call_as(Method::DELETE, path, None, "", Some(TOKEN))
            .await
    }
    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, body).await
    }

    /// Two services and two plans: `free` (every API) and `pro` (`orders`
    /// only, with a monthly quota).
    async fn catalog(&self) {
        for (name, port) in [("orders", 9000), ("billing", 9001)] {
            let url = format!("http://127.0.0.1:{port}");
            self.post("/services", json!({"name": name, "url": url}))
                .await
                .expect(StatusCode::CREATED);
        }
        self.post(
            "/plans",
            json!({"name": "free", "limits": {"per_minute": 60}}),
        )
        .await
        .expect(StatusCode::CREATED);
        let pro = json!({"name": "pro", "limits": {"per_second": 10, "monthly_quota": 1000}, "apis": ["orders"]});
        self.post("/plans", pro).await.expect(StatusCode::CREATED);
    }
    async fn org(&self, name: &str) -> String {
        s(&self
            .post("/orgs", json!({"name": name}))
            .await
            .expect(StatusCode::CREATED)["id"])
    }
    async fn app(&self, org: &str, name: &str) -> String {
        let r = self
            .post(&format!("/orgs/{org}/apps"), json!({"name": name}))
            .await;
        s(&r.expect(StatusCode::CREATED)["id"])
    }
    async fn key(&self, org: &str, app: &str) -> String {
        let r = self
            .post(&format!("/orgs/{org}/apps/{app}/keys"), json!({}))
            .await;
        s(&r.expect(StatusCode::CREATED)["key"]["id"])
    }
    async fn subscribe(&self, org: &str, body: Value) -> Reply {
        self.post(&format!("/orgs/{org}/subscriptions"), body).await
    }
}

/// A usage reader with known numbers that records what it was asked.
struct FakeUsage {
    used: u64,
    fail: bool,
    asked: Mutex<Vec<(String, Option<String>)>>,
}

impl FakeUsage {
    fn new(used: u64, fail: bool) -> Arc<FakeUsage> {
        Arc::new(FakeUsage {
            used,
            fail,
            asked: Mutex::new(Vec::new()),
        })
    }
}

/// 2026-12-01T00:00:00+01:00 and 2027-01-01T00:00:00+01:00.
const DEC_START_MS: i64 = 1_796_079_600_000;
const JAN_START_MS: i64 = 1_798_758_000_000;

impl UsageReader for FakeUsage {
    fn quota_usage<'a>(
        &'a self,
        subscription: &'a SubscriptionId,
        timezone: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<QuotaUsage, String>> + Send + 'a>> {
        Box::pin(async move {
            self.asked
                .lock()
                .expect("lock")
                .push((subscription.to_string(), timezone.map(str::to_owned)));
            if self.fail {
                return Err("redis is down".to_owned());
            }
            Ok(QuotaUsage {
                period_start_ms: DEC_START_MS,
                period_end_ms: JAN_START_MS,
                used: self.used,
            })
        })
    }
}

tollgate_store::backend_tests! {
    async fn plans_crud(store) {
        let api = Api::start(store).await;
        api.catalog().await;
        let rev = |r: &Reply| r.headers["tollgate-config-revision"].to_str().expect("ascii").parse::<i64>().expect("number");
        let before = rev(&api.get("/config").await);

        let gold = json!({"name": "gold", "title": "Gold", "limits": {"per_hour": 5000, "monthly_quota": 100000}, "apis": ["orders", "billing"], "pricing": {"currency": "EUR", "monthly_fee": 9900}});
        let r = api.post("/plans", gold.clone()).await;
        assert_eq!(r.headers["location"], "/plans/gold");
        assert_eq!(r.expect(StatusCode::CREATED), gold);
        api.post("/plans", gold.clone()).await.problem(StatusCode::CONFLICT, "conflict");
        let bad = api.post("/plans", json!({"name": "z", "limits": {"per_second": 0, "burst": 0}})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(paths(&bad), ["limits.per_second", "limits.burst"]);
        let bad = api.post("/plans", json!({"name": "z", "apis": ["nowhere"]})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(paths(&bad), ["apis[0]"]);
        let bad = api.post("/plans", json!({"name": "z", "limits": {"per_day": 1}})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(paths(&bad), ["limits.per_day"]);

        let list = api.get("/plans").await.expect(StatusCode::OK);
        let names: Vec<String> = list["items"].as_array().expect("items").iter().map(|p| s(&p["name"])).collect();
        assert_eq!(names, ["free", "gold", "pro"]);
        let page = api.get("/plans?limit=2").await.expect(StatusCode::OK);
        assert_eq!(page["next"], "gold");
        assert_eq!(api.get("/plans?limit=2&after=gold").await.expect(StatusCode::OK)["items"][0]["name"], "pro");
        assert_eq!(api.get("/plans/gold").await.expect(StatusCode::OK), gold);
        api.get("/plans/platinum").await.problem(StatusCode::NOT_FOUND, "not_found");

        let mut gold2 = gold.clone();
        gold2["limits"]["per_hour"] = json!(9000);
        assert_eq!(api.send(Method::PUT, "/plans/gold", gold2.clone()).await.expect(StatusCode::OK), gold2);
        assert_eq!(api.get("/plans/gold").await.expect(StatusCode::OK)["limits"]["per_hour"], 9000);
        let bad = api.send(Method::PUT, "/plans/gold", json!({"name": "silver"})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(paths(&bad), ["name"]);
        api.send(Method::PUT, "/plans/silver", json!({"name": "silver"})).await.problem(StatusCode::NOT_FOUND, "not_found");

        // Plans are configuration: each change bumps the revision and the
        // export carries them.
        assert_eq!(rev(&api.get("/config").await), before + 2);
        let exported = api.get("/config").await.expect(StatusCode::OK);
        assert_eq!(exported["plans"][1], gold2);
        // A service a plan includes cannot go.
        let billing = api.get("/services").await.expect(StatusCode::OK)["items"][1]["id"].clone();
        api.delete(&format!("/services/{}", s(&billing))).await.problem(StatusCode::CONFLICT, "conflict");

        api.delete("/plans/gold").await.expect(StatusCode::NO_CONTENT);
        api.delete("/plans/gold").await.problem(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(rev(&api.get("/config").await), before + 3);
    }

    async fn subscribed_plans_cannot_be_deleted(store) {
        let api = Api::start(store).await;
        api.catalog().await;
        let org = api.org("acme").await;
        let sub = s(&api.subscribe(&org, json!({"plan": "free"})).await.expect(StatusCode::CREATED)["id"]);
        let r = api.delete("/plans/free").await.problem(StatusCode::CONFLICT, "conflict");
        assert!(s(&r["detail"]).contains("subscriptions"), "{r}");
        // Nor through the declarative configuration.
        let config = "services: [{name: orders, url: 'http://127.0.0.1:9000'}, {name: billing, url: 'http://127.0.0.1:9001'}]\n";
        let r = api.call_as(Method::PUT, "/config", Some("application/yaml"), config, Some(TOKEN)).await;
        r.problem(StatusCode::CONFLICT, "conflict");
        api.delete(&format!("/orgs/{org}/subscriptions/{sub}")).await.expect(StatusCode::NO_CONTENT);
        api.delete("/plans/free").await.expect(StatusCode::NO_CONTENT);
    }

    async fn org_time_zones(store) {
        let api = Api::start(store).await;
        let org = api.post("/orgs", json!({"name": "acme", "timezone": "Europe/Berlin"})).await.expect(StatusCode::CREATED);
        assert_eq!(org["timezone"], "Europe/Berlin");
        let id = s(&org["id"]);
        let other = api.org("globex").await;
        assert_eq!(api.get(&format!("/orgs/{other}")).await.expect(StatusCode::OK)["timezone"], Value::Null);
        let bad = api.post("/orgs", json!({"name": "x", "timezone": "Mars/Olympus"})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(paths(&bad), ["timezone"]);

        let path = format!("/orgs/{id}");
        let r = api.send(Method::PATCH, &path, json!({"timezone": "America/New_York"})).await.expect(StatusCode::OK);
        assert_eq!((r["timezone"].clone(), r["display_name"].clone()), (json!("America/New_York"), json!("acme")));
        let r = api.send(Method::PATCH, &path, json!({"display_name": "Acme"})).await.expect(StatusCode::OK);
        assert_eq!(r["timezone"], "America/New_York", "left alone");
        let bad = api.send(Method::PATCH, &path, json!({"timezone": "Nowhere"})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(paths(&bad), ["timezone"]);
        let r = api.send(Method::PATCH, &path, json!({"timezone": null})).await.expect(StatusCode::OK);
        assert_eq!(r["timezone"], Value::Null);
        assert_eq!(api.get(&path).await.expect(StatusCode::OK)["timezone"], Value::Null);
    }

    async fn subscriptions_crud(store) {
        let api = Api::start(store).await;
        api.catalog().await;
        let org = api.org("acme").await;
        let app = api.app(&org, "web").await;
        let other_app = api.app(&org, "batch").await;
        let key = api.key(&org, &app).await;
        let base = format!("/orgs/{org}/subscriptions");

        let r = api.subscribe(&org, json!({"plan": "free"})).await;
        let location = r.headers["location"].to_str().expect("ascii").to_owned();
        let org_wide = r.expect(StatusCode::CREATED);
        let id = s(&org_wide["id"]);
        assert!(id.starts_with("sub_"));
        assert_eq!(location, format!("{base}/{id}"));
        assert_eq!((org_wide["app_id"].clone(), org_wide["key_id"].clone(), org_wide["api"].clone()), (Value::Null, Value::Null, Value::Null));
        assert_eq!(org_wide["overrides"], json!({}));
        let on_key = api.subscribe(&org, json!({"plan": "pro", "api": "orders", "app_id": app, "key_id": key, "overrides": {"monthly_quota": 5}})).await.expect(StatusCode::CREATED);
        assert_eq!((on_key["app_id"].clone(), on_key["key_id"].clone()), (json!(app), json!(key)));
        assert_eq!(on_key["overrides"], json!({"monthly_quota": 5}));
        api.subscribe(&org, json!({"plan": "free", "app_id": app})).await.expect(StatusCode::CREATED);

        // 422: the plan, the API, the plan's APIs, the overrides, the key.
        let unprocessable = |r: Reply| paths(&r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "gold"})).await), ["plan"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "api": "nowhere"})).await), ["api"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "pro", "api": "billing"})).await), ["api"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "overrides": {"per_minute": 0}})).await), ["overrides.per_minute"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "overrides": {"per_week": 1}})).await), ["overrides.per_week"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "key_id": key})).await), ["key_id"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "app_id": other_app, "key_id": key})).await), ["key_id"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "app_id": "app_nope"})).await), ["app_id"]);
        assert_eq!(unprocessable(api.subscribe(&org, json!({"plan": "free", "extra": 1})).await), ["extra"]);
        // 404: an app or key that is not this organization's.
        let missing_app = "app_01jd5m3x9q7k2v8r4t6y0w1zab";
        api.subscribe(&org, json!({"plan": "free", "app_id": missing_app})).await.problem(StatusCode::NOT_FOUND, "not_found");
        let missing_key = "key_01jd5m3x9q7k2v8r4t6y0w1zab";
        api.subscribe(&org, json!({"plan": "free", "app_id": app, "key_id": missing_key})).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.subscribe("org_01jd5m3x9q7k2v8r4t6y0w1zab", json!({"plan": "free"})).await.problem(StatusCode::NOT_FOUND, "not_found");
        // 409: the same target and API again, whatever the plan.
        api.subscribe(&org, json!({"plan": "pro"})).await.problem(StatusCode::CONFLICT, "conflict");
        api.subscribe(&org, json!({"plan": "free", "api": "orders", "app_id": app, "key_id": key})).await.problem(StatusCode::CONFLICT, "conflict");

        let list = api.get(&base).await.expect(StatusCode::OK);
        assert_eq!(list["items"].as_array().expect("items").len(), 3);
        assert_eq!(list["items"][0]["id"], json!(id));
        let page = api.get(&format!("{base}?limit=1")).await.expect(StatusCode::OK);
        assert_eq!(page["next"], json!(id));

        // A plan change is visible at once.
        let item = format!("{base}/{id}");
        assert_eq!(api.get(&item).await.expect(StatusCode::OK), org_wide);
        let r = api.send(Method::PATCH, &item, json!({"plan": "pro"})).await.expect(StatusCode::OK);
        assert_eq!(r["plan"], "pro");
        assert_eq!(api.get(&item).await.expect(StatusCode::OK)["plan"], "pro");
        let r = api.send(Method::PATCH, &item, json!({"overrides": {"per_second": 2}})).await.expect(StatusCode::OK);
        assert_eq!((r["plan"].clone(), r["overrides"].clone()), (json!("pro"), json!({"per_second": 2})));
        assert_eq!(unprocessable(api.send(Method::PATCH, &item, json!({"plan": "gold"})).await), ["plan"]);
        assert_eq!(unprocessable(api.send(Method::PATCH, &item, json!({"overrides": {"concurrency": 0}})).await), ["overrides.concurrency"]);
        assert_eq!(unprocessable(api.send(Method::PATCH, &item, json!({"api": "orders"})).await), ["api"]);
        assert_eq!(api.get(&item).await.expect(StatusCode::OK)["plan"], "pro");

        api.delete(&item).await.expect(StatusCode::NO_CONTENT);
        api.get(&item).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.delete(&item).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.get(&format!("{base}/not-an-id")).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.get("/orgs/org_01jd5m3x9q7k2v8r4t6y0w1zab/subscriptions").await.problem(StatusCode::NOT_FOUND, "not_found");
        let unauth = api.call_as(Method::GET, &base, None, "", None).await;
        assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    }

    async fn other_orgs_subscriptions_are_not_found(store) {
        let api = Api::start(store).await;
        api.catalog().await;
        let a = api.org("alpha").await;
        let b = api.org("beta").await;
        let a_app = api.app(&a, "web").await;
        let a_key = api.key(&a, &a_app).await;
        let b_app = api.app(&b, "web").await;
        let sub = s(&api.subscribe(&a, json!({"plan": "free"})).await.expect(StatusCode::CREATED)["id"]);
        let theirs = format!("/orgs/{b}/subscriptions/{sub}");
        api.get(&theirs).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.send(Method::PATCH, &theirs, json!({"plan": "pro"})).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.delete(&theirs).await.problem(StatusCode::NOT_FOUND, "not_found");
        // Nor may B subscribe A's app or key.
        api.subscribe(&b, json!({"plan": "free", "app_id": a_app})).await.problem(StatusCode::NOT_FOUND, "not_found");
        api.subscribe(&b, json!({"plan": "free", "app_id": b_app, "key_id": a_key})).await.problem(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(api.get(&format!("/orgs/{b}/subscriptions")).await.expect(StatusCode::OK)["items"], json!([]));
        assert_eq!(api.get(&format!("/orgs/{a}/subscriptions/{sub}")).await.expect(StatusCode::OK)["plan"], "free");
        api.get(&format!("/orgs/{b}/usage")).await.expect(StatusCode::OK);
    }

    async fn usage_reports_the_limiters_counts(store) {
        let reader = FakeUsage::new(250, false);
        let api = Api::start_with_usage(store, Some(reader.clone())).await;
        api.catalog().await;
        let org = s(&api.post("/orgs", json!({"name": "acme", "timezone": "Europe/Berlin"})).await.expect(StatusCode::CREATED)["id"]);
        let app = api.app(&org, "web").await;
        let free = s(&api.subscribe(&org, json!({"plan": "free", "overrides": {"per_minute": 120}})).await.expect(StatusCode::CREATED)["id"]);
        let pro = api.subscribe(&org, json!({"plan": "pro", "api": "orders", "app_id": app, "overrides": {"monthly_quota": 200}})).await.expect(StatusCode::CREATED);
        let pro_id = s(&pro["id"]);

        let usage = api.get(&format!("/orgs/{org}/usage")).await.expect(StatusCode::OK);
        let items = usage["items"].as_array().expect("items");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], json!({
            "subscription_id": free, "plan": "free", "api": null, "app_id": null, "key_id": null,
            "limits": {"per_minute": 120}, "quota": null,
        }));
        assert_eq!(items[1], json!({
            "subscription_id": pro_id, "plan": "pro", "api": "orders", "app_id": app, "key_id": null,
            "limits": {"per_second": 10, "monthly_quota": 200},
            "quota": {
                "period_start": "2026-11-30T23:00:00Z", "period_end": "2026-12-31T23:00:00Z",
                "timezone": "Europe/Berlin", "limit": 200, "used": 250, "remaining": 0,
            },
        }));
        // Only subscriptions with a quota are asked about, with the org's zone.
        assert_eq!(*reader.asked.lock().expect("lock"), [(pro_id.clone(), Some("Europe/Berlin".to_owned()))]);
        // A plan change shows at once.
        api.send(Method::PATCH, &format!("/orgs/{org}/subscriptions/{pro_id}"), json!({"overrides": {}})).await.expect(StatusCode::OK);
        let usage = api.get(&format!("/orgs/{org}/usage")).await.expect(StatusCode::OK);
        assert_eq!(usage["items"][1]["quota"]["limit"], 1000);
        assert_eq!(usage["items"][1]["quota"]["remaining"], 750);
        let page = api.get(&format!("/orgs/{org}/usage?limit=1")).await.expect(StatusCode::OK);
        assert_eq!((page["items"].as_array().expect("items").len(), page["next"].clone()), (1, json!(free)));
        api.get("/orgs/org_01jd5m3x9q7k2v8r4t6y0w1zab/usage").await.problem(StatusCode::NOT_FOUND, "not_found");
    }

    async fn usage_without_a_limiter_is_503(store) {
        let api = Api::start(store.clone()).await;
        api.catalog().await;
        let org = api.org("acme").await;
        // No quota, no limiter needed.
        api.subscribe(&org, json!({"plan": "free"})).await.expect(StatusCode::CREATED);
        let usage = api.get(&format!("/orgs/{org}/usage")).await.expect(StatusCode::OK);
        assert_eq!(usage["items"][0]["quota"], Value::Null);
        // A quota without a limiter, or with a failing one: 503, never 500.
        api.subscribe(&org, json!({"plan": "pro", "api": "orders"})).await.expect(StatusCode::CREATED);
        let r = api.get(&format!("/orgs/{org}/usage")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert_eq!(r.code(), "limiter_unavailable");
        let failing = Api::start_with_usage(store, Some(FakeUsage::new(0, true))).await;
        let r = failing.get(&format!("/orgs/{org}/usage")).await;
        let body = r.problem(StatusCode::SERVICE_UNAVAILABLE, "limiter_unavailable");
        assert!(!s(&body["detail"]).contains("redis"), "internal message not leaked: {body}");
    }
}

#[tokio::test]
async fn openapi_lists_the_traffic_endpoints() {
    let (store, _dir) = tollgate_store::testing::sqlite_store().await;
    let api = Api::start(store).await;
    let doc = api.get("/openapi.json").await.expect(StatusCode::OK);
    for path in [
        "/plans",
        "/plans/{name}",
        "/orgs/{org}/subscriptions",
        "/orgs/{org}/subscriptions/{id}",
        "/orgs/{org}/usage",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let usage = &doc["paths"]["/orgs/{org}/usage"]["get"]["responses"];
    assert!(usage["503"].is_object(), "{usage}");
}
