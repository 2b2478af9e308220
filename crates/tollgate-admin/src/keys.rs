//! `/orgs/{org}/apps/{app}/keys`: an app's API keys. A key's secret is in
//! the response that creates it (or rotates to it) and nowhere else; the
//! store keeps only its HMAC.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, KeyId, OrgId};
use tollgate_core::problem::Problem;
use tollgate_store::{ApiKey, KeyUpdate, Listed, StoreError, Tenant};

use crate::AdminState;
use crate::apps::AppPath;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::issue::{self, KeySpec, RotateSpec};
use crate::tenancy::{PathIds, present, tenant, with_secret};

/// The body of `POST /orgs/{org}/apps/{app}/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    #[serde(default)]
    pub name: String,
    /// `live` (default) or `test`; visible in the key itself.
    #[serde(default)]
    pub environment: KeyEnvironment,
    /// Scopes the key grants (RFC 6749 scope tokens).
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When the key stops working (RFC 3339); never when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The body of `PATCH /orgs/{org}/apps/{app}/keys/{key}`: the fields to
/// change. `"expires_at": null` removes the expiry.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// The body of `POST …/keys/{key}/rotate`. Omitted fields keep the old
/// key's values.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// How long the old key keeps working, at most `720h` (30 days).
    #[schema(value_type = String, example = "24h")]
    pub overlap: tollgate_core::Duration,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// The new key's expiry; by default the old key's. `null`: none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// An API key as the API returns it: never the secret, never its hash.
pub type ApiKeyOut = ApiKey;

/// A new key with its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    pub key: ApiKey,
    /// The key itself (`tg_live_…`). Store it now: it cannot be shown again.
    pub secret: String,
}

/// The outcome of a rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyRotated {
    /// The replacement key.
    pub key: ApiKey,
    /// The replacement key's secret, shown this once.
    pub secret: String,
    /// The old key, now expiring at the end of the overlap.
    pub previous: ApiKey,
}

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/orgs/{org}/apps/{app}/keys", get(list).post(create))
        .route("/orgs/{org}/apps/{app}/keys/{key}", get(read).patch(patch))
        .route("/orgs/{org}/apps/{app}/keys/{key}/revoke", post(revoke))
        .route("/orgs/{org}/apps/{app}/keys/{key}/rotate", post(rotate))
}

/// `/orgs/{org}/apps/{app}/keys/{key}`.
#[derive(Debug)]
pub struct KeyPath {
    pub org: OrgId,
    pub app: AppId,
    pub key: KeyId,
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(KeyPath {
            org: ids.get("org")?,
            app: ids.get("app")?,
            key: ids.get("key")?,
        })
    }
}

/// The key, when it belongs to `app`: a key of another app (or another
/// organization) is not found, exactly like one that does not exist.
pub(crate) async fn key_of_app(
    tenant: &Tenant<'_>,
    app: &AppId,
    key: &KeyId,
) -> Result<ApiKey, ApiError> {
    let record = tenant.get_key(key).await?;
    if &record.app_id != app {
        return Err(StoreError::NotFound {
            kind: "api_key",
            id: key.to_string(),
        }
        .into());
    }
    Ok(record)
}

fn location(k: &ApiKey) -> String {
    format!("/orgs/{}/apps/{}/keys/{}", k.org_id, k.app_id, k.id)
}

/// Lists an app's keys (revoked and expired ones included), oldest first.
#[utoipa::path(get, operation_id = "list_keys", path = "/orgs/{org}/apps/{app}/keys", tag = "api keys",
    params(("org" = OrgId, Path), ("app" = AppId, Path), PageQuery),
    responses((status = 200, body = Listed<ApiKey>), (status = 404, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<ApiKeyOut>>, ApiError> {
    let page = q.page()?;
    Ok(axum::Json(
        tenant(&s, &org).await?.list_keys(&app, page).await?,
    ))
}

/// Creates a key. The response is the only place its secret appears.
#[utoipa::path(post, operation_id = "create_key", path = "/orgs/{org}/apps/{app}/keys", tag = "api keys",
    params(("org" = OrgId, Path), ("app" = AppId, Path)), request_body = ApiKeyIn,
    responses((status = 201, body = ApiKeyCreated, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
    Json(input): Json<ApiKeyIn>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&s, &org).await?;
    let spec = KeySpec {
        name: input.name,
        environment: input.environment,
        scopes: input.scopes,
        metadata: input.metadata,
        expires_at: input.expires_at,
    };
    let issued = issue::create_key(&tenant, &s.pepper, &app, spec).await?;
    let body = ApiKeyCreated {
        secret: issued.secret,
        key: issued.key,
    };
    Ok(with_secret(
        StatusCode::CREATED,
        Some(location(&body.key)),
        &body,
    ))
}

/// Reads a key (never its secret).
#[utoipa::path(get, operation_id = "get_key", path = "/orgs/{org}/apps/{app}/keys/{key}", tag = "api keys",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("key" = KeyId, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    KeyPath { org, app, key }: KeyPath,
) -> Result<axum::Json<ApiKeyOut>, ApiError> {
    let tenant = tenant(&s, &org).await?;
    Ok(axum::Json(key_of_app(&tenant, &app, &key).await?))
}

/// Changes a key's name, scopes, metadata or expiry.
#[utoipa::path(patch, operation_id = "patch_key", path = "/orgs/{org}/apps/{app}/keys/{key}", tag = "api keys",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("key" = KeyId, Path)), request_body = ApiKeyPatch,
    responses((status = 200, body = ApiKey), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    KeyPath { org, app, key }: KeyPath,
    Json(p): Json<ApiKeyPatch>,
) -> Result<axum::Json<ApiKeyOut>, ApiError> {
    let tenant = tenant(&s, &org).await?;
    key_of_app(&tenant, &app, &key).await?;
    let update = KeyUpdate {
        name: p.name,
        scopes: p.scopes,
        metadata: p.metadata,
        expires_at: p.expires_at,
    };
    Ok(axum::Json(tenant.update_key(&key, update).await?))
}

/// Revokes a key for good; every gateway refuses it within one poll
/// interval. Revoking a revoked key changes nothing.
#[utoipa::path(post, operation_id = "revoke_key", path = "/orgs/{org}/apps/{app}/keys/{key}/revoke", tag = "api keys",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("key" = KeyId, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = Problem)))]
pub async fn revoke(
    State(s): State<AdminState>,
    KeyPath { org, app, key }: KeyPath,
) -> Result<axum::Json<ApiKeyOut>, ApiError> {
    let tenant = tenant(&s, &org).await?;
    key_of_app(&tenant, &app, &key).await?;
    Ok(axum::Json(tenant.revoke_key(&key).await?))
}

/// Replaces a key: issues a new one (its secret is in this response only)
/// and keeps the old one working for `overlap`.
#[utoipa::path(post, operation_id = "rotate_key", path = "/orgs/{org}/apps/{app}/keys/{key}/rotate", tag = "api keys",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("key" = KeyId, Path)), request_body = RotateIn,
    responses((status = 201, body = ApiKeyRotated, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn rotate(
    State(s): State<AdminState>,
    KeyPath { org, app, key }: KeyPath,
    Json(input): Json<RotateIn>,
) -> Result<Response, ApiError> {
    issue::check_overlap(input.overlap.get())?;
    let tenant = tenant(&s, &org).await?;
    let old = key_of_app(&tenant, &app, &key).await?;
    let spec = RotateSpec {
        overlap: input.overlap.get(),
        name: input.name,
        scopes: input.scopes,
        metadata: input.metadata,
        expires_at: input.expires_at,
    };
    let (issued, previous) = issue::rotate_key(&tenant, &s.pepper, &old, spec).await?;
    let body = ApiKeyRotated {
        secret: issued.secret,
        key: issued.key,
        previous,
    };
    Ok(with_secret(
        StatusCode::CREATED,
        Some(location(&body.key)),
        &body,
    ))
}
