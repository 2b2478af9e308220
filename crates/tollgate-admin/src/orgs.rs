//! `/orgs`: organizations (tenants).

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tollgate_core::ids::OrgId;
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, OrgUpdate, Organization};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::services::created;
use crate::tenancy::{PathIds, present};

/// The body of `POST /orgs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgIn {
    /// Unique slug: 1 to 64 of `a-z`, `0-9` and `-`. Permanent.
    pub name: String,
    /// Shown to people; defaults to `name`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// IANA time zone (`Europe/Berlin`) that monthly quotas follow; UTC
    /// when absent.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// The body of `PATCH /orgs/{org}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    #[serde(default)]
    pub display_name: Option<String>,
    /// An IANA time zone; `null` goes back to UTC. Subscriptions' monthly
    /// quota periods move with it at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub timezone: Option<Option<String>>,
}

/// An organization as the API returns it.
pub type OrgOut = Organization;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/orgs", get(list).post(create))
        .route("/orgs/{org}", get(read).patch(patch).delete(remove))
}

/// `/orgs/{org}`.
#[derive(Debug)]
pub struct OrgPath {
    pub org: OrgId,
}

impl<S: Send + Sync> FromRequestParts<S> for OrgPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(OrgPath {
            org: ids.get("org")?,
        })
    }
}

/// Lists organizations, oldest first.
#[utoipa::path(get, operation_id = "list_orgs", path = "/orgs", tag = "organizations", params(PageQuery),
    responses((status = 200, body = Listed<Organization>), (status = 401, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<OrgOut>>, ApiError> {
    Ok(axum::Json(s.store.list_orgs(q.page()?).await?))
}

/// Creates an organization.
#[utoipa::path(post, operation_id = "create_org", path = "/orgs", tag = "organizations", request_body = OrgIn,
    responses((status = 201, body = Organization), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    Json(input): Json<OrgIn>,
) -> Result<Response, ApiError> {
    let display_name = input.display_name.as_deref().unwrap_or(&input.name);
    let org = s
        .store
        .create_org_with_timezone(&input.name, display_name, input.timezone.as_deref())
        .await?;
    Ok(created(format!("/orgs/{}", org.id), &org))
}

/// Reads an organization.
#[utoipa::path(get, operation_id = "get_org", path = "/orgs/{org}", tag = "organizations", params(("org" = OrgId, Path)),
    responses((status = 200, body = Organization), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
) -> Result<axum::Json<OrgOut>, ApiError> {
    Ok(axum::Json(s.store.get_org(&org).await?))
}

/// Changes an organization's display name or time zone (its `name` is
/// permanent).
#[utoipa::path(patch, operation_id = "patch_org", path = "/orgs/{org}", tag = "organizations", params(("org" = OrgId, Path)), request_body = OrgPatch,
    responses((status = 200, body = Organization), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Json(p): Json<OrgPatch>,
) -> Result<axum::Json<OrgOut>, ApiError> {
    let update = OrgUpdate {
        display_name: p.display_name,
        timezone: p.timezone,
    };
    Ok(axum::Json(s.store.patch_org(&org, update).await?))
}

/// Deletes an organization with its members, apps, keys and OAuth clients.
/// Gateways stop accepting its credentials within one poll interval.
#[utoipa::path(delete, operation_id = "delete_org", path = "/orgs/{org}", tag = "organizations", params(("org" = OrgId, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
) -> Result<StatusCode, ApiError> {
    s.store.delete_org(&org).await?;
    Ok(StatusCode::NO_CONTENT)
}
