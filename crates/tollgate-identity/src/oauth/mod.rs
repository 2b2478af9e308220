//! Tollgate's OAuth 2.0 authorization server for apps.
//!
//! - Grant: client credentials (RFC 6749 section 4.4), with the client
//!   authenticated by `client_secret_basic` or `client_secret_post`.
//! - Tokens: JWT access tokens per RFC 9068 (`typ: at+jwt`), signed ES256
//!   with platform keys that rotate and are published at the JWKS endpoint.
//! - Endpoints: metadata (RFC 8414), introspection (RFC 7662) and revocation
//!   (RFC 7009).
//!
//! The server holds its clients and keys in memory, fed from the store like
//! the key ring; the gateway verifies its tokens locally through the
//! platform issuer of [`crate::jwt::Issuers`]. Only revocation writes to the
//! store, through [`TokenRevoker`].

mod endpoints;
pub mod keys;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_core::config::JwtAlgorithm;
use tollgate_core::ids::{AppId, ClientId, OrgId, SigningKeyId};

use crate::authn::Authenticator;
use crate::jwt::PlatformIssuer;

pub use endpoints::{JWKS_PATH, MAX_FORM_BYTES, METADATA_PATH, PATH_PREFIX};

/// Persists a token revocation so every node learns it.
pub trait TokenRevoker: Send + Sync + 'static {
    fn revoke(
        &self,
        jti: String,
        client: ClientId,
        expires_at: i64,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// An OAuth client as the server needs it.
#[derive(Clone)]
pub struct ClientEntry {
    pub id: ClientId,
    pub org: OrgId,
    pub app: AppId,
    /// Scopes the client may ask for; also its default grant.
    pub scopes: Vec<String>,
    /// argon2id PHC string of the secret.
    pub secret_hash: String,
}

impl std::fmt::Debug for ClientEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEntry")
            .field("id", &self.id)
            .field("org", &self.org)
            .field("app", &self.app)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A platform signing key as held in memory.
#[derive(Clone)]
pub struct SigningMaterial {
    pub id: SigningKeyId,
    pub pkcs8: Vec<u8>,
    pub public_jwk: serde_json::Value,
    /// Newer keys sign; of the unretired keys the newest is used.
    pub created_at_ms: i64,
    /// A retired key no longer signs but is still published.
    pub retired: bool,
}

impl std::fmt::Debug for SigningMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningMaterial")
            .field("id", &self.id)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

struct ActiveKey {
    kid: String,
    key: EncodingKey,
}

/// Settings of the authorization server.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The issuer identifier: the server's base URL, such as
    /// `https://api.example.com`. Endpoints live under it.
    pub issuer: String,
    /// The `aud` of issued tokens, which the gateway then requires.
    pub audience: String,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
}

/// The authorization server.
pub struct OAuthServer {
    settings: OAuthSettings,
    authn: Arc<Authenticator>,
    revoker: Arc<dyn TokenRevoker>,
    clients: RwLock<HashMap<ClientId, Arc<ClientEntry>>>,
    signer: RwLock<Option<Arc<ActiveKey>>>,
    published: RwLock<Vec<serde_json::Value>>,
    /// SHA-256 of secrets that passed argon2 recently, so a client fetching
    /// tokens often does not pay for argon2 each time.
    verified: Mutex<HashMap<ClientId, [u8; 32]>>,
}

impl std::fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OAuthServer {
    pub fn new(
        settings: OAuthSettings,
        authn: Arc<Authenticator>,
        revoker: Arc<dyn TokenRevoker>,
    ) -> Arc<OAuthServer> {
        Arc::new(OAuthServer {
            settings,
            authn,
            revoker,
            clients: RwLock::new(HashMap::new()),
            signer: RwLock::new(None),
            published: RwLock::new(Vec::new()),
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// Replaces every client.
    pub fn set_clients(&self, clients: impl IntoIterator<Item = ClientEntry>) {
        let map: HashMap<ClientId, Arc<ClientEntry>> = clients
            .into_iter()
            .map(|c| (c.id.clone(), Arc::new(c)))
            .collect();
        self.authn
            .set_live_clients(map.keys().map(|id| id.to_string()));
        *self.clients.write().unwrap_or_else(|e| e.into_inner()) = map;
        lock(&self.verified).clear();
    }

    /// Adds or replaces one client (a new secret forgets the cached check).
    pub fn upsert_client(&self, client: ClientEntry) {
        lock(&self.verified).remove(&client.id);
        self.authn.set_client_live(client.id.as_str(), true);
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client.id.clone(), Arc::new(client));
    }

    pub fn remove_client(&self, id: &ClientId) {
        lock(&self.verified).remove(id);
        self.authn.set_client_live(id.as_str(), false);
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn client(&self, id: &ClientId) -> Option<Arc<ClientEntry>> {
        self.clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Installs the platform keys: the newest unretired one signs, all are
    /// published and trusted by the gateway.
    pub fn set_signing_keys(&self, keys: &[SigningMaterial]) {
        let signer = keys
            .iter()
            .filter(|k| !k.retired)
            .max_by_key(|k| (k.created_at_ms, k.id.clone()))
            .map(|k| {
                Arc::new(ActiveKey {
                    kid: k.id.to_string(),
                    key: EncodingKey::from_ec_der(&k.pkcs8),
                })
            });
        let mut trusted = Vec::new();
        for k in keys {
            let jwk = &k.public_jwk;
            if let (Some(x), Some(y)) = (jwk["x"].as_str(), jwk["y"].as_str())
                && let Ok(dk) = DecodingKey::from_ec_components(x, y)
            {
                trusted.push((k.id.to_string(), dk));
            }
        }
        *self.signer.write().unwrap_or_else(|e| e.into_inner()) = signer;
        *self.published.write().unwrap_or_else(|e| e.into_inner()) =
            keys.iter().map(|k| k.public_jwk.clone()).collect();
        self.authn.issuers().set_platform(Some(PlatformIssuer {
            issuer: self.settings.issuer.clone(),
            audience: self.settings.audience.clone(),
            keys: trusted,
            algorithm: JwtAlgorithm::ES256,
            leeway: tollgate_core::Duration::from_secs(5),
        }));
    }

    /// The JWKS document of the platform keys.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": *self.published.read().unwrap_or_else(|e| e.into_inner()) })
    }

    /// Authenticates a client by id and secret. argon2 runs on the blocking
    /// pool; a secret that passed before is checked by its SHA-256.
    async fn authenticate(&self, id: &str, secret: &str) -> Option<Arc<ClientEntry>> {
        let id: ClientId = id.parse().ok()?;
        let client = self.client(&id)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(known) = lock(&self.verified).get(&id)
            && bool::from(known.ct_eq(&digest))
        {
            return Some(client);
        }
        let phc = client.secret_hash.clone();
        let secret = secret.to_owned();
        let ok = tokio::task::spawn_blocking(move || keys::verify_client_secret(&secret, &phc))
            .await
            .unwrap_or(false);
        if !ok {
            return None;
        }
        // Only cache if the client was not replaced meanwhile.
        if self
            .client(&id)
            .is_some_and(|now| now.secret_hash == client.secret_hash)
        {
            lock(&self.verified).insert(id, digest);
        }
        Some(client)
    }

    fn signer(&self) -> Option<Arc<ActiveKey>> {
        self.signer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
