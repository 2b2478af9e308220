//! Plans: named tiers of rate limits, a monthly quota, the APIs and scopes
//! they include, and prices. Plans are configuration (`plans` in the
//! declarative file, exported and applied with the rest), so every write
//! bumps the configuration revision and running gateways reload them at
//! once. Subscriptions, which are tenant data, name them; a plan cannot be
//! deleted while any subscription uses it.

use tollgate_core::config::PlanSpec;
use tollgate_core::problem::FieldError;

use crate::db::Conn;
use crate::sql::{self, now_millis};
use crate::{Store, StoreError};

impl Store {
    /// Every plan, ordered by name.
    pub async fn list_plans(&self) -> Result<Vec<PlanSpec>, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::PLANS
            .all(&mut conn)
            .await?
            .iter()
            .map(|r| sql::PLANS.spec(r))
            .collect()
    }

    /// The plan with this name.
    pub async fn get_plan(&self, name: &str) -> Result<PlanSpec, StoreError> {
        let mut conn = self.pool.conn().await?;
        let row = sql::PLANS
            .by_name(&mut conn, name)
            .await?
            .ok_or_else(|| StoreError::not_found("plan", name))?;
        sql::PLANS.spec(&row)
    }

    /// Creates a plan. `Invalid` when it fails validation or its `apis` name
    /// a service that does not exist; `Conflict` when the name is taken.
    pub async fn create_plan(&self, spec: PlanSpec) -> Result<PlanSpec, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let mut conn = self.write().await?;
        check_apis(&mut conn, &spec).await?;
        sql::PLANS
            .insert(&mut conn, &sql::PLANS.new_id(), &spec, now_millis())
            .await?;
        conn.commit().await?;
        Ok(spec)
    }

    /// Replaces the plan named `spec.name` (`NotFound` when there is none).
    /// Its subscriptions follow the new settings at once.
    pub async fn update_plan(&self, spec: PlanSpec) -> Result<PlanSpec, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let mut conn = self.write().await?;
        let row = sql::PLANS
            .by_name(&mut conn, &spec.name)
            .await?
            .ok_or_else(|| StoreError::not_found("plan", &spec.name))?;
        check_apis(&mut conn, &spec).await?;
        sql::PLANS
            .update(&mut conn, &row.id, &spec, now_millis())
            .await?;
        conn.commit().await?;
        Ok(spec)
    }

    /// Deletes a plan. `NotFound` when there is none; `Conflict` while any
    /// subscription uses it.
    pub async fn delete_plan(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.write().await?;
        let row = sql::PLANS
            .by_name(&mut conn, name)
            .await?
            .ok_or_else(|| StoreError::not_found("plan", name))?;
        sql::ensure_plan_unused(&mut conn, name).await?;
        sql::PLANS.delete(&mut conn, &row.id, name).await?;
        conn.commit().await
    }
}

/// `Invalid` unless every API the plan includes is an existing service.
async fn check_apis(conn: &mut Conn, spec: &PlanSpec) -> Result<(), StoreError> {
    let mut errors = Vec::new();
    for (i, api) in spec.apis.iter().enumerate() {
        if sql::service_by_name(conn, api).await?.is_none() {
            errors.push(FieldError {
                path: format!("apis[{i}]"),
                reason: format!("no service is named `{api}`"),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(errors))
    }
}

/// `Conflict` while a plan includes the service named `service` in its
/// `apis`: deleting or renaming the service would leave the plan naming
/// nothing (and the exported configuration invalid).
pub(crate) async fn ensure_no_plan_names(
    conn: &mut Conn,
    service: &str,
    action: &str,
) -> Result<(), StoreError> {
    for row in sql::PLANS.all(conn).await? {
        if sql::PLANS.spec(&row)?.apis.iter().any(|a| a == service) {
            return Err(StoreError::Conflict(format!(
                "the plan `{}` includes the service `{service}` in `apis`; \
                 remove it from the plan before you {action} the service",
                row.name
            )));
        }
    }
    Ok(())
}
