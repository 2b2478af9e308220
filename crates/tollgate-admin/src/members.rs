//! `/orgs/{org}/members`: who belongs to an organization, with which role.
//! An organization always keeps at least one owner (409 otherwise).

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tollgate_core::identity::Role;
use tollgate_core::ids::{OrgId, UserId};
use tollgate_core::problem::{FieldError, Problem};
use tollgate_store::{Listed, Member, StoreError};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::orgs::OrgPath;
use crate::services::created;
use crate::tenancy::{PathIds, paginate, tenant};

/// The body of `POST /orgs/{org}/members`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberIn {
    pub user_id: UserId,
    pub role: Role,
}

/// The body of `PATCH /orgs/{org}/members/{user}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    pub role: Role,
}

/// A membership as the API returns it: the user, their role and since when.
pub type MemberOut = Member;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/orgs/{org}/members", get(list).post(create))
        .route(
            "/orgs/{org}/members/{user}",
            get(read).patch(patch).delete(remove),
        )
}

/// `/orgs/{org}/members/{user}`.
#[derive(Debug)]
pub struct MemberPath {
    pub org: OrgId,
    pub user: UserId,
}

impl<S: Send + Sync> FromRequestParts<S> for MemberPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(MemberPath {
            org: ids.get("org")?,
            user: ids.get("user")?,
        })
    }
}

/// Lists an organization's members, in user id order.
#[utoipa::path(get, operation_id = "list_members", path = "/orgs/{org}/members", tag = "members", params(("org" = OrgId, Path), PageQuery),
    responses((status = 200, body = Listed<Member>), (status = 404, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<MemberOut>>, ApiError> {
    let page = q.page()?;
    let members = tenant(&s, &org).await?.list_members().await?;
    Ok(axum::Json(paginate(members, &page, |m| m.user.id.as_str())))
}

/// Adds a user to an organization.
#[utoipa::path(post, operation_id = "add_member", path = "/orgs/{org}/members", tag = "members", params(("org" = OrgId, Path)), request_body = MemberIn,
    responses((status = 201, body = Member), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Json(input): Json<MemberIn>,
) -> Result<Response, ApiError> {
    let member = tenant(&s, &org)
        .await?
        .add_member(&input.user_id, input.role)
        .await
        .map_err(|e| match e {
            // The user is named in the body, not the path: not a 404.
            StoreError::NotFound { kind: "user", .. } => ApiError::Invalid(vec![FieldError {
                path: "user_id".into(),
                reason: format!("there is no user `{}`", input.user_id),
            }]),
            other => other.into(),
        })?;
    Ok(created(
        format!("/orgs/{org}/members/{}", member.user.id),
        &member,
    ))
}

/// Reads one membership.
#[utoipa::path(get, operation_id = "get_member", path = "/orgs/{org}/members/{user}", tag = "members", params(("org" = OrgId, Path), ("user" = UserId, Path)),
    responses((status = 200, body = Member), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    MemberPath { org, user }: MemberPath,
) -> Result<axum::Json<MemberOut>, ApiError> {
    tenant(&s, &org)
        .await?
        .list_members()
        .await?
        .into_iter()
        .find(|m| m.user.id == user)
        .map(axum::Json)
        .ok_or_else(|| {
            StoreError::NotFound {
                kind: "member",
                id: user.to_string(),
            }
            .into()
        })
}

/// Changes a member's role. Demoting the last owner is a conflict.
#[utoipa::path(patch, operation_id = "patch_member", path = "/orgs/{org}/members/{user}", tag = "members", params(("org" = OrgId, Path), ("user" = UserId, Path)), request_body = MemberPatch,
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    MemberPath { org, user }: MemberPath,
    Json(p): Json<MemberPatch>,
) -> Result<axum::Json<MemberOut>, ApiError> {
    Ok(axum::Json(
        tenant(&s, &org).await?.set_role(&user, p.role).await?,
    ))
}

/// Removes a member. Removing the last owner is a conflict.
#[utoipa::path(delete, operation_id = "remove_member", path = "/orgs/{org}/members/{user}", tag = "members", params(("org" = OrgId, Path), ("user" = UserId, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    MemberPath { org, user }: MemberPath,
) -> Result<StatusCode, ApiError> {
    tenant(&s, &org).await?.remove_member(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}
