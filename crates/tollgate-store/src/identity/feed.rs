//! System-level identity: the gateway feed (snapshot, changes, single
//! grants), signing keys, revoked tokens, last-used times and meta values.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tollgate_core::ids::{ClientId, KeyId, SigningKeyId};

use super::check::{self, Errors};
use super::credential_sql::{self as csql, ChangeLog};
use super::sql;
use super::subscription_sql as ssql;
use crate::sql::now_millis;
use crate::{
    ChangeEntity, ClientGrant, IdentityChange, IdentitySnapshot, KeyGrant, SigningKey,
    SigningKeyMaterial, Store, StoreError,
};

/// The most changes one [`Store::identity_changes`] call returns.
pub const MAX_CHANGES_PER_READ: u32 = 10_000;

impl Store {
    // -- Gateway feed ------------------------------------------------------

    /// Every usable credential and every subscription, read in one
    /// consistent snapshot together with the sequence number of the last
    /// change it reflects. A node loads this
    /// at start, then applies [`Store::identity_changes`] after `seq`.
    pub async fn identity_snapshot(&self) -> Result<IdentitySnapshot, StoreError> {
        let now = now_millis();
        let mut conn = self.pool.snapshot().await?;
        let seq = csql::current_seq(&mut conn).await?;
        let keys = csql::key_grants(&mut conn, now).await?;
        let clients = csql::client_grants(&mut conn).await?;
        let signing = csql::signing_material(&mut conn, now).await?;
        let revoked_tokens = csql::revoked_tokens(&mut conn, now.div_euclid(1000)).await?;
        let subscriptions = ssql::subscription_grants(&mut conn).await?;
        conn.commit().await?;
        Ok(IdentitySnapshot {
            seq,
            keys: keys
                .into_iter()
                .map(csql::KeyGrantRow::into_grant)
                .collect::<Result<_, _>>()?,
            clients: clients
                .into_iter()
                .map(csql::ClientGrantRow::into_grant)
                .collect::<Result<_, _>>()?,
            signing_keys: signing
                .into_iter()
                .map(csql::SigningMaterialRow::into_material)
                .collect::<Result<_, _>>()?,
            revoked_tokens,
            subscriptions: subscriptions
                .into_iter()
                .map(ssql::SubscriptionGrantRow::into_grant)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Up to `limit` (clamped to 1..=[`MAX_CHANGES_PER_READ`]) changes with a
    /// sequence number above `after`, in order. Changes commit in sequence
    /// order, so a reader never skips one.
    pub async fn identity_changes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<IdentityChange>, StoreError> {
        let limit = limit.clamp(1, MAX_CHANGES_PER_READ);
        let mut conn = self.pool.conn().await?;
        csql::changes_after(&mut conn, after, i64::from(limit))
            .await?
            .into_iter()
            .map(csql::ChangeRow::into_change)
            .collect()
    }

    /// The sequence number of the last change (0 before any): a cheap poll.
    pub async fn identity_seq(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.conn().await?;
        csql::current_seq(&mut conn).await
    }

    /// What a key grants now; `None` when it is deleted, revoked or expired.
    pub async fn key_grant(&self, id: &KeyId) -> Result<Option<KeyGrant>, StoreError> {
        let mut conn = self.pool.conn().await?;
        csql::key_grant(&mut conn, id, now_millis())
            .await?
            .map(csql::KeyGrantRow::into_grant)
            .transpose()
    }

    /// What a client may obtain now; `None` when it is deleted or revoked.
    pub async fn client_grant(&self, id: &ClientId) -> Result<Option<ClientGrant>, StoreError> {
        let mut conn = self.pool.conn().await?;
        csql::client_grant(&mut conn, id)
            .await?
            .map(csql::ClientGrantRow::into_grant)
            .transpose()
    }

    // -- Signing keys ------------------------------------------------------

    /// Stores a new token signing key (`pkcs8`: the DER private key).
    /// `Conflict` when the id exists.
    pub async fn add_signing_key(
        &self,
        id: &SigningKeyId,
        algorithm: &str,
        pkcs8: &[u8],
        public_jwk: &Value,
    ) -> Result<SigningKey, StoreError> {
        let mut errs = Errors::default();
        check::token(algorithm, "algorithm", 16, &mut errs);
        if pkcs8.is_empty() {
            errs.push("private_key", "must not be empty");
        }
        if !public_jwk.is_object() {
            errs.push("public_jwk", "must be a JSON object");
        }
        errs.finish()?;
        let now = now_millis();
        let mut conn = self.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let row =
            csql::insert_signing_key(&mut conn, id, algorithm, pkcs8, public_jwk, now).await?;
        log.record(&mut conn, ChangeEntity::SigningKey, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    /// Stops a key signing (from now; a second call keeps the first time)
    /// and sets when it leaves the JWKS.
    pub async fn retire_signing_key(
        &self,
        id: &SigningKeyId,
        expires_at: DateTime<Utc>,
    ) -> Result<SigningKey, StoreError> {
        let now = now_millis();
        let mut conn = self.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let row = csql::retire_signing_key(&mut conn, id, now, expires_at.timestamp_millis())
            .await?
            .ok_or_else(|| StoreError::not_found("signing_key", id))?;
        log.record(&mut conn, ChangeEntity::SigningKey, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    /// Every signing key, expired ones included, in id (creation) order.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut conn = self.pool.conn().await?;
        csql::signing_keys(&mut conn)
            .await?
            .into_iter()
            .map(csql::SigningKeyRow::into_record)
            .collect()
    }

    /// The signing keys not yet past `expires_at`, with their private keys:
    /// what a node re-reads after a `SigningKey` change.
    pub async fn signing_key_material(&self) -> Result<Vec<SigningKeyMaterial>, StoreError> {
        let mut conn = self.pool.conn().await?;
        csql::signing_material(&mut conn, now_millis())
            .await?
            .into_iter()
            .map(csql::SigningMaterialRow::into_material)
            .collect()
    }

    // -- Revoked tokens ----------------------------------------------------

    /// Revokes an access token until its `exp` (`expires_at`, unix seconds).
    /// Idempotent; records a change only the first time. Also forgets
    /// revoked tokens that have expired.
    pub async fn revoke_token(
        &self,
        jti: &str,
        client: &ClientId,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut errs = Errors::default();
        check::token(jti, "jti", 256, &mut errs);
        errs.finish()?;
        let now = now_millis();
        let now_s = now.div_euclid(1000);
        let mut conn = self.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        csql::purge_revoked_tokens(&mut conn, now_s).await?;
        if expires_at >= now_s
            && csql::insert_revoked_token(&mut conn, jti, client, expires_at).await?
        {
            log.record(&mut conn, ChangeEntity::RevokedToken, jti)
                .await?;
        }
        conn.commit().await
    }

    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.conn().await?;
        csql::token_revoked(&mut conn, jti).await
    }

    // -- Last use ----------------------------------------------------------

    /// Records when keys were last used (unix ms), in one transaction. A
    /// time never moves back; unknown ids are ignored. Records no change:
    /// last use is not security relevant. Rows are updated in id order, so
    /// concurrent batches from several nodes cannot deadlock.
    pub async fn touch_keys(&self, uses: &[(KeyId, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // One update per key, the latest time first among duplicates.
        let mut uses: Vec<(&KeyId, i64)> = uses.iter().map(|(id, at)| (id, *at)).collect();
        uses.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        uses.dedup_by(|later, kept| later.0 == kept.0);
        let mut conn = self.pool.write().await?;
        for (id, at) in uses {
            csql::touch_key(&mut conn, id, at).await?;
        }
        conn.commit().await
    }

    // -- Meta --------------------------------------------------------------

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::meta_get(&mut conn, key).await
    }

    /// Stores `value` under `key` unless a value is there already, and
    /// returns the stored value. When several nodes race, all get the first.
    pub async fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut errs = Errors::default();
        check::token(key, "key", 128, &mut errs);
        errs.finish()?;
        let mut conn = self.pool.conn().await?;
        sql::meta_insert_absent(&mut conn, key, value).await?;
        sql::meta_get(&mut conn, key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("meta `{key}` vanished after insert")))
    }
}
