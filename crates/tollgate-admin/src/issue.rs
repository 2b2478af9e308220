//! Issuing credentials: API keys, OAuth client secrets and platform signing
//! keys. The admin API and the `tollgate` CLI both call these, so a secret
//! is made, hashed and stored one way only.
//!
//! Secrets leave these functions exactly once, in the value they return;
//! they are never logged, and the returned types redact them in `Debug`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, ClientId};
use tollgate_core::problem::FieldError;
use tollgate_identity::apikey::{self, Pepper};
use tollgate_identity::oauth::keys as oauth_keys;
use tollgate_store::{ApiKey, NewApiKey, OAuthClient, SigningKey, Store, Tenant};

use crate::error::ApiError;

/// The longest overlap a rotation may give the old key.
pub const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a retired signing key stays published beyond the token
/// lifetime, for clock skew and in-flight requests.
pub const SIGNING_KEY_GRACE: Duration = Duration::from_secs(5 * 60);

/// What a new API key looks like, apart from its secret.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub name: String,
    pub environment: KeyEnvironment,
    pub scopes: Vec<String>,
    pub metadata: Map<String, Value>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored key and its secret, which is shown this once.
#[derive(Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Changes a rotation makes to the replacement key; `None` keeps the old
/// key's value. `expires_at: Some(None)` gives the new key no expiry.
#[derive(Debug, Clone)]
pub struct RotateSpec {
    /// How long the old key keeps working (at most [`MAX_OVERLAP`]).
    pub overlap: Duration,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// A client and its secret, which is shown this once.
#[derive(Clone)]
pub struct IssuedClient {
    pub client: OAuthClient,
    pub secret: String,
}

impl fmt::Debug for IssuedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedClient")
            .field("client", &self.client)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What a signing key rotation did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SigningKeyRotation {
    /// The key that signs from now on.
    pub key: SigningKey,
    /// The keys that stopped signing; each stays published until its
    /// `expires_at`, so the tokens it signed keep verifying.
    pub retired: Vec<SigningKey>,
}

fn random_failed() -> ApiError {
    ApiError::Internal("the system random generator failed".into())
}

/// Generates a key and the record to store for it (hash and display prefix only).
pub fn new_api_key(pepper: &Pepper, spec: KeySpec) -> Result<(NewApiKey, String), ApiError> {
    let generated = apikey::generate(spec.environment).map_err(|_| random_failed())?;
    let record = NewApiKey {
        name: spec.name,
        environment: spec.environment,
        key_hash: pepper.hash(&generated.secret).0,
        display_prefix: apikey::display_prefix(&generated.secret),
        scopes: spec.scopes,
        metadata: spec.metadata,
        expires_at: spec.expires_at,
    };
    Ok((record, generated.secret))
}

/// Creates a key for an app of `tenant`'s organization.
pub async fn create_key(
    tenant: &Tenant<'_>,
    pepper: &Pepper,
    app: &AppId,
    spec: KeySpec,
) -> Result<IssuedKey, ApiError> {
    let (record, secret) = new_api_key(pepper, spec)?;
    let key = tenant.create_key(app, record).await?;
    tracing::info!(org = %key.org_id, app = %key.app_id, key = %key.id, "API key created");
    Ok(IssuedKey { key, secret })
}

/// Checks a rotation overlap.
pub fn check_overlap(overlap: Duration) -> Result<(), ApiError> {
    if overlap > MAX_OVERLAP {
        return Err(ApiError::Invalid(vec![FieldError {
            path: "overlap".into(),
            reason: "must be at most 30 days (720h)".into(),
        }]));
    }
    Ok(())
}

/// Replaces `old` with a new key of the same app and environment; `old`
/// keeps working for `spec.overlap`. Name, scopes, metadata and expiry
/// default to the old key's, so a rotation never widens or lengthens
/// access unless asked to. Returns (new key, old key as updated).
pub async fn rotate_key(
    tenant: &Tenant<'_>,
    pepper: &Pepper,
    old: &ApiKey,
    spec: RotateSpec,
) -> Result<(IssuedKey, ApiKey), ApiError> {
    check_overlap(spec.overlap)?;
    let (record, secret) = new_api_key(
        pepper,
        KeySpec {
            name: spec.name.unwrap_or_else(|| old.name.clone()),
            environment: old.environment,
            scopes: spec.scopes.unwrap_or_else(|| old.scopes.clone()),
            metadata: spec.metadata.unwrap_or_else(|| old.metadata.clone()),
            expires_at: spec.expires_at.unwrap_or(old.expires_at),
        },
    )?;
    let (key, previous) = tenant.rotate_key(&old.id, record, spec.overlap).await?;
    tracing::info!(org = %key.org_id, app = %key.app_id, key = %key.id, previous = %previous.id, "API key rotated");
    Ok((IssuedKey { key, secret }, previous))
}

/// A new client secret and its argon2 hash. Hashing is slow by design, so
/// it runs on the blocking pool.
async fn client_secret() -> Result<(String, String), ApiError> {
    tokio::task::spawn_blocking(|| {
        let secret = oauth_keys::generate_client_secret().map_err(|_| random_failed())?;
        let hash = oauth_keys::hash_client_secret(&secret)
            .map_err(|e| ApiError::Internal(format!("cannot hash a client secret: {e}")))?;
        Ok((secret, hash))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the hashing task failed: {e}")))?
}

/// Creates an OAuth client of an app of `tenant`'s organization.
pub async fn create_client(
    tenant: &Tenant<'_>,
    app: &AppId,
    name: &str,
    scopes: Vec<String>,
) -> Result<IssuedClient, ApiError> {
    let (secret, hash) = client_secret().await?;
    let client = tenant.create_client(app, name, scopes, &hash).await?;
    tracing::info!(org = %client.org_id, app = %client.app_id, client = %client.id, "OAuth client created");
    Ok(IssuedClient { client, secret })
}

/// Gives a client a new secret; the old one stops working.
pub async fn reset_client_secret(
    tenant: &Tenant<'_>,
    id: &ClientId,
) -> Result<IssuedClient, ApiError> {
    let (secret, hash) = client_secret().await?;
    let client = tenant.set_client_secret(id, &hash).await?;
    tracing::info!(org = %client.org_id, client = %client.id, "OAuth client secret replaced");
    Ok(IssuedClient { client, secret })
}

/// Starts signing with a new ES256 key and retires every key made before
/// it. A retired key stays published for `token_ttl` plus
/// [`SIGNING_KEY_GRACE`], so the tokens it signed keep verifying until
/// they expire.
///
/// Only keys older than the new one are retired: when two rotations race,
/// the newest key survives rather than each retiring the other's.
pub async fn rotate_signing_keys(
    store: &Store,
    token_ttl: Duration,
) -> Result<SigningKeyRotation, ApiError> {
    let generated = oauth_keys::generate_signing_key()
        .map_err(|e| ApiError::Internal(format!("cannot generate a signing key: {e}")))?;
    let key = store
        .add_signing_key(
            &generated.id,
            oauth_keys::SIGNING_ALGORITHM,
            &generated.pkcs8,
            &generated.public_jwk,
        )
        .await?;
    let keep = token_ttl.saturating_add(SIGNING_KEY_GRACE);
    let expires_at = Utc::now()
        + chrono::Duration::from_std(keep).unwrap_or_else(|_| chrono::Duration::days(365));
    let mut retired = Vec::new();
    for old in store.list_signing_keys().await? {
        if old.id < key.id && old.retired_at.is_none() {
            retired.push(store.retire_signing_key(&old.id, expires_at).await?);
        }
    }
    tracing::info!(kid = %key.id, retired = retired.len(), "signing key rotated");
    Ok(SigningKeyRotation { key, retired })
}
