//! `/policies`: gateway behaviours attached globally, to a service or to a route.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tollgate_core::config::PolicySpec;
use tollgate_core::ids::{PolicyId, RouteId, ServiceId};
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, PolicyRecord, PolicyScope};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Id, Json, PageQuery, Query};
use crate::services::created;

/// The body of `POST /policies`: where to attach, and the policy.
///
/// `{"scope": "route", "route_id": "rt_...", "policy": {"name": "cors", "config": {...}}}`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// `global`, `service` or `route`.
    pub scope: ScopeKind,
    #[serde(default)]
    pub service_id: Option<ServiceId>,
    #[serde(default)]
    pub route_id: Option<RouteId>,
    pub policy: PolicySpec,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Global,
    Service,
    Route,
}

/// Filters for `GET /policies`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
    /// Only policies attached to this service.
    pub service_id: Option<String>,
    /// Only policies attached to this route.
    pub route_id: Option<String>,
    /// Only global policies when `true`.
    pub global: Option<bool>,
}

pub type PolicyOut = PolicyRecord;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/policies", get(list).post(create))
        .route("/policies/{id}", get(read).put(replace).delete(remove))
}

fn scope_of(input: &PolicyIn) -> Result<PolicyScope, ApiError> {
    let invalid = |path: &str, reason: &str| {
        ApiError::Invalid(vec![tollgate_core::problem::FieldError {
            path: path.into(),
            reason: reason.into(),
        }])
    };
    match (input.scope, &input.service_id, &input.route_id) {
        (ScopeKind::Global, None, None) => Ok(PolicyScope::Global),
        (ScopeKind::Service, Some(id), None) => Ok(PolicyScope::Service(id.clone())),
        (ScopeKind::Route, None, Some(id)) => Ok(PolicyScope::Route(id.clone())),
        (ScopeKind::Service, _, _) => Err(invalid(
            "service_id",
            "give `service_id` (and no `route_id`) for scope `service`",
        )),
        (ScopeKind::Route, _, _) => Err(invalid(
            "route_id",
            "give `route_id` (and no `service_id`) for scope `route`",
        )),
        (ScopeKind::Global, _, _) => Err(invalid(
            "scope",
            "a global policy takes neither `service_id` nor `route_id`",
        )),
    }
}

/// Lists policies, optionally filtered by attachment.
#[utoipa::path(get, operation_id = "list_policies", path = "/policies", tag = "policies", params(PolicyQuery), responses((status = 200, body = Listed<PolicyRecord>)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PolicyQuery>,
) -> Result<axum::Json<Listed<PolicyOut>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after.clone(),
    }
    .page()?;
    let not_found = |raw: &str| {
        ApiError::NotFound(format!(
            "`{}` not found",
            raw.chars().take(64).collect::<String>()
        ))
    };
    let scope = match (&q.service_id, &q.route_id, q.global) {
        (Some(s), None, None) => Some(PolicyScope::Service(s.parse().map_err(|_| not_found(s))?)),
        (None, Some(r), None) => Some(PolicyScope::Route(r.parse().map_err(|_| not_found(r))?)),
        (None, None, Some(true)) => Some(PolicyScope::Global),
        (None, None, None | Some(false)) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "filter by at most one of `service_id`, `route_id` and `global`".into(),
            ));
        }
    };
    Ok(axum::Json(
        s.store.list_policies(page, scope.as_ref()).await?,
    ))
}

/// Attaches a policy.
#[utoipa::path(post, operation_id = "create_policy", path = "/policies", tag = "policies", request_body = PolicyIn,
    responses((status = 201, body = PolicyRecord), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    Json(input): Json<PolicyIn>,
) -> Result<Response, ApiError> {
    let scope = scope_of(&input)?;
    let rec = s.store.create_policy(scope, input.policy).await?;
    Ok(created(format!("/policies/{}", rec.id), &rec))
}

/// Reads a policy.
#[utoipa::path(get, operation_id = "get_policy", path = "/policies/{id}", tag = "policies", params(("id" = PolicyId, Path)),
    responses((status = 200, body = PolicyRecord), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    Id(id): Id<PolicyId>,
) -> Result<axum::Json<PolicyOut>, ApiError> {
    Ok(axum::Json(s.store.get_policy(&id).await?))
}

/// Replaces a policy's configuration; its name and attachment stay.
#[utoipa::path(put, operation_id = "replace_policy", path = "/policies/{id}", tag = "policies", params(("id" = PolicyId, Path)), request_body = PolicySpec,
    responses((status = 200, body = PolicyRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn replace(
    State(s): State<AdminState>,
    Id(id): Id<PolicyId>,
    Json(spec): Json<PolicySpec>,
) -> Result<axum::Json<PolicyOut>, ApiError> {
    Ok(axum::Json(s.store.update_policy(&id, spec).await?))
}

/// Detaches a policy.
#[utoipa::path(delete, operation_id = "delete_policy", path = "/policies/{id}", tag = "policies", params(("id" = PolicyId, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    Id(id): Id<PolicyId>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_policy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
