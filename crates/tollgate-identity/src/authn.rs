//! The authenticator the gateway's `auth` policy consults, and the caller it
//! produces. One [`Authenticator`] is shared by every worker thread; its
//! parts are fed by the control plane (key ring and revocations from the
//! store's change feed, issuers from the configuration snapshot).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::{HeaderName, HeaderValue};
use tollgate_core::fields::UpstreamFields;
use tollgate_core::identity::{CredentialType, KeyEnvironment};
use tollgate_core::ids::{AppId, KeyId, OrgId};

use crate::apikey::Pepper;
use crate::jwt::Issuers;
use crate::keyring::{KeyEntry, KeyRing};

/// The identity headers the gateway sends upstream. Copies sent by clients
/// are removed from every request, so upstreams can trust them.
pub mod headers {
    use http::HeaderName;

    /// Every header starting with this prefix is reserved for the gateway.
    pub const RESERVED_PREFIX: &str = "x-tollgate-";
    pub static ORG: HeaderName = HeaderName::from_static("x-tollgate-org");
    pub static APP: HeaderName = HeaderName::from_static("x-tollgate-app");
    pub static KEY_ID: HeaderName = HeaderName::from_static("x-tollgate-key-id");
    pub static SCOPES: HeaderName = HeaderName::from_static("x-tollgate-scopes");
    pub static CREDENTIAL: HeaderName = HeaderName::from_static("x-tollgate-credential");
    pub static SUBJECT: HeaderName = HeaderName::from_static("x-tollgate-subject");
    pub static ENVIRONMENT: HeaderName = HeaderName::from_static("x-tollgate-environment");
    pub static ISSUER: HeaderName = HeaderName::from_static("x-tollgate-issuer");
    /// The header an API key may be sent in.
    pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
}

/// Whether `name` is one of the gateway's reserved identity headers.
pub fn is_reserved_header(name: &HeaderName) -> bool {
    name.as_str().starts_with(headers::RESERVED_PREFIX)
}

/// Who is calling, once a credential was verified.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An API key from the key ring; its grant and identity headers were
    /// prepared when the key entered the ring.
    Key(Arc<KeyEntry>),
    /// A JWT, external or from Tollgate's OAuth2 server.
    Token(TokenCaller),
}

/// What a verified token says about its caller.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    pub credential: CredentialType,
    /// Organization id (`org_...` for platform tokens; the mapped claim for
    /// external JWTs).
    pub org: Option<String>,
    /// App id (`app_...` for platform tokens; the mapped claim otherwise).
    pub app: Option<String>,
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    /// The issuer's configured name.
    pub issuer: Arc<str>,
    /// Every claim of the token (for limits counted by a claim).
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl Caller {
    pub fn credential(&self) -> CredentialType {
        match self {
            Caller::Key(_) => CredentialType::ApiKey,
            Caller::Token(t) => t.credential,
        }
    }

    pub fn org(&self) -> Option<&str> {
        match self {
            Caller::Key(k) => Some(k.org.as_str()),
            Caller::Token(t) => t.org.as_deref(),
        }
    }

    pub fn app(&self) -> Option<&str> {
        match self {
            Caller::Key(k) => Some(k.app.as_str()),
            Caller::Token(t) => t.app.as_deref(),
        }
    }

    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            Caller::Key(k) => Some(&k.id),
            Caller::Token(_) => None,
        }
    }

    pub fn environment(&self) -> Option<KeyEnvironment> {
        match self {
            Caller::Key(k) => Some(k.environment),
            Caller::Token(_) => None,
        }
    }

    pub fn scopes(&self) -> &[String] {
        match self {
            Caller::Key(k) => &k.scopes,
            Caller::Token(t) => &t.scopes,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().iter().any(|s| s == scope)
    }

    /// Adds the identity headers to a request going upstream: a key's
    /// block as it was encoded when the key entered the ring, a token's
    /// fields one by one.
    pub fn add_headers(&self, fields: &mut UpstreamFields) {
        match self {
            Caller::Key(k) => fields.push_block(k.identity_block().clone()),
            Caller::Token(t) => {
                let mut set = |name: &HeaderName, value: &str| {
                    if let Ok(v) = HeaderValue::from_str(value) {
                        fields.push(name.clone(), v);
                    }
                };
                set(&headers::CREDENTIAL, t.credential.as_str());
                if let Some(org) = &t.org {
                    set(&headers::ORG, org);
                }
                if let Some(app) = &t.app {
                    set(&headers::APP, app);
                }
                if let Some(sub) = &t.subject {
                    set(&headers::SUBJECT, sub);
                }
                set(&headers::ISSUER, &t.issuer);
                set(&headers::SCOPES, &t.scopes.join(" "));
            }
        }
    }
}

/// The identity headers of a key, made once when it enters the ring.
pub(crate) fn key_headers(
    id: &KeyId,
    org: &OrgId,
    app: &AppId,
    environment: KeyEnvironment,
    scopes: &[String],
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(6);
    let mut push = |name: &HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.push((name.clone(), v));
        }
    };
    push(&headers::CREDENTIAL, CredentialType::ApiKey.as_str());
    push(&headers::ORG, org.as_str());
    push(&headers::APP, app.as_str());
    push(&headers::KEY_ID, id.as_str());
    push(&headers::ENVIRONMENT, environment.as_str());
    push(&headers::SCOPES, &scopes.join(" "));
    out
}

/// Everything credential checks need, shared by all workers.
#[derive(Debug)]
pub struct Authenticator {
    keys: KeyRing,
    issuers: Arc<Issuers>,
    /// Revoked platform token ids and when they would expire (unix s).
    revoked: RwLock<HashMap<String, i64>>,
    /// OAuth clients that exist and are not revoked: a platform token of any
    /// other client (revoked, deleted, or of a deleted organization) fails.
    live_clients: RwLock<std::collections::HashSet<String>>,
}

impl Authenticator {
    pub fn new(pepper: Pepper) -> Arc<Authenticator> {
        Arc::new(Authenticator {
            keys: KeyRing::new(pepper),
            issuers: Issuers::new(),
            revoked: RwLock::new(HashMap::new()),
            live_clients: RwLock::new(std::collections::HashSet::new()),
        })
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn issuers(&self) -> &Arc<Issuers> {
        &self.issuers
    }

    /// Replaces the set of revoked token ids.
    pub fn set_revoked(&self, tokens: impl IntoIterator<Item = (String, i64)>) {
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = tokens.into_iter().collect();
    }

    /// Adds one revoked token id; entries past their expiry are dropped.
    pub fn revoke(&self, jti: String, expires_at: i64, now: i64) {
        let mut set = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        set.retain(|_, exp| *exp >= now);
        set.insert(jti, expires_at);
    }

    /// Replaces the set of live OAuth client ids.
    pub fn set_live_clients(&self, ids: impl IntoIterator<Item = String>) {
        *self.live_clients.write().unwrap_or_else(|e| e.into_inner()) = ids.into_iter().collect();
    }

    /// Marks one client live or gone.
    pub fn set_client_live(&self, id: &str, live: bool) {
        let mut set = self.live_clients.write().unwrap_or_else(|e| e.into_inner());
        if live {
            set.insert(id.to_owned());
        } else {
            set.remove(id);
        }
    }

    /// Whether a platform token issued to `client_id` may still be used.
    pub fn client_is_live(&self, client_id: &str) -> bool {
        self.live_clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(client_id)
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }
}
