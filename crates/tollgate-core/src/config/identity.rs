//! Configuration of authentication: the `auth` policy (what a route accepts
//! and which scopes it needs) and the external JWT issuers the gateway trusts.
//! Nothing here is secret: an HS256 issuer names the environment variable
//! that holds its shared secret, never the secret itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::Errors;
use crate::duration::Duration;
use crate::identity::{CredentialType, KeyEnvironment};
use crate::ids::OrgId;

/// Where the gateway looks for an API key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// `Authorization: Bearer tg_live_...`.
    Bearer,
    /// `X-API-Key: tg_live_...`.
    XApiKey,
}

/// The `auth` policy: a route (or service, or every route) requires a
/// credential of one of the accepted types, carrying every listed scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Credential types this route accepts. Default: all three.
    #[serde(default = "default_accept")]
    pub accept: Vec<CredentialType>,
    /// Scopes the credential must carry, all of them. A credential without
    /// one of them is refused with 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Where an API key may be sent. Default: both.
    #[serde(default = "default_key_sources")]
    pub key_sources: Vec<KeySource>,
    /// Only JWTs from these issuers (by `jwt_issuers[].name`) are accepted.
    /// Empty accepts every configured issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
    /// Only keys of this environment are accepted. Unset accepts both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<KeyEnvironment>,
    /// Remove the credential (`Authorization`, `X-API-Key`) before the
    /// request goes upstream. The upstream learns the caller from the
    /// gateway's identity headers instead.
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            accept: default_accept(),
            scopes: Vec::new(),
            key_sources: default_key_sources(),
            issuers: Vec::new(),
            environment: None,
            hide_credentials: true,
        }
    }
}

fn default_accept() -> Vec<CredentialType> {
    vec![
        CredentialType::ApiKey,
        CredentialType::Jwt,
        CredentialType::Oauth,
    ]
}

fn default_key_sources() -> Vec<KeySource> {
    vec![KeySource::Bearer, KeySource::XApiKey]
}

fn default_true() -> bool {
    true
}

/// A JWS algorithm. Each issuer is pinned to exactly one; a token's header
/// never chooses it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// A shared-secret algorithm rather than a public-key one.
    pub const fn is_symmetric(self) -> bool {
        matches!(self, JwtAlgorithm::HS256)
    }
}

/// Which claims carry the caller's organization, app and scopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    /// Claim holding the organization id. Unset: the issuer's fixed
    /// `organization`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Claim holding the app id (default `azp`, falling back to `client_id`).
    #[serde(default = "default_app_claim")]
    pub app: String,
    /// Claim holding the scopes: a space-separated string or an array
    /// (default `scope`, falling back to `scp`).
    #[serde(default = "default_scope_claim")]
    pub scopes: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            organization: None,
            app: default_app_claim(),
            scopes: default_scope_claim(),
        }
    }
}

fn default_app_claim() -> String {
    "azp".into()
}
fn default_scope_claim() -> String {
    "scope".into()
}

/// An external token issuer the gateway trusts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerSpec {
    /// Unique name, referenced by `auth.issuers`.
    pub name: String,
    /// The exact `iss` value of this issuer's tokens.
    pub issuer: String,
    /// Accepted audiences; a token's `aud` must contain at least one.
    pub audiences: Vec<String>,
    /// The one algorithm this issuer signs with.
    pub algorithm: JwtAlgorithm,
    /// Where the issuer's JWKS is published. Give this, or `discovery_url`,
    /// or neither to use OIDC discovery at
    /// `{issuer}/.well-known/openid-configuration`. Not used with HS256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// An OIDC discovery document whose `jwks_uri` names the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// HS256 only: the environment variable holding the shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// How long a fetched JWKS is used before it is fetched again.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_cache_ttl: Duration,
    /// The shortest time between two fetches caused by an unknown `kid`.
    #[serde(default = "default_refetch_interval")]
    pub jwks_refetch_interval: Duration,
    /// Which claims carry the organization, app and scopes.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Every token of this issuer belongs to this organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<OrgId>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_refetch_interval() -> Duration {
    Duration::from_secs(30)
}

fn check_url(url: &str, at: &str, errs: &mut Errors) {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        errs.push(at, format!("`{url}` is not an absolute http(s) URL"));
    }
}

pub(super) fn issuer(spec: &JwtIssuerSpec, at: &str, errs: &mut Errors) {
    if spec.issuer.trim().is_empty() {
        errs.push(format!("{at}.issuer"), "must not be empty");
    }
    if spec.audiences.is_empty() || spec.audiences.iter().any(|a| a.is_empty()) {
        errs.push(
            format!("{at}.audiences"),
            "must list at least one non-empty audience (RFC 8725 3.9)",
        );
    }
    if spec.algorithm.is_symmetric() {
        match &spec.secret_env {
            Some(v) if !v.is_empty() => {}
            _ => errs.push(
                format!("{at}.secret_env"),
                "HS256 needs the name of the environment variable holding the shared secret",
            ),
        }
        if spec.jwks_url.is_some() || spec.discovery_url.is_some() {
            errs.push(
                at,
                "an HS256 issuer uses a shared secret; drop `jwks_url` and `discovery_url`",
            );
        }
    } else {
        if spec.secret_env.is_some() {
            errs.push(
                format!("{at}.secret_env"),
                format!(
                    "only HS256 uses a shared secret, not {}",
                    spec.algorithm.as_str()
                ),
            );
        }
        if spec.jwks_url.is_some() && spec.discovery_url.is_some() {
            errs.push(at, "give `jwks_url` or `discovery_url`, not both");
        }
        if let Some(u) = &spec.jwks_url {
            check_url(u, &format!("{at}.jwks_url"), errs);
        }
        if let Some(u) = &spec.discovery_url {
            check_url(u, &format!("{at}.discovery_url"), errs);
        }
        if spec.jwks_url.is_none() && spec.discovery_url.is_none() {
            check_url(&spec.issuer, &format!("{at}.issuer"), errs);
        }
    }
    if spec.leeway.get() > std::time::Duration::from_secs(300) {
        errs.push(format!("{at}.leeway"), "must be at most 5m");
    }
    if spec.jwks_refetch_interval.get() < std::time::Duration::from_secs(1) {
        errs.push(format!("{at}.jwks_refetch_interval"), "must be at least 1s");
    }
    if spec.jwks_cache_ttl.is_zero() {
        errs.push(format!("{at}.jwks_cache_ttl"), "must be above 0");
    }
}

pub(super) fn auth(c: &AuthConfig, issuers: Option<&[JwtIssuerSpec]>, at: &str, errs: &mut Errors) {
    if c.accept.is_empty() {
        errs.push(
            format!("{at}.accept"),
            "must list at least one credential type",
        );
    }
    if c.accept.contains(&CredentialType::ApiKey) && c.key_sources.is_empty() {
        errs.push(
            format!("{at}.key_sources"),
            "API keys are accepted, so at least one key source is needed",
        );
    }
    for (i, s) in c.scopes.iter().enumerate() {
        if s.is_empty()
            || s.chars()
                .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '"' || ch == '\\')
        {
            errs.push(
                format!("{at}.scopes[{i}]"),
                "a scope is a non-empty token without spaces, quotes or backslashes (RFC 6749 3.3)",
            );
        }
    }
    if let Some(known) = issuers {
        for (i, name) in c.issuers.iter().enumerate() {
            if !known.iter().any(|k| &k.name == name) {
                errs.push(
                    format!("{at}.issuers[{i}]"),
                    format!("no JWT issuer is named `{name}`"),
                );
            }
        }
    }
}
