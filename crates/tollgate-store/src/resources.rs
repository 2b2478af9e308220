//! Single-resource operations: services, routes, policies, JWT issuers and
//! admin tokens (plans are in `plans`).
//!
//! Each write validates its input, runs in one transaction that bumps the
//! configuration revision first, and maps uniqueness violations to
//! [`StoreError::Conflict`].

use tollgate_core::config::{Config, JwtIssuerSpec, PolicySpec, RouteSpec, ServiceSpec};
use tollgate_core::ids::{AdminTokenId, PolicyId, RouteId, ServiceId};

use crate::db::Conn;
use crate::plans::ensure_no_plan_names;
use crate::sql::{self, now_millis};
use crate::{
    Listed, Page, PolicyRecord, PolicyScope, RouteRecord, ServiceRecord, Store, StoreError,
};

impl Store {
    /// Opens a write transaction with the revision already bumped.
    pub(crate) async fn write(&self) -> Result<Conn, StoreError> {
        let mut conn = self.pool.write().await?;
        sql::bump_revision(&mut conn).await?;
        Ok(conn)
    }

    // -- Services ----------------------------------------------------------

    /// One page of services, in id (creation) order.
    pub async fn list_services(&self, page: Page) -> Result<Listed<ServiceRecord>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.pool.conn().await?;
        let rows = sql::services_page(
            &mut conn,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(sql::ServiceRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    pub async fn get_service(&self, id: &ServiceId) -> Result<ServiceRecord, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::service_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("service", id))?
            .into_record()
    }

    /// The service with this name; `NotFound` carries the name as its id.
    pub async fn get_service_by_name(&self, name: &str) -> Result<ServiceRecord, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::service_by_name(&mut conn, name)
            .await?
            .ok_or_else(|| StoreError::not_found("service", name))?
            .into_record()
    }

    pub async fn create_service(&self, spec: ServiceSpec) -> Result<ServiceRecord, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let id = ServiceId::new();
        let now = now_millis();
        let mut conn = self.write().await?;
        sql::insert_service(&mut conn, &id, &spec, now).await?;
        conn.commit().await?;
        let ts = record_time(now);
        Ok(ServiceRecord {
            id,
            spec,
            created_at: ts,
            updated_at: ts,
        })
    }

    /// Replaces a service's settings. Its name may change, unless a plan
    /// includes it in `apis` (`Conflict`).
    pub async fn update_service(
        &self,
        id: &ServiceId,
        spec: ServiceSpec,
    ) -> Result<ServiceRecord, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let mut conn = self.write().await?;
        if let Some(current) = sql::service_by_id(&mut conn, id).await?
            && current.name != spec.name
        {
            ensure_no_plan_names(&mut conn, &current.name, "rename").await?;
        }
        let row = sql::update_service(&mut conn, id, &spec, now_millis())
            .await?
            .ok_or_else(|| StoreError::not_found("service", id))?;
        conn.commit().await?;
        row.into_record()
    }

    /// Deletes a service together with its routes and all their policies.
    /// `Conflict` while a plan includes it in `apis`.
    pub async fn delete_service(&self, id: &ServiceId) -> Result<(), StoreError> {
        let mut conn = self.write().await?;
        if let Some(current) = sql::service_by_id(&mut conn, id).await? {
            ensure_no_plan_names(&mut conn, &current.name, "delete").await?;
        }
        if !sql::delete_service(&mut conn, id).await? {
            return Err(StoreError::not_found("service", id));
        }
        conn.commit().await
    }

    // -- Routes ------------------------------------------------------------

    /// One page of routes in id (creation) order, optionally of one service.
    pub async fn list_routes(
        &self,
        page: Page,
        service: Option<&ServiceId>,
    ) -> Result<Listed<RouteRecord>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.pool.conn().await?;
        let rows = sql::routes_page(
            &mut conn,
            page.after.as_deref().unwrap_or(""),
            service,
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(sql::RouteRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    pub async fn get_route(&self, id: &RouteId) -> Result<RouteRecord, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::route_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("route", id))?
            .into_record()
    }

    /// Creates a route on an existing service (`NotFound` otherwise).
    pub async fn create_route(
        &self,
        service_id: &ServiceId,
        spec: RouteSpec,
    ) -> Result<RouteRecord, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let id = RouteId::new();
        let now = now_millis();
        let mut conn = self.write().await?;
        if sql::service_by_id(&mut conn, service_id).await?.is_none() {
            return Err(StoreError::not_found("service", service_id));
        }
        sql::insert_route(&mut conn, &id, service_id, &spec, now).await?;
        conn.commit().await?;
        let ts = record_time(now);
        Ok(RouteRecord {
            id,
            service_id: service_id.clone(),
            spec,
            created_at: ts,
            updated_at: ts,
        })
    }

    /// Replaces a route's settings (its name may change; its service does not).
    pub async fn update_route(
        &self,
        id: &RouteId,
        spec: RouteSpec,
    ) -> Result<RouteRecord, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let mut conn = self.write().await?;
        let row = sql::update_route(&mut conn, id, None, &spec, now_millis())
            .await?
            .ok_or_else(|| StoreError::not_found("route", id))?;
        conn.commit().await?;
        row.into_record()
    }

    /// Deletes a route and its policies.
    pub async fn delete_route(&self, id: &RouteId) -> Result<(), StoreError> {
        let mut conn = self.write().await?;
        if !sql::delete_route(&mut conn, id).await? {
            return Err(StoreError::not_found("route", id));
        }
        conn.commit().await
    }

    // -- Policies ----------------------------------------------------------

    /// One page of policies in id (creation) order, optionally of one scope.
    pub async fn list_policies(
        &self,
        page: Page,
        scope: Option<&PolicyScope>,
    ) -> Result<Listed<PolicyRecord>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.pool.conn().await?;
        let rows = sql::policies_page(
            &mut conn,
            page.after.as_deref().unwrap_or(""),
            scope,
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(sql::PolicyRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    pub async fn get_policy(&self, id: &PolicyId) -> Result<PolicyRecord, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::policy_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("policy", id))?
            .into_record()
    }

    /// Attaches a policy. At most one policy of each name per scope
    /// (`Conflict` otherwise); the scope's service or route must exist.
    pub async fn create_policy(
        &self,
        scope: PolicyScope,
        spec: PolicySpec,
    ) -> Result<PolicyRecord, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let id = PolicyId::new();
        let now = now_millis();
        let mut conn = self.write().await?;
        let label = match &scope {
            PolicyScope::Global => "globally".to_owned(),
            PolicyScope::Service(s) => {
                let row = sql::service_by_id(&mut conn, s)
                    .await?
                    .ok_or_else(|| StoreError::not_found("service", s))?;
                format!("to service `{}`", row.name)
            }
            PolicyScope::Route(r) => {
                let row = sql::route_by_id(&mut conn, r)
                    .await?
                    .ok_or_else(|| StoreError::not_found("route", r))?;
                format!("to route `{}`", row.name)
            }
        };
        sql::insert_policy(&mut conn, &id, &scope, &spec, &label, now).await?;
        conn.commit().await?;
        let ts = record_time(now);
        Ok(PolicyRecord {
            id,
            scope,
            spec,
            created_at: ts,
            updated_at: ts,
        })
    }

    /// Replaces a policy's configuration. The policy type (`spec.name()`)
    /// cannot change: delete and create instead (`Invalid` otherwise).
    pub async fn update_policy(
        &self,
        id: &PolicyId,
        spec: PolicySpec,
    ) -> Result<PolicyRecord, StoreError> {
        spec.validate().map_err(StoreError::Invalid)?;
        let mut conn = self.write().await?;
        let current = sql::policy_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("policy", id))?;
        if current.name != spec.name() {
            return Err(StoreError::invalid(
                "name",
                format!(
                    "a `{}` policy cannot become `{}`; delete it and create a new one",
                    current.name,
                    spec.name()
                ),
            ));
        }
        let row = sql::update_policy(&mut conn, id, &spec, now_millis())
            .await?
            .ok_or_else(|| StoreError::not_found("policy", id))?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn delete_policy(&self, id: &PolicyId) -> Result<(), StoreError> {
        let mut conn = self.write().await?;
        if !sql::delete_policy(&mut conn, id).await? {
            return Err(StoreError::not_found("policy", id));
        }
        conn.commit().await
    }

    // -- JWT issuers -------------------------------------------------------

    /// Every trusted JWT issuer, ordered by name.
    pub async fn list_jwt_issuers(&self) -> Result<Vec<JwtIssuerSpec>, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::JWT_ISSUERS
            .all(&mut conn)
            .await?
            .iter()
            .map(|r| sql::JWT_ISSUERS.spec(r))
            .collect()
    }

    /// Creates or replaces the issuer named `spec.name`; true when it was
    /// created. Bumps the revision either way.
    pub async fn put_jwt_issuer(&self, spec: JwtIssuerSpec) -> Result<bool, StoreError> {
        validate_issuer(&spec)?;
        let now = now_millis();
        let mut conn = self.write().await?;
        let created = match sql::JWT_ISSUERS.by_name(&mut conn, &spec.name).await? {
            Some(row) => {
                sql::JWT_ISSUERS
                    .update(&mut conn, &row.id, &spec, now)
                    .await?;
                false
            }
            None => {
                sql::JWT_ISSUERS
                    .insert(&mut conn, &sql::JWT_ISSUERS.new_id(), &spec, now)
                    .await?;
                true
            }
        };
        conn.commit().await?;
        Ok(created)
    }

    /// Deletes the issuer with this name. `NotFound` when there is none;
    /// `Conflict` while an `auth` policy still names it in `issuers`.
    pub async fn delete_jwt_issuer(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.write().await?;
        let row = sql::JWT_ISSUERS
            .by_name(&mut conn, name)
            .await?
            .ok_or_else(|| StoreError::not_found("jwt_issuer", name))?;
        for policy in sql::all_policies(&mut conn).await? {
            let record = policy.into_record()?;
            if let PolicySpec::Auth(auth) = &record.spec
                && auth.issuers.iter().any(|i| i == name)
            {
                return Err(StoreError::Conflict(format!(
                    "the JWT issuer `{name}` is named by the `auth` policy attached to {}; \
                     remove it from that policy first",
                    record.scope
                )));
            }
        }
        sql::JWT_ISSUERS.delete(&mut conn, &row.id, name).await?;
        conn.commit().await
    }

    // -- Admin tokens ------------------------------------------------------
    //
    // Admin tokens are not part of the declarative configuration, so these
    // writes leave the configuration revision alone.

    /// How many admin tokens exist.
    pub async fn admin_token_count(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::admin_token_count(&mut conn).await
    }

    /// Stores the hash (hex) of an admin token. Hashing is the caller's job.
    pub async fn add_admin_token(
        &self,
        token_hash: &str,
        label: &str,
    ) -> Result<AdminTokenId, StoreError> {
        let id = AdminTokenId::new();
        let mut conn = self.pool.conn().await?;
        sql::insert_admin_token(&mut conn, &id, token_hash, label, now_millis()).await?;
        Ok(id)
    }

    /// Whether a token with this hash exists.
    pub async fn admin_token_exists(&self, token_hash: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::admin_token_exists(&mut conn, token_hash).await
    }
}

/// Validates one issuer as the configuration file would, with paths relative
/// to the issuer (`issuer`, `audiences`...).
fn validate_issuer(spec: &JwtIssuerSpec) -> Result<(), StoreError> {
    let config = Config {
        format_version: 1,
        jwt_issuers: vec![spec.clone()],
        ..Config::default()
    };
    config.validate().map_err(|errors| {
        StoreError::Invalid(
            errors
                .into_iter()
                .map(|mut e| {
                    let rest = e.path.strip_prefix("jwt_issuers[0]").unwrap_or(&e.path);
                    e.path = rest.strip_prefix('.').unwrap_or(rest).to_owned();
                    e
                })
                .collect(),
        )
    })
}

/// A timestamp as a record reports it: stored with millisecond precision.
fn record_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
