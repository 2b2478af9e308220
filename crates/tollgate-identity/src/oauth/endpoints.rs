//! The HTTP endpoints of the authorization server. They speak OAuth's own
//! error format (`{"error": "...", "error_description": "..."}`, RFC 6749
//! section 5.2), which OAuth client libraries expect, rather than problem+json.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use tollgate_core::ids::ClientId;

use super::{ClientEntry, OAuthServer};
use std::sync::Arc;

/// Every endpoint except metadata lives under this prefix.
pub const PATH_PREFIX: &str = "/oauth2/";
/// RFC 8414 metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// The platform JWKS.
pub const JWKS_PATH: &str = "/oauth2/jwks";
const TOKEN_PATH: &str = "/oauth2/token";
const INTROSPECT_PATH: &str = "/oauth2/introspect";
const REVOKE_PATH: &str = "/oauth2/revoke";

/// Largest form body accepted by the endpoints.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// An error answer, boxed: the happy path carries no large `Err` variant.
type Rejection = Box<Response<Bytes>>;

/// The scope tokens of a `scope` parameter (space-separated, RFC 6749 3.3).
fn requested_scopes(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(' ').filter(|s| !s.is_empty())
}

/// [`oauth_error`], boxed for an `Err`.
fn reject(status: StatusCode, error: &str, description: &str) -> Rejection {
    Box::new(oauth_error(status, error, description))
}

/// An RFC 6749 section 5.2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
    let mut res = json_response(
        status,
        json!({ "error": error, "error_description": description }),
    );
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tollgate\""),
        );
    }
    res
}

fn method_not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut res = oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        &format!("this endpoint accepts {allow} only"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// Decodes `application/x-www-form-urlencoded` and `%XX` in Basic credentials.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

struct Form(Vec<(String, String)>);

impl Form {
    /// One parameter; a repeated parameter is an error (RFC 6749 section 3.2).
    fn get(&self, name: &str) -> Result<Option<&str>, Rejection> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("the parameter `{name}` is repeated"),
            ));
        }
        Ok(first)
    }
}

fn parse_form(req: &Request<Bytes>) -> Result<Form, Rejection> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    Ok(Form(
        form_urlencoded::parse(req.body())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

impl OAuthServer {
    /// Whether the gateway should hand `path` to this server.
    pub fn owns(path: &str) -> bool {
        path.starts_with(PATH_PREFIX) || path == METADATA_PATH
    }

    /// Answers one request to an endpoint. The body was read already, up
    /// to [`MAX_FORM_BYTES`].
    pub async fn handle(self: &Arc<Self>, req: Request<Bytes>) -> Response<Bytes> {
        let path = req.uri().path();
        match path {
            METADATA_PATH | JWKS_PATH => {
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    return method_not_allowed("GET, HEAD");
                }
                let body = if path == METADATA_PATH {
                    self.metadata()
                } else {
                    self.jwks()
                };
                let mut res = json_response(StatusCode::OK, body);
                // Public documents: caching them is fine and helps verifiers.
                res.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                res.headers_mut().remove(header::PRAGMA);
                res
            }
            TOKEN_PATH | INTROSPECT_PATH | REVOKE_PATH => {
                if req.method() != Method::POST {
                    return method_not_allowed("POST");
                }
                let form = match parse_form(&req) {
                    Ok(f) => f,
                    Err(res) => return *res,
                };
                let client = match self.client_auth(&req, &form).await {
                    Ok(c) => c,
                    Err(res) => return *res,
                };
                let result = match path {
                    TOKEN_PATH => self.token(&client, &form),
                    INTROSPECT_PATH => self.introspect(&client, &form).await,
                    _ => self.revoke(&client, &form).await,
                };
                result.unwrap_or_else(|res| *res)
            }
            _ => oauth_error(
                StatusCode::NOT_FOUND,
                "invalid_request",
                "no such OAuth endpoint",
            ),
        }
    }

    fn metadata(&self) -> serde_json::Value {
        let base = self.settings.issuer.trim_end_matches('/');
        let methods = ["client_secret_basic", "client_secret_post"];
        json!({
            "issuer": self.settings.issuer,
            "token_endpoint": format!("{base}{TOKEN_PATH}"),
            "jwks_uri": format!("{base}{JWKS_PATH}"),
            "introspection_endpoint": format!("{base}{INTROSPECT_PATH}"),
            "revocation_endpoint": format!("{base}{REVOKE_PATH}"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": [],
            "service_documentation": "https://tollgate.dev/docs/oauth",
        })
    }

    /// Client authentication: `client_secret_basic` or `client_secret_post`,
    /// never both (RFC 6749 section 2.3).
    async fn client_auth(
        &self,
        req: &Request<Bytes>,
        form: &Form,
    ) -> Result<Arc<ClientEntry>, Rejection> {
        let basic = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim().to_owned());
        let post_id = form.get("client_id")?;
        let post_secret = form.get("client_secret")?;
        let bad = || -> Rejection {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
            .into()
        };
        let (id, secret) = match (basic, post_secret) {
            (Some(_), Some(_)) => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method, not two",
                ));
            }
            (Some(b64), None) => {
                let raw = STANDARD.decode(b64.as_bytes()).map_err(|_| bad())?;
                let raw = String::from_utf8(raw).map_err(|_| bad())?;
                let (id, secret) = raw.split_once(':').ok_or_else(bad)?;
                let id = percent_decode(id).ok_or_else(bad)?;
                let secret = percent_decode(secret).ok_or_else(bad)?;
                if post_id.is_some_and(|p| p != id) {
                    return Err(bad());
                }
                (id, secret)
            }
            (None, Some(secret)) => (post_id.ok_or_else(bad)?.to_owned(), secret.to_owned()),
            (None, None) => return Err(bad()),
        };
        self.authenticate(&id, &secret).await.ok_or_else(bad)
    }

    fn token(&self, client: &ClientEntry, form: &Form) -> Result<Response<Bytes>, Rejection> {
        match form.get("grant_type")? {
            Some("client_credentials") => {}
            Some(_) => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "only the client_credentials grant is supported",
                ));
            }
            None => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type is required",
                ));
            }
        }
        // An empty `scope` is the same as none: the client's default grant.
        let scopes: Vec<String> = match form.get("scope")?.filter(|s| !s.trim().is_empty()) {
            Some(raw) => {
                let mut requested: Vec<String> = Vec::new();
                for s in requested_scopes(raw) {
                    if !requested.iter().any(|r| r == s) {
                        requested.push(s.to_owned());
                    }
                }
                if let Some(s) = requested.iter().find(|s| !client.scopes.contains(s)) {
                    return Err(reject(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        &format!("this client may not request the scope `{s}`"),
                    ));
                }
                requested
            }
            None => client.scopes.clone(),
        };
        let signer = self.signer().ok_or_else(|| -> Rejection {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "no signing key is available yet",
            )
            .into()
        })?;
        let now = now_s();
        let ttl = self.settings.token_ttl.as_secs() as i64;
        let scope = scopes.join(" ");
        let claims = json!({
            "iss": self.settings.issuer,
            "sub": client.id.as_str(),
            "aud": self.settings.audience,
            "exp": now + ttl,
            "iat": now,
            "nbf": now,
            "jti": ulid::Ulid::new().to_string().to_ascii_lowercase(),
            "client_id": client.id.as_str(),
            "scope": scope,
            "org_id": client.org.as_str(),
            "app_id": client.app.as_str(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(signer.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|e| -> Rejection {
                tracing::error!(error = %e, "signing an access token failed");
                oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the access token could not be signed",
                )
                .into()
            })?;
        Ok(json_response(
            StatusCode::OK,
            json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl,
                "scope": scope,
            }),
        ))
    }

    /// Verifies a platform token issued to `client`. `None`: not one.
    async fn own_token(
        &self,
        client: &ClientEntry,
        form: &Form,
    ) -> Result<Option<crate::jwt::VerifiedToken>, Rejection> {
        let Some(token) = form.get("token")? else {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the `token` parameter is required",
            ));
        };
        let verified = match self.authn.issuers().verify(token, &[]).await {
            Ok(v) if v.platform => v,
            _ => return Ok(None),
        };
        let owner = verified.claims.get("client_id").and_then(|v| v.as_str());
        if owner != Some(client.id.as_str()) {
            return Ok(None);
        }
        Ok(Some(verified))
    }

    async fn introspect(
        &self,
        client: &ClientEntry,
        form: &Form,
    ) -> Result<Response<Bytes>, Rejection> {
        let inactive = || json_response(StatusCode::OK, json!({ "active": false }));
        let Some(v) = self.own_token(client, form).await? else {
            return Ok(inactive());
        };
        if v.jti.as_deref().is_none_or(|j| self.authn.is_revoked(j)) {
            return Ok(inactive());
        }
        let c = &v.claims;
        Ok(json_response(
            StatusCode::OK,
            json!({
                "active": true,
                "scope": v.scopes.join(" "),
                "client_id": c.get("client_id"),
                "token_type": "Bearer",
                "exp": c.get("exp"),
                "iat": c.get("iat"),
                "nbf": c.get("nbf"),
                "sub": c.get("sub"),
                "aud": c.get("aud"),
                "iss": c.get("iss"),
                "jti": c.get("jti"),
                "org_id": c.get("org_id"),
                "app_id": c.get("app_id"),
            }),
        ))
    }

    async fn revoke(
        &self,
        client: &ClientEntry,
        form: &Form,
    ) -> Result<Response<Bytes>, Rejection> {
        // RFC 7009 2.2: an invalid or foreign token still gets 200.
        let ok = || json_response(StatusCode::OK, json!({}));
        let Some(v) = self.own_token(client, form).await? else {
            return Ok(ok());
        };
        let (Some(jti), Some(exp)) = (v.jti.clone(), v.expires_at) else {
            return Ok(ok());
        };
        let client_id: ClientId = client.id.clone();
        if let Err(e) = self.revoker.revoke(jti.clone(), client_id, exp).await {
            tracing::warn!(error = %e, "token revocation could not be stored");
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation could not be stored; try again",
            ));
        }
        self.authn.revoke(jti, exp, now_s());
        Ok(ok())
    }
}
