//! Usage counters: the quota counts gateways persist, so a count survives a
//! restart and nodes without a shared counter store (Redis) agree on it
//! within a flush interval. Gateways add deltas in batches; the counters
//! are not configuration and not identity, so writes here bump neither the
//! revision nor the change feed.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, on_conn};
use crate::sql::now_millis;
use crate::{Store, StoreError};

/// Requests to add to one counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDelta {
    /// Who is counted (a subscription, a key, an address...).
    pub subject: String,
    /// Which quota is counted (its name).
    pub counter: String,
    /// The start of the counted period, unix milliseconds.
    pub period_start: i64,
    /// How many to add (may be negative to hand back an allowance).
    pub delta: i64,
}

/// One stored counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageRow {
    pub subject: String,
    pub counter: String,
    /// Unix milliseconds.
    pub period_start: i64,
    pub count: i64,
    /// When a delta was last added, unix milliseconds.
    pub updated_at: i64,
}

impl Store {
    /// Adds every delta to its counter (creating it at the delta), in one
    /// transaction: either every delta counts or none does. Increments are
    /// atomic, so concurrent batches from several nodes never lose a count.
    /// Deltas of the same counter are summed first, and counters are
    /// written in key order, so concurrent batches cannot deadlock.
    pub async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        let mut merged: Vec<(&str, &str, i64, i64)> = deltas
            .iter()
            .map(|d| {
                (
                    d.subject.as_str(),
                    d.counter.as_str(),
                    d.period_start,
                    d.delta,
                )
            })
            .collect();
        merged.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        merged.dedup_by(|later, kept| {
            let same = (later.0, later.1, later.2) == (kept.0, kept.1, kept.2);
            if same {
                kept.3 = kept.3.saturating_add(later.3);
            }
            same
        });
        merged.retain(|d| d.3 != 0);
        if merged.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let mut conn = self.pool.write().await?;
        for (subject, counter, period_start, delta) in merged {
            add_one(&mut conn, subject, counter, period_start, delta, now).await?;
        }
        conn.commit().await
    }

    /// Every counter of a period that started at or after
    /// `min_period_start` (unix ms), ordered by subject, counter and period:
    /// what a gateway loads at start.
    pub async fn usage_counters_since(
        &self,
        min_period_start: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        const SQL: &str = "SELECT subject, counter, period_start, count, updated_at \
             FROM usage_counters WHERE period_start >= $1 \
             ORDER BY subject, counter, period_start";
        let mut conn = self.pool.conn().await?;
        Ok(on_conn!(&mut conn, |c| sqlx::query_as(SQL)
            .bind(min_period_start)
            .fetch_all(&mut *c)
            .await)?)
    }

    /// One counter's count; 0 when it was never written.
    pub async fn usage_counter(
        &self,
        subject: &str,
        counter: &str,
        period_start: i64,
    ) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT count FROM usage_counters \
             WHERE subject = $1 AND counter = $2 AND period_start = $3";
        let mut conn = self.pool.conn().await?;
        let count: Option<i64> = on_conn!(&mut conn, |c| sqlx::query_scalar(SQL)
            .bind(subject)
            .bind(counter)
            .bind(period_start)
            .fetch_optional(&mut *c)
            .await)?;
        Ok(count.unwrap_or(0))
    }
}

async fn add_one(
    conn: &mut Conn,
    subject: &str,
    counter: &str,
    period_start: i64,
    delta: i64,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO usage_counters \
         (subject, counter, period_start, count, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (subject, counter, period_start) DO UPDATE \
         SET count = usage_counters.count + excluded.count, updated_at = excluded.updated_at";
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(subject)
        .bind(counter)
        .bind(period_start)
        .bind(delta)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop))?;
    Ok(())
}
