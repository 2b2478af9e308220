//! RFC 9457 problem details with a stable machine-readable `code`.
//!
//! Every error that Tollgate itself produces, on the proxy listener or on the
//! admin API, is rendered from a [`Problem`]. Clients should branch on `code`;
//! `title` is fixed per code and `detail` explains this occurrence.

use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Base of the `type` URI; the code is appended. Documented in `docs/errors.md`.
pub const TYPE_BASE: &str = "https://tollgate.dev/problems/";

macro_rules! codes {
    ($($variant:ident = ($code:literal, $status:literal, $title:literal),)*) => {
        /// Stable error codes. The string form never changes once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }
            /// The HTTP status this code is answered with.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
            /// The fixed, human-readable summary of this code.
            pub const fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }
        }
    };
}

codes! {
    // Proxy listener.
    BadRequest = ("bad_request", 400, "Bad request"),
    RequestSmuggling = ("request_smuggling", 400, "Ambiguous message framing"),
    NoRoute = ("no_route", 404, "No route matches this request"),
    MethodNotAllowed = ("method_not_allowed", 405, "Method not allowed"),
    RequestTimeout = ("request_timeout", 408, "Request not received in time"),
    PayloadTooLarge = ("payload_too_large", 413, "Request body too large"),
    HeadersTooLarge = ("headers_too_large", 431, "Request header fields too large"),
    IpForbidden = ("ip_forbidden", 403, "Client address not allowed"),
    CredentialMissing = ("credential_missing", 401, "Credential required"),
    CredentialInvalid = ("credential_invalid", 401, "Credential not valid"),
    InsufficientScope = ("insufficient_scope", 403, "Insufficient scope"),
    CorsRejected = ("cors_rejected", 403, "Cross-origin request not allowed"),
    RateLimited = ("rate_limited", 429, "Rate limit exceeded"),
    QuotaExceeded = ("quota_exceeded", 429, "Quota exhausted for this period"),
    ConcurrencyLimited = ("concurrency_limited", 429, "Too many requests in flight"),
    SubscriptionRequired = ("subscription_required", 403, "Subscription required"),
    NotInPlan = ("not_in_plan", 403, "Not included in the plan"),
    LimiterUnavailable = ("limiter_unavailable", 503, "Rate limiter unavailable"),
    TransferCodingNotImplemented = ("transfer_coding_not_implemented", 501, "Transfer coding not implemented"),
    UpstreamUnavailable = ("upstream_unavailable", 502, "Upstream unavailable"),
    UpstreamError = ("upstream_error", 502, "Upstream sent an invalid response"),
    NoHealthyTarget = ("no_healthy_target", 503, "No healthy upstream target"),
    CircuitOpen = ("circuit_open", 503, "Upstream circuit open"),
    Overloaded = ("overloaded", 503, "Gateway overloaded"),
    UpstreamTimeout = ("upstream_timeout", 504, "Upstream timed out"),
    // Admin API.
    Unauthorized = ("unauthorized", 401, "Authentication required"),
    Forbidden = ("forbidden", 403, "Not allowed"),
    NotFound = ("not_found", 404, "Resource not found"),
    Conflict = ("conflict", 409, "Conflict with the current state"),
    ValidationFailed = ("validation_failed", 422, "Validation failed"),
    UnsupportedMediaType = ("unsupported_media_type", 415, "Unsupported media type"),
    StoreUnavailable = ("store_unavailable", 503, "Configuration store unavailable"),
    Internal = ("internal", 500, "Internal error"),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field-level validation error, reported inside a `validation_failed` problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where in the input the problem is, as a dotted path (`services[0].routes[1].paths[0]`).
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub code: ErrorCode,
    /// The request id of the request that failed, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level errors for `validation_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(code: ErrorCode) -> Self {
        Problem {
            type_: format!("{TYPE_BASE}{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail: None,
            code,
            request_id: None,
            errors: Vec::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// The serialised body.
    pub fn to_json(&self) -> Vec<u8> {
        // A Problem contains only strings and numbers; serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    pub fn status_code(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_valid() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            let status = http::StatusCode::from_u16(code.status()).expect("valid status");
            assert!(status.is_client_error() || status.is_server_error());
            let json = serde_json::to_value(code).expect("ser");
            assert_eq!(json, code.as_str());
        }
    }

    #[test]
    fn renders_rfc9457_members() {
        let p = Problem::new(ErrorCode::NoRoute)
            .detail("GET /x")
            .request_id("r1");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).expect("json");
        assert_eq!(v["type"], "https://tollgate.dev/problems/no_route");
        assert_eq!(v["status"], 404);
        assert_eq!(v["code"], "no_route");
        assert_eq!(v["title"], "No route matches this request");
        assert_eq!(v["detail"], "GET /x");
        assert_eq!(v["request_id"], "r1");
        assert!(v.get("errors").is_none());
    }
}
