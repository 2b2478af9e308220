//! Every SQL statement the store runs, each written once for both backends,
//! and the conversion of rows into records.
//!
//! Placeholders are `$1, $2, ...`, which sqlx accepts on SQLite and
//! PostgreSQL alike; a placeholder may appear twice.

use chrono::{DateTime, Utc};
use tollgate_core::config::{JwtIssuerSpec, PlanSpec, PolicySpec, RouteSpec, ServiceSpec};
use tollgate_core::ids::{AdminTokenId, PolicyId, RouteId, ServiceId};

use crate::db::{Conn, on_conn};
use crate::{PolicyRecord, PolicyScope, RouteRecord, ServiceRecord, StoreError};

/// The current time as stored: unix milliseconds.
pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn timestamp(ms: i64, what: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: timestamp {ms} is out of range")))
}

pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::encode)
}

// ---------------------------------------------------------------------------
// Revision

/// Bumps the configuration revision and returns the new value. Every write
/// transaction calls this first: on PostgreSQL the row lock serialises
/// writers, so a writer's reads see every earlier write.
pub(crate) async fn bump_revision(conn: &mut Conn) -> Result<i64, StoreError> {
    const SQL: &str =
        "UPDATE config_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision";
    Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .fetch_one(&mut *c)
        .await)?)
}

pub(crate) async fn revision(conn: &mut Conn) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT revision FROM config_revision WHERE id = 1";
    Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .fetch_one(&mut *c)
        .await)?)
}

pub(crate) async fn ping(conn: &mut Conn) -> Result<(), StoreError> {
    let _: i32 = on_conn!(conn, |c| sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *c)
        .await)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Services

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ServiceRow {
    pub id: String,
    pub name: String,
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ServiceRow {
    pub(crate) fn into_record(self) -> Result<ServiceRecord, StoreError> {
        let what = format!("service {}", self.id);
        Ok(ServiceRecord {
            id: parse_id(&self.id, &what)?,
            spec: serde_json::from_str(&self.spec)
                .map_err(|e| StoreError::Corrupt(format!("{what}: spec: {e}")))?,
            created_at: timestamp(self.created_at, &what)?,
            updated_at: timestamp(self.updated_at, &what)?,
        })
    }
}

pub(crate) async fn service_by_id(
    conn: &mut Conn,
    id: &ServiceId,
) -> Result<Option<ServiceRow>, StoreError> {
    const SQL: &str = "SELECT id, name, spec, created_at, updated_at FROM services WHERE id = $1";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn service_by_name(
    conn: &mut Conn,
    name: &str,
) -> Result<Option<ServiceRow>, StoreError> {
    const SQL: &str = "SELECT id, name, spec, created_at, updated_at FROM services WHERE name = $1";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(name)
        .fetch_optional(&mut *c)
        .await)?)
}

/// Up to `limit` services with ids after `after`, in id order.
pub(crate) async fn services_page(
    conn: &mut Conn,
    after: &str,
    limit: i64,
) -> Result<Vec<ServiceRow>, StoreError> {
    const SQL: &str = "SELECT id, name, spec, created_at, updated_at FROM services \
         WHERE id > $1 ORDER BY id LIMIT $2";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn all_services(conn: &mut Conn) -> Result<Vec<ServiceRow>, StoreError> {
    const SQL: &str = "SELECT id, name, spec, created_at, updated_at FROM services";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .fetch_all(&mut *c)
        .await)?)
}

fn service_conflict(name: &str) -> String {
    format!("a service named `{name}` already exists")
}

pub(crate) async fn insert_service(
    conn: &mut Conn,
    id: &ServiceId,
    spec: &ServiceSpec,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO services (id, name, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)";
    let json = to_json(spec)?;
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .bind(spec.name.as_str())
        .bind(json.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop))
    .map_err(|e| StoreError::unique(e, || service_conflict(&spec.name)))?;
    Ok(())
}

/// Replaces a service's settings; `None` when it does not exist.
pub(crate) async fn update_service(
    conn: &mut Conn,
    id: &ServiceId,
    spec: &ServiceSpec,
    now: i64,
) -> Result<Option<ServiceRow>, StoreError> {
    const SQL: &str = "UPDATE services SET name = $2, spec = $3, updated_at = $4 WHERE id = $1 \
         RETURNING id, name, spec, created_at, updated_at";
    let json = to_json(spec)?;
    on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(id.as_str())
        .bind(spec.name.as_str())
        .bind(json.as_str())
        .bind(now)
        .fetch_optional(&mut *c)
        .await)
    .map_err(|e| StoreError::unique(e, || service_conflict(&spec.name)))
}

/// Deletes a service with its routes and policies; false when it did not exist.
pub(crate) async fn delete_service(conn: &mut Conn, id: &ServiceId) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM services WHERE id = $1";
    let done = on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

// ---------------------------------------------------------------------------
// Routes

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RouteRow {
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RouteRow {
    pub(crate) fn into_record(self) -> Result<RouteRecord, StoreError> {
        let what = format!("route {}", self.id);
        Ok(RouteRecord {
            id: parse_id(&self.id, &what)?,
            service_id: parse_id(&self.service_id, &what)?,
            spec: serde_json::from_str(&self.spec)
                .map_err(|e| StoreError::Corrupt(format!("{what}: spec: {e}")))?,
            created_at: timestamp(self.created_at, &what)?,
            updated_at: timestamp(self.updated_at, &what)?,
        })
    }
}

pub(crate) async fn route_by_id(
    conn: &mut Conn,
    id: &RouteId,
) -> Result<Option<RouteRow>, StoreError> {
    const SQL: &str = "SELECT id, name, service_id, spec, created_at, updated_at FROM routes \
         WHERE id = $1";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

/// Up to `limit` routes with ids after `after`, in id order, optionally of one service.
pub(crate) async fn routes_page(
    conn: &mut Conn,
    after: &str,
    service: Option<&ServiceId>,
    limit: i64,
) -> Result<Vec<RouteRow>, StoreError> {
    const SQL: &str = "SELECT id, name, service_id, spec, created_at, updated_at FROM routes \
         WHERE id > $1 AND ($2 IS NULL OR service_id = $2) ORDER BY id LIMIT $3";
    let service = service.map(ServiceId::as_str);
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(after)
        .bind(service)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn all_routes(conn: &mut Conn) -> Result<Vec<RouteRow>, StoreError> {
    const SQL: &str = "SELECT id, name, service_id, spec, created_at, updated_at FROM routes";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .fetch_all(&mut *c)
        .await)?)
}

fn route_error(err: sqlx::Error, name: &str, service_id: Option<&ServiceId>) -> StoreError {
    match (&err, service_id) {
        (sqlx::Error::Database(db), Some(service_id)) if db.is_foreign_key_violation() => {
            return StoreError::not_found("service", service_id);
        }
        _ => {}
    }
    StoreError::unique(err, || format!("a route named `{name}` already exists"))
}

pub(crate) async fn insert_route(
    conn: &mut Conn,
    id: &RouteId,
    service_id: &ServiceId,
    spec: &RouteSpec,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO routes (id, name, service_id, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)";
    let json = to_json(spec)?;
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .bind(spec.name.as_str())
        .bind(service_id.as_str())
        .bind(json.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop))
    .map_err(|e| route_error(e, &spec.name, Some(service_id)))?;
    Ok(())
}

/// Replaces a route's settings and, when `service_id` is given, moves it to
/// that service. `None` when the route does not exist.
pub(crate) async fn update_route(
    conn: &mut Conn,
    id: &RouteId,
    service_id: Option<&ServiceId>,
    spec: &RouteSpec,
    now: i64,
) -> Result<Option<RouteRow>, StoreError> {
    const SQL: &str = "UPDATE routes SET name = $2, service_id = COALESCE($3, service_id), \
         spec = $4, updated_at = $5 WHERE id = $1 \
         RETURNING id, name, service_id, spec, created_at, updated_at";
    let json = to_json(spec)?;
    on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(id.as_str())
        .bind(spec.name.as_str())
        .bind(service_id.map(ServiceId::as_str))
        .bind(json.as_str())
        .bind(now)
        .fetch_optional(&mut *c)
        .await)
    .map_err(|e| route_error(e, &spec.name, service_id))
}

/// Deletes a route with its policies; false when it did not exist.
pub(crate) async fn delete_route(conn: &mut Conn, id: &RouteId) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM routes WHERE id = $1";
    let done = on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

// ---------------------------------------------------------------------------
// Policies

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PolicyRow {
    pub id: String,
    pub name: String,
    pub service_id: Option<String>,
    pub route_id: Option<String>,
    pub config: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PolicyRow {
    pub(crate) fn scope(&self) -> Result<PolicyScope, StoreError> {
        let what = || format!("policy {}", self.id);
        match (&self.service_id, &self.route_id) {
            (None, None) => Ok(PolicyScope::Global),
            (Some(s), None) => Ok(PolicyScope::Service(parse_id(s, &what())?)),
            (None, Some(r)) => Ok(PolicyScope::Route(parse_id(r, &what())?)),
            (Some(_), Some(_)) => Err(StoreError::Corrupt(format!(
                "{}: has both a service and a route",
                what()
            ))),
        }
    }

    pub(crate) fn into_record(self) -> Result<PolicyRecord, StoreError> {
        let what = format!("policy {}", self.id);
        Ok(PolicyRecord {
            scope: self.scope()?,
            id: parse_id(&self.id, &what)?,
            spec: serde_json::from_str(&self.config)
                .map_err(|e| StoreError::Corrupt(format!("{what}: config: {e}")))?,
            created_at: timestamp(self.created_at, &what)?,
            updated_at: timestamp(self.updated_at, &what)?,
        })
    }
}

pub(crate) async fn policy_by_id(
    conn: &mut Conn,
    id: &PolicyId,
) -> Result<Option<PolicyRow>, StoreError> {
    const SQL: &str = "SELECT id, name, service_id, route_id, config, created_at, updated_at \
         FROM policies WHERE id = $1";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

/// Up to `limit` policies with ids after `after`, in id order, optionally of one scope.
pub(crate) async fn policies_page(
    conn: &mut Conn,
    after: &str,
    scope: Option<&PolicyScope>,
    limit: i64,
) -> Result<Vec<PolicyRow>, StoreError> {
    const SQL: &str = "SELECT id, name, service_id, route_id, config, created_at, updated_at \
         FROM policies WHERE id > $1 AND ($2 IS NULL OR scope_key = $2) ORDER BY id LIMIT $3";
    let scope = scope.map(PolicyScope::key);
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(after)
        .bind(scope)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn all_policies(conn: &mut Conn) -> Result<Vec<PolicyRow>, StoreError> {
    const SQL: &str = "SELECT id, name, service_id, route_id, config, created_at, updated_at \
         FROM policies";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .fetch_all(&mut *c)
        .await)?)
}

/// Attaches a policy. `scope_label` completes the conflict message
/// ("a `cors` policy is already attached {scope_label}").
pub(crate) async fn insert_policy(
    conn: &mut Conn,
    id: &PolicyId,
    scope: &PolicyScope,
    spec: &PolicySpec,
    scope_label: &str,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO policies \
         (id, name, scope_key, service_id, route_id, config, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";
    let json = to_json(spec)?;
    let (service_id, route_id) = match scope {
        PolicyScope::Global => (None, None),
        PolicyScope::Service(s) => (Some(s.as_str()), None),
        PolicyScope::Route(r) => (None, Some(r.as_str())),
    };
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .bind(spec.name())
        .bind(scope.key())
        .bind(service_id)
        .bind(route_id)
        .bind(json.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop))
    .map_err(|e| match (&e, scope) {
        (sqlx::Error::Database(db), PolicyScope::Service(s)) if db.is_foreign_key_violation() => {
            StoreError::not_found("service", s)
        }
        (sqlx::Error::Database(db), PolicyScope::Route(r)) if db.is_foreign_key_violation() => {
            StoreError::not_found("route", r)
        }
        _ => StoreError::unique(e, || {
            format!(
                "a `{}` policy is already attached {scope_label}",
                spec.name()
            )
        }),
    })?;
    Ok(())
}

/// Replaces a policy's configuration (its name must not change; the caller
/// checks). `None` when it does not exist.
pub(crate) async fn update_policy(
    conn: &mut Conn,
    id: &PolicyId,
    spec: &PolicySpec,
    now: i64,
) -> Result<Option<PolicyRow>, StoreError> {
    const SQL: &str = "UPDATE policies SET config = $2, updated_at = $3 WHERE id = $1 \
         RETURNING id, name, service_id, route_id, config, created_at, updated_at";
    let json = to_json(spec)?;
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(id.as_str())
        .bind(json.as_str())
        .bind(now)
        .fetch_optional(&mut *c)
        .await)?)
}

/// Detaches a policy; false when it did not exist.
pub(crate) async fn delete_policy(conn: &mut Conn, id: &PolicyId) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM policies WHERE id = $1";
    let done = on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

// ---------------------------------------------------------------------------
// Admin tokens

pub(crate) async fn admin_token_count(conn: &mut Conn) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM admin_tokens";
    Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .fetch_one(&mut *c)
        .await)?)
}

pub(crate) async fn insert_admin_token(
    conn: &mut Conn,
    id: &AdminTokenId,
    token_hash: &str,
    label: &str,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str =
        "INSERT INTO admin_tokens (id, token_hash, label, created_at) VALUES ($1, $2, $3, $4)";
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .bind(token_hash)
        .bind(label)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop))
    .map_err(|e| StoreError::unique(e, || "this admin token is already registered".to_owned()))?;
    Ok(())
}

pub(crate) async fn admin_token_exists(
    conn: &mut Conn,
    token_hash: &str,
) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM admin_tokens WHERE token_hash = $1";
    let n: i64 = on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .bind(token_hash)
        .fetch_one(&mut *c)
        .await)?;
    Ok(n > 0)
}

// ---------------------------------------------------------------------------
// Configuration objects addressed by name (JWT issuers, plans): one row per
// object, its settings as a JSON spec, and an internal id.

/// A row of a [`Named`] table.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct NamedRow {
    pub id: String,
    pub name: String,
    pub spec: String,
}

/// A spec kept in a [`Named`] table.
pub(crate) trait NamedSpec: serde::Serialize + serde::de::DeserializeOwned {
    fn name(&self) -> &str;
}

impl NamedSpec for JwtIssuerSpec {
    fn name(&self) -> &str {
        &self.name
    }
}

impl NamedSpec for PlanSpec {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A table of named configuration objects of type `T`.
pub(crate) struct Named<T> {
    table: &'static str,
    /// What one object is called in messages (`JWT issuer`, `plan`).
    what: &'static str,
    /// Prefix of the internal ids (`jwi_`, `pln_`).
    prefix: &'static str,
    /// The conflict message when a foreign key keeps the object from being deleted.
    in_use: fn(&str) -> String,
    spec: std::marker::PhantomData<fn() -> T>,
}

pub(crate) const JWT_ISSUERS: Named<JwtIssuerSpec> = Named {
    table: "jwt_issuers",
    what: "JWT issuer",
    prefix: "jwi_",
    in_use: |name| format!("the JWT issuer `{name}` is in use"),
    spec: std::marker::PhantomData,
};

pub(crate) const PLANS: Named<PlanSpec> = Named {
    table: "plans",
    what: "plan",
    prefix: "pln_",
    in_use: |name| {
        format!(
            "the plan `{name}` has subscriptions; move them to another plan or delete them first"
        )
    },
    spec: std::marker::PhantomData,
};

impl<T: NamedSpec> Named<T> {
    /// The spec stored in `row`.
    pub(crate) fn spec(&self, row: &NamedRow) -> Result<T, StoreError> {
        serde_json::from_str(&row.spec)
            .map_err(|e| StoreError::Corrupt(format!("{} {}: spec: {e}", self.what, row.id)))
    }

    /// Every object, ordered by name.
    pub(crate) async fn all(&self, conn: &mut Conn) -> Result<Vec<NamedRow>, StoreError> {
        let sql = format!("SELECT id, name, spec FROM {} ORDER BY name", self.table);
        Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
            .fetch_all(&mut *c)
            .await)?)
    }

    pub(crate) async fn by_name(
        &self,
        conn: &mut Conn,
        name: &str,
    ) -> Result<Option<NamedRow>, StoreError> {
        let sql = format!("SELECT id, name, spec FROM {} WHERE name = $1", self.table);
        Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(&mut *c)
            .await)?)
    }

    /// A fresh internal id: the prefix and a lower-case ULID (these objects
    /// are addressed by name, so they have no typed id).
    pub(crate) fn new_id(&self) -> String {
        format!(
            "{}{}",
            self.prefix,
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        )
    }

    pub(crate) async fn insert(
        &self,
        conn: &mut Conn,
        id: &str,
        spec: &T,
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (id, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
            self.table
        );
        let json = to_json(spec)?;
        on_conn!(conn, |c| sqlx::query(&sql)
            .bind(id)
            .bind(spec.name())
            .bind(json.as_str())
            .bind(now)
            .execute(&mut *c)
            .await
            .map(drop))
        .map_err(|e| {
            StoreError::unique(e, || {
                format!("a {} named `{}` already exists", self.what, spec.name())
            })
        })?;
        Ok(())
    }

    /// Replaces an object's settings (its name stays); false when it does not exist.
    pub(crate) async fn update(
        &self,
        conn: &mut Conn,
        id: &str,
        spec: &T,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE {} SET spec = $2, updated_at = $3 WHERE id = $1",
            self.table
        );
        let json = to_json(spec)?;
        let done = on_conn!(conn, |c| sqlx::query(&sql)
            .bind(id)
            .bind(json.as_str())
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Deletes an object by id; false when it did not exist. A foreign key
    /// that still refers to it (a subscription to a plan, say) reads as
    /// `Conflict`.
    pub(crate) async fn delete(
        &self,
        conn: &mut Conn,
        id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE id = $1", self.table);
        let done = on_conn!(conn, |c| sqlx::query(&sql)
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected()))
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::Conflict((self.in_use)(name))
            }
            _ => StoreError::from(e),
        })?;
        Ok(done > 0)
    }
}

/// `Conflict` while any subscription, of any organization, uses the plan:
/// the operator-level check before a plan is deleted.
pub(crate) async fn ensure_plan_unused(conn: &mut Conn, name: &str) -> Result<(), StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM subscriptions WHERE plan = $1";
    let n: i64 = on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .bind(name)
        .fetch_one(&mut *c)
        .await)?;
    if n > 0 {
        return Err(StoreError::Conflict((PLANS.in_use)(name)));
    }
    Ok(())
}
