//! The authenticator the gateway's `auth` policy consults, and the caller it
//! produces. One [`Authenticator`] is shared by every worker thread; its
//! parts are fed by the control plane (key ring and revocations from the
//! store's change feed, issuers from the configuration snapshot).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::HeaderName;
use tollgate_core::identity::{CredentialType, KeyEnvironment};
use tollgate_core::ids::KeyId;

use crate::apikey::Pepper;
use crate::jwt::Issuers;
use crate::keyring::KeyRing;

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
pub struct Caller {
    pub credential: CredentialType,
    /// Organization id (`org_...` for keys and platform tokens; the mapped
    /// claim for external JWTs).
    pub org: Option<String>,
    /// App id (`app_...` for keys and platform tokens; the mapped claim for
    /// external JWTs).
    pub app: Option<String>,
    pub key_id: Option<KeyId>,
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    pub environment: Option<KeyEnvironment>,
    /// The issuer's configured name, for JWTs.
    pub issuer: Option<Arc<str>>,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Everything credential checks need, shared by all workers.
#[derive(Debug)]
pub struct Authenticator {
    keys: KeyRing,
    issuers: Arc<Issuers>,
    /// Revoked platform token ids and when they would expire (unix s).
    revoked: RwLock<HashMap<String, i64>>,
}

impl Authenticator {
    pub fn new(pepper: Pepper) -> Arc<Authenticator> {
        Arc::new(Authenticator {
            keys: KeyRing::new(pepper),
            issuers: Issuers::new(),
            revoked: RwLock::new(HashMap::new()),
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

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }
}
