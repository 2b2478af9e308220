//! Verification of JWT bearer tokens from the issuers the gateway trusts:
//! the external issuers of the configuration (`jwt_issuers`) and Tollgate's
//! own OAuth server (the platform issuer). A token's unverified `iss` picks
//! the issuer; the issuer's one pinned algorithm, its keys (JWKS, shared
//! secret or static platform keys), its audiences and its leeway decide the
//! rest. Header parameters that would let a token choose its own key (`jku`,
//! `x5u`, `x5c`, `jwk`) are never looked at.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tollgate_core::config::{ClaimMapping, JwtAlgorithm, JwtIssuerSpec};

use crate::jwks::{JwksCache, KeySource, Miss};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// `VerifiedToken::issuer_name` of tokens from the platform issuer.
pub const PLATFORM_NAME: &str = "tollgate";
/// The claim platform tokens carry the organization in.
pub const PLATFORM_ORG_CLAIM: &str = "org_id";
/// The claim of platform tokens naming the app.
pub const PLATFORM_APP_CLAIM: &str = "app_id";

/// Why a token was refused. `Display` is a short message that is safe to
/// show the client: it never contains the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWS")]
    Malformed,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("tokens of this issuer are not accepted here")]
    IssuerNotAllowed,
    #[error("the token is signed with {got}, but its issuer uses {expected}")]
    AlgorithmMismatch { expected: &'static str, got: String },
    #[error("no key of the issuer matches the token")]
    UnknownKey { kid: Option<String> },
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token is not an access token (typ must be at+jwt)")]
    WrongType,
    #[error("the keys of issuer `{issuer}` are unavailable")]
    KeysUnavailable { issuer: Arc<str> },
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's key id is missing")]
    MissingKeyId,
}

impl JwtError {
    /// Whether the failure lies with the issuer (its keys could not be
    /// loaded) rather than with the token; retrying later may succeed.
    pub fn is_upstream(&self) -> bool {
        matches!(self, JwtError::KeysUnavailable { .. })
    }
}

/// What a verified token says about its caller.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The issuer's configured name, or `"tollgate"` for the platform issuer.
    pub issuer_name: Arc<str>,
    /// Verified by the platform issuer.
    pub platform: bool,
    pub subject: Option<String>,
    /// From the mapped organization claim, else the issuer's fixed one.
    pub organization: Option<String>,
    /// From the mapped app claim (default `azp`), else `client_id`.
    pub app: Option<String>,
    /// From the mapped scope claim (default `scope`), else `scp`.
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    /// `exp`, in unix seconds.
    pub expires_at: Option<i64>,
    pub claims: Map<String, Value>,
}

/// Tollgate's own token issuer, verified with a static key set.
#[derive(Clone)]
pub struct PlatformIssuer {
    pub issuer: String,
    pub audience: String,
    /// `(kid, key)` pairs; tokens must name one of them.
    pub keys: Vec<(String, DecodingKey)>,
    pub algorithm: JwtAlgorithm,
    pub leeway: tollgate_core::Duration,
}

/// Every issuer the gateway trusts. Cheap to share (`Arc`) across worker
/// threads and runtimes; config reloads swap its content in place.
pub struct Issuers {
    state: RwLock<Arc<State>>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.snapshot();
        f.debug_struct("Issuers")
            .field(
                "external",
                &state.external.iter().map(|e| &*e.name).collect::<Vec<_>>(),
            )
            .field("platform", &state.platform.as_ref().map(|p| &p.issuer))
            .finish()
    }
}

impl std::fmt::Debug for PlatformIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "kids",
                &self.keys.iter().map(|(kid, _)| kid).collect::<Vec<_>>(),
            )
            .field("algorithm", &self.algorithm)
            .field("leeway", &self.leeway)
            .finish()
    }
}

#[derive(Default)]
struct State {
    external: Vec<Arc<External>>,
    platform: Option<Arc<Platform>>,
}

enum Keys {
    Secret(DecodingKey),
    SecretMissing,
    Jwks(Arc<JwksCache>),
}

struct External {
    name: Arc<str>,
    issuer: String,
    algorithm: JwtAlgorithm,
    validation: Validation,
    ttl: Duration,
    refetch_interval: Duration,
    claims: ClaimMapping,
    organization: Option<String>,
    keys: Keys,
}

struct Platform {
    issuer: String,
    algorithm: JwtAlgorithm,
    validation: Validation,
    keys: HashMap<String, DecodingKey>,
    claims: ClaimMapping,
}

/// The unverified parts of a token that select how it is verified.
struct Unverified {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    iss: String,
}

impl Issuers {
    pub fn new() -> Arc<Issuers> {
        Arc::new(Issuers {
            state: RwLock::new(Arc::new(State::default())),
        })
    }

    fn snapshot(&self) -> Arc<State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, f: impl FnOnce(&State) -> State) {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        let next = f(&guard);
        *guard = Arc::new(next);
    }

    /// Installs the configured issuers (called on every config reload). JWKS
    /// caches of issuers whose `(issuer, key source)` did not change are
    /// kept. HS256 secrets are read from the environment variable named by
    /// `secret_env` now; when it is missing or empty the issuer refuses every
    /// token (logged once per install).
    pub fn install(&self, specs: &[JwtIssuerSpec]) {
        self.replace(|old| {
            let mut caches: HashMap<(String, KeySource), Arc<JwksCache>> = old
                .external
                .iter()
                .filter_map(|e| match &e.keys {
                    Keys::Jwks(cache) => {
                        let (issuer, source) = cache.identity();
                        Some(((issuer.to_owned(), source.clone()), cache.clone()))
                    }
                    _ => None,
                })
                .collect();
            let external = specs
                .iter()
                .map(|spec| Arc::new(External::new(spec, &mut caches)))
                .collect();
            State {
                external,
                platform: old.platform.clone(),
            }
        });
    }

    /// Also trusts (or, with `None`, stops trusting) Tollgate's own issuer.
    pub fn set_platform(&self, platform: Option<PlatformIssuer>) {
        let platform = platform.map(|p| Arc::new(Platform::new(p)));
        self.replace(|old| State {
            external: old.external.clone(),
            platform,
        });
    }

    /// Verifies a compact JWS. `allowed` restricts the external issuers to
    /// these names (empty: any); it does not apply to platform tokens, whose
    /// acceptance the caller decides from `VerifiedToken::platform`.
    pub async fn verify(&self, token: &str, allowed: &[String]) -> Result<VerifiedToken, JwtError> {
        let unverified = Unverified::parse(token)?;
        let state = self.snapshot();
        if let Some(platform) = &state.platform
            && platform.issuer == unverified.iss
        {
            return platform.verify(token, &unverified);
        }
        let candidates: Vec<&Arc<External>> = state
            .external
            .iter()
            .filter(|e| e.issuer == unverified.iss)
            .collect();
        if candidates.is_empty() {
            return Err(JwtError::UnknownIssuer);
        }
        let mut first_error = None;
        for issuer in candidates {
            if !allowed.is_empty() && !allowed.iter().any(|a| **a == *issuer.name) {
                continue;
            }
            match issuer.verify(token, &unverified).await {
                Ok(verified) => return Ok(verified),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(JwtError::IssuerNotAllowed))
    }
}

impl Unverified {
    fn parse(token: &str) -> Result<Unverified, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = decode_object(header)?;
        let claims = decode_object(payload)?;
        let text = |map: &Map<String, Value>, name: &str| match map.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JwtError::Malformed),
        };
        let alg = text(&header, "alg")?.ok_or(JwtError::Malformed)?;
        Ok(Unverified {
            alg,
            kid: text(&header, "kid")?,
            typ: text(&header, "typ")?,
            iss: text(&claims, "iss")?.ok_or(JwtError::MissingClaim("iss"))?,
        })
    }

    /// The pinned algorithm, if the token's `alg` is it.
    fn check_alg(&self, pinned: JwtAlgorithm) -> Result<(), JwtError> {
        if self.alg == pinned.as_str() {
            return Ok(());
        }
        const KNOWN: [&str; 15] = [
            "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
            "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519",
        ];
        let got = KNOWN
            .iter()
            .find(|k| k.eq_ignore_ascii_case(&self.alg))
            .map_or("an unsupported algorithm", |k| *k);
        Err(JwtError::AlgorithmMismatch {
            expected: pinned.as_str(),
            got: got.to_owned(),
        })
    }
}

fn decode_object(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed),
    }
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Validation pinned to one algorithm, requiring `exp`, `iss` and `aud`
/// and checking `nbf` when present.
fn validation(
    alg: JwtAlgorithm,
    issuer: &str,
    audiences: &[String],
    leeway: Duration,
) -> Validation {
    let mut v = Validation::new(algorithm(alg));
    v.leeway = leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_issuer(&[issuer]);
    v.set_audience(audiences);
    v.required_spec_claims = HashSet::from(["exp".to_owned(), "iss".to_owned(), "aud".to_owned()]);
    v
}

/// Checks signature and claims, mapping `jsonwebtoken`'s errors to ours.
fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, JwtError> {
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidAudience => JwtError::WrongAudience,
            ErrorKind::InvalidIssuer => JwtError::UnknownIssuer,
            ErrorKind::MissingRequiredClaim(claim) => {
                JwtError::MissingClaim(match claim.as_str() {
                    "exp" => "exp",
                    "iss" => "iss",
                    "aud" => "aud",
                    "nbf" => "nbf",
                    _ => "sub",
                })
            }
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::Crypto(_) => JwtError::BadSignature,
            _ => JwtError::Malformed,
        }),
    }
}

impl External {
    fn new(
        spec: &JwtIssuerSpec,
        caches: &mut HashMap<(String, KeySource), Arc<JwksCache>>,
    ) -> External {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let keys = if spec.algorithm.is_symmetric() {
            let var = spec.secret_env.as_deref().unwrap_or_default();
            match std::env::var(var) {
                Ok(secret) if !secret.is_empty() => {
                    if secret.len() < 32 {
                        tracing::warn!(
                            issuer = %name,
                            env = var,
                            "the HS256 secret is shorter than 32 bytes (RFC 7518 section 3.2)"
                        );
                    }
                    Keys::Secret(DecodingKey::from_secret(secret.as_bytes()))
                }
                _ => {
                    tracing::error!(
                        issuer = %name,
                        env = var,
                        "the environment variable holding the HS256 secret is unset or empty; \
                         every token of this issuer is refused"
                    );
                    Keys::SecretMissing
                }
            }
        } else {
            let source = KeySource::for_issuer(
                &spec.issuer,
                spec.jwks_url.as_deref(),
                spec.discovery_url.as_deref(),
            );
            let key = (spec.issuer.clone(), source.clone());
            let cache = caches
                .entry(key)
                .or_insert_with(|| Arc::new(JwksCache::new(&spec.issuer, name.clone(), source)));
            Keys::Jwks(cache.clone())
        };
        External {
            name,
            issuer: spec.issuer.clone(),
            algorithm: spec.algorithm,
            validation: validation(
                spec.algorithm,
                &spec.issuer,
                &spec.audiences,
                spec.leeway.get(),
            ),
            ttl: spec.jwks_cache_ttl.get(),
            refetch_interval: spec.jwks_refetch_interval.get(),
            claims: spec.claims.clone(),
            organization: spec.organization.as_ref().map(|o| o.as_str().to_owned()),
            keys,
        }
    }

    async fn verify(
        &self,
        token: &str,
        unverified: &Unverified,
    ) -> Result<VerifiedToken, JwtError> {
        unverified.check_alg(self.algorithm)?;
        let kid = unverified.kid.as_deref();
        let key = match &self.keys {
            Keys::Secret(key) => key.clone(),
            Keys::SecretMissing => {
                return Err(JwtError::KeysUnavailable {
                    issuer: self.name.clone(),
                });
            }
            Keys::Jwks(cache) => cache
                .key(kid, self.algorithm, self.ttl, self.refetch_interval)
                .await
                .map_err(|miss| match miss {
                    Miss::UnknownKey => JwtError::UnknownKey {
                        kid: kid.map(|k| k.chars().take(64).collect()),
                    },
                    Miss::NoKeys => JwtError::KeysUnavailable {
                        issuer: self.name.clone(),
                    },
                })?,
        };
        let claims = decode(token, &key, &self.validation)?;
        Ok(verified(
            self.name.clone(),
            false,
            claims,
            &self.claims,
            self.organization.as_deref(),
        ))
    }
}

impl Platform {
    fn new(p: PlatformIssuer) -> Platform {
        Platform {
            validation: validation(p.algorithm, &p.issuer, &[p.audience], p.leeway.get()),
            issuer: p.issuer,
            algorithm: p.algorithm,
            keys: p.keys.into_iter().collect(),
            claims: ClaimMapping {
                organization: Some(PLATFORM_ORG_CLAIM.to_owned()),
                app: PLATFORM_APP_CLAIM.to_owned(),
                ..ClaimMapping::default()
            },
        }
    }

    fn verify(&self, token: &str, unverified: &Unverified) -> Result<VerifiedToken, JwtError> {
        let typ_ok = unverified.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(JwtError::WrongType);
        }
        unverified.check_alg(self.algorithm)?;
        let kid = unverified.kid.as_deref().ok_or(JwtError::MissingKeyId)?;
        let key = self.keys.get(kid).ok_or_else(|| JwtError::UnknownKey {
            kid: Some(kid.chars().take(64).collect()),
        })?;
        let claims = decode(token, key, &self.validation)?;
        Ok(verified(
            Arc::from(PLATFORM_NAME),
            true,
            claims,
            &self.claims,
            None,
        ))
    }
}

fn verified(
    issuer_name: Arc<str>,
    platform: bool,
    claims: Map<String, Value>,
    mapping: &ClaimMapping,
    fixed_organization: Option<&str>,
) -> VerifiedToken {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let scopes = |name: &str| match claims.get(name)? {
        Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    };
    VerifiedToken {
        issuer_name,
        platform,
        subject: text("sub"),
        organization: mapping
            .organization
            .as_deref()
            .and_then(text)
            .or_else(|| fixed_organization.map(str::to_owned)),
        app: text(&mapping.app).or_else(|| text("client_id")),
        scopes: scopes(&mapping.scopes)
            .or_else(|| scopes("scp"))
            .unwrap_or_default(),
        jti: text("jti"),
        expires_at: claims.get("exp").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        }),
        claims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_echo_the_token() {
        let alg = "<script>alert(1)</script>".to_owned();
        let unverified = Unverified {
            alg,
            kid: None,
            typ: None,
            iss: String::new(),
        };
        let shown = unverified
            .check_alg(JwtAlgorithm::RS256)
            .unwrap_err()
            .to_string();
        assert!(shown.contains("an unsupported algorithm"), "{shown}");
        assert!(!shown.contains("script"), "{shown}");
        let kid = Some("kid-secret-value".to_owned());
        assert!(!JwtError::UnknownKey { kid }.to_string().contains("secret"));
    }
}
