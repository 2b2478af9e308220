//! Tollgate's admin API: the control plane's HTTP surface.
//!
//! One file per resource ([`services`], [`routes`], [`policies`], [`config`];
//! for identity [`orgs`], [`users`], [`members`], [`apps`], [`keys`],
//! [`oauth_clients`], [`jwt_issuers`] and [`signing_keys`]) holds its
//! `router()`, its handlers and their OpenAPI annotations. Credentials are
//! issued by [`issue`], which the `tollgate` CLI calls too; [`permissions`]
//! holds the member roles' rules. Input is
//! read by validated extractors ([`extract`]) and every error becomes an RFC
//! 9457 problem in one place ([`error`]). Requests need `Authorization:
//! Bearer <admin token>`, except `/healthz`, `/readyz` and `/openapi.json`.
//! The OpenAPI 3.1 document is generated from this code ([`openapi`]) and
//! committed as `docs/openapi.json`; a test fails when the copy is stale.

use std::sync::Arc;

use axum::Router;
use tollgate_store::Store;

pub mod apps;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod issue;
pub mod jwt_issuers;
pub mod keys;
pub mod members;
pub mod oauth_clients;
pub mod openapi;
pub mod orgs;
pub mod permissions;
pub mod policies;
pub mod routes;
pub mod services;
pub mod signing_keys;
pub mod status;
pub mod tenancy;
pub mod users;

pub use error::ApiError;
pub use status::NodeStatus;

/// Shared state of the admin API.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub store: Store,
    pub status: Arc<NodeStatus>,
    /// Hashes new API keys; the same pepper as the gateways'.
    pub pepper: tollgate_identity::apikey::Pepper,
    /// Lifetime of OAuth access tokens: a rotated signing key stays
    /// published this long (plus leeway) so its tokens keep verifying.
    pub token_ttl: std::time::Duration,
}

/// The whole admin API.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .merge(services::router())
        .merge(routes::router())
        .merge(policies::router())
        .merge(config::router())
        .merge(orgs::router())
        .merge(users::router())
        .merge(members::router())
        .merge(apps::router())
        .merge(keys::router())
        .merge(oauth_clients::router())
        .merge(jwt_issuers::router())
        .merge(signing_keys::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .merge(status::router())
        .merge(openapi::router())
        .merge(protected)
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .with_state(state)
}
