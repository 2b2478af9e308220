//! `/orgs/{org}/apps/{app}/oauth-clients`: an app's OAuth2 clients (client
//! credentials grant). A client's secret is in the response that creates or
//! replaces it and nowhere else; the store keeps only its argon2 hash.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tollgate_core::ids::{AppId, ClientId, OrgId};
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, OAuthClient, StoreError, Tenant};

use crate::AdminState;
use crate::apps::AppPath;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::issue::{self, IssuedClient};
use crate::tenancy::{PathIds, tenant, with_secret};

/// The body of `POST /orgs/{org}/apps/{app}/oauth-clients`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientIn {
    pub name: String,
    /// The scopes the client may request.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An OAuth client as the API returns it: never its secret or hash. Its
/// `id` is the `client_id`.
pub type OAuthClientOut = OAuthClient;

/// A client with its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OAuthClientCreated {
    pub client: OAuthClient,
    /// The client secret (`tgcs_…`). Store it now: it cannot be shown again.
    pub client_secret: String,
}

impl From<IssuedClient> for OAuthClientCreated {
    fn from(i: IssuedClient) -> Self {
        OAuthClientCreated {
            client: i.client,
            client_secret: i.secret,
        }
    }
}

pub fn router() -> Router<AdminState> {
    Router::new()
        .route(
            "/orgs/{org}/apps/{app}/oauth-clients",
            get(list).post(create),
        )
        .route("/orgs/{org}/apps/{app}/oauth-clients/{client}", get(read))
        .route(
            "/orgs/{org}/apps/{app}/oauth-clients/{client}/secret",
            post(reset_secret),
        )
        .route(
            "/orgs/{org}/apps/{app}/oauth-clients/{client}/revoke",
            post(revoke),
        )
}

/// `/orgs/{org}/apps/{app}/oauth-clients/{client}`.
#[derive(Debug)]
pub struct ClientPath {
    pub org: OrgId,
    pub app: AppId,
    pub client: ClientId,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(ClientPath {
            org: ids.get("org")?,
            app: ids.get("app")?,
            client: ids.get("client")?,
        })
    }
}

/// The client, when it belongs to `app`: a client of another app (or
/// another organization) is not found, exactly like one that does not exist.
async fn client_of_app(
    tenant: &Tenant<'_>,
    app: &AppId,
    client: &ClientId,
) -> Result<OAuthClient, ApiError> {
    let record = tenant.get_client(client).await?;
    if &record.app_id != app {
        return Err(StoreError::NotFound {
            kind: "oauth_client",
            id: client.to_string(),
        }
        .into());
    }
    Ok(record)
}

/// Lists an app's OAuth clients (revoked ones included), oldest first.
#[utoipa::path(get, operation_id = "list_oauth_clients", path = "/orgs/{org}/apps/{app}/oauth-clients", tag = "oauth clients",
    params(("org" = OrgId, Path), ("app" = AppId, Path), PageQuery),
    responses((status = 200, body = Listed<OAuthClient>), (status = 404, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<OAuthClientOut>>, ApiError> {
    let page = q.page()?;
    Ok(axum::Json(
        tenant(&s, &org).await?.list_clients(&app, page).await?,
    ))
}

/// Creates an OAuth client. The response is the only place its secret appears.
#[utoipa::path(post, operation_id = "create_oauth_client", path = "/orgs/{org}/apps/{app}/oauth-clients", tag = "oauth clients",
    params(("org" = OrgId, Path), ("app" = AppId, Path)), request_body = OAuthClientIn,
    responses((status = 201, body = OAuthClientCreated, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    AppPath { org, app }: AppPath,
    Json(input): Json<OAuthClientIn>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&s, &org).await?;
    let issued = issue::create_client(&tenant, &app, &input.name, input.scopes).await?;
    let location = format!("/orgs/{org}/apps/{app}/oauth-clients/{}", issued.client.id);
    Ok(with_secret(
        StatusCode::CREATED,
        Some(location),
        &OAuthClientCreated::from(issued),
    ))
}

/// Reads an OAuth client (never its secret).
#[utoipa::path(get, operation_id = "get_oauth_client", path = "/orgs/{org}/apps/{app}/oauth-clients/{client}", tag = "oauth clients",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("client" = ClientId, Path)),
    responses((status = 200, body = OAuthClient), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    ClientPath { org, app, client }: ClientPath,
) -> Result<axum::Json<OAuthClientOut>, ApiError> {
    let tenant = tenant(&s, &org).await?;
    Ok(axum::Json(client_of_app(&tenant, &app, &client).await?))
}

/// Gives a client a new secret; the old one stops working within one poll
/// interval.
#[utoipa::path(post, operation_id = "reset_oauth_client_secret", path = "/orgs/{org}/apps/{app}/oauth-clients/{client}/secret", tag = "oauth clients",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("client" = ClientId, Path)),
    responses((status = 200, body = OAuthClientCreated, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn reset_secret(
    State(s): State<AdminState>,
    ClientPath { org, app, client }: ClientPath,
) -> Result<Response, ApiError> {
    let tenant = tenant(&s, &org).await?;
    client_of_app(&tenant, &app, &client).await?;
    let issued = issue::reset_client_secret(&tenant, &client).await?;
    Ok(with_secret(
        StatusCode::OK,
        None,
        &OAuthClientCreated::from(issued),
    ))
}

/// Revokes a client for good: it can get no new tokens. Idempotent.
#[utoipa::path(post, operation_id = "revoke_oauth_client", path = "/orgs/{org}/apps/{app}/oauth-clients/{client}/revoke", tag = "oauth clients",
    params(("org" = OrgId, Path), ("app" = AppId, Path), ("client" = ClientId, Path)),
    responses((status = 200, body = OAuthClient), (status = 404, body = Problem)))]
pub async fn revoke(
    State(s): State<AdminState>,
    ClientPath { org, app, client }: ClientPath,
) -> Result<axum::Json<OAuthClientOut>, ApiError> {
    let tenant = tenant(&s, &org).await?;
    client_of_app(&tenant, &app, &client).await?;
    Ok(axum::Json(tenant.revoke_client(&client).await?))
}
