//! SQL for subscriptions: the tenant statements (each filters on `org_id`)
//! and the gateway feed's system-wide grant queries.

use tollgate_core::config::PlanLimits;
use tollgate_core::ids::{AppId, KeyId, OrgId, SubscriptionId};

use super::sql::from_json;
use crate::db::{Conn, on_conn};
use crate::sql::{parse_id, timestamp};
use crate::{NewSubscription, StoreError, Subscription, SubscriptionGrant};

fn opt_id<T: std::str::FromStr>(raw: Option<&str>, what: &str) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    raw.map(|r| parse_id(r, what)).transpose()
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    pub id: String,
    pub org_id: String,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub plan: String,
    pub api: Option<String>,
    pub overrides: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SubscriptionRow {
    pub(crate) fn overrides(&self) -> Result<PlanLimits, StoreError> {
        from_json(
            &self.overrides,
            &format!("subscription {}", self.id),
            "overrides",
        )
    }

    pub(crate) fn into_record(self) -> Result<Subscription, StoreError> {
        let what = format!("subscription {}", self.id);
        Ok(Subscription {
            overrides: self.overrides()?,
            id: parse_id(&self.id, &what)?,
            org_id: parse_id(&self.org_id, &what)?,
            app_id: opt_id(self.app_id.as_deref(), &what)?,
            key_id: opt_id(self.key_id.as_deref(), &what)?,
            plan: self.plan,
            api: self.api,
            created_at: timestamp(self.created_at, &what)?,
            updated_at: timestamp(self.updated_at, &what)?,
        })
    }
}

const SUB_COLUMNS: &str =
    "id, org_id, app_id, key_id, plan, api, overrides, created_at, updated_at";

const DUPLICATE: &str = "a subscription for this organization, app, key and API already exists";

/// Inserts a subscription. The caller has checked the plan, the API and
/// that the app and key are the organization's; a foreign key violation
/// (a concurrent delete) still reads as `NotFound`.
pub(crate) async fn insert_subscription(
    conn: &mut Conn,
    org: &OrgId,
    id: &SubscriptionId,
    new: &NewSubscription,
    overrides: &str,
    now: i64,
) -> Result<SubscriptionRow, StoreError> {
    let sql = format!(
        "INSERT INTO subscriptions ({SUB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         RETURNING {SUB_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(new.app_id.as_ref().map(AppId::as_str))
        .bind(new.key_id.as_ref().map(KeyId::as_str))
        .bind(new.plan.as_str())
        .bind(new.api.as_deref())
        .bind(overrides)
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            match (&new.app_id, &new.key_id) {
                (_, Some(key)) => StoreError::not_found("api_key", key),
                (Some(app), None) => StoreError::not_found("app", app),
                (None, None) => StoreError::not_found("organization", org),
            }
        }
        _ => StoreError::unique(e, || DUPLICATE.to_owned()),
    })
}

pub(crate) async fn subscription_by_id(
    conn: &mut Conn,
    org: &OrgId,
    id: &SubscriptionId,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let sql = format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE org_id = $1 AND id = $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn subscriptions_page(
    conn: &mut Conn,
    org: &OrgId,
    after: &str,
    limit: i64,
) -> Result<Vec<SubscriptionRow>, StoreError> {
    let sql = format!(
        "SELECT {SUB_COLUMNS} FROM subscriptions WHERE org_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

/// Replaces a subscription's plan and overrides; `None` when it does not
/// exist in the organization.
pub(crate) async fn update_subscription(
    conn: &mut Conn,
    org: &OrgId,
    id: &SubscriptionId,
    plan: &str,
    overrides: &str,
    now: i64,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET plan = $3, overrides = $4, updated_at = $5 \
         WHERE org_id = $1 AND id = $2 RETURNING {SUB_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(plan)
        .bind(overrides)
        .bind(now)
        .fetch_optional(&mut *c)
        .await)
    .map_err(|e| match &e {
        // The plan was deleted after the caller checked it.
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::invalid("plan", format!("no plan is named `{plan}`"))
        }
        _ => StoreError::from(e),
    })
}

pub(crate) async fn delete_subscription(
    conn: &mut Conn,
    org: &OrgId,
    id: &SubscriptionId,
) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM subscriptions WHERE org_id = $1 AND id = $2";
    let n = on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

// ---------------------------------------------------------------------------
// Gateway feed

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SubscriptionGrantRow {
    #[sqlx(flatten)]
    pub sub: SubscriptionRow,
    pub timezone: Option<String>,
}

impl SubscriptionGrantRow {
    pub(crate) fn into_grant(self) -> Result<SubscriptionGrant, StoreError> {
        let record = self.sub.into_record()?;
        Ok(SubscriptionGrant {
            id: record.id,
            org_id: record.org_id,
            app_id: record.app_id,
            key_id: record.key_id,
            plan: record.plan,
            api: record.api,
            overrides: record.overrides,
            timezone: self.timezone,
        })
    }
}

const GRANT_SELECT: &str = "SELECT s.id, s.org_id, s.app_id, s.key_id, s.plan, s.api, \
     s.overrides, s.created_at, s.updated_at, o.timezone \
     FROM subscriptions s JOIN organizations o ON o.id = s.org_id";

/// Every subscription, with its organization's time zone.
pub(crate) async fn subscription_grants(
    conn: &mut Conn,
) -> Result<Vec<SubscriptionGrantRow>, StoreError> {
    let sql = format!("{GRANT_SELECT} ORDER BY s.id");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn subscription_grant(
    conn: &mut Conn,
    id: &SubscriptionId,
) -> Result<Option<SubscriptionGrantRow>, StoreError> {
    let sql = format!("{GRANT_SELECT} WHERE s.id = $1");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}
