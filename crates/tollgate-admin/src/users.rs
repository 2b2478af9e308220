//! `/users`: people, who join organizations as members.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tollgate_core::ids::UserId;
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, User};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::services::created;
use crate::tenancy::PathIds;

/// The body of `POST /users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// Unique; stored trimmed and lower-cased.
    pub email: String,
    #[serde(default)]
    pub name: String,
}

/// A user as the API returns it.
pub type UserOut = User;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{user}", get(read))
}

/// `/users/{user}`.
#[derive(Debug)]
pub struct UserPath {
    pub user: UserId,
}

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(UserPath {
            user: ids.get("user")?,
        })
    }
}

/// Lists users, oldest first.
#[utoipa::path(get, operation_id = "list_users", path = "/users", tag = "users", params(PageQuery),
    responses((status = 200, body = Listed<User>), (status = 401, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<UserOut>>, ApiError> {
    Ok(axum::Json(s.store.list_users(q.page()?).await?))
}

/// Creates a user.
#[utoipa::path(post, operation_id = "create_user", path = "/users", tag = "users", request_body = UserIn,
    responses((status = 201, body = User), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    Json(input): Json<UserIn>,
) -> Result<Response, ApiError> {
    let user = s.store.create_user(&input.email, &input.name).await?;
    Ok(created(format!("/users/{}", user.id), &user))
}

/// Reads a user.
#[utoipa::path(get, operation_id = "get_user", path = "/users/{user}", tag = "users", params(("user" = UserId, Path)),
    responses((status = 200, body = User), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    UserPath { user }: UserPath,
) -> Result<axum::Json<UserOut>, ApiError> {
    Ok(axum::Json(s.store.get_user(&user).await?))
}
