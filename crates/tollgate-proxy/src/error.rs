//! Proxy errors, and the one place they become responses.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tollgate_core::problem::{ErrorCode, PROBLEM_JSON, Problem};

use crate::body::ProxyBody;

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Gateway,
}

/// An error the gateway answers for itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Smuggling(&'static str),
    #[error("{0}")]
    CodingNotImplemented(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("route `{route}` does not accept {method}")]
    MethodNotAllowed {
        route: String,
        method: String,
        allow: String,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the request body was not received in time")]
    RequestTimeout,
    #[error("could not connect to {target}: {source}")]
    UpstreamConnect {
        target: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{target} did not answer in time")]
    UpstreamTimeout { target: String },
    #[error("{target} failed: {source}")]
    UpstreamProtocol {
        target: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("service `{service}` has no healthy target")]
    NoHealthyTarget { service: String },
    #[error("the circuit for service `{service}` is open")]
    CircuitOpen { service: String },
}

impl ProxyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProxyError::Smuggling(_) => ErrorCode::RequestSmuggling,
            ProxyError::CodingNotImplemented(_) => ErrorCode::TransferCodingNotImplemented,
            ProxyError::BadRequest(_) => ErrorCode::BadRequest,
            ProxyError::HeadersTooLarge(_) => ErrorCode::HeadersTooLarge,
            ProxyError::NoRoute { .. } => ErrorCode::NoRoute,
            ProxyError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ProxyError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ProxyError::RequestTimeout => ErrorCode::RequestTimeout,
            ProxyError::UpstreamConnect { .. } => ErrorCode::UpstreamUnavailable,
            ProxyError::UpstreamTimeout { .. } => ErrorCode::UpstreamTimeout,
            ProxyError::UpstreamProtocol { .. } => ErrorCode::UpstreamError,
            ProxyError::NoHealthyTarget { .. } => ErrorCode::NoHealthyTarget,
            ProxyError::CircuitOpen { .. } => ErrorCode::CircuitOpen,
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::Smuggling(_)
            | ProxyError::CodingNotImplemented(_)
            | ProxyError::BadRequest(_)
            | ProxyError::HeadersTooLarge(_)
            | ProxyError::NoRoute { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::RequestTimeout => Origin::Client,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamProtocol { .. } => Origin::Upstream,
            ProxyError::NoHealthyTarget { .. } | ProxyError::CircuitOpen { .. } => Origin::Gateway,
        }
    }

    /// Whether trying again (on another target) is safe whatever the method:
    /// only when nothing reached the upstream.
    pub fn retry_safe(&self) -> bool {
        matches!(self, ProxyError::UpstreamConnect { .. })
    }

    /// Whether the connection must close after the answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::Smuggling(_)
                | ProxyError::CodingNotImplemented(_)
                | ProxyError::PayloadTooLarge { .. }
                | ProxyError::RequestTimeout
        )
    }

    pub fn to_problem(&self, request_id: &HeaderValue) -> Problem {
        let p = Problem::new(self.code()).detail(self.to_string());
        match request_id.to_str() {
            Ok(id) => p.request_id(id),
            Err(_) => p,
        }
    }

    /// The response for this error: problem+json, and `Connection: close` when
    /// the rest of the connection cannot be trusted.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let mut res = problem_response(&self.to_problem(request_id));
        if let ProxyError::MethodNotAllowed { allow, .. } = &self
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            res.headers_mut().insert(header::ALLOW, v);
        }
        if self.closes_connection() {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// Renders a problem document as a response.
pub fn problem_response(p: &Problem) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(p.to_json()));
    *res.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
