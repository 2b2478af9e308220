//! The admin API over a real socket, on SQLite and PostgreSQL.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

mod common;

use common::*;

/// One bad request: method, path, content type, body, expected status and code.
type Case = (
    Method,
    &'static str,
    Option<&'static str>,
    &'static str,
    StatusCode,
    &'static str,
);

tollgate_store::backend_tests! {
    async fn authentication_is_required(store) {
        let api = Api::start(store).await;
        let r = api.call_as(Method::GET, "/services", None, "", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "unauthorized");
        assert!(r.headers["www-authenticate"].to_str().expect("ascii").starts_with("Bearer"));
        let r = api.call_as(Method::GET, "/services", None, "", Some("wrong-token")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        for open in ["/healthz", "/readyz", "/openapi.json"] {
            assert_eq!(api.call_as(Method::GET, open, None, "", None).await.status, StatusCode::OK, "{open}");
        }
    }

    async fn service_and_route_crud_with_pagination(store) {
        let api = Api::start(store).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let r = api.send(Method::POST, "/services", json!({"name": format!("svc{i}"), "url": "http://127.0.0.1:9000"})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let id = r.json()["id"].as_str().expect("id").to_owned();
            assert_eq!(r.headers["location"], format!("/services/{id}").as_str());
            ids.push(id);
        }
        let mut seen = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..10 {
            let path = match &next { Some(n) => format!("/services?limit=2&after={n}"), None => "/services?limit=2".into() };
            let page = api.get(&path).await.json();
            seen.extend(page["items"].as_array().expect("items").iter().map(|s| s["id"].as_str().expect("id").to_owned()));
            next = page["next"].as_str().map(str::to_owned);
            if next.is_none() { break; }
        }
        assert_eq!(seen, ids);

        let svc = &ids[0];
        let r = api.send(Method::PATCH, &format!("/services/{svc}"), json!({"retries": 0, "read_timeout": "2s"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["spec"]["retries"], 0);
        assert_eq!(r.json()["spec"]["read_timeout"], "2s");
        assert_eq!(r.json()["spec"]["url"], "http://127.0.0.1:9000");

        let r = api.send(Method::POST, &format!("/services/{svc}/routes"), json!({"name": "r1", "paths": ["/a"]})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let route = r.json()["id"].as_str().expect("id").to_owned();
        let r = api.get(&format!("/services/{svc}/routes")).await;
        assert_eq!(r.json()["items"][0]["id"], route.as_str());
        let r = api.send(Method::PUT, &format!("/routes/{route}"), json!({"name": "r1", "paths": ["/b"], "strip_path": false})).await;
        assert_eq!(r.json()["spec"]["paths"][0], "/b");

        let r = api.send(Method::POST, "/policies", json!({"scope": "route", "route_id": route, "policy": {"name": "cors", "config": {"origins": ["*"]}}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = api.get(&format!("/policies?route_id={route}")).await;
        assert_eq!(r.json()["items"].as_array().expect("items").len(), 1);

        assert_eq!(api.call_as(Method::DELETE, &format!("/services/{svc}"), None, "", Some(TOKEN)).await.status, StatusCode::NO_CONTENT);
        let r = api.get(&format!("/routes/{route}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.code(), "not_found");
        assert_eq!(api.get("/policies").await.json()["items"].as_array().expect("items").len(), 0);
    }

    async fn client_mistakes_get_4xx_problems(store) {
        let api = Api::start(store).await;
        let cases: Vec<Case> = vec![
            (Method::POST, "/services", Some("application/json"), "{not json", StatusCode::BAD_REQUEST, "bad_request"),
            (Method::POST, "/services", Some("text/plain"), "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (Method::POST, "/services", None, "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (Method::POST, "/services", Some("application/json"), r#"{"name": "x"}"#, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::POST, "/services", Some("application/json"), r#"{"name": "x", "url": "http://a:1", "bogus": 1}"#, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::POST, "/services", Some("application/json"), r#"{"name": "bad name", "url": "ftp://a"}"#, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::POST, "/services", Some("application/json"), r#"[1,2]"#, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::GET, "/services/svc_nope", None, "", StatusCode::NOT_FOUND, "not_found"),
            (Method::GET, "/services/rt_01jd5m3x9q7k2v8r4t6y0w1zab", None, "", StatusCode::NOT_FOUND, "not_found"),
            (Method::GET, "/services/svc_01jd5m3x9q7k2v8r4t6y0w1zab", None, "", StatusCode::NOT_FOUND, "not_found"),
            (Method::GET, "/services?limit=0", None, "", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::GET, "/services?limit=abc", None, "", StatusCode::BAD_REQUEST, "bad_request"),
            (Method::GET, "/nowhere", None, "", StatusCode::NOT_FOUND, "not_found"),
            (Method::DELETE, "/services", None, "", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (Method::POST, "/policies", Some("application/json"), r#"{"scope": "service", "policy": {"name": "cors", "config": {"origins": ["*"]}}}"#, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::POST, "/policies", Some("application/json"), r#"{"scope": "global", "policy": {"name": "teleport", "config": {}}}"#, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::PUT, "/config", Some("application/yaml"), "services: [{name: a}]", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            (Method::PUT, "/config", Some("application/yaml"), "services: [", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        ];
        for (method, path, ct, body, status, code) in cases {
            let r = api.call_as(method.clone(), path, ct, body, Some(TOKEN)).await;
            assert_eq!(r.status, status, "{method} {path} {body}: {}", r.text);
            assert_eq!(r.code(), code, "{method} {path} {body}");
        }
        // Oversized body: refused on its declared length, before it is read.
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(api.addr).await.expect("connect");
            let head = format!(
                "POST /services HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
                5 * 1024 * 1024
            );
            tcp.write_all(head.as_bytes()).await.expect("write");
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            // Read until the problem's closing brace (or the end), a bounded number of times.
            for _ in 0..100 {
                let n = tcp.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.ends_with(b"}") {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 413"), "{text}");
            assert!(text.contains("payload_too_large"), "{text}");
        }
        // Conflict.
        let body = json!({"name": "dup", "url": "http://127.0.0.1:1"});
        assert_eq!(api.send(Method::POST, "/services", body.clone()).await.status, StatusCode::CREATED);
        let r = api.send(Method::POST, "/services", body).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.code(), "conflict");
        // Validation errors name their path.
        let r = api.send(Method::POST, "/services", json!({"name": "v", "url": "http://a:1", "retries": "many"})).await;
        assert_eq!(r.json()["errors"][0]["path"], "retries");
    }

    async fn declarative_config_round_trips(store) {
        let api = Api::start(store).await;
        let yaml = "services:\n  - name: orders\n    url: http://127.0.0.1:9000\n    routes:\n      - name: orders\n        paths: [/orders]\n";
        let r = api.call_as(Method::POST, "/config/diff", Some("application/yaml"), yaml, Some(TOKEN)).await;
        assert_eq!(r.json()["changes"].as_array().expect("changes").len(), 2);
        assert_eq!(api.get("/services").await.json()["items"].as_array().expect("items").len(), 0, "diff writes nothing");
        let r = api.call_as(Method::PUT, "/config", Some("application/yaml"), yaml, Some(TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let exported = api.call_as(Method::GET, "/config", None, "", Some(TOKEN)).await;
        assert_eq!(exported.headers["content-type"], "application/json");
        let rev = exported.headers["tollgate-config-revision"].to_str().expect("rev").to_owned();
        let yaml_out = {
            let mut b = Request::get(format!("http://{}/config", api.addr)).header("authorization", format!("Bearer {TOKEN}")).header("accept", "application/yaml");
            b = b.header("x-test", "1");
            let res = api.client.request(b.body(Full::new(Bytes::new())).expect("req")).await.expect("res");
            String::from_utf8(res.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf8")
        };
        let r = api.call_as(Method::PUT, "/config", Some("application/yaml"), &yaml_out, Some(TOKEN)).await;
        assert_eq!(r.json()["changes"].as_array().expect("changes").len(), 0, "export then apply changes nothing");
        let again = api.call_as(Method::GET, "/config", None, "", Some(TOKEN)).await;
        assert_eq!(again.headers["tollgate-config-revision"].to_str().expect("rev"), rev, "a no-op apply does not bump the revision");
        assert_eq!(again.text, exported.text);
        // A broken document changes nothing.
        let r = api.call_as(Method::PUT, "/config", Some("application/yaml"), "services: [{name: orders, url: 'http://x:1', routes: [{name: r, paths: [nope]}]}]", Some(TOKEN)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.json()["errors"][0]["path"], "services[0].routes[0].paths[0]");
        assert_eq!(api.call_as(Method::GET, "/config", None, "", Some(TOKEN)).await.text, exported.text);
    }

    async fn readiness_reports_the_store(store) {
        let api = Api::start(store).await;
        let r = api.call_as(Method::GET, "/readyz", None, "", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["status"], "ready");
        assert!(api.status.store_unreachable("connection refused".into()));
        assert!(!api.status.store_unreachable("connection refused".into()), "an incident starts once");
        let r = api.call_as(Method::GET, "/readyz", None, "", None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.code(), "store_unavailable");
        assert!(r.json()["detail"].as_str().expect("detail").contains("last good configuration"));
        assert_eq!(api.call_as(Method::GET, "/healthz", None, "", None).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn openapi_document_is_served() {
    let (store, _dir) = tollgate_store::testing::sqlite_store().await;
    let api = Api::start(store).await;
    let r = api
        .call_as(Method::GET, "/openapi.json", None, "", None)
        .await;
    assert_eq!(r.text, tollgate_admin::openapi::document());
    let doc = r.json();
    assert!(doc["paths"]["/services/{id}"]["patch"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
}
