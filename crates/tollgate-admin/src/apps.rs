//! `/orgs/{org}/apps`: an organization's applications, which own its API
//! keys and OAuth clients.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_core::ids::{AppId, OrgId};
use tollgate_core::problem::Problem;
use tollgate_store::{App, AppUpdate, Listed};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::orgs::OrgPath;
use crate::services::created;
use crate::tenancy::{PathIds, tenant};

/// The body of `POST /orgs/{org}/apps`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppIn {
    /// Unique within the organization.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Free-form JSON object kept for the caller (at most 8 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// The body of `PATCH /orgs/{org}/apps/{app}`: the fields to change.
/// `metadata` replaces the whole object.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// An app as the API returns it.
pub type AppOut = App;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/orgs/{org}/apps", get(list).post(create))
        .route(
            "/orgs/{org}/apps/{app}",
            get(read).patch(patch).delete(remove),
        )
}

/// `/orgs/{org}/apps/{app}`.
#[derive(Debug)]
pub struct AppPath {
    pub org: OrgId,
    pub app: AppId,
}

impl<S: Send + Sync> FromRequestParts<S> for AppPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(AppPath {
            org: ids.get("org")?,
            app: ids.get("app")?,
        })
    }
}

/// Lists an organization's apps, oldest first.
#[utoipa::path(get, operation_id = "list_apps", path = "/orgs/{org}/apps", tag = "apps", params(("org" = OrgId, Path), PageQuery),
    responses((status = 200, body = Listed<App>), (status = 404, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<AppOut>>, ApiError> {
    let page = q.page()?;
    Ok(axum::Json(tenant(&s, &org).await?.list_apps(page).await?))
}

/// Creates an app.
#[utoipa::path(post, operation_id = "create_app", path = "/orgs/{org}/apps", tag = "apps", params(("org" = OrgId, Path)), request_body = AppIn,
    responses((status = 201, body = App), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Json(input): Json<AppIn>,
) -> Result<Response, ApiError> {
    let app = tenant(&s, &org)
        .await?
        .create_app(&input.name, &input.description, input.metadata)
        .await?;
    Ok(created(format!("/orgs/{org}/apps/{}", app.id), &app))
}

/// Reads an app.
#[utoipa::path(get, operation_id = "get_app", path = "/orgs/{org}/apps/{app}", tag = "apps", params(("org" = OrgId, Path), ("app" = AppId, Path)),
    responses((status = 200, body = App), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
) -> Result<axum::Json<AppOut>, ApiError> {
    Ok(axum::Json(tenant(&s, &org).await?.get_app(&app).await?))
}

/// Changes some of an app's fields.
#[utoipa::path(patch, operation_id = "patch_app", path = "/orgs/{org}/apps/{app}", tag = "apps", params(("org" = OrgId, Path), ("app" = AppId, Path)), request_body = AppPatch,
    responses((status = 200, body = App), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
    Json(p): Json<AppPatch>,
) -> Result<axum::Json<AppOut>, ApiError> {
    let update = AppUpdate {
        name: p.name,
        description: p.description,
        metadata: p.metadata,
    };
    Ok(axum::Json(
        tenant(&s, &org).await?.update_app(&app, update).await?,
    ))
}

/// Deletes an app with its API keys and OAuth clients. Gateways stop
/// accepting them within one poll interval.
#[utoipa::path(delete, operation_id = "delete_app", path = "/orgs/{org}/apps/{app}", tag = "apps", params(("org" = OrgId, Path), ("app" = AppId, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
) -> Result<StatusCode, ApiError> {
    tenant(&s, &org).await?.delete_app(&app).await?;
    Ok(StatusCode::NO_CONTENT)
}
