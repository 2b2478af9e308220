//! Connecting, migrations, failure when the database is away, and several
//! stores (nodes) sharing one database.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tollgate_store::testing::{TempDirGuard, for_each_backend, postgres_schema};
use tollgate_store::{Backend, Page, Store, StoreError};

#[tokio::test]
async fn sqlite_migrations_are_idempotent_and_data_persists() {
    let dir = TempDirGuard::new().unwrap();
    let first = Store::open_data_dir(dir.path()).await.unwrap();
    assert_eq!(first.backend(), Backend::Sqlite);
    first.create_service(service("orders")).await.unwrap();
    first.migrate().await.unwrap();
    first.close().await;

    let second = Store::open_data_dir(dir.path()).await.unwrap();
    second.migrate().await.unwrap();
    assert_eq!(second.revision().await.unwrap(), 1);
    assert_eq!(
        second
            .get_service_by_name("orders")
            .await
            .unwrap()
            .spec
            .name,
        "orders"
    );
    assert!(dir.path().join(tollgate_store::SQLITE_FILE_NAME).is_file());
}

#[tokio::test]
async fn postgres_migrations_are_idempotent() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let first = schema.connect().await.unwrap();
    assert_eq!(first.backend(), Backend::Postgres);
    first.create_service(service("orders")).await.unwrap();
    let second = schema.connect().await.unwrap();
    second.migrate().await.unwrap();
    first.migrate().await.unwrap();
    assert_eq!(second.revision().await.unwrap(), 1);
    assert_eq!(
        second
            .list_services(Page::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn sqlite_urls_and_paths_create_missing_directories() {
    let dir = TempDirGuard::new().unwrap();
    let url = format!("sqlite://{}/a/b/store.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    store.ping().await.unwrap();
    assert!(dir.path().join("a/b/store.db").is_file());

    let path = dir.path().join("c/plain.db");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert_eq!(store.revision().await.unwrap(), 0);
    assert!(path.is_file());

    let memory = Store::connect("sqlite::memory:").await.unwrap();
    memory.create_service(service("m")).await.unwrap();
    assert_eq!(memory.revision().await.unwrap(), 1);

    assert!(matches!(
        Store::connect("mysql://localhost/x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        Store::connect_postgres_schema("postgres://localhost/x", "Bad; DROP").await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_and_fails_fast() {
    let started = Instant::now();
    let err = Store::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        elapsed < Duration::from_secs(6),
        "took {elapsed:?}; the acquire timeout is 3s"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the sqlx error as its source"
    );
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    for_each_backend(|store| async move {
        store.close().await;
        let err = store.revision().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            store
                .create_service(service("x"))
                .await
                .unwrap_err()
                .is_unavailable()
        );
    })
    .await;
}

#[tokio::test]
async fn two_postgres_stores_see_each_others_writes() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let a = schema.connect().await.unwrap();
    let b = schema.connect().await.unwrap();
    assert_eq!(b.revision().await.unwrap(), 0);
    a.apply(&config(
        "services: [{name: orders, url: 'http://127.0.0.1:9000'}]",
    ))
    .await
    .unwrap();
    assert_eq!(b.revision().await.unwrap(), 1);
    let (rev, exported) = b.export().await.unwrap();
    assert_eq!(rev, 1);
    assert_eq!(exported.services[0].name, "orders");
    let svc = b.get_service_by_name("orders").await.unwrap();
    b.delete_service(&svc.id).await.unwrap();
    assert_eq!(a.revision().await.unwrap(), 2);
    assert!(a.export().await.unwrap().1.services.is_empty());
}

#[tokio::test]
async fn two_sqlite_stores_on_one_file_see_each_others_writes() {
    let dir = TempDirGuard::new().unwrap();
    let a = Store::open_data_dir(dir.path()).await.unwrap();
    let b = Store::open_data_dir(dir.path()).await.unwrap();
    a.create_service(service("orders")).await.unwrap();
    assert_eq!(b.revision().await.unwrap(), 1);
    assert_eq!(b.export().await.unwrap().1.services.len(), 1);
}

/// Concurrent applies from two nodes serialise: both succeed, each is
/// all-or-nothing, and the revision counts both.
#[tokio::test]
async fn concurrent_applies_on_postgres_serialise() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let a = schema.connect().await.unwrap();
    let b = schema.connect().await.unwrap();
    let one = config(
        "services: [{name: one, url: 'http://127.0.0.1:9000', routes: [{name: r, paths: [/one]}]}]",
    );
    let two = config(
        "services: [{name: two, url: 'http://127.0.0.1:9000', routes: [{name: r, paths: [/two]}]}]",
    );
    for _ in 0..5 {
        let (ra, rb) = tokio::join!(a.apply(&one), b.apply(&two));
        ra.unwrap();
        rb.unwrap();
        let (_, now) = a.export().await.unwrap();
        assert!(now == one || now == two, "one apply wins whole: {now:?}");
    }
}
