//! The `auth` policy: requires a credential of an accepted type carrying the
//! route's scopes, and tells the upstream who is calling.
//!
//! - No credential: 401 `credential_missing`, `WWW-Authenticate: Bearer`.
//! - A credential that fails (malformed, bad checksum, unknown, expired,
//!   revoked, bad signature, wrong issuer/audience/algorithm, or a type the
//!   route does not accept): 401 `credential_invalid` with
//!   `error="invalid_token"` (RFC 6750 section 3.1).
//! - A valid credential without every required scope: 403
//!   `insufficient_scope` with `error="insufficient_scope"` and the scopes.
//!
//! On success the caller is stored in the request context, the credential is
//! removed from the request (unless `hide_credentials: false`), and the
//! upstream receives the `X-Tollgate-*` identity headers. Clients' own copies
//! of those headers are removed by the proxy on every route.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request;
use tollgate_core::config::{AuthConfig, KeySource};
use tollgate_core::identity::CredentialType;
use tollgate_core::problem::ErrorCode;
use tollgate_identity::authn::{Authenticator, Caller, TokenCaller, headers as idh};
use tollgate_identity::{apikey, keyring::KeyRefusal};

use crate::{Flow, Policy, Reply, RequestCtx};

/// The compiled `auth` policy.
#[derive(Debug)]
pub struct Auth {
    cfg: AuthConfig,
    authn: Arc<Authenticator>,
    /// The challenge sent with a 401 when no credential was given.
    challenge: HeaderValue,
    /// The challenge sent with a 403 for missing scopes.
    scope_challenge: HeaderValue,
}

const REALM: &str = "tollgate";

fn quoted(s: &str) -> String {
    // Scopes and messages never contain quotes or backslashes (validated or fixed text).
    s.replace(['"', '\\'], "")
}

impl Auth {
    pub fn new(cfg: &AuthConfig, authn: Arc<Authenticator>) -> Auth {
        let scope = cfg.scopes.join(" ");
        let mut challenge = format!("Bearer realm=\"{REALM}\"");
        if !scope.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", quoted(&scope)));
        }
        let scope_challenge = format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
            quoted(&scope)
        );
        Auth {
            cfg: cfg.clone(),
            authn,
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or(HeaderValue::from_static("Bearer")),
            scope_challenge: HeaderValue::from_str(&scope_challenge)
                .unwrap_or(HeaderValue::from_static("Bearer")),
        }
    }

    fn accepts(&self, t: CredentialType) -> bool {
        self.cfg.accept.contains(&t)
    }

    fn missing(&self, ctx: &RequestCtx) -> Flow {
        let mut what = Vec::new();
        if self.accepts(CredentialType::ApiKey) {
            for s in &self.cfg.key_sources {
                what.push(match s {
                    KeySource::Bearer => "an API key as `Authorization: Bearer`",
                    KeySource::XApiKey => "an API key in `X-API-Key`",
                });
            }
        }
        if self.accepts(CredentialType::Jwt) || self.accepts(CredentialType::Oauth) {
            what.push("a bearer token");
        }
        let p = ctx.problem(
            ErrorCode::CredentialMissing,
            format!("this route needs {}", what.join(" or ")),
        );
        let mut reply = Reply::problem(&p);
        reply
            .headers
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        Flow::Reply(reply)
    }

    fn invalid(&self, ctx: &RequestCtx, why: &str) -> Flow {
        let p = ctx.problem(ErrorCode::CredentialInvalid, why);
        let mut reply = Reply::problem(&p);
        let challenge = format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            quoted(why)
        );
        reply.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap_or_else(|_| self.challenge.clone()),
        );
        Flow::Reply(reply)
    }

    async fn authenticate(&self, presented: Presented<'_>, now_ms: i64) -> Result<Caller, String> {
        match presented {
            Presented::Key(key) => {
                if !self.accepts(CredentialType::ApiKey) {
                    return Err("API keys are not accepted on this route".into());
                }
                let entry = self
                    .authn
                    .keys()
                    .verify(key, now_ms)
                    .map_err(|e: KeyRefusal| e.to_string())?;
                if let Some(env) = self.cfg.environment
                    && env != entry.environment
                {
                    return Err(format!("this route accepts only {} keys", env.as_str()));
                }
                Ok(Caller::Key(entry))
            }
            Presented::Token(token) => {
                let jwt = self.accepts(CredentialType::Jwt);
                let oauth = self.accepts(CredentialType::Oauth);
                if !jwt && !oauth {
                    return Err("bearer tokens are not accepted on this route".into());
                }
                // Boxed: a token's check may fetch keys or introspect over
                // the network, and its large future, inline, would be part
                // of (and copied with) every request's, API-key ones too.
                let v = Box::pin(self.authn.issuers().verify(token, &self.cfg.issuers))
                    .await
                    .map_err(|e| e.to_string())?;
                let credential = if v.platform {
                    if !oauth {
                        return Err("Tollgate access tokens are not accepted on this route".into());
                    }
                    if v.jti.as_deref().is_none_or(|j| self.authn.is_revoked(j)) {
                        return Err("the access token has been revoked".into());
                    }
                    let client = v.claims.get("client_id").and_then(|c| c.as_str());
                    if !client.is_some_and(|c| self.authn.client_is_live(c)) {
                        return Err("the access token's client no longer exists".into());
                    }
                    CredentialType::Oauth
                } else {
                    if !jwt {
                        return Err("external JWTs are not accepted on this route".into());
                    }
                    CredentialType::Jwt
                };
                Ok(Caller::Token(TokenCaller {
                    credential,
                    org: v.organization,
                    app: v.app,
                    subject: v.subject,
                    scopes: v.scopes,
                    issuer: v.issuer_name,
                    claims: Arc::new(v.claims),
                }))
            }
        }
    }
}

enum Presented<'a> {
    Key(&'a str),
    Token(&'a str),
}

/// The bearer credential of an `Authorization` header, if it uses that scheme.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    let (scheme, rest) = s.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

impl Policy for Auth {
    fn name(&self) -> &'static str {
        "auth"
    }

    /// Only adds the identity fields, beside the others.
    fn upstream_headers_as_map(&self) -> bool {
        false
    }
    fn response_headers_as_map(&self) -> bool {
        false
    }

    async fn access(&self, ctx: &mut RequestCtx, req: &mut request::Parts) -> Flow {
        let by_bearer = self.cfg.key_sources.contains(&KeySource::Bearer);
        let by_header = self.cfg.key_sources.contains(&KeySource::XApiKey);
        let presented = {
            let auth = req.headers.get(header::AUTHORIZATION).and_then(bearer);
            let x_key = if by_header {
                req.headers
                    .get(&idh::X_API_KEY)
                    .and_then(|v| v.to_str().ok())
            } else {
                None
            };
            match (auth, x_key) {
                (Some(t), _) if apikey::looks_like_key(t) => {
                    if !by_bearer {
                        return self.invalid(ctx, "send the API key in `X-API-Key` on this route");
                    }
                    Presented::Key(t)
                }
                (Some(t), _) => Presented::Token(t),
                (None, Some(k)) => Presented::Key(k.trim()),
                (None, None) => return self.missing(ctx),
            }
        };
        let caller = match self.authenticate(presented, ctx.arrival.unix_ms()).await {
            Ok(c) => c,
            Err(why) => return self.invalid(ctx, &why),
        };
        if let Some(missing) = self.cfg.scopes.iter().find(|s| !caller.has_scope(s)) {
            let p = ctx.problem(
                ErrorCode::InsufficientScope,
                format!("the credential lacks the scope `{missing}`"),
            );
            let mut reply = Reply::problem(&p);
            reply
                .headers
                .insert(header::WWW_AUTHENTICATE, self.scope_challenge.clone());
            return Flow::Reply(reply);
        }
        if self.cfg.hide_credentials {
            req.headers.remove(header::AUTHORIZATION);
            req.headers.remove(&idh::X_API_KEY);
        }
        ctx.caller = Some(caller);
        Flow::Continue
    }

    fn upstream_request(&self, ctx: &mut RequestCtx, _req: &mut request::Parts) {
        if let Some(caller) = &ctx.caller {
            caller.add_headers(&mut ctx.upstream_fields);
        }
    }
}
