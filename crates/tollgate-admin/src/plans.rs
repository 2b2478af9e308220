//! `/plans`: named tiers (Free, Pro...) of rate limits, a monthly quota,
//! the APIs and scopes they include, and prices. Plans are part of the
//! declarative configuration (`plans`), so `PUT /config` replaces them too,
//! and every change reaches the gateways with the next configuration
//! revision. Subscriptions (`/orgs/{org}/subscriptions`) name them.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use tollgate_core::config::PlanSpec;
use tollgate_core::problem::{FieldError, Problem};
use tollgate_store::Listed;

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::services::created;
use crate::tenancy::{PathIds, paginate};

/// The body of `POST /plans` and `PUT /plans/{name}`.
pub type PlanIn = PlanSpec;
/// A plan as the API returns it.
pub type PlanOut = PlanSpec;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/plans", get(list).post(create))
        .route("/plans/{name}", get(read).put(replace).delete(remove))
}

/// `/plans/{name}`.
#[derive(Debug)]
pub struct PlanPath {
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for PlanPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(PlanPath {
            name: ids.get("name")?,
        })
    }
}

/// Lists the plans, by name.
#[utoipa::path(get, operation_id = "list_plans", path = "/plans", tag = "plans", params(PageQuery),
    responses((status = 200, body = Listed<PlanSpec>), (status = 401, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<PlanOut>>, ApiError> {
    let page = q.page()?;
    let plans = s.store.list_plans().await?;
    Ok(axum::Json(paginate(plans, &page, |p| p.name.as_str())))
}

/// Creates a plan. Its `apis` must name existing services.
#[utoipa::path(post, operation_id = "create_plan", path = "/plans", tag = "plans", request_body = PlanSpec,
    responses((status = 201, body = PlanSpec), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    Json(spec): Json<PlanIn>,
) -> Result<Response, ApiError> {
    let plan = s.store.create_plan(spec).await?;
    Ok(created(format!("/plans/{}", plan.name), &plan))
}

/// Reads a plan.
#[utoipa::path(get, operation_id = "get_plan", path = "/plans/{name}", tag = "plans", params(("name" = String, Path)),
    responses((status = 200, body = PlanSpec), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    PlanPath { name }: PlanPath,
) -> Result<axum::Json<PlanOut>, ApiError> {
    Ok(axum::Json(s.store.get_plan(&name).await?))
}

/// Replaces a plan. The body's `name` must be the one in the path (a plan
/// is not renamed: its subscriptions name it). Its subscribers get the new
/// limits at once.
#[utoipa::path(put, operation_id = "replace_plan", path = "/plans/{name}", tag = "plans", params(("name" = String, Path)), request_body = PlanSpec,
    responses((status = 200, body = PlanSpec), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn replace(
    State(s): State<AdminState>,
    PlanPath { name }: PlanPath,
    Json(spec): Json<PlanIn>,
) -> Result<axum::Json<PlanOut>, ApiError> {
    if spec.name != name {
        return Err(ApiError::Invalid(vec![FieldError {
            path: "name".into(),
            reason: "must be the name in the request path".into(),
        }]));
    }
    Ok(axum::Json(s.store.update_plan(spec).await?))
}

/// Deletes a plan; 409 while any subscription uses it.
#[utoipa::path(delete, operation_id = "delete_plan", path = "/plans/{name}", tag = "plans", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    PlanPath { name }: PlanPath,
) -> Result<StatusCode, ApiError> {
    s.store.delete_plan(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
