//! Analytics roll-up rows. Gateways write their own rows (one per node,
//! minute and dimensions) and rewrite them as the minute fills; queries read
//! every node's rows for a range and merge them. Like usage counters, these
//! are neither configuration nor identity: writes bump no revision.

use serde::{Deserialize, Serialize};

use crate::db::on_conn;
use crate::sql::now_millis;
use crate::{Store, StoreError};

/// Most rows one query returns; a wider query is refused with
/// [`StoreError::Invalid`] so it can be narrowed.
pub const MAX_ROLLUP_ROWS: i64 = 200_000;

/// One stored roll-up row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RollupRow {
    /// The node that counted it.
    pub node: String,
    /// Start of the minute, unix milliseconds.
    pub bucket_start: i64,
    /// '' when no organization was identified.
    pub org_id: String,
    pub app_id: String,
    /// '' when no route matched.
    pub route: String,
    /// 1 to 5 for 1xx to 5xx, 0 otherwise.
    pub status_class: i16,
    pub requests: i64,
    pub errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Encoded latency sketch (microseconds).
    pub latency: String,
    pub upstream_latency: String,
}

/// Which rows a query reads: `[from, to)` in unix ms, and optional exact
/// matches on the dimensions (`Some("")` matches rows without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupFilter {
    pub from: i64,
    pub to: i64,
    pub org_id: Option<String>,
    pub app_id: Option<String>,
    pub route: Option<String>,
    pub status_class: Option<i16>,
}

impl Store {
    /// Writes rows, each replacing the same node's earlier write of the same
    /// row, in one transaction.
    pub async fn upsert_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO analytics_rollups \
             (node, bucket_start, org_id, app_id, route, status_class, requests, errors, \
              bytes_in, bytes_out, latency, upstream_latency, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (node, bucket_start, org_id, app_id, route, status_class) DO UPDATE SET \
             requests = excluded.requests, errors = excluded.errors, \
             bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, \
             latency = excluded.latency, upstream_latency = excluded.upstream_latency, \
             updated_at = excluded.updated_at";
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let mut conn = self.pool.write().await?;
        for r in rows {
            on_conn!(&mut conn, |c| sqlx::query(SQL)
                .bind(&r.node)
                .bind(r.bucket_start)
                .bind(&r.org_id)
                .bind(&r.app_id)
                .bind(&r.route)
                .bind(r.status_class)
                .bind(r.requests)
                .bind(r.errors)
                .bind(r.bytes_in)
                .bind(r.bytes_out)
                .bind(&r.latency)
                .bind(&r.upstream_latency)
                .bind(now)
                .execute(&mut *c)
                .await
                .map(drop))?;
        }
        conn.commit().await
    }

    /// The rows a filter selects, ordered by minute.
    pub async fn rollups(&self, f: &RollupFilter) -> Result<Vec<RollupRow>, StoreError> {
        // Each optional filter is `($n IS NULL OR column = $n)`: one
        // statement text for every combination.
        const SQL: &str = "SELECT node, bucket_start, org_id, app_id, route, status_class, \
             requests, errors, bytes_in, bytes_out, latency, upstream_latency \
             FROM analytics_rollups \
             WHERE bucket_start >= $1 AND bucket_start < $2 \
             AND ($3 IS NULL OR org_id = $3) AND ($4 IS NULL OR app_id = $4) \
             AND ($5 IS NULL OR route = $5) AND ($6 IS NULL OR status_class = $6) \
             ORDER BY bucket_start LIMIT $7";
        let mut conn = self.pool.conn().await?;
        let rows: Vec<RollupRow> = on_conn!(&mut conn, |c| sqlx::query_as(SQL)
            .bind(f.from)
            .bind(f.to)
            .bind(f.org_id.as_deref())
            .bind(f.app_id.as_deref())
            .bind(f.route.as_deref())
            .bind(f.status_class)
            .bind(MAX_ROLLUP_ROWS + 1)
            .fetch_all(&mut *c)
            .await)?;
        if rows.len() as i64 > MAX_ROLLUP_ROWS {
            return Err(StoreError::invalid(
                "range",
                format!(
                    "the query matches more than {MAX_ROLLUP_ROWS} roll-up rows; narrow the range or filter by organization, app or route"
                ),
            ));
        }
        Ok(rows)
    }

    /// Removes rows of minutes before `before` (unix ms): the retention
    /// clean-up. Returns how many went.
    pub async fn prune_rollups(&self, before: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM analytics_rollups WHERE bucket_start < $1";
        let mut conn = self.pool.conn().await?;
        let n = on_conn!(&mut conn, |c| sqlx::query(SQL)
            .bind(before)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
