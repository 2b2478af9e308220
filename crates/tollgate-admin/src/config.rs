//! `/config`: the declarative configuration as a whole (what `tollgate apply`,
//! `diff` and `export` do, over HTTP).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_core::config::{Config, ConfigError};
use tollgate_core::problem::Problem;
use tollgate_store::ChangeSet;

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::Document;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/config", get(export).put(apply))
        .route("/config/diff", post(diff))
}

fn parse(doc: &Document) -> Result<Config, ApiError> {
    Config::from_yaml(&doc.text, "request body").map_err(|e| match e {
        ConfigError::Parse { .. } | ConfigError::Invalid { .. } => {
            ApiError::Invalid(e.field_errors())
        }
        ConfigError::Io { .. } => ApiError::BadRequest(e.to_string()),
    })
}

/// The whole configuration, as YAML (`Accept: application/yaml`) or JSON.
#[utoipa::path(get, operation_id = "export_config", path = "/config", tag = "config", responses(
    (status = 200, body = Config, content_type = "application/json"),
    (status = 200, description = "The same as YAML", content_type = "application/yaml"),
))]
pub async fn export(State(s): State<AdminState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (revision, config) = s.store.export().await?;
    let rev = HeaderValue::from(revision);
    let wants_yaml = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("yaml"));
    let mut res = if wants_yaml {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            )],
            config.to_yaml(),
        )
            .into_response()
    } else {
        axum::Json(config).into_response()
    };
    res.headers_mut().insert("tollgate-config-revision", rev);
    Ok(res)
}

/// Replaces the whole configuration atomically; returns what changed.
#[utoipa::path(put, operation_id = "apply_config", path = "/config", tag = "config",
    request_body(content = Config, content_type = "application/yaml", description = "YAML or JSON"),
    responses((status = 200, body = ChangeSet), (status = 422, body = Problem)))]
pub async fn apply(
    State(s): State<AdminState>,
    doc: Document,
) -> Result<axum::Json<ChangeSet>, ApiError> {
    let config = parse(&doc)?;
    Ok(axum::Json(s.store.apply(&config).await?))
}

/// What `PUT /config` would change, without changing anything.
#[utoipa::path(post, operation_id = "diff_config", path = "/config/diff", tag = "config",
    request_body(content = Config, content_type = "application/yaml", description = "YAML or JSON"),
    responses((status = 200, body = ChangeSet), (status = 422, body = Problem)))]
pub async fn diff(
    State(s): State<AdminState>,
    doc: Document,
) -> Result<axum::Json<ChangeSet>, ApiError> {
    let config = parse(&doc)?;
    Ok(axum::Json(s.store.diff(&config).await?))
}
