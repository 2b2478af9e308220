//! `/jwt-issuers`: external identity providers whose JWTs the gateway
//! trusts. They are part of the declarative configuration (`jwt_issuers`),
//! so `PUT /config` replaces them too. No secret is ever stored here: an
//! HS256 issuer names the environment variable that holds its secret.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_core::config::JwtIssuerSpec;
use tollgate_core::problem::{FieldError, Problem};
use tollgate_store::{Listed, StoreError};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::services::created;
use crate::tenancy::{PathIds, paginate};

/// The body of `PUT /jwt-issuers/{name}`; its `name` must be the one in the path.
pub type JwtIssuerIn = JwtIssuerSpec;
/// An issuer as the API returns it.
pub type JwtIssuerOut = JwtIssuerSpec;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/jwt-issuers", get(list))
        .route("/jwt-issuers/{name}", get(read).put(put).delete(remove))
}

/// `/jwt-issuers/{name}`.
#[derive(Debug)]
pub struct IssuerPath {
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for IssuerPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(IssuerPath {
            name: ids.get("name")?,
        })
    }
}

fn not_found(name: &str) -> ApiError {
    StoreError::NotFound {
        kind: "jwt_issuer",
        id: name.chars().take(64).collect(),
    }
    .into()
}

/// Lists the trusted issuers, by name.
#[utoipa::path(get, operation_id = "list_jwt_issuers", path = "/jwt-issuers", tag = "jwt issuers", params(PageQuery),
    responses((status = 200, body = Listed<JwtIssuerSpec>), (status = 401, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<JwtIssuerOut>>, ApiError> {
    let page = q.page()?;
    let issuers = s.store.list_jwt_issuers().await?;
    Ok(axum::Json(paginate(issuers, &page, |i| i.name.as_str())))
}

/// Reads an issuer.
#[utoipa::path(get, operation_id = "get_jwt_issuer", path = "/jwt-issuers/{name}", tag = "jwt issuers", params(("name" = String, Path)),
    responses((status = 200, body = JwtIssuerSpec), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    IssuerPath { name }: IssuerPath,
) -> Result<axum::Json<JwtIssuerOut>, ApiError> {
    s.store
        .list_jwt_issuers()
        .await?
        .into_iter()
        .find(|i| i.name == name)
        .map(axum::Json)
        .ok_or_else(|| not_found(&name))
}

/// Creates (201) or replaces (200) the issuer with this name. The body's
/// `name` must match the path.
#[utoipa::path(put, operation_id = "put_jwt_issuer", path = "/jwt-issuers/{name}", tag = "jwt issuers", params(("name" = String, Path)), request_body = JwtIssuerSpec,
    responses((status = 200, body = JwtIssuerSpec), (status = 201, body = JwtIssuerSpec), (status = 422, body = Problem)))]
pub async fn put(
    State(s): State<AdminState>,
    IssuerPath { name }: IssuerPath,
    Json(spec): Json<JwtIssuerIn>,
) -> Result<Response, ApiError> {
    if spec.name != name {
        return Err(ApiError::Invalid(vec![FieldError {
            path: "name".into(),
            reason: "must be the name in the request path".into(),
        }]));
    }
    if s.store.put_jwt_issuer(spec.clone()).await? {
        Ok(created(format!("/jwt-issuers/{}", spec.name), &spec))
    } else {
        Ok(axum::Json(spec).into_response())
    }
}

/// Deletes an issuer; 409 while an `auth` policy still names it.
#[utoipa::path(delete, operation_id = "delete_jwt_issuer", path = "/jwt-issuers/{name}", tag = "jwt issuers", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    IssuerPath { name }: IssuerPath,
) -> Result<StatusCode, ApiError> {
    s.store.delete_jwt_issuer(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
