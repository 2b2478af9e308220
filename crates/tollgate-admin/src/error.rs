//! The one place where admin API errors become responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_core::problem::{ErrorCode, FieldError, PROBLEM_JSON, Problem};
use tollgate_store::StoreError;

/// An admin API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure on our side that the caller cannot fix (the random
    /// generator, a blocking task). The message is logged, never sent.
    #[error("{0}")]
    Internal(String),
    /// The rate limiter cannot answer (none on this node, or its counter
    /// store is down). The message is logged, never sent; a retry later
    /// is safe.
    #[error("rate limiter unavailable: {0}")]
    LimiterUnavailable(String),
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::BadRequest(d) => Problem::new(ErrorCode::BadRequest).detail(d.clone()),
            ApiError::UnsupportedMediaType(d) => {
                Problem::new(ErrorCode::UnsupportedMediaType).detail(d.clone())
            }
            ApiError::NotFound(d) => Problem::new(ErrorCode::NotFound).detail(d.clone()),
            ApiError::Unauthorized => Problem::new(ErrorCode::Unauthorized)
                .detail("send `Authorization: Bearer <admin token>`"),
            ApiError::PayloadTooLarge(d) => {
                Problem::new(ErrorCode::PayloadTooLarge).detail(d.clone())
            }
            ApiError::Invalid(errors) => Problem::new(ErrorCode::ValidationFailed)
                .detail(summary(errors))
                .with_errors(errors.clone()),
            ApiError::Internal(_) => {
                Problem::new(ErrorCode::Internal).detail("internal error; see the server log")
            }
            ApiError::LimiterUnavailable(_) => Problem::new(ErrorCode::LimiterUnavailable)
                .detail("the rate limiter cannot report quota usage right now; retry later"),
            ApiError::Store(e) => match e {
                StoreError::NotFound { .. } => {
                    Problem::new(ErrorCode::NotFound).detail(e.to_string())
                }
                StoreError::Conflict(m) => Problem::new(ErrorCode::Conflict).detail(m.clone()),
                StoreError::Invalid(errors) => Problem::new(ErrorCode::ValidationFailed)
                    .detail(summary(errors))
                    .with_errors(errors.clone()),
                StoreError::Unavailable(_) => Problem::new(ErrorCode::StoreUnavailable).detail(
                    "the configuration store cannot be reached; nothing was changed, retry later",
                ),
                StoreError::Corrupt(_) | StoreError::Internal(_) => {
                    Problem::new(ErrorCode::Internal).detail("internal error; see the server log")
                }
            },
        }
    }
}

fn summary(errors: &[FieldError]) -> String {
    match errors {
        [one] if one.path.is_empty() => one.reason.clone(),
        [one] => format!("{}: {}", one.path, one.reason),
        many => format!("{} problems in the input; see `errors`", many.len()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(e) = &self
            && !matches!(
                e,
                StoreError::NotFound { .. } | StoreError::Conflict(_) | StoreError::Invalid(_)
            )
        {
            tracing::error!(error = %e, "admin request failed in the store");
        }
        if let ApiError::Internal(message) = &self {
            tracing::error!(error = %message, "admin request failed");
        }
        if let ApiError::LimiterUnavailable(message) = &self {
            tracing::warn!(error = %message, "quota usage unavailable");
        }
        let mut res = problem_response(&self.problem());
        if matches!(self, ApiError::Unauthorized) {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
            );
        }
        res
    }
}

/// Renders any problem as a response.
pub fn problem_response(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        p.to_json(),
    )
        .into_response()
}

pub async fn not_found_fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no admin endpoint at `{}`", uri.path()))
}

pub async fn method_not_allowed_fallback(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    problem_response(
        &Problem::new(ErrorCode::MethodNotAllowed)
            .detail(format!("{method} is not allowed on `{}`", uri.path())),
    )
}
