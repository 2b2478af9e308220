//! `/signing-keys`: the keys Tollgate's OAuth server signs access tokens
//! with. Only public halves are ever shown.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use tollgate_core::ids::SigningKeyId;
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, SigningKey, StoreError};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{PageQuery, Query};
use crate::issue::{self, SigningKeyRotation};
use crate::services::created;
use crate::tenancy::{PathIds, paginate};

/// A signing key as the API returns it: the public JWK, never the private key.
pub type SigningKeyOut = SigningKey;
/// The outcome of `POST /signing-keys/rotate`.
pub type SigningKeyRotated = SigningKeyRotation;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/signing-keys", get(list))
        .route("/signing-keys/rotate", post(rotate))
        .route("/signing-keys/{key}", get(read))
}

/// `/signing-keys/{key}`.
#[derive(Debug)]
pub struct SigningKeyPath {
    pub key: SigningKeyId,
}

impl<S: Send + Sync> FromRequestParts<S> for SigningKeyPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(SigningKeyPath {
            key: ids.get("key")?,
        })
    }
}

/// Lists signing keys (retired and expired ones included), oldest first.
#[utoipa::path(get, operation_id = "list_signing_keys", path = "/signing-keys", tag = "signing keys", params(PageQuery),
    responses((status = 200, body = Listed<SigningKey>), (status = 401, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<SigningKeyOut>>, ApiError> {
    let page = q.page()?;
    let keys = s.store.list_signing_keys().await?;
    Ok(axum::Json(paginate(keys, &page, |k| k.id.as_str())))
}

/// Reads a signing key's public information.
#[utoipa::path(get, operation_id = "get_signing_key", path = "/signing-keys/{key}", tag = "signing keys", params(("key" = SigningKeyId, Path)),
    responses((status = 200, body = SigningKey), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    SigningKeyPath { key }: SigningKeyPath,
) -> Result<axum::Json<SigningKeyOut>, ApiError> {
    s.store
        .list_signing_keys()
        .await?
        .into_iter()
        .find(|k| k.id == key)
        .map(axum::Json)
        .ok_or_else(|| {
            StoreError::NotFound {
                kind: "signing_key",
                id: key.to_string(),
            }
            .into()
        })
}

/// Starts signing with a new ES256 key. Every older key stops signing and
/// stays published until the tokens it signed have expired (the token
/// lifetime plus five minutes).
#[utoipa::path(post, operation_id = "rotate_signing_keys", path = "/signing-keys/rotate", tag = "signing keys",
    responses((status = 201, body = SigningKeyRotation), (status = 401, body = Problem)))]
pub async fn rotate(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let rotation = issue::rotate_signing_keys(&s.store, s.token_ttl).await?;
    Ok(created(
        format!("/signing-keys/{}", rotation.key.id),
        &rotation,
    ))
}
