//! Tollgate's configuration store: services, routes, policies, JWT issuers,
//! plans, admin tokens, identity (organizations, users, apps, API keys, OAuth
//! clients, subscriptions; see [`Tenant`] and [`Store::identity_snapshot`]),
//! persisted usage counters ([`Store::add_usage`]), analytics roll-ups
//! ([`Store::upsert_rollups`]) and the append-only audit log
//! ([`Store::append_audit`], [`Store::list_audit`]), kept in SQLite (the
//! embedded default, one file in the data directory) or PostgreSQL (for a
//! cluster). One [`Store`] type serves both
//! backends with the same portable SQL; see
//! `docs/decisions/0002-one-sql-store-over-two-backends.md`. Every
//! configuration write runs in a transaction that also bumps a single configuration revision, so nodes
//! learn of a change by polling [`Store::revision`] and then read everything in
//! one consistent [`Store::export`]. [`Store::apply`] replaces the whole
//! configuration atomically from a declarative [`Config`], keeping the ids of
//! entities whose names persist. The [`testing`] module gives other crates
//! throw-away stores on both backends for their integration tests.

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use tollgate_core::config::Config;

mod analytics;
mod apply;
mod audit;
mod db;
mod error;
mod identity;
mod plans;
mod records;
mod resources;
mod sql;
pub mod testing;
mod usage;

pub use analytics::{MAX_ROLLUP_ROWS, RollupFilter, RollupRow};
pub use audit::{AuditEntry, AuditFilter, REDACTED, redact};
pub use error::StoreError;
pub use identity::{
    ApiKey, App, AppUpdate, ChangeEntity, ClientGrant, IdentityChange, IdentitySnapshot, KeyGrant,
    KeyUpdate, MAX_CHANGES_PER_READ, Member, NewApiKey, NewSubscription, OAuthClient, OrgUpdate,
    Organization, SigningKey, SigningKeyMaterial, Subscription, SubscriptionGrant,
    SubscriptionUpdate, Tenant, User,
};
pub use records::{
    Backend, Change, ChangeSet, Kind, Listed, Op, Page, PolicyRecord, PolicyScope, RouteRecord,
    ServiceRecord,
};
pub use usage::{UsageDelta, UsageRow};

use db::Pool;

/// The name of the SQLite file inside the data directory.
pub const SQLITE_FILE_NAME: &str = "tollgate.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle to the configuration store. Cloning is cheap: clones share one
/// connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Connects to the database named by `url` and runs pending migrations.
    ///
    /// - `postgres://...` or `postgresql://...`: PostgreSQL.
    /// - `sqlite:...` or a plain file path: SQLite. The file and its parent
    ///   directory are created when missing; the database runs in WAL mode
    ///   with foreign keys on and a 5 s busy timeout.
    ///
    /// A database that cannot be reached fails within about three seconds with
    /// [`StoreError::Unavailable`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(bad_url)?;
            return Store::connect_postgres(options).await;
        }
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(bad_url)?
        } else if url.contains("://") {
            return Err(StoreError::invalid(
                "database_url",
                "unsupported database URL; use `postgres://...`, `sqlite:...` or a file path",
            ));
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        Store::connect_sqlite(options).await
    }

    /// Opens (creating if needed) the SQLite store `dir/tollgate.db` and runs
    /// pending migrations.
    pub async fn open_data_dir(dir: &Path) -> Result<Store, StoreError> {
        Store::connect_sqlite(SqliteConnectOptions::new().filename(dir.join(SQLITE_FILE_NAME)))
            .await
    }

    /// Connects to PostgreSQL with every connection's `search_path` set to
    /// `schema`, so the store's tables live in (and are read from) that schema.
    /// The schema must exist. Useful to give each test, or each tenant, its own
    /// tables in one database.
    pub async fn connect_postgres_schema(url: &str, schema: &str) -> Result<Store, StoreError> {
        let simple = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !simple {
            return Err(StoreError::invalid(
                "schema",
                "must be 1 to 63 lower-case letters, digits or `_`, not starting with a digit",
            ));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(bad_url)?
            .options([("search_path", schema)]);
        Store::connect_postgres(options).await
    }

    /// Connects to SQLite with the given options (the store's own settings are
    /// applied on top) and runs pending migrations.
    pub async fn connect_sqlite(options: SqliteConnectOptions) -> Result<Store, StoreError> {
        let store = Store {
            pool: Pool::Sqlite(db::sqlite_pool(options).await?),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to PostgreSQL with the given options and runs pending migrations.
    pub async fn connect_postgres(options: PgConnectOptions) -> Result<Store, StoreError> {
        let store = Store {
            pool: Pool::Postgres(db::postgres_pool(options).await?),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations. Idempotent; safe to run from several nodes
    /// at once on PostgreSQL (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => MIGRATOR.run(p).await?,
            Pool::Postgres(p) => MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::ping(&mut conn).await
    }

    /// Closes the pool. Calls made afterwards fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The configuration revision: bumped by one in every write transaction.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::revision(&mut conn).await
    }

    /// The whole configuration, read in one consistent snapshot, with the
    /// revision it reflects. Services, routes, policies, JWT issuers and
    /// plans are ordered by name (byte order, the same on both backends), so
    /// an export that is applied and exported again renders byte-identical
    /// YAML.
    pub async fn export(&self) -> Result<(i64, Config), StoreError> {
        apply::export(&self.pool).await
    }

    /// Makes the stored configuration equal to `config`, atomically, and
    /// returns what changed. Entities are matched by name: a service, route or
    /// policy whose name persists keeps its id and is updated only if it
    /// changed (a route may move to another service); missing ones are
    /// deleted; new ones are created. A policy's name is its scope plus its
    /// type. Removing a plan that subscriptions use fails with `Conflict`.
    /// Applying a configuration equal to the stored one writes nothing and
    /// leaves the revision as it was.
    pub async fn apply(&self, config: &Config) -> Result<ChangeSet, StoreError> {
        apply::apply(&self.pool, config).await
    }

    /// What [`Store::apply`] would change, without writing.
    pub async fn diff(&self, config: &Config) -> Result<ChangeSet, StoreError> {
        apply::diff(&self.pool, config).await
    }
}

fn bad_url(err: sqlx::Error) -> StoreError {
    StoreError::invalid("database_url", err.to_string())
}
