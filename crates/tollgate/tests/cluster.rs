//! Two nodes on one store: a change written through one node's admin API is
//! routed by the other node's proxy within a second (their store pollers run
//! every 100 ms), on one PostgreSQL schema and on one SQLite file.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::{Method, StatusCode};
use serde_json::json;
use tollgate::Running;
use tollgate_store::testing::{TempDirGuard, postgres_schema};

/// How soon another node must pick up a change.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Creates `orders` through node `a`, waits for node `b` to route it, deletes
/// it through `b` and waits for `a` to stop routing it. Returns the service id.
async fn changes_cross_between(a: &Running, b: &Running, upstream: &Upstream) -> String {
    assert!(
        !routed(proxy_of(a), "/orders").await,
        "node A routes /orders before it exists"
    );
    assert!(
        !routed(proxy_of(b), "/orders").await,
        "node B routes /orders before it exists"
    );

    let body = json!({"name": "orders", "url": upstream.url()});
    let r = call(
        Method::POST,
        &admin_url(a, "/services"),
        Some(TOKEN),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_str().expect("service id").to_owned();
    let body = json!({"name": "orders", "paths": ["/orders"], "strip_path": false});
    let r = call(
        Method::POST,
        &admin_url(a, &format!("/services/{id}/routes")),
        Some(TOKEN),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let written = Instant::now();
    eventually(DEADLINE, "node B to route /orders", || async {
        routed(proxy_of(b), "/orders").await.then_some(())
    })
    .await;
    let took = written.elapsed();
    assert!(
        took < PROPAGATION,
        "node B routed the new route only after {took:?}"
    );
    let r = get(&format!("http://{}/orders/1", proxy_of(b))).await;
    assert_eq!(
        (r.status, r.upstream()),
        (StatusCode::OK, Some("cluster-upstream")),
        "{}",
        r.text
    );

    let r = call(
        Method::DELETE,
        &admin_url(b, &format!("/services/{id}")),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let deleted = Instant::now();
    eventually(DEADLINE, "node A to stop routing /orders", || async {
        (!routed(proxy_of(a), "/orders").await).then_some(())
    })
    .await;
    let took = deleted.elapsed();
    assert!(
        took < PROPAGATION,
        "node A still routed the deleted service for {took:?}"
    );
    eventually(DEADLINE, "node B to stop routing /orders", || async {
        (!routed(proxy_of(b), "/orders").await).then_some(())
    })
    .await;
    assert_eq!(
        a.gateway.revision(),
        b.gateway.revision(),
        "both nodes serve the same revision"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_schema_see_each_others_changes_within_a_second() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let url = url_with_schema(&schema.url, &schema.schema);
    let upstream = Upstream::start("cluster-upstream").await;
    let a = node(&["--database-url", &url]).await;
    let b = node(&["--database-url", &url]).await;

    changes_cross_between(&a, &b, &upstream).await;

    // The nodes' tables are the test schema's: a store opened on it sees
    // what they wrote (one create of each kind, then the delete).
    let direct = schema.connect().await.expect("connect to the schema");
    assert_eq!(
        direct.revision().await.expect("revision"),
        a.gateway.revision()
    );
    assert!(
        a.gateway.revision() >= 3,
        "revision {}",
        a.gateway.revision()
    );

    stop_node(a).await;
    stop_node(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_sqlite_file_see_each_others_changes_within_a_second() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data_dir = dir.path().to_str().expect("UTF-8 path");
    let upstream = Upstream::start("cluster-upstream").await;
    let a = node(&["--data-dir", data_dir]).await;
    let b = node(&["--data-dir", data_dir]).await;

    changes_cross_between(&a, &b, &upstream).await;

    stop_node(a).await;
    stop_node(b).await;
}
