//! Builders shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::json;
use tollgate_core::config::{Config, PolicySpec, RouteSpec, ServiceSpec};
use tollgate_store::{Listed, Page, StoreError};

pub fn service(name: &str) -> ServiceSpec {
    serde_json::from_value(json!({"name": name, "url": "http://127.0.0.1:9000"})).unwrap()
}

pub fn route(name: &str, path: &str) -> RouteSpec {
    serde_json::from_value(json!({"name": name, "paths": [path]})).unwrap()
}

pub fn policy(name: &str) -> PolicySpec {
    let config = match name {
        "cors" => json!({"origins": ["https://app.example.com"]}),
        "ip_restriction" => json!({"allow": ["10.0.0.0/8"]}),
        "request_size_limit" => json!({"max_bytes": 1024}),
        "request_transformer" | "response_transformer" => json!({"set": {"x-a": "1"}}),
        other => panic!("unknown policy {other}"),
    };
    serde_json::from_value(json!({"name": name, "config": config})).unwrap()
}

pub fn size_limit(max_bytes: u64) -> PolicySpec {
    serde_json::from_value(
        json!({"name": "request_size_limit", "config": {"max_bytes": max_bytes}}),
    )
    .unwrap()
}

pub fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, "test.yaml").unwrap()
}

/// Walks every page of a list with `limit` items per page; returns the pages' sizes and all ids.
pub async fn walk<T, F, Fut>(
    limit: u32,
    id: impl Fn(&T) -> String,
    mut list: F,
) -> (Vec<usize>, Vec<String>)
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = Result<Listed<T>, StoreError>>,
{
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    let mut page = Page::first(limit);
    loop {
        let listed = list(page.clone()).await.unwrap();
        sizes.push(listed.items.len());
        ids.extend(listed.items.iter().map(&id));
        match listed.next {
            Some(next) => page = Page::after(limit, next),
            None => break,
        }
        assert!(sizes.len() < 100, "pagination does not end");
    }
    (sizes, ids)
}

/// The paths of an `Invalid` error; panics on any other result.
pub fn invalid_paths<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Vec<String> {
    match result {
        Err(StoreError::Invalid(errors)) => errors.into_iter().map(|e| e.path).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
