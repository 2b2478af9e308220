//! The OpenAPI 3.1 document of the admin API, generated from the handlers.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::AdminState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Configure Tollgate: services, routes, policies and the declarative configuration. Every error is an RFC 9457 problem with a stable `code`."),
    paths(
        crate::status::healthz, crate::status::readyz,
        crate::services::list, crate::services::create, crate::services::read, crate::services::replace, crate::services::patch, crate::services::remove,
        crate::routes::list, crate::routes::list_for_service, crate::routes::create, crate::routes::read, crate::routes::replace, crate::routes::patch, crate::routes::remove,
        crate::policies::list, crate::policies::create, crate::policies::read, crate::policies::replace, crate::policies::remove,
        crate::config::export, crate::config::apply, crate::config::diff,
    ),
    components(schemas(tollgate_core::problem::Problem, tollgate_core::problem::ErrorCode, tollgate_core::problem::FieldError)),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
    tags(
        (name = "services", description = "Upstream backends"),
        (name = "routes", description = "Matching rules that send requests to a service"),
        (name = "policies", description = "Gateway behaviours attached globally, to a service or to a route"),
        (name = "config", description = "The declarative configuration as a whole"),
        (name = "status", description = "Liveness and readiness"),
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
