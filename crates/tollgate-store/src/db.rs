//! Backend dispatch: one pool enum, one connection enum, and the macros that
//! run a block of sqlx code against whichever backend is active.
//!
//! sqlx's query builders are typed by database, so a block of query code
//! cannot be written once for a runtime-chosen backend. [`on_conn!`] instead
//! expands the same block once per backend arm, with the connection variable
//! bound to that backend's connection type. The SQL text is shared; see
//! `docs/decisions/0002-one-sql-store-over-two-backends.md`.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, Postgres, Sqlite, Transaction};

use crate::StoreError;

/// How long a caller waits for a connection before the store reports itself
/// unavailable. Short, so a dead database fails requests fast instead of
/// hanging them.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long SQLite waits on a lock held by another connection.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite `cache_size` per connection: negative means KiB.
const SQLITE_CACHE_KIB: &str = "-512";

/// The connection pool of the active backend.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A pooled connection, either inside a transaction or not.
pub(crate) enum Handle<DB: Database> {
    Tx(Transaction<'static, DB>),
    Conn(PoolConnection<DB>),
}

impl<DB: Database> Deref for Handle<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        match self {
            Handle::Tx(tx) => tx,
            Handle::Conn(conn) => conn,
        }
    }
}

impl<DB: Database> DerefMut for Handle<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Handle::Tx(tx) => tx,
            Handle::Conn(conn) => conn,
        }
    }
}

/// A connection of the active backend.
pub(crate) enum Conn {
    Sqlite(Handle<Sqlite>),
    Postgres(Handle<Postgres>),
}

/// Runs `$body` with `$c` bound to `&mut SqliteConnection` or `&mut
/// PgConnection`, whichever backend `$conn` (a `&mut Conn`) belongs to. The
/// body is expanded once per backend, so it must produce the same type in
/// both; use `&mut *$c` as the executor.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite(handle) => {
                let $c: &mut sqlx::SqliteConnection = &mut **handle;
                $body
            }
            $crate::db::Conn::Postgres(handle) => {
                let $c: &mut sqlx::PgConnection = &mut **handle;
                $body
            }
        }
    };
}
pub(crate) use on_conn;

/// SQL that begins a write transaction. On SQLite, `BEGIN IMMEDIATE` takes the
/// write lock up front, so a transaction that reads and then writes cannot
/// fail on lock upgrade. PostgreSQL writers serialise on the revision row,
/// which every write transaction updates first.
const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// SQL that begins a consistent read. SQLite's deferred transaction reads one
/// snapshot in WAL mode; PostgreSQL's default READ COMMITTED takes a new
/// snapshot per statement, so a multi-statement read needs REPEATABLE READ.
const PG_BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

impl Pool {
    pub(crate) async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match self {
            Pool::Sqlite(p) => Conn::Sqlite(Handle::Conn(p.acquire().await?)),
            Pool::Postgres(p) => Conn::Postgres(Handle::Conn(p.acquire().await?)),
        })
    }

    /// A transaction that reads one consistent snapshot.
    pub(crate) async fn snapshot(&self) -> Result<Conn, StoreError> {
        Ok(match self {
            Pool::Sqlite(p) => Conn::Sqlite(Handle::Tx(p.begin().await?)),
            Pool::Postgres(p) => Conn::Postgres(Handle::Tx(p.begin_with(PG_BEGIN_SNAPSHOT).await?)),
        })
    }

    /// A write transaction. Callers bump the revision first (see
    /// [`crate::sql::bump_revision`]).
    pub(crate) async fn write(&self) -> Result<Conn, StoreError> {
        Ok(match self {
            Pool::Sqlite(p) => Conn::Sqlite(Handle::Tx(p.begin_with(SQLITE_BEGIN_WRITE).await?)),
            Pool::Postgres(p) => Conn::Postgres(Handle::Tx(p.begin().await?)),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

impl Conn {
    /// Commits a transaction; a plain connection has nothing to commit.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(Handle::Tx(tx)) => tx.commit().await?,
            Conn::Postgres(Handle::Tx(tx)) => tx.commit().await?,
            Conn::Sqlite(Handle::Conn(_)) | Conn::Postgres(Handle::Conn(_)) => {}
        }
        Ok(())
    }

    /// Rolls a transaction back. (Dropping one rolls back too; this waits for it.)
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(Handle::Tx(tx)) => tx.rollback().await?,
            Conn::Postgres(Handle::Tx(tx)) => tx.rollback().await?,
            Conn::Sqlite(Handle::Conn(_)) | Conn::Postgres(Handle::Conn(_)) => {}
        }
        Ok(())
    }
}

/// Opens a SQLite pool with the store's settings, creating the file and its
/// parent directory when missing.
pub(crate) async fn sqlite_pool(options: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
    let file = options.get_filename().to_path_buf();
    let in_memory = file
        .to_str()
        .is_some_and(|f| f == ":memory:" || f.starts_with("file:"));
    let parent = file
        .parent()
        .filter(|p| !in_memory && !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
    }
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        // Each of the pool's connections has its own page cache (2 MiB by
        // default, so 16 MiB for the pool). The operating system caches the
        // file as well; 512 KiB each keeps the gateway's memory small.
        .pragma("cache_size", SQLITE_CACHE_KIB);
    let mut pool_options = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT);
    if in_memory {
        // An in-memory database lives only while a connection to it is open.
        pool_options = pool_options
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = pool_options.connect_with(options).await?;
    Ok(pool)
}

/// Opens a PostgreSQL pool with the store's settings.
pub(crate) async fn postgres_pool(options: PgConnectOptions) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}
