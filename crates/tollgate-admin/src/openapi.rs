//! The OpenAPI 3.1 document of the admin API, generated from the handlers.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::AdminState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Configure Tollgate: services, routes, policies, the declarative configuration, identity (organizations, users, apps and their credentials), traffic control (plans, subscriptions and quota usage), analytics, and the audit log of every write. Every error is an RFC 9457 problem with a stable `code`."),
    paths(
        crate::status::healthz, crate::status::readyz, crate::metrics::metrics,
        crate::services::list, crate::services::create, crate::services::read, crate::services::replace, crate::services::patch, crate::services::remove,
        crate::routes::list, crate::routes::list_for_service, crate::routes::create, crate::routes::read, crate::routes::replace, crate::routes::patch, crate::routes::remove,
        crate::policies::list, crate::policies::create, crate::policies::read, crate::policies::replace, crate::policies::remove,
        crate::config::export, crate::config::apply, crate::config::diff,
        crate::orgs::list, crate::orgs::create, crate::orgs::read, crate::orgs::patch, crate::orgs::remove,
        crate::users::list, crate::users::create, crate::users::read,
        crate::members::list, crate::members::create, crate::members::read, crate::members::patch, crate::members::remove,
        crate::apps::list, crate::apps::create, crate::apps::read, crate::apps::patch, crate::apps::remove,
        crate::keys::list, crate::keys::create, crate::keys::read, crate::keys::patch, crate::keys::revoke, crate::keys::rotate,
        crate::oauth_clients::list, crate::oauth_clients::create, crate::oauth_clients::read, crate::oauth_clients::reset_secret, crate::oauth_clients::revoke,
        crate::jwt_issuers::list, crate::jwt_issuers::read, crate::jwt_issuers::put, crate::jwt_issuers::remove,
        crate::signing_keys::list, crate::signing_keys::read, crate::signing_keys::rotate,
        crate::plans::list, crate::plans::create, crate::plans::read, crate::plans::replace, crate::plans::remove,
        crate::subscriptions::list, crate::subscriptions::create, crate::subscriptions::read, crate::subscriptions::patch, crate::subscriptions::remove,
        crate::usage::read,
        crate::analytics::operator, crate::analytics::for_org,
        crate::audit::list, crate::audit::export,
    ),
    components(schemas(tollgate_core::problem::Problem, tollgate_core::problem::ErrorCode, tollgate_core::problem::FieldError)),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
    tags(
        (name = "services", description = "Upstream backends"),
        (name = "routes", description = "Matching rules that send requests to a service"),
        (name = "policies", description = "Gateway behaviours attached globally, to a service or to a route"),
        (name = "config", description = "The declarative configuration as a whole"),
        (name = "organizations", description = "Tenants: they own members and apps"),
        (name = "users", description = "People, who join organizations as members"),
        (name = "members", description = "Who belongs to an organization, with which role"),
        (name = "apps", description = "An organization's applications: the identities the gateway sees"),
        (name = "api keys", description = "An app's API keys; a key's secret is shown once"),
        (name = "oauth clients", description = "An app's OAuth2 clients (client credentials); a secret is shown once"),
        (name = "jwt issuers", description = "External identity providers whose JWTs the gateway trusts"),
        (name = "signing keys", description = "The keys Tollgate's OAuth server signs access tokens with"),
        (name = "plans", description = "Named tiers of rate limits, a monthly quota, APIs, scopes and prices"),
        (name = "subscriptions", description = "An organization's, app's or key's plan for an API, and its quota usage"),
        (name = "analytics", description = "Requests, errors, bytes and latency percentiles per time bucket"),
        (name = "status", description = "Liveness, readiness and metrics"),
        (name = "audit", description = "The append-only record of every write through this API, with secrets redacted"),
    )
)]
pub struct AdminApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON text, as committed in `docs/openapi.json`.
pub fn document() -> String {
    let mut doc = AdminApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default() + "\n"
}

pub fn router() -> Router<AdminState> {
    Router::new().route(
        "/openapi.json",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                document(),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    /// The committed document must match the code. Regenerate with
    /// `TOLLGATE_BLESS=1 cargo test -p tollgate-admin`.
    #[test]
    fn committed_openapi_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let fresh = super::document();
        if std::env::var_os("TOLLGATE_BLESS").is_some() {
            std::fs::write(&path, &fresh).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "docs/openapi.json is stale; run TOLLGATE_BLESS=1 cargo test -p tollgate-admin"
        );
        let v: serde_json::Value = serde_json::from_str(&fresh).expect("json");
        assert!(v["openapi"].as_str().expect("version").starts_with("3.1"));
    }
}
