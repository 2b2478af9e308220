//! Tenant-level identity, part two: API keys and OAuth clients. Every write
//! records a change in its own transaction (see the module docs).

use std::time::Duration;

use tollgate_core::ids::{AppId, ClientId, KeyId};

use super::check::{self, Errors};
use super::credential_sql::{self as csql, ChangeLog};
use super::{Tenant, sql};
use crate::db::Conn;
use crate::sql::{now_millis, to_json};
use crate::{ApiKey, ChangeEntity, KeyUpdate, Listed, NewApiKey, OAuthClient, Page, StoreError};

impl Tenant<'_> {
    /// `NotFound` unless the app exists in this organization.
    async fn require_app(&self, conn: &mut Conn, app: &AppId) -> Result<(), StoreError> {
        match sql::app_by_id(conn, &self.org, app).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("app", app)),
        }
    }

    async fn key_row(&self, conn: &mut Conn, id: &KeyId) -> Result<csql::KeyRow, StoreError> {
        csql::key_by_id(conn, &self.org, id)
            .await?
            .ok_or_else(|| StoreError::not_found("api_key", id))
    }

    async fn client_row(
        &self,
        conn: &mut Conn,
        id: &ClientId,
    ) -> Result<csql::ClientRow, StoreError> {
        csql::client_by_id(conn, &self.org, id)
            .await?
            .ok_or_else(|| StoreError::not_found("oauth_client", id))
    }

    // -- API keys ----------------------------------------------------------

    /// Stores a new key of an app of this organization.
    pub async fn create_key(&self, app: &AppId, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let now = now_millis();
        check_new_key(&key, now)?;
        let id = KeyId::new();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        self.require_app(&mut conn, app).await?;
        let row = csql::insert_key(&mut conn, &self.org, app, &id, &key, None, now).await?;
        log.record(&mut conn, ChangeEntity::Key, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn get_key(&self, id: &KeyId) -> Result<ApiKey, StoreError> {
        let mut conn = self.store.pool.conn().await?;
        self.key_row(&mut conn, id).await?.into_record()
    }

    /// One page of an app's keys (revoked and expired ones included), in id
    /// (creation) order. `NotFound` when the app is not in this organization.
    pub async fn list_keys(&self, app: &AppId, page: Page) -> Result<Listed<ApiKey>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.store.pool.snapshot().await?;
        self.require_app(&mut conn, app).await?;
        let rows = csql::keys_page(
            &mut conn,
            &self.org,
            app,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        conn.commit().await?;
        let items = rows
            .into_iter()
            .map(csql::KeyRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    /// Changes the given fields of a key.
    pub async fn update_key(&self, id: &KeyId, update: KeyUpdate) -> Result<ApiKey, StoreError> {
        let now = now_millis();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let current = self.key_row(&mut conn, id).await?.into_record()?;
        let name = update.name.unwrap_or(current.name);
        let scopes = update.scopes.unwrap_or(current.scopes);
        let metadata = update.metadata.unwrap_or(current.metadata);
        let expires_at = match update.expires_at {
            Some(new) => new.map(|t| t.timestamp_millis()),
            None => current.expires_at.map(|t| t.timestamp_millis()),
        };
        let mut errs = Errors::default();
        check::text(&name, "name", 0, check::MAX_NAME, &mut errs);
        check::scopes(&scopes, &mut errs);
        check::metadata(&metadata, &mut errs);
        if update
            .expires_at
            .flatten()
            .is_some_and(|t| t.timestamp_millis() <= now)
        {
            errs.push("expires_at", "must be in the future");
        }
        errs.finish()?;
        let row = csql::update_key(
            &mut conn,
            &self.org,
            id,
            &name,
            &to_json(&scopes)?,
            &to_json(&metadata)?,
            expires_at,
        )
        .await?
        .ok_or_else(|| StoreError::not_found("api_key", id))?;
        log.record(&mut conn, ChangeEntity::Key, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    /// Revokes a key for good. Idempotent: revoking a revoked key returns it
    /// unchanged.
    pub async fn revoke_key(&self, id: &KeyId) -> Result<ApiKey, StoreError> {
        let now = now_millis();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        if csql::revoke_key(&mut conn, &self.org, id, now).await? {
            log.record(&mut conn, ChangeEntity::Key, id.as_str())
                .await?;
        }
        let row = self.key_row(&mut conn, id).await?;
        conn.commit().await?;
        row.into_record()
    }

    /// Replaces a key, in one transaction: stores `new` on the same app (its
    /// environment must match) with `rotated_from` set, and makes the old key
    /// expire after `overlap` (or sooner, if it already expires sooner).
    /// Returns (new key, old key). `Conflict` when the old key is revoked or
    /// expired; then nothing is written.
    pub async fn rotate_key(
        &self,
        id: &KeyId,
        new: NewApiKey,
        overlap: Duration,
    ) -> Result<(ApiKey, ApiKey), StoreError> {
        let now = now_millis();
        check_new_key(&new, now)?;
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let old = self.key_row(&mut conn, id).await?;
        if old.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "API key `{id}` is revoked and cannot be rotated"
            )));
        }
        if old.expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::Conflict(format!(
                "API key `{id}` has expired and cannot be rotated"
            )));
        }
        if new.environment.as_str() != old.environment {
            return Err(StoreError::invalid(
                "environment",
                format!("a rotated key keeps its environment `{}`", old.environment),
            ));
        }
        let app: AppId = crate::sql::parse_id(&old.app_id, &format!("API key {id}"))?;
        let new_id = KeyId::new();
        let new_row =
            csql::insert_key(&mut conn, &self.org, &app, &new_id, &new, Some(id), now).await?;
        let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        let until = now.saturating_add(overlap_ms);
        let expires_at = old.expires_at.map_or(until, |t| t.min(until));
        let old_row = csql::update_key(
            &mut conn,
            &self.org,
            id,
            &old.name,
            &old.scopes,
            &old.metadata,
            Some(expires_at),
        )
        .await?
        .ok_or_else(|| StoreError::not_found("api_key", id))?;
        log.record(&mut conn, ChangeEntity::Key, new_id.as_str())
            .await?;
        log.record(&mut conn, ChangeEntity::Key, id.as_str())
            .await?;
        conn.commit().await?;
        Ok((new_row.into_record()?, old_row.into_record()?))
    }

    // -- OAuth clients -----------------------------------------------------

    /// Stores a new OAuth client of an app. `scopes` are the scopes it may
    /// request; `secret_hash` is the argon2 PHC string of its secret.
    pub async fn create_client(
        &self,
        app: &AppId,
        name: &str,
        scopes: Vec<String>,
        secret_hash: &str,
    ) -> Result<OAuthClient, StoreError> {
        let now = now_millis();
        let mut errs = Errors::default();
        check::text(name, "name", 0, check::MAX_NAME, &mut errs);
        check::scopes(&scopes, &mut errs);
        check::secret_hash(secret_hash, &mut errs);
        errs.finish()?;
        let id = ClientId::new();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        self.require_app(&mut conn, app).await?;
        let row = csql::insert_client(
            &mut conn,
            &self.org,
            app,
            &id,
            name,
            &to_json(&scopes)?,
            secret_hash,
            now,
        )
        .await?;
        log.record(&mut conn, ChangeEntity::Client, id.as_str())
            .await?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn get_client(&self, id: &ClientId) -> Result<OAuthClient, StoreError> {
        let mut conn = self.store.pool.conn().await?;
        self.client_row(&mut conn, id).await?.into_record()
    }

    /// One page of an app's clients (revoked ones included), in id order.
    /// `NotFound` when the app is not in this organization.
    pub async fn list_clients(
        &self,
        app: &AppId,
        page: Page,
    ) -> Result<Listed<OAuthClient>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.store.pool.snapshot().await?;
        self.require_app(&mut conn, app).await?;
        let rows = csql::clients_page(
            &mut conn,
            &self.org,
            app,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        conn.commit().await?;
        let items = rows
            .into_iter()
            .map(csql::ClientRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    /// Replaces a client's secret hash. `Conflict` when the client is revoked.
    pub async fn set_client_secret(
        &self,
        id: &ClientId,
        secret_hash: &str,
    ) -> Result<OAuthClient, StoreError> {
        let now = now_millis();
        let mut errs = Errors::default();
        check::secret_hash(secret_hash, &mut errs);
        errs.finish()?;
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let current = self.client_row(&mut conn, id).await?;
        if current.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "OAuth client `{id}` is revoked; its secret cannot change"
            )));
        }
        csql::set_client_secret(&mut conn, &self.org, id, secret_hash).await?;
        log.record(&mut conn, ChangeEntity::Client, id.as_str())
            .await?;
        conn.commit().await?;
        current.into_record()
    }

    /// Revokes a client for good. Idempotent.
    pub async fn revoke_client(&self, id: &ClientId) -> Result<OAuthClient, StoreError> {
        let now = now_millis();
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        if csql::revoke_client(&mut conn, &self.org, id, now).await? {
            log.record(&mut conn, ChangeEntity::Client, id.as_str())
                .await?;
        }
        let row = self.client_row(&mut conn, id).await?;
        conn.commit().await?;
        row.into_record()
    }
}

fn check_new_key(key: &NewApiKey, now: i64) -> Result<(), StoreError> {
    let mut errs = Errors::default();
    check::text(&key.name, "name", 0, check::MAX_NAME, &mut errs);
    check::token(&key.display_prefix, "display_prefix", 64, &mut errs);
    check::scopes(&key.scopes, &mut errs);
    check::metadata(&key.metadata, &mut errs);
    if key.expires_at.is_some_and(|t| t.timestamp_millis() <= now) {
        errs.push("expires_at", "must be in the future");
    }
    errs.finish()
}
