//! `/services`: upstream backends.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_core::config::ServiceSpec;
use tollgate_core::ids::ServiceId;
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, ServiceRecord};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Id, Json, PageQuery, Query, patch_spec};

/// The body of `POST /services` and `PUT /services/{id}`.
pub type ServiceIn = ServiceSpec;
/// A service as the API returns it.
pub type ServiceOut = ServiceRecord;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/services", get(list).post(create))
        .route(
            "/services/{id}",
            get(read).put(replace).patch(patch).delete(remove),
        )
}

pub(crate) fn created<T: serde::Serialize>(location: String, body: &T) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response()
}

/// Lists services, oldest first.
#[utoipa::path(get, operation_id = "list_services", path = "/services", tag = "services", params(PageQuery),
    responses((status = 200, body = Listed<ServiceRecord>), (status = 401, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<ServiceOut>>, ApiError> {
    Ok(axum::Json(s.store.list_services(q.page()?).await?))
}

/// Creates a service.
#[utoipa::path(post, operation_id = "create_service", path = "/services", tag = "services", request_body = ServiceSpec,
    responses((status = 201, body = ServiceRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    Json(spec): Json<ServiceIn>,
) -> Result<Response, ApiError> {
    let rec = s.store.create_service(spec).await?;
    Ok(created(format!("/services/{}", rec.id), &rec))
}

/// Reads a service.
#[utoipa::path(get, operation_id = "get_service", path = "/services/{id}", tag = "services", params(("id" = ServiceId, Path)),
    responses((status = 200, body = ServiceRecord), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    Id(id): Id<ServiceId>,
) -> Result<axum::Json<ServiceOut>, ApiError> {
    Ok(axum::Json(s.store.get_service(&id).await?))
}

/// Replaces a service's settings.
#[utoipa::path(put, operation_id = "replace_service", path = "/services/{id}", tag = "services", params(("id" = ServiceId, Path)), request_body = ServiceSpec,
    responses((status = 200, body = ServiceRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn replace(
    State(s): State<AdminState>,
    Id(id): Id<ServiceId>,
    Json(spec): Json<ServiceIn>,
) -> Result<axum::Json<ServiceOut>, ApiError> {
    Ok(axum::Json(s.store.update_service(&id, spec).await?))
}

/// Changes some of a service's settings (RFC 7396 JSON merge patch).
#[utoipa::path(patch, operation_id = "patch_service", path = "/services/{id}", tag = "services", params(("id" = ServiceId, Path)),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = ServiceRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    Id(id): Id<ServiceId>,
    Json(p): Json<serde_json::Value>,
) -> Result<axum::Json<ServiceOut>, ApiError> {
    let current = s.store.get_service(&id).await?;
    let spec = patch_spec(&current.spec, &p)?;
    Ok(axum::Json(s.store.update_service(&id, spec).await?))
}

/// Deletes a service with its routes and their policies.
#[utoipa::path(delete, operation_id = "delete_service", path = "/services/{id}", tag = "services", params(("id" = ServiceId, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    Id(id): Id<ServiceId>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_service(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
