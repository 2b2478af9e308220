//! The audit log of the admin API over a real socket, on SQLite and
//! PostgreSQL: every write is recorded with its actor, action, resource,
//! status, before and after, client address and request id; reads, dry
//! runs and unauthenticated calls are not; secrets never reach the log;
//! filters, pages and the JSON-lines export; the log cannot be changed
//! through the API; and a write whose entry cannot be stored is still
//! answered, logged and counted.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_admin::auth::{Actor, hash_token};
use tollgate_core::ids::AuditId;
use tollgate_store::{AuditEntry, AuditFilter, Page, Store};

mod common;

use common::*;

impl Api {
    async fn bare(&self, method: Method, path: &str) -> Reply {
        self.call_as(method, path, None, "", Some(TOKEN)).await
    }
    /// A JSON write with extra request headers.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = body.to_string();
        self.call_with(
            method,
            path,
            Some("application/json"),
            &body,
            Some(TOKEN),
            headers,
        )
        .await
    }
    /// The audit entries that `GET /audit?<query>` lists (one page).
    async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/audit?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["items"].as_array().expect("items").clone()
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| s(&e["action"])).collect()
}

fn actor() -> String {
    Actor::admin_token(&hash_token(TOKEN)).0
}

fn service(name: &str, port: u16) -> Value {
    json!({"name": name, "url": format!("http://127.0.0.1:{port}")})
}

/// Every entry in the store, all columns.
async fn stored(store: &Store) -> Vec<AuditEntry> {
    store
        .list_audit(&AuditFilter::default(), Page::first(1000))
        .await
        .expect("list audit")
        .items
}

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        id: AuditId::new(),
        at: chrono::Utc::now(),
        actor: "admin_token:000000000000".into(),
        action: action.into(),
        resource_type: action.split('.').next().unwrap_or_default().into(),
        resource_id: None,
        org_id: None,
        status: 200,
        before: None,
        after: None,
        ip: None,
        request_id: "r".into(),
    }
}

tollgate_store::backend_tests! {
    async fn service_writes_are_recorded_with_before_and_after(store) {
        let api = Api::start(store.clone()).await;
        let created = api
            .send_with(Method::POST, "/services", service("orders", 9000), &[("x-request-id", "req-create-1")])
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        assert_eq!(created.headers["x-request-id"], "req-create-1");
        let created = created.json();
        let id = s(&created["id"]);
        let put = api.send(Method::PUT, &format!("/services/{id}"), service("orders", 9001)).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.text);
        let generated = put.headers["x-request-id"].to_str().expect("ascii").to_owned();
        assert_eq!(generated.len(), 26, "a ULID: {generated}");
        let patch = api.call_as(Method::PATCH, &format!("/services/{id}"), Some("application/merge-patch+json"),
            r#"{"url": "http://127.0.0.1:9002"}"#, Some(TOKEN)).await;
        assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
        // Reads are not recorded, but still get a request id.
        let read = api.get(&format!("/services/{id}")).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.headers["x-request-id"].len(), 26);
        assert_eq!(api.get("/services").await.status, StatusCode::OK);
        let deleted = api.bare(Method::DELETE, &format!("/services/{id}")).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);

        let log = api.audit("resource_type=service").await;
        assert_eq!(actions(&log), ["service.create", "service.update", "service.update", "service.delete"]);
        let statuses: Vec<u64> = log.iter().map(|e| e["status"].as_u64().expect("status")).collect();
        assert_eq!(statuses, [201, 200, 200, 204]);
        for e in &log {
            assert_eq!(e["actor"], actor().as_str());
            assert_eq!(e["resource_id"], id.as_str());
            assert_eq!(e["ip"], "127.0.0.1");
            assert_eq!(e["org_id"], Value::Null);
            assert!(e["id"].as_str().expect("id").starts_with("aud_"));
        }
        assert_eq!(log[0]["request_id"], "req-create-1");
        assert_eq!(log[1]["request_id"], generated.as_str());
        // before: the state read just before the write; after: the answer.
        assert_eq!(log[0]["before"], Value::Null);
        assert_eq!(log[0]["after"], created);
        assert_eq!(log[1]["before"], created);
        assert_eq!(log[1]["after"], put.json());
        assert_eq!(log[2]["before"], put.json());
        assert_eq!(log[2]["after"], patch.json());
        assert_eq!(log[3]["before"], patch.json());
        assert_eq!(log[3]["after"], Value::Null);
        assert_eq!(log.len(), stored(&store).await.len(), "nothing else was recorded");
    }

    async fn failed_writes_are_recorded_with_their_status_and_no_after(store) {
        let api = Api::start(store.clone()).await;
        let r = api.send(Method::POST, "/services", json!({"name": "orders", "url": "not a url"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        let missing = "svc_01jd5m3x9q7k2v8r4t6y0w1zab";
        let r = api.send(Method::PUT, &format!("/services/{missing}"), service("orders", 9000)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // Without a valid token nothing is recorded: there is no actor.
        let r = api.call_as(Method::POST, "/services", Some("application/json"),
            &service("x", 1).to_string(), Some("wrong-token")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);

        let log = api.audit("").await;
        assert_eq!(actions(&log), ["service.create", "service.update"]);
        assert_eq!(log[0]["status"], 422);
        assert_eq!(log[0]["after"], Value::Null);
        assert_eq!(log[0]["resource_id"], Value::Null);
        assert_eq!(log[1]["status"], 404);
        assert_eq!(log[1]["resource_id"], missing);
        assert_eq!(log[1]["before"], Value::Null);
        assert_eq!(log[1]["after"], Value::Null);
        assert_eq!(api.audit("status=422").await.len(), 1);
    }

    async fn secrets_never_reach_the_audit_log(store) {
        let api = Api::start(store.clone()).await;
        let org = s(&api.send(Method::POST, "/orgs", json!({"name": "acme"})).await.json()["id"]);
        let app = s(&api.send(Method::POST, &format!("/orgs/{org}/apps"), json!({"name": "web"})).await.json()["id"]);
        let keys = format!("/orgs/{org}/apps/{app}/keys");
        let r = api.send(Method::POST, &keys, json!({"name": "ci", "metadata": {"team": "a"}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let key = r.json();
        let key_id = s(&key["key"]["id"]);
        let mut secrets = vec![s(&key["secret"])];
        let r = api.send(Method::POST, &format!("{keys}/{key_id}/rotate"), json!({"overlap": "1h"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        secrets.push(s(&r.json()["secret"]));
        let clients = format!("/orgs/{org}/apps/{app}/oauth-clients");
        let r = api.send(Method::POST, &clients, json!({"name": "backend"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let client = r.json();
        let client_id = s(&client["client"]["id"]);
        secrets.push(s(&client["client_secret"]));
        let r = api.bare(Method::POST, &format!("{clients}/{client_id}/secret")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        secrets.push(s(&r.json()["client_secret"]));

        let entries = stored(&store).await;
        let found: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(found, ["org.create", "app.create", "key.create", "key.rotate", "oauth_client.create", "oauth_client.reset_secret"]);
        let whole = serde_json::to_string(&entries).expect("json");
        let export = api.get("/audit/export").await.text;
        for secret in &secrets {
            assert!(secret.len() > 20, "{secret}");
            assert!(!whole.contains(secret.as_str()), "a secret is in the audit log: {whole}");
            assert!(!export.contains(secret.as_str()), "a secret is in the export");
        }
        let key_entry = &entries[2];
        let after = key_entry.after.as_ref().expect("after");
        assert_eq!(after["secret"], tollgate_store::REDACTED);
        assert_eq!(after["key"]["id"], key_id.as_str(), "the rest is kept");
        assert_eq!(key_entry.resource_id.as_deref(), Some(key_id.as_str()));
        assert_eq!(key_entry.org_id.as_ref().map(|o| o.as_str()), Some(org.as_str()));
        assert_eq!(entries[0].org_id.as_ref().map(|o| o.as_str()), Some(org.as_str()), "an org is its own org");
        assert_eq!(entries[4].after.as_ref().expect("after")["client_secret"], tollgate_store::REDACTED);
    }

    async fn revoking_a_key_records_its_state_before_and_after(store) {
        let api = Api::start(store).await;
        let org = s(&api.send(Method::POST, "/orgs", json!({"name": "acme"})).await.json()["id"]);
        let app = s(&api.send(Method::POST, &format!("/orgs/{org}/apps"), json!({"name": "web"})).await.json()["id"]);
        let keys = format!("/orgs/{org}/apps/{app}/keys");
        let key = s(&api.send(Method::POST, &keys, json!({})).await.json()["key"]["id"]);
        let r = api.bare(Method::POST, &format!("{keys}/{key}/revoke")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let log = api.audit("action=key.revoke").await;
        assert_eq!(log.len(), 1);
        let e = &log[0];
        assert_eq!(e["resource_type"], "key");
        assert_eq!(e["resource_id"], key.as_str());
        assert_eq!(e["org_id"], org.as_str());
        assert_eq!(e["before"]["id"], key.as_str());
        assert_eq!(e["before"]["revoked_at"], Value::Null);
        assert!(e["after"]["revoked_at"].is_string(), "{e}");
    }

    async fn config_apply_is_recorded_and_a_dry_run_is_not(store) {
        let api = Api::start(store.clone()).await;
        api.send(Method::POST, "/services", service("old", 9000)).await;
        let before = api.get("/config").await.json();
        let yaml = "services:\n  - name: new\n    url: http://127.0.0.1:9001\n";
        let r = api.call_as(Method::POST, "/config/diff", Some("application/yaml"), yaml, Some(TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = api.call_as(Method::PUT, "/config", Some("application/yaml"), yaml, Some(TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let log = api.audit("").await;
        assert_eq!(actions(&log), ["service.create", "config.apply"]);
        assert_eq!(log[1]["resource_type"], "config");
        assert_eq!(log[1]["before"], before);
        assert_eq!(log[1]["after"], r.json());
    }

    async fn filters_and_pages_select_entries(store) {
        let api = Api::start(store.clone()).await;
        let t0 = chrono::Utc::now() - chrono::Duration::seconds(1);
        for (name, port) in [("a", 1), ("b", 2), ("c", 3)] {
            api.send(Method::POST, "/services", service(name, port)).await;
        }
        let org = s(&api.send(Method::POST, "/orgs", json!({"name": "acme"})).await.json()["id"]);
        api.send(Method::POST, &format!("/orgs/{org}/apps"), json!({"name": "web"})).await;
        api.send(Method::POST, "/services", json!({"name": "bad"})).await;
        let mut other = entry("plan.create");
        other.actor = "admin_token:ffffffffffff".into();
        store.append_audit(&other).await.expect("append");

        assert_eq!(api.audit("action=service.create").await.len(), 4);
        assert_eq!(actions(&api.audit(&format!("org={org}")).await), ["org.create", "app.create"]);
        assert_eq!(actions(&api.audit("resource_type=app").await), ["app.create"]);
        assert_eq!(api.audit(&format!("actor={}", actor())).await.len(), 6);
        assert_eq!(actions(&api.audit("actor=admin_token:ffffffffffff").await), ["plan.create"]);
        assert_eq!(api.audit("status=422&action=service.create").await.len(), 1);
        let first = &api.audit("").await[0];
        let id = s(&first["resource_id"]);
        assert_eq!(api.audit(&format!("resource_type=service&resource_id={id}")).await.len(), 1);
        let from = t0.format("%Y-%m-%dT%H:%M:%S%.3fZ");
        assert_eq!(api.audit(&format!("from={from}")).await.len(), 7);
        assert_eq!(api.audit(&format!("to={from}")).await.len(), 0);

        // Pages of two, in id order, end with no `next`.
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let r = api.get(&format!("/audit?limit=2{after}")).await.json();
            seen.extend(r["items"].as_array().expect("items").iter().map(|e| s(&e["id"])));
            match r["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

        let r = api.get("/audit?limit=0").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.code(), "validation_failed");
        let r = api.get("/audit?org_id=org_x").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "an unknown filter is refused");
        assert_eq!(r.code(), "bad_request");
        let r = api.get("/audit?from=yesterday").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = api.call_as(Method::GET, "/audit", None, "", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    async fn export_streams_json_lines_across_pages(store) {
        let api = Api::start(store.clone()).await;
        let n = tollgate_admin::audit::EXPORT_PAGE as usize * 2 + 17;
        let mut ids = Vec::new();
        for i in 0..n {
            let mut e = entry(if i % 3 == 0 { "route.delete" } else { "service.update" });
            e.after = (i % 3 != 0).then(|| json!({"n": i}));
            store.append_audit(&e).await.expect("append");
            ids.push(e.id.to_string());
        }
        let r = api.get("/audit/export").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert!(r.text.ends_with('\n'));
        let lines: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.iter().map(|l| s(&l["id"])).collect::<Vec<_>>(), ids);
        let back: AuditEntry = serde_json::from_value(lines[1].clone()).expect("an entry");
        assert_eq!(back.after, Some(json!({"n": 1})));

        let r = api.get("/audit/export?action=route.delete").await;
        assert_eq!(r.text.lines().count(), n.div_ceil(3));
        let r = api.get(&format!("/audit/export?limit=3&after={}", ids[9])).await;
        let got: Vec<String> = r.text.lines().map(|l| s(&serde_json::from_str::<Value>(l).expect("json")["id"])).collect();
        assert_eq!(got, ids[10..13]);
        let r = api.get("/audit/export?actor=nobody").await;
        assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, ""));
        assert_eq!(api.get("/audit/export?bogus=1").await.status, StatusCode::BAD_REQUEST);
    }

    async fn the_log_cannot_be_changed_through_the_api(store) {
        let api = Api::start(store.clone()).await;
        api.send(Method::POST, "/services", service("orders", 9000)).await;
        let id = s(&api.audit("").await[0]["id"]);
        for (method, path) in [
            (Method::PUT, "/audit".to_owned()),
            (Method::POST, "/audit".to_owned()),
            (Method::DELETE, "/audit".to_owned()),
            (Method::PATCH, "/audit".to_owned()),
            (Method::DELETE, "/audit/export".to_owned()),
            (Method::PUT, "/audit/export".to_owned()),
        ] {
            let r = api.send(method.clone(), &path, json!({})).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.code(), "method_not_allowed");
        }
        let r = api.bare(Method::DELETE, &format!("/audit/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(stored(&store).await.len(), 1, "nothing was removed or added");
    }

    async fn a_write_is_answered_when_its_entry_cannot_be_stored(store) {
        let api = Api::start(store.clone()).await;
        let metric = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("tollgate_audit_write_failures_total "))
                .map(|v| v.parse::<u64>().expect("a count"))
        };
        assert_eq!(metric(&api.get("/metrics").await.text), Some(0));
        tollgate_store::testing::execute_sql(&store, "ALTER TABLE audit_log RENAME TO audit_log_gone")
            .await
            .expect("hide the table");
        let r = api.send(Method::POST, "/services", service("orders", 9000)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(api.get("/services").await.json()["items"].as_array().expect("items").len(), 1);
        assert_eq!(metric(&api.get("/metrics").await.text), Some(1));
        tollgate_store::testing::execute_sql(&store, "ALTER TABLE audit_log_gone RENAME TO audit_log")
            .await
            .expect("restore the table");
        api.send(Method::POST, "/services", service("billing", 9001)).await;
        assert_eq!(actions(&api.audit("").await), ["service.create"]);
        assert_eq!(metric(&api.get("/metrics").await.text), Some(1));
    }
}
