//! `/routes` and `/services/{id}/routes`: matching rules that lead to a service.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use tollgate_core::config::RouteSpec;
use tollgate_core::ids::{RouteId, ServiceId};
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, RouteRecord};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Id, Json, PageQuery, Query, patch_spec};
use crate::services::created;

/// The body of `POST /services/{id}/routes` and `PUT /routes/{id}`.
pub type RouteIn = RouteSpec;
/// A route as the API returns it.
pub type RouteOut = RouteRecord;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/routes", get(list))
        .route("/services/{id}/routes", get(list_for_service).post(create))
        .route(
            "/routes/{id}",
            get(read).put(replace).patch(patch).delete(remove),
        )
}

/// Lists all routes.
#[utoipa::path(get, operation_id = "list_routes", path = "/routes", tag = "routes", params(PageQuery), responses((status = 200, body = Listed<RouteRecord>)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<RouteOut>>, ApiError> {
    Ok(axum::Json(s.store.list_routes(q.page()?, None).await?))
}

/// Lists a service's routes.
#[utoipa::path(get, operation_id = "list_service_routes", path = "/services/{id}/routes", tag = "routes", params(("id" = ServiceId, Path), PageQuery),
    responses((status = 200, body = Listed<RouteRecord>), (status = 404, body = Problem)))]
pub async fn list_for_service(
    State(s): State<AdminState>,
    Id(id): Id<ServiceId>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<RouteOut>>, ApiError> {
    s.store.get_service(&id).await?;
    Ok(axum::Json(s.store.list_routes(q.page()?, Some(&id)).await?))
}

/// Creates a route on a service.
#[utoipa::path(post, operation_id = "create_route", path = "/services/{id}/routes", tag = "routes", params(("id" = ServiceId, Path)), request_body = RouteSpec,
    responses((status = 201, body = RouteRecord), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    Id(id): Id<ServiceId>,
    Json(spec): Json<RouteIn>,
) -> Result<Response, ApiError> {
    let rec = s.store.create_route(&id, spec).await?;
    Ok(created(format!("/routes/{}", rec.id), &rec))
}

/// Reads a route.
#[utoipa::path(get, operation_id = "get_route", path = "/routes/{id}", tag = "routes", params(("id" = RouteId, Path)),
    responses((status = 200, body = RouteRecord), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    Id(id): Id<RouteId>,
) -> Result<axum::Json<RouteOut>, ApiError> {
    Ok(axum::Json(s.store.get_route(&id).await?))
}

/// Replaces a route's settings.
#[utoipa::path(put, operation_id = "replace_route", path = "/routes/{id}", tag = "routes", params(("id" = RouteId, Path)), request_body = RouteSpec,
    responses((status = 200, body = RouteRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn replace(
    State(s): State<AdminState>,
    Id(id): Id<RouteId>,
    Json(spec): Json<RouteIn>,
) -> Result<axum::Json<RouteOut>, ApiError> {
    Ok(axum::Json(s.store.update_route(&id, spec).await?))
}

/// Changes some of a route's settings (RFC 7396 JSON merge patch).
#[utoipa::path(patch, operation_id = "patch_route", path = "/routes/{id}", tag = "routes", params(("id" = RouteId, Path)),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = RouteRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    Id(id): Id<RouteId>,
    Json(p): Json<serde_json::Value>,
) -> Result<axum::Json<RouteOut>, ApiError> {
    let current = s.store.get_route(&id).await?;
    let spec = patch_spec(&current.spec, &p)?;
    Ok(axum::Json(s.store.update_route(&id, spec).await?))
}

/// Deletes a route and its policies.
#[utoipa::path(delete, operation_id = "delete_route", path = "/routes/{id}", tag = "routes", params(("id" = RouteId, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    Id(id): Id<RouteId>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_route(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
