//! Tenant-level identity, part three: subscriptions, and their grants for
//! the gateway feed. Every write records a change in its own transaction.

use tollgate_core::config::{PlanLimits, PlanSpec};
use tollgate_core::ids::{AppId, KeyId, SubscriptionId};

use super::check::Errors;
use super::credential_sql::{self as csql, ChangeLog};
use super::subscription_sql::{self as ssql, SubscriptionRow};
use super::{Tenant, sql};
use crate::db::Conn;
use crate::sql::{self as config_sql, now_millis, to_json};
use crate::{
    ChangeEntity, Listed, NewSubscription, Page, Store, StoreError, Subscription,
    SubscriptionGrant, SubscriptionUpdate,
};

impl Tenant<'_> {
    async fn subscription_row(
        &self,
        conn: &mut Conn,
        id: &SubscriptionId,
    ) -> Result<SubscriptionRow, StoreError> {
        ssql::subscription_by_id(conn, &self.org, id)
            .await?
            .ok_or_else(|| StoreError::not_found("subscription", id))
    }

    /// `NotFound` unless the app is this organization's and the key (when
    /// given) is this organization's; `Invalid` when the key is not the
    /// app's or comes without an app.
    async fn check_owner(
        &self,
        conn: &mut Conn,
        app: Option<&AppId>,
        key: Option<&KeyId>,
    ) -> Result<(), StoreError> {
        let Some(app) = app else {
            if key.is_some() {
                return Err(StoreError::invalid(
                    "key_id",
                    "a key-level subscription needs the key's `app_id` too",
                ));
            }
            return Ok(());
        };
        if sql::app_by_id(conn, &self.org, app).await?.is_none() {
            return Err(StoreError::not_found("app", app));
        }
        if let Some(key) = key {
            let row = csql::key_by_id(conn, &self.org, key)
                .await?
                .ok_or_else(|| StoreError::not_found("api_key", key))?;
            if row.app_id != app.as_str() {
                return Err(StoreError::invalid(
                    "key_id",
                    format!("API key `{key}` is not a key of app `{app}`"),
                ));
            }
        }
        Ok(())
    }

    /// Subscribes the organization, one of its apps or one of that app's
    /// keys to a plan, for one API or every API. `Invalid` when the plan or
    /// the API does not exist, the plan does not include the API, or the
    /// overrides are not valid limits; `NotFound` when the app or key is not
    /// this organization's; `Conflict` when the same organization, app, key
    /// and API already have a subscription.
    pub async fn create_subscription(
        &self,
        new: NewSubscription,
    ) -> Result<Subscription, StoreError> {
        let now = now_millis();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        if sql::org_by_id(&mut conn, &self.org).await?.is_none() {
            return Err(StoreError::not_found("organization", &self.org));
        }
        self.check_owner(&mut conn, new.app_id.as_ref(), new.key_id.as_ref())
            .await?;
        check_terms(&mut conn, &new.plan, new.api.as_deref(), &new.overrides).await?;
        let id = SubscriptionId::new();
        let overrides = to_json(&new.overrides)?;
        let row =
            ssql::insert_subscription(&mut conn, &self.org, &id, &new, &overrides, now).await?;
        log.record(&mut conn, ChangeEntity::Subscription, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn get_subscription(&self, id: &SubscriptionId) -> Result<Subscription, StoreError> {
        let mut conn = self.store.pool.conn().await?;
        self.subscription_row(&mut conn, id).await?.into_record()
    }

    /// One page of the organization's subscriptions (its apps' and keys'
    /// included), in id (creation) order.
    pub async fn list_subscriptions(&self, page: Page) -> Result<Listed<Subscription>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.store.pool.conn().await?;
        let rows = ssql::subscriptions_page(
            &mut conn,
            &self.org,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(SubscriptionRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    /// Moves a subscription to another plan and/or replaces its overrides,
    /// with the checks of [`Tenant::create_subscription`]. Gateways apply
    /// the change at once (it is in the change feed).
    pub async fn update_subscription(
        &self,
        id: &SubscriptionId,
        update: SubscriptionUpdate,
    ) -> Result<Subscription, StoreError> {
        let now = now_millis();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let current = self.subscription_row(&mut conn, id).await?;
        let overrides = match update.overrides {
            Some(o) => o,
            None => current.overrides()?,
        };
        let plan = update.plan.unwrap_or(current.plan);
        check_terms(&mut conn, &plan, current.api.as_deref(), &overrides).await?;
        let row =
            ssql::update_subscription(&mut conn, &self.org, id, &plan, &to_json(&overrides)?, now)
                .await?
                .ok_or_else(|| StoreError::not_found("subscription", id))?;
        log.record(&mut conn, ChangeEntity::Subscription, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    /// Ends a subscription.
    pub async fn delete_subscription(&self, id: &SubscriptionId) -> Result<(), StoreError> {
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now_millis()).await?;
        if !ssql::delete_subscription(&mut conn, &self.org, id).await? {
            return Err(StoreError::not_found("subscription", id));
        }
        log.record(&mut conn, ChangeEntity::Subscription, id.as_str())
            .await?;
        conn.commit().await
    }
}

impl Store {
    /// A subscription as the gateway needs it, with its organization's time
    /// zone; `None` when it no longer exists.
    pub async fn subscription_grant(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionGrant>, StoreError> {
        let mut conn = self.pool.conn().await?;
        ssql::subscription_grant(&mut conn, id)
            .await?
            .map(ssql::SubscriptionGrantRow::into_grant)
            .transpose()
    }
}

/// Checks a subscription's plan, API and overrides together, reporting
/// every problem at once.
async fn check_terms(
    conn: &mut Conn,
    plan: &str,
    api: Option<&str>,
    overrides: &PlanLimits,
) -> Result<(), StoreError> {
    let mut errs = Errors::default();
    let spec = match config_sql::PLANS.by_name(conn, plan).await? {
        Some(row) => Some(config_sql::PLANS.spec(&row)?),
        None => {
            errs.push("plan", format!("no plan is named `{plan}`"));
            None
        }
    };
    if let Some(api) = api {
        if config_sql::service_by_name(conn, api).await?.is_none() {
            errs.push("api", format!("no service is named `{api}`"));
        } else if let Some(spec) = &spec
            && !spec.apis.is_empty()
            && !spec.apis.iter().any(|a| a == api)
        {
            errs.push(
                "api",
                format!(
                    "plan `{plan}` does not include `{api}`; it includes {}",
                    spec.apis
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    let base = spec.map(|s| s.limits).unwrap_or_default();
    check_overrides(&base, overrides, &mut errs);
    errs.finish()
}

/// Checks overrides as plan limits: the limits they make together with the
/// plan's must be valid (no zero, no `burst` without `per_second`). Errors
/// are reported under `overrides`.
fn check_overrides(plan: &PlanLimits, overrides: &PlanLimits, errs: &mut Errors) {
    let probe = PlanSpec {
        name: "overrides".to_owned(),
        title: None,
        description: None,
        limits: plan.overridden(overrides),
        apis: Vec::new(),
        scopes: Vec::new(),
        pricing: None,
    };
    if let Err(errors) = probe.validate() {
        for e in errors {
            let rest = e.path.strip_prefix("limits").unwrap_or(&e.path);
            errs.push(format!("overrides{rest}"), e.reason);
        }
    }
}
