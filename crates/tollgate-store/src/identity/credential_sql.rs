//! SQL for credentials (API keys, OAuth clients), signing keys, revoked
//! tokens and the change feed.
//!
//! Tenant statements filter on `org_id`; the gateway feed's statements are
//! system-wide on purpose. Hashes and private keys are read only by the feed
//! queries (`*_grant*`, `signing_material`); the admin rows never select them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use tollgate_core::ids::{AppId, ClientId, KeyId, OrgId, SigningKeyId};

use super::sql::{from_json, opt_timestamp, parse_enum};
use crate::db::{Conn, on_conn};
use crate::sql::{parse_id, timestamp, to_json};
use crate::{
    ApiKey, ChangeEntity, ClientGrant, IdentityChange, KeyGrant, NewApiKey, OAuthClient,
    SigningKey, SigningKeyMaterial, StoreError,
};

fn affected(result: Result<u64, sqlx::Error>) -> Result<bool, StoreError> {
    Ok(result? > 0)
}

// ---------------------------------------------------------------------------
// API keys

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub id: String,
    pub org_id: String,
    pub app_id: String,
    pub name: String,
    pub environment: String,
    pub display_prefix: String,
    pub scopes: String,
    pub metadata: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub rotated_from: Option<String>,
    pub created_at: i64,
}

impl KeyRow {
    pub(crate) fn into_record(self) -> Result<ApiKey, StoreError> {
        let what = format!("API key {}", self.id);
        Ok(ApiKey {
            id: parse_id(&self.id, &what)?,
            org_id: parse_id(&self.org_id, &what)?,
            app_id: parse_id(&self.app_id, &what)?,
            environment: parse_enum(&self.environment, &what, "environment")?,
            scopes: from_json(&self.scopes, &what, "scopes")?,
            metadata: from_json(&self.metadata, &what, "metadata")?,
            expires_at: opt_timestamp(self.expires_at, &what)?,
            revoked_at: opt_timestamp(self.revoked_at, &what)?,
            last_used_at: opt_timestamp(self.last_used_at, &what)?,
            rotated_from: self
                .rotated_from
                .as_deref()
                .map(|r| parse_id(r, &what))
                .transpose()?,
            created_at: timestamp(self.created_at, &what)?,
            name: self.name,
            display_prefix: self.display_prefix,
        })
    }
}

const KEY_COLUMNS: &str = "id, org_id, app_id, name, environment, display_prefix, scopes, \
     metadata, expires_at, revoked_at, last_used_at, rotated_from, created_at";

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_key(
    conn: &mut Conn,
    org: &OrgId,
    app: &AppId,
    id: &KeyId,
    key: &NewApiKey,
    rotated_from: Option<&KeyId>,
    now: i64,
) -> Result<KeyRow, StoreError> {
    let sql = format!(
        "INSERT INTO api_keys (id, org_id, app_id, name, environment, key_hash, display_prefix, \
         scopes, metadata, expires_at, rotated_from, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {KEY_COLUMNS}"
    );
    let scopes = to_json(&key.scopes)?;
    let metadata = to_json(&key.metadata)?;
    let hash = hex::encode(key.key_hash);
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(app.as_str())
        .bind(key.name.as_str())
        .bind(key.environment.as_str())
        .bind(hash.as_str())
        .bind(key.display_prefix.as_str())
        .bind(scopes.as_str())
        .bind(metadata.as_str())
        .bind(key.expires_at.map(|t| t.timestamp_millis()))
        .bind(rotated_from.map(KeyId::as_str))
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::not_found("app", app)
        }
        // Never echo the hash.
        _ => StoreError::unique(e, || "an API key with this hash already exists".to_owned()),
    })
}

pub(crate) async fn key_by_id(
    conn: &mut Conn,
    org: &OrgId,
    id: &KeyId,
) -> Result<Option<KeyRow>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND id = $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn keys_page(
    conn: &mut Conn,
    org: &OrgId,
    app: &AppId,
    after: &str,
    limit: i64,
) -> Result<Vec<KeyRow>, StoreError> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND app_id = $2 AND id > $3 \
         ORDER BY id LIMIT $4"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(app.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

/// Replaces the editable fields of a key.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn update_key(
    conn: &mut Conn,
    org: &OrgId,
    id: &KeyId,
    name: &str,
    scopes: &str,
    metadata: &str,
    expires_at: Option<i64>,
) -> Result<Option<KeyRow>, StoreError> {
    let sql = format!(
        "UPDATE api_keys SET name = $3, scopes = $4, metadata = $5, expires_at = $6 \
         WHERE org_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(name)
        .bind(scopes)
        .bind(metadata)
        .bind(expires_at)
        .fetch_optional(&mut *c)
        .await)?)
}

/// Sets `revoked_at` unless already set; false when nothing changed.
pub(crate) async fn revoke_key(
    conn: &mut Conn,
    org: &OrgId,
    id: &KeyId,
    now: i64,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE api_keys SET revoked_at = $3 \
         WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL";
    affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyGrantRow {
    pub id: String,
    pub org_id: String,
    pub app_id: String,
    pub environment: String,
    pub key_hash: String,
    pub scopes: String,
    pub expires_at: Option<i64>,
}

impl KeyGrantRow {
    pub(crate) fn into_grant(self) -> Result<KeyGrant, StoreError> {
        let what = format!("API key {}", self.id);
        let mut key_hash = [0u8; 32];
        hex::decode_to_slice(&self.key_hash, &mut key_hash)
            .map_err(|_| StoreError::Corrupt(format!("{what}: key_hash is not 32 bytes of hex")))?;
        Ok(KeyGrant {
            id: parse_id(&self.id, &what)?,
            org_id: parse_id(&self.org_id, &what)?,
            app_id: parse_id(&self.app_id, &what)?,
            environment: parse_enum(&self.environment, &what, "environment")?,
            key_hash,
            scopes: from_json(&self.scopes, &what, "scopes")?,
            expires_at: self.expires_at,
        })
    }
}

const GRANT_SELECT: &str = "SELECT id, org_id, app_id, environment, key_hash, scopes, expires_at \
     FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)";

/// Every key that is neither revoked nor expired at `now`.
pub(crate) async fn key_grants(conn: &mut Conn, now: i64) -> Result<Vec<KeyGrantRow>, StoreError> {
    let sql = format!("{GRANT_SELECT} ORDER BY id");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(now)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn key_grant(
    conn: &mut Conn,
    id: &KeyId,
    now: i64,
) -> Result<Option<KeyGrantRow>, StoreError> {
    let sql = format!("{GRANT_SELECT} AND id = $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(now)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

/// Moves `last_used_at` forward to `at`, never back.
pub(crate) async fn touch_key(conn: &mut Conn, id: &KeyId, at: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE api_keys SET last_used_at = $2 \
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .bind(at)
        .execute(&mut *c)
        .await
        .map(drop))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// OAuth clients

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClientRow {
    pub id: String,
    pub org_id: String,
    pub app_id: String,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ClientRow {
    pub(crate) fn into_record(self) -> Result<OAuthClient, StoreError> {
        let what = format!("OAuth client {}", self.id);
        Ok(OAuthClient {
            id: parse_id(&self.id, &what)?,
            org_id: parse_id(&self.org_id, &what)?,
            app_id: parse_id(&self.app_id, &what)?,
            scopes: from_json(&self.scopes, &what, "scopes")?,
            created_at: timestamp(self.created_at, &what)?,
            revoked_at: opt_timestamp(self.revoked_at, &what)?,
            name: self.name,
        })
    }
}

const CLIENT_COLUMNS: &str = "id, org_id, app_id, name, scopes, created_at, revoked_at";

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_client(
    conn: &mut Conn,
    org: &OrgId,
    app: &AppId,
    id: &ClientId,
    name: &str,
    scopes: &str,
    secret_hash: &str,
    now: i64,
) -> Result<ClientRow, StoreError> {
    let sql = format!(
        "INSERT INTO oauth_clients (id, org_id, app_id, name, scopes, secret_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {CLIENT_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(app.as_str())
        .bind(name)
        .bind(scopes)
        .bind(secret_hash)
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::not_found("app", app)
        }
        _ => StoreError::from(e),
    })
}

pub(crate) async fn client_by_id(
    conn: &mut Conn,
    org: &OrgId,
    id: &ClientId,
) -> Result<Option<ClientRow>, StoreError> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE org_id = $1 AND id = $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn clients_page(
    conn: &mut Conn,
    org: &OrgId,
    app: &AppId,
    after: &str,
    limit: i64,
) -> Result<Vec<ClientRow>, StoreError> {
    let sql = format!(
        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE org_id = $1 AND app_id = $2 \
         AND id > $3 ORDER BY id LIMIT $4"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(app.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn set_client_secret(
    conn: &mut Conn,
    org: &OrgId,
    id: &ClientId,
    secret_hash: &str,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE oauth_clients SET secret_hash = $3 WHERE org_id = $1 AND id = $2";
    affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(secret_hash)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

/// Sets `revoked_at` unless already set; false when nothing changed.
pub(crate) async fn revoke_client(
    conn: &mut Conn,
    org: &OrgId,
    id: &ClientId,
    now: i64,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE oauth_clients SET revoked_at = $3 \
         WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL";
    affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClientGrantRow {
    pub id: String,
    pub org_id: String,
    pub app_id: String,
    pub scopes: String,
    pub secret_hash: String,
}

impl ClientGrantRow {
    pub(crate) fn into_grant(self) -> Result<ClientGrant, StoreError> {
        let what = format!("OAuth client {}", self.id);
        Ok(ClientGrant {
            id: parse_id(&self.id, &what)?,
            org_id: parse_id(&self.org_id, &what)?,
            app_id: parse_id(&self.app_id, &what)?,
            scopes: from_json(&self.scopes, &what, "scopes")?,
            secret_hash: self.secret_hash,
        })
    }
}

const CLIENT_GRANT_SELECT: &str = "SELECT id, org_id, app_id, scopes, secret_hash \
     FROM oauth_clients WHERE revoked_at IS NULL";

pub(crate) async fn client_grants(conn: &mut Conn) -> Result<Vec<ClientGrantRow>, StoreError> {
    let sql = format!("{CLIENT_GRANT_SELECT} ORDER BY id");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn client_grant(
    conn: &mut Conn,
    id: &ClientId,
) -> Result<Option<ClientGrantRow>, StoreError> {
    let sql = format!("{CLIENT_GRANT_SELECT} AND id = $1");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

// ---------------------------------------------------------------------------
// Signing keys

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SigningKeyRow {
    pub id: String,
    pub algorithm: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl SigningKeyRow {
    pub(crate) fn into_record(self) -> Result<SigningKey, StoreError> {
        let what = format!("signing key {}", self.id);
        Ok(SigningKey {
            id: parse_id(&self.id, &what)?,
            public_jwk: from_json(&self.public_jwk, &what, "public_jwk")?,
            created_at: timestamp(self.created_at, &what)?,
            retired_at: opt_timestamp(self.retired_at, &what)?,
            expires_at: opt_timestamp(self.expires_at, &what)?,
            algorithm: self.algorithm,
        })
    }
}

const SIGNING_COLUMNS: &str = "id, algorithm, public_jwk, created_at, retired_at, expires_at";

pub(crate) async fn insert_signing_key(
    conn: &mut Conn,
    id: &SigningKeyId,
    algorithm: &str,
    pkcs8: &[u8],
    public_jwk: &Value,
    now: i64,
) -> Result<SigningKeyRow, StoreError> {
    let sql = format!(
        "INSERT INTO signing_keys (id, algorithm, private_key, public_jwk, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {SIGNING_COLUMNS}"
    );
    let private_key = BASE64.encode(pkcs8);
    let jwk = to_json(public_jwk)?;
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(algorithm)
        .bind(private_key.as_str())
        .bind(jwk.as_str())
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| StoreError::unique(e, || format!("signing key `{id}` already exists")))
}

/// Stops a key signing (keeping the first retirement time) and sets when it
/// leaves the JWKS.
pub(crate) async fn retire_signing_key(
    conn: &mut Conn,
    id: &SigningKeyId,
    now: i64,
    expires_at: i64,
) -> Result<Option<SigningKeyRow>, StoreError> {
    let sql = format!(
        "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $2), expires_at = $3 \
         WHERE id = $1 RETURNING {SIGNING_COLUMNS}"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(now)
        .bind(expires_at)
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn signing_keys(conn: &mut Conn) -> Result<Vec<SigningKeyRow>, StoreError> {
    let sql = format!("SELECT {SIGNING_COLUMNS} FROM signing_keys ORDER BY id");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .fetch_all(&mut *c)
        .await)?)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SigningMaterialRow {
    #[sqlx(flatten)]
    pub key: SigningKeyRow,
    pub private_key: String,
}

impl SigningMaterialRow {
    pub(crate) fn into_material(self) -> Result<SigningKeyMaterial, StoreError> {
        let what = format!("signing key {}", self.key.id);
        let private_key_pkcs8 = BASE64
            .decode(self.private_key.as_bytes())
            .map_err(|_| StoreError::Corrupt(format!("{what}: private_key is not base64")))?;
        Ok(SigningKeyMaterial {
            id: parse_id(&self.key.id, &what)?,
            public_jwk: from_json(&self.key.public_jwk, &what, "public_jwk")?,
            algorithm: self.key.algorithm,
            private_key_pkcs8,
            created_at: self.key.created_at,
            retired_at: self.key.retired_at,
            expires_at: self.key.expires_at,
        })
    }
}

/// Signing keys not yet past their `expires_at`, with their private keys.
pub(crate) async fn signing_material(
    conn: &mut Conn,
    now: i64,
) -> Result<Vec<SigningMaterialRow>, StoreError> {
    let sql = format!(
        "SELECT {SIGNING_COLUMNS}, private_key FROM signing_keys \
         WHERE expires_at IS NULL OR expires_at > $1 ORDER BY id"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(now)
        .fetch_all(&mut *c)
        .await)?)
}

// ---------------------------------------------------------------------------
// Revoked tokens (expiry in unix seconds)

/// Records a revoked token; false when it was already recorded.
pub(crate) async fn insert_revoked_token(
    conn: &mut Conn,
    jti: &str,
    client: &ClientId,
    expires_at: i64,
) -> Result<bool, StoreError> {
    const SQL: &str = "INSERT INTO revoked_tokens (jti, client_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (jti) DO NOTHING";
    affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(jti)
        .bind(client.as_str())
        .bind(expires_at)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

/// Forgets tokens that expired before `now_s`: they are refused anyway.
pub(crate) async fn purge_revoked_tokens(conn: &mut Conn, now_s: i64) -> Result<(), StoreError> {
    const SQL: &str = "DELETE FROM revoked_tokens WHERE expires_at < $1";
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(now_s)
        .execute(&mut *c)
        .await
        .map(drop))?;
    Ok(())
}

pub(crate) async fn token_revoked(conn: &mut Conn, jti: &str) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1";
    let n: i64 = on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .bind(jti)
        .fetch_one(&mut *c)
        .await)?;
    Ok(n > 0)
}

pub(crate) async fn revoked_tokens(
    conn: &mut Conn,
    now_s: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    const SQL: &str =
        "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= $1 ORDER BY jti";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(now_s)
        .fetch_all(&mut *c)
        .await)?)
}

// ---------------------------------------------------------------------------
// The change feed

/// Writes change rows. [`ChangeLog::begin`] locks the sequence counter, so it
/// comes first in a write transaction; everything after it sees every
/// earlier writer's commits, and changes commit in sequence order.
pub(crate) struct ChangeLog {
    now: i64,
}

impl ChangeLog {
    pub(crate) async fn begin(conn: &mut Conn, now: i64) -> Result<ChangeLog, StoreError> {
        const SQL: &str = "UPDATE identity_seq SET seq = seq WHERE id = 1 RETURNING seq";
        let _: i64 = on_conn!(conn, |c| sqlx::query_scalar(SQL).fetch_one(&mut *c).await)?;
        Ok(ChangeLog { now })
    }

    /// Advances the counter by `n`; returns the new value.
    async fn advance(conn: &mut Conn, n: i64) -> Result<i64, StoreError> {
        const SQL: &str = "UPDATE identity_seq SET seq = seq + $1 WHERE id = 1 RETURNING seq";
        Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
            .bind(n)
            .fetch_one(&mut *c)
            .await)?)
    }

    pub(crate) async fn record(
        &self,
        conn: &mut Conn,
        entity: ChangeEntity,
        id: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO identity_changes (seq, entity, entity_id, created_at) \
             VALUES ($1, $2, $3, $4)";
        let seq = ChangeLog::advance(conn, 1).await?;
        on_conn!(conn, |c| sqlx::query(SQL)
            .bind(seq)
            .bind(entity.as_str())
            .bind(id)
            .bind(self.now)
            .execute(&mut *c)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Records a change for every key, client and subscription of the
    /// organization (of one app when given): before a delete cascades them
    /// away.
    pub(crate) async fn record_cascade(
        &self,
        conn: &mut Conn,
        org: &OrgId,
        app: Option<&AppId>,
    ) -> Result<(), StoreError> {
        self.record_rows(conn, &[KEYS, CLIENTS, SUBSCRIPTIONS], org, app)
            .await
    }

    /// Records a change for every subscription of the organization: when
    /// its time zone, which their grants carry, changes.
    pub(crate) async fn record_subscriptions(
        &self,
        conn: &mut Conn,
        org: &OrgId,
    ) -> Result<(), StoreError> {
        self.record_rows(conn, &[SUBSCRIPTIONS], org, None).await
    }

    /// Runs each `INSERT ... SELECT` of [`KEYS`], [`CLIENTS`] and
    /// [`SUBSCRIPTIONS`], numbering its rows after the current sequence.
    async fn record_rows(
        &self,
        conn: &mut Conn,
        statements: &[&str],
        org: &OrgId,
        app: Option<&AppId>,
    ) -> Result<(), StoreError> {
        let app = app.map(AppId::as_str);
        let mut base = current_seq(conn).await?;
        for sql in statements {
            let n = on_conn!(conn, |c| sqlx::query(sql)
                .bind(base)
                .bind(self.now)
                .bind(org.as_str())
                .bind(app)
                .execute(&mut *c)
                .await
                .map(|r| r.rows_affected()))?;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            if n > 0 {
                base = ChangeLog::advance(conn, n).await?;
            }
        }
        Ok(())
    }
}

/// Change rows for every key of organization `$3` (of app `$4` unless NULL),
/// numbered after `$1`, at time `$2`.
const KEYS: &str = "INSERT INTO identity_changes (seq, entity, entity_id, created_at) \
     SELECT $1 + ROW_NUMBER() OVER (ORDER BY id), 'key', id, $2 FROM api_keys \
     WHERE org_id = $3 AND ($4 IS NULL OR app_id = $4)";
/// The same for OAuth clients.
const CLIENTS: &str = "INSERT INTO identity_changes (seq, entity, entity_id, created_at) \
     SELECT $1 + ROW_NUMBER() OVER (ORDER BY id), 'client', id, $2 FROM oauth_clients \
     WHERE org_id = $3 AND ($4 IS NULL OR app_id = $4)";
/// The same for subscriptions (an app's includes its keys').
const SUBSCRIPTIONS: &str = "INSERT INTO identity_changes (seq, entity, entity_id, created_at) \
     SELECT $1 + ROW_NUMBER() OVER (ORDER BY id), 'subscription', id, $2 FROM subscriptions \
     WHERE org_id = $3 AND ($4 IS NULL OR app_id = $4)";

/// The last change's sequence number (0 before the first).
pub(crate) async fn current_seq(conn: &mut Conn) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT seq FROM identity_seq WHERE id = 1";
    Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .fetch_one(&mut *c)
        .await)?)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChangeRow {
    pub seq: i64,
    pub entity: String,
    pub entity_id: String,
}

impl ChangeRow {
    pub(crate) fn into_change(self) -> Result<IdentityChange, StoreError> {
        let entity = ChangeEntity::parse(&self.entity).ok_or_else(|| {
            StoreError::Corrupt(format!("identity change {}: unknown entity", self.seq))
        })?;
        Ok(IdentityChange {
            seq: self.seq,
            entity,
            entity_id: self.entity_id,
        })
    }
}

pub(crate) async fn changes_after(
    conn: &mut Conn,
    after: i64,
    limit: i64,
) -> Result<Vec<ChangeRow>, StoreError> {
    const SQL: &str = "SELECT seq, entity, entity_id FROM identity_changes WHERE seq > $1 \
         ORDER BY seq LIMIT $2";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}
