//! Tollgate's admin API: the control plane's HTTP surface.
//!
//! One file per resource ([`services`], [`routes`], [`policies`], [`config`];
//! for identity [`orgs`], [`users`], [`members`], [`apps`], [`keys`],
//! [`oauth_clients`], [`jwt_issuers`] and [`signing_keys`]; for traffic
//! control [`plans`], [`subscriptions`] and [`usage`]; [`analytics`]) holds its
//! `router()`, its handlers and their OpenAPI annotations. Credentials are
//! issued by [`issue`], which the `tollgate` CLI calls too; [`permissions`]
//! holds the member roles' rules. Input is
//! read by validated extractors ([`extract`]) and every error becomes an RFC
//! 9457 problem in one place ([`error`]). Requests need `Authorization:
//! Bearer <admin token>`, except `/healthz`, `/readyz`, `/metrics` and `/openapi.json`.
//! Every write to a protected route is recorded in the audit log
//! ([`audit`]), which `/audit` reads.
//! The OpenAPI 3.1 document is generated from this code ([`openapi`]) and
//! committed as `docs/openapi.json`; a test fails when the copy is stale.

use std::sync::Arc;

use axum::Router;
use tollgate_store::Store;

pub mod analytics;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod issue;
pub mod jwt_issuers;
pub mod keys;
pub mod members;
pub mod metrics;
pub mod oauth_clients;
pub mod openapi;
pub mod orgs;
pub mod permissions;
pub mod plans;
pub mod policies;
pub mod routes;
pub mod services;
pub mod signing_keys;
pub mod status;
pub mod subscriptions;
pub mod tenancy;
pub mod usage;
pub mod users;

pub use error::ApiError;
pub use status::NodeStatus;
pub use usage::{QuotaUsage, UsageReader};

/// Shared state of the admin API.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub status: Arc<NodeStatus>,
    /// Hashes new API keys; the same pepper as the gateways'.
    pub pepper: tollgate_identity::apikey::Pepper,
    /// Lifetime of OAuth access tokens: a rotated signing key stays
    /// published this long (plus leeway) so its tokens keep verifying.
    pub token_ttl: std::time::Duration,
    /// Reads quota use from the node's live rate limiter for
    /// `GET /orgs/{org}/usage`; without one, quota use is answered 503
    /// `limiter_unavailable`.
    pub usage: Option<Arc<dyn UsageReader>>,
    /// What `GET /metrics` reports.
    pub metrics: metrics::Sources,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store)
            .field("status", &self.status)
            .field("pepper", &self.pepper)
            .field("token_ttl", &self.token_ttl)
            .field("usage", &self.usage.as_ref().map(|_| "UsageReader"))
            .field("metrics", &self.metrics.len())
            .finish()
    }
}

/// The whole admin API. Protected routes pass [`auth::require_admin`],
/// then [`audit::record`], which records their writes; the audit log's
/// failure counter joins `state.metrics`.
pub fn router(mut state: AdminState) -> Router {
    let audit_metrics = Arc::new(audit::AuditMetrics::default());
    state.metrics.push(audit_metrics.clone());
    let resources = Router::new()
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
        .merge(plans::router())
        .merge(subscriptions::router())
        .merge(usage::router())
        .merge(analytics::router())
        .merge(audit::router());
    // The same routes without authentication or recording, only called in
    // process to read a resource before it is written.
    let reader = resources.clone().with_state(state.clone());
    let recorder = audit::Recorder::new(state.store.clone(), reader, audit_metrics);
    // The last layer runs first: authentication, then recording.
    let protected = resources
        .route_layer(axum::middleware::from_fn_with_state(
            recorder,
            audit::record,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .merge(status::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .merge(protected)
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .with_state(state)
}
