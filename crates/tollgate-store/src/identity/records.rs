//! The identity model's value types: records the admin API returns, inputs,
//! and what the gateway feed carries.
//!
//! Records never carry a secret: an [`ApiKey`] has no hash, an
//! [`OAuthClient`] no secret hash, a [`SigningKey`] no private key. The
//! gateway feed types that do ([`KeyGrant`], [`ClientGrant`],
//! [`SigningKeyMaterial`]) redact them in `Debug`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_core::config::PlanLimits;
use tollgate_core::identity::{KeyEnvironment, Role};
use tollgate_core::ids::{AppId, ClientId, KeyId, OrgId, SigningKeyId, SubscriptionId, UserId};

/// An organization: a tenant, owning members and apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Organization {
    pub id: OrgId,
    /// Unique slug: 1 to 64 of `a-z`, `0-9` and `-`.
    pub name: String,
    pub display_name: String,
    /// IANA time zone name (`Europe/Berlin`): the organization's monthly
    /// quotas start at midnight on the 1st there. UTC when null.
    #[serde(default)]
    pub timezone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Changes to an organization; `None` leaves a field as it is.
/// `timezone: Some(None)` removes the time zone (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgUpdate {
    pub display_name: Option<String>,
    pub timezone: Option<Option<String>>,
}

/// A person who can sign in to the portal or admin dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    /// Unique, stored lower-cased.
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A user's membership of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub user: User,
    pub role: Role,
    /// When the user joined the organization.
    pub since: DateTime<Utc>,
}

/// An application of an organization: the identity the gateway sees. Owns
/// API keys and OAuth clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct App {
    pub id: AppId,
    pub org_id: OrgId,
    /// Unique within the organization.
    pub name: String,
    pub description: String,
    /// Free-form JSON object kept for the caller.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An API key as the admin API shows it: never the key, never its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: KeyId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub name: String,
    pub environment: KeyEnvironment,
    /// The start of the key (`tg_live_AbCd`), shown so people can tell keys apart.
    pub display_prefix: String,
    pub scopes: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When the key stops working; rotation sets this on the old key.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Recorded by gateways in batches, so it may lag by a few seconds.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key this one replaced, when it was made by a rotation.
    pub rotated_from: Option<KeyId>,
    pub created_at: DateTime<Utc>,
}

/// An OAuth2 client (client credentials grant), never its secret hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OAuthClient {
    pub id: ClientId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub name: String,
    /// The scopes the client may request.
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token signing key of the OAuth server, never its private key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SigningKey {
    pub id: SigningKeyId,
    /// The JWS algorithm (`EdDSA`, `ES256`, `RS256`...).
    pub algorithm: String,
    /// The public key as a JWK, as published in the JWKS.
    #[schema(value_type = Object)]
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
    /// When it stopped signing; it stays in the JWKS until `expires_at`.
    pub retired_at: Option<DateTime<Utc>>,
    /// When it leaves the JWKS.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key to store. The caller generates the key and hashes it; the store
/// keeps only the hash.
#[derive(Clone, PartialEq)]
pub struct NewApiKey {
    pub name: String,
    pub environment: KeyEnvironment,
    pub key_hash: [u8; 32],
    pub display_prefix: String,
    pub scopes: Vec<String>,
    pub metadata: Map<String, Value>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("name", &self.name)
            .field("environment", &self.environment)
            .field("key_hash", &"<redacted>")
            .field("display_prefix", &self.display_prefix)
            .field("scopes", &self.scopes)
            .field("metadata", &self.metadata)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Changes to an app; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// Changes to an API key; `None` leaves a field as it is. `expires_at:
/// Some(None)` removes the expiry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// A subscription: an organization, one of its apps, or one of that app's
/// keys bound to a plan, for one API or for every API. When several match
/// a request, the key's wins over the app's and the app's over the
/// organization's; at each level an API-specific one wins over an
/// all-APIs one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub org_id: OrgId,
    /// The app subscribed; absent for an organization-wide subscription.
    pub app_id: Option<AppId>,
    /// The key subscribed (a key of `app_id`); absent unless key-level.
    pub key_id: Option<KeyId>,
    /// The plan's name.
    pub plan: String,
    /// The API (service name) this subscription is for; absent: every API.
    pub api: Option<String>,
    /// Limits that replace the plan's (only the fields set).
    pub overrides: PlanLimits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription to create. `key_id` needs `app_id`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewSubscription {
    pub plan: String,
    pub api: Option<String>,
    pub app_id: Option<AppId>,
    pub key_id: Option<KeyId>,
    pub overrides: PlanLimits,
}

/// Changes to a subscription; `None` leaves a field as it is. `overrides`
/// replaces the whole set of overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionUpdate {
    pub plan: Option<String>,
    pub overrides: Option<PlanLimits>,
}

// ---------------------------------------------------------------------------
// Gateway feed

/// Everything a gateway node needs to verify credentials, read in one
/// consistent snapshot. Apply [`crate::Store::identity_changes`] after `seq`
/// to stay current.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySnapshot {
    /// The last change reflected in this snapshot.
    pub seq: i64,
    /// Keys that are neither revoked nor expired.
    pub keys: Vec<KeyGrant>,
    /// Clients that are not revoked.
    pub clients: Vec<ClientGrant>,
    /// Signing keys not yet past their `expires_at`.
    pub signing_keys: Vec<SigningKeyMaterial>,
    /// Revoked, not yet expired access tokens: (jti, `exp` in unix seconds).
    pub revoked_tokens: Vec<(String, i64)>,
    /// Every subscription, with its organization's time zone.
    pub subscriptions: Vec<SubscriptionGrant>,
}

/// A subscription as the gateway needs it: who, which plan (by name; the
/// plan itself is in the configuration), which API, the overrides, and the
/// organization's time zone for monthly quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionGrant {
    pub id: SubscriptionId,
    pub org_id: OrgId,
    pub app_id: Option<AppId>,
    pub key_id: Option<KeyId>,
    pub plan: String,
    /// A service name; `None`: every API.
    pub api: Option<String>,
    pub overrides: PlanLimits,
    /// The organization's IANA time zone; `None`: UTC.
    pub timezone: Option<String>,
}

/// What a usable API key grants.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyGrant {
    pub id: KeyId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub environment: KeyEnvironment,
    pub key_hash: [u8; 32],
    pub scopes: Vec<String>,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for KeyGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGrant")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("app_id", &self.app_id)
            .field("environment", &self.environment)
            .field("key_hash", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a usable OAuth client may obtain, with its secret hash to verify.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientGrant {
    pub id: ClientId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub scopes: Vec<String>,
    /// Argon2 PHC string.
    pub secret_hash: String,
}

impl fmt::Debug for ClientGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientGrant")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("app_id", &self.app_id)
            .field("scopes", &self.scopes)
            .field("secret_hash", &"<redacted>")
            .finish()
    }
}

/// A signing key with its private half, for the nodes that issue tokens.
#[derive(Clone, PartialEq)]
pub struct SigningKeyMaterial {
    pub id: SigningKeyId,
    pub algorithm: String,
    pub private_key_pkcs8: Vec<u8>,
    pub public_jwk: Value,
    /// Unix milliseconds, like `retired_at` and `expires_at`.
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl fmt::Debug for SigningKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyMaterial")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("private_key_pkcs8", &"<redacted>")
            .field("public_jwk", &self.public_jwk)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One entry of the change feed: re-read this entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityChange {
    pub seq: i64,
    pub entity: ChangeEntity,
    /// A key, client, signing key or subscription id, or a token's jti.
    pub entity_id: String,
}

/// What kind of entity an [`IdentityChange`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeEntity {
    /// Re-read with [`crate::Store::key_grant`].
    Key,
    /// Re-read with [`crate::Store::client_grant`].
    Client,
    /// Re-read the signing keys.
    SigningKey,
    /// The token with this jti was revoked.
    #[serde(rename = "token")]
    RevokedToken,
    /// Re-read with [`crate::Store::subscription_grant`] (`None`: removed).
    /// Also recorded for every subscription of an organization whose time
    /// zone changed.
    Subscription,
}

impl ChangeEntity {
    /// The value of the `entity` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeEntity::Key => "key",
            ChangeEntity::Client => "client",
            ChangeEntity::SigningKey => "signing_key",
            ChangeEntity::RevokedToken => "token",
            ChangeEntity::Subscription => "subscription",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<ChangeEntity> {
        Some(match s {
            "key" => ChangeEntity::Key,
            "client" => ChangeEntity::Client,
            "signing_key" => ChangeEntity::SigningKey,
            "token" => ChangeEntity::RevokedToken,
            "subscription" => ChangeEntity::Subscription,
            _ => return None,
        })
    }
}
