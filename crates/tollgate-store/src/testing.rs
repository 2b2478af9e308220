//! Throw-away stores for integration tests, on both backends.
//!
//! - [`sqlite_store`]: a store in a fresh temporary directory, removed when
//!   the returned guard drops.
//! - [`postgres_store`]: a store in a fresh schema `t_<ulid>` of the database
//!   named by `TOLLGATE_TEST_DATABASE_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`). When PostgreSQL cannot be
//!   reached it returns `None` after a one-line notice on stderr, except when
//!   `CI=true`, where a missing database is a failure and it panics.
//! - [`for_each_backend`] runs a test body against each available backend;
//!   [`backend_tests!`](crate::backend_tests) declares one `#[test]` per
//!   backend instead, so each shows up (and fails) under its own name.
//!
//! Schemas are not dropped when a test ends (the store may outlive the test
//! body); each call drops test schemas older than an hour instead.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::OnceCell;

use crate::{Backend, Store, StoreError};

/// The environment variable naming the PostgreSQL database tests use.
pub const TEST_DATABASE_URL_ENV: &str = "TOLLGATE_TEST_DATABASE_URL";
/// Used when [`TEST_DATABASE_URL_ENV`] is unset.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A temporary directory, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDirGuard {
    path: PathBuf,
}

impl TempDirGuard {
    /// Creates `<temp dir>/tollgate-test-<ulid>`.
    pub fn new() -> std::io::Result<TempDirGuard> {
        let path = std::env::temp_dir().join(format!(
            "tollgate-test-{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDirGuard { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh SQLite store in its own temporary directory (open another store on
/// the same file with `Store::open_data_dir(guard.path())`). Panics on failure.
pub async fn sqlite_store() -> (Store, TempDirGuard) {
    let dir = TempDirGuard::new().expect("create a temporary directory");
    let store = Store::open_data_dir(dir.path())
        .await
        .expect("open a SQLite store in a temporary directory");
    (store, dir)
}

/// A fresh PostgreSQL schema for one test.
#[derive(Debug, Clone)]
pub struct PgSchema {
    /// The database URL.
    pub url: String,
    /// The schema, `t_<ulid>`.
    pub schema: String,
}

impl PgSchema {
    /// Connects a new store (its own pool) to this schema; several stores on
    /// one schema behave like several nodes of a cluster.
    pub async fn connect(&self) -> Result<Store, StoreError> {
        Store::connect_postgres_schema(&self.url, &self.schema).await
    }
}

/// A fresh, migrated PostgreSQL store in its own schema, or `None` when
/// PostgreSQL is unreachable outside CI.
pub async fn postgres_store() -> Option<Store> {
    let schema = postgres_schema().await?;
    Some(
        schema
            .connect()
            .await
            .expect("connect a store to the fresh PostgreSQL schema"),
    )
}

/// Creates a fresh schema `t_<ulid>` in the test database, or returns `None`
/// when PostgreSQL is unreachable outside CI (see the module docs).
pub async fn postgres_schema() -> Option<PgSchema> {
    let url =
        std::env::var(TEST_DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into());
    let mut conn = match admin_connection(&url).await {
        Ok(conn) => conn,
        Err(err) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL at {url} is required in CI ({TEST_DATABASE_URL_ENV}): {err}");
            }
            eprintln!(
                "skipping PostgreSQL: cannot reach {url} ({err}); set {TEST_DATABASE_URL_ENV}"
            );
            return None;
        }
    };
    drop_stale_schemas(&mut conn).await;
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create a test schema");
    let _ = conn.close().await;
    Some(PgSchema { url, schema })
}

/// Opens one plain connection to the test database. Whether the database is
/// reachable at all is decided once per process, so a missing server costs
/// one timeout, not one per test.
async fn admin_connection(url: &str) -> Result<PgConnection, String> {
    static REACHABLE: OnceCell<Result<(), String>> = OnceCell::const_new();
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| e.to_string())?;
    let connect = || async {
        match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(&options))
            .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    REACHABLE
        .get_or_init(|| async { connect().await.map(drop) })
        .await
        .clone()?;
    connect().await
}

/// Drops `t_<ulid>` schemas whose ULID is more than an hour old: left over
/// from earlier runs. Best effort.
async fn drop_stale_schemas(conn: &mut PgConnection) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    else {
        return;
    };
    let now = std::time::SystemTime::now();
    for name in names {
        let Some(ulid) = name
            .strip_prefix("t_")
            .and_then(|u| ulid::Ulid::from_string(&u.to_ascii_uppercase()).ok())
        else {
            continue;
        };
        let stale = now
            .duration_since(ulid.datetime())
            .is_ok_and(|age| age > Duration::from_secs(3600));
        if stale {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// Runs `body` against a fresh SQLite store, then against a fresh PostgreSQL
/// store when one is available. Each run is announced on stderr, so a failure
/// shows which backend it came from.
pub async fn for_each_backend<F, Fut>(body: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let (store, _dir) = sqlite_store().await;
    eprintln!("-- backend: sqlite");
    body(store).await;
    if let Some(store) = postgres_store().await {
        eprintln!("-- backend: postgres");
        body(store).await;
    }
}

/// A fresh store on `backend`, or `None` when PostgreSQL is unavailable
/// outside CI. The guard holds the SQLite directory.
pub async fn store_on(backend: Backend) -> Option<(Store, Option<TempDirGuard>)> {
    match backend {
        Backend::Sqlite => {
            let (store, dir) = sqlite_store().await;
            Some((store, Some(dir)))
        }
        Backend::Postgres => postgres_store().await.map(|s| (s, None)),
    }
}

/// Runs a future to completion on a fresh multi-threaded Tokio runtime (used
/// by [`backend_tests!`](crate::backend_tests)).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a Tokio runtime")
        .block_on(future)
}

/// Declares each test once per backend, as a module holding `sqlite` and
/// `postgres` tests (the latter passes with a notice when PostgreSQL is
/// unavailable outside CI):
///
/// ```
/// tollgate_store::backend_tests! {
///     async fn starts_at_revision_zero(store) {
///         assert_eq!(store.revision().await.unwrap(), 0);
///     }
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* async fn $name:ident($store:ident) $body:block)*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body($store: $crate::Store) $body

                #[test]
                fn sqlite() {
                    $crate::testing::block_on(async {
                        if let Some((store, _dir)) =
                            $crate::testing::store_on($crate::Backend::Sqlite).await
                        {
                            body(store).await;
                        }
                    });
                }

                #[test]
                fn postgres() {
                    $crate::testing::block_on(async {
                        if let Some((store, _dir)) =
                            $crate::testing::store_on($crate::Backend::Postgres).await
                        {
                            body(store).await;
                        }
                    });
                }
            }
        )*
    };
}

/// Runs raw SQL on the store's database: for tests that must inject a fault
/// (a trigger, a broken row) the public API cannot produce.
pub async fn execute_sql(store: &Store, sql: &str) -> Result<(), StoreError> {
    let mut conn = store.pool.conn().await?;
    crate::db::on_conn!(&mut conn, |c| sqlx::raw_sql(sql)
        .execute(&mut *c)
        .await
        .map(drop))?;
    Ok(())
}
