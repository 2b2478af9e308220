//! Tenant-level identity, part one: members and apps.

use serde_json::{Map, Value};
use tollgate_core::identity::Role;
use tollgate_core::ids::{AppId, UserId};

use super::check::{self, Errors};
use super::credential_sql::ChangeLog;
use super::{Tenant, sql};
use crate::db::Conn;
use crate::sql::{now_millis, to_json};
use crate::{App, AppUpdate, Listed, Member, Page, StoreError};

const LAST_OWNER: &str = "an organization must keep at least one owner";

impl Tenant<'_> {
    /// Locks the organization for a membership change (`NotFound` when it
    /// does not exist).
    async fn lock(&self, conn: &mut Conn) -> Result<(), StoreError> {
        if sql::lock_org(conn, &self.org).await? {
            Ok(())
        } else {
            Err(StoreError::not_found("organization", &self.org))
        }
    }

    async fn member_in(&self, conn: &mut Conn, user: &UserId) -> Result<Member, StoreError> {
        sql::member(conn, &self.org, user)
            .await?
            .ok_or_else(|| StoreError::not_found("member", user))?
            .into_record()
    }

    // -- Members -----------------------------------------------------------

    /// Adds a user to the organization. `NotFound` when the user does not
    /// exist, `Conflict` when already a member.
    pub async fn add_member(&self, user: &UserId, role: Role) -> Result<Member, StoreError> {
        let mut conn = self.store.pool.write().await?;
        self.lock(&mut conn).await?;
        sql::insert_member(&mut conn, &self.org, user, role, now_millis()).await?;
        let member = self.member_in(&mut conn, user).await?;
        conn.commit().await?;
        Ok(member)
    }

    /// Every member, in user id order.
    pub async fn list_members(&self) -> Result<Vec<Member>, StoreError> {
        let mut conn = self.store.pool.conn().await?;
        sql::members(&mut conn, &self.org)
            .await?
            .into_iter()
            .map(sql::MemberRow::into_record)
            .collect()
    }

    /// A member's role; `None` when the user is not a member.
    pub async fn role_of(&self, user: &UserId) -> Result<Option<Role>, StoreError> {
        let mut conn = self.store.pool.conn().await?;
        sql::member(&mut conn, &self.org, user)
            .await?
            .map(|row| row.into_record().map(|m| m.role))
            .transpose()
    }

    /// Changes a member's role. `Conflict` when that would leave the
    /// organization without an owner.
    pub async fn set_role(&self, user: &UserId, role: Role) -> Result<Member, StoreError> {
        let mut conn = self.store.pool.write().await?;
        self.lock(&mut conn).await?;
        let current = self.member_in(&mut conn, user).await?;
        if current.role == role {
            return Ok(current);
        }
        if current.role == Role::Owner && sql::owner_count(&mut conn, &self.org).await? <= 1 {
            return Err(StoreError::Conflict(LAST_OWNER.to_owned()));
        }
        sql::set_member_role(&mut conn, &self.org, user, role).await?;
        let member = self.member_in(&mut conn, user).await?;
        conn.commit().await?;
        Ok(member)
    }

    /// Removes a member. `Conflict` when they are the last owner.
    pub async fn remove_member(&self, user: &UserId) -> Result<(), StoreError> {
        let mut conn = self.store.pool.write().await?;
        self.lock(&mut conn).await?;
        let current = self.member_in(&mut conn, user).await?;
        if current.role == Role::Owner && sql::owner_count(&mut conn, &self.org).await? <= 1 {
            return Err(StoreError::Conflict(LAST_OWNER.to_owned()));
        }
        sql::delete_member(&mut conn, &self.org, user).await?;
        conn.commit().await
    }

    // -- Apps --------------------------------------------------------------

    /// Creates an app. Names are unique within the organization (`Conflict`).
    pub async fn create_app(
        &self,
        name: &str,
        description: &str,
        metadata: Map<String, Value>,
    ) -> Result<App, StoreError> {
        check_app(name, description, &metadata)?;
        let metadata = to_json(&metadata)?;
        let mut conn = self.store.pool.write().await?;
        let row = sql::insert_app(
            &mut conn,
            &self.org,
            &AppId::new(),
            name,
            description,
            &metadata,
            now_millis(),
        )
        .await?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn get_app(&self, id: &AppId) -> Result<App, StoreError> {
        let mut conn = self.store.pool.conn().await?;
        sql::app_by_id(&mut conn, &self.org, id)
            .await?
            .ok_or_else(|| StoreError::not_found("app", id))?
            .into_record()
    }

    /// One page of apps, in id (creation) order.
    pub async fn list_apps(&self, page: Page) -> Result<Listed<App>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.store.pool.conn().await?;
        let rows = sql::apps_page(
            &mut conn,
            &self.org,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(sql::AppRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    /// Changes the given fields of an app.
    pub async fn update_app(&self, id: &AppId, update: AppUpdate) -> Result<App, StoreError> {
        let mut conn = self.store.pool.write().await?;
        let current = sql::app_by_id(&mut conn, &self.org, id)
            .await?
            .ok_or_else(|| StoreError::not_found("app", id))?
            .into_record()?;
        let name = update.name.unwrap_or(current.name);
        let description = update.description.unwrap_or(current.description);
        let metadata = update.metadata.unwrap_or(current.metadata);
        check_app(&name, &description, &metadata)?;
        let metadata = to_json(&metadata)?;
        let row = sql::update_app(
            &mut conn,
            &self.org,
            id,
            &name,
            &description,
            &metadata,
            now_millis(),
        )
        .await?
        .ok_or_else(|| StoreError::not_found("app", id))?;
        conn.commit().await?;
        row.into_record()
    }

    /// Deletes an app with its keys, clients and subscriptions, recording a
    /// change for each so gateways drop them.
    pub async fn delete_app(&self, id: &AppId) -> Result<(), StoreError> {
        let mut conn = self.store.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now_millis()).await?;
        if sql::app_by_id(&mut conn, &self.org, id).await?.is_none() {
            return Err(StoreError::not_found("app", id));
        }
        log.record_cascade(&mut conn, &self.org, Some(id)).await?;
        sql::delete_app(&mut conn, &self.org, id).await?;
        conn.commit().await
    }
}

fn check_app(
    name: &str,
    description: &str,
    metadata: &Map<String, Value>,
) -> Result<(), StoreError> {
    let mut errs = Errors::default();
    check::text(name, "name", 1, check::MAX_NAME, &mut errs);
    check::multiline(
        description,
        "description",
        check::MAX_DESCRIPTION,
        &mut errs,
    );
    check::metadata(metadata, &mut errs);
    errs.finish()
}
