//! Operator-level identity: organizations and users.

use tollgate_core::config::check_timezone;
use tollgate_core::identity::Role;
use tollgate_core::ids::{OrgId, UserId};

use super::check::{self, Errors};
use super::credential_sql::ChangeLog;
use super::sql;
use crate::sql::now_millis;
use crate::{Listed, OrgUpdate, Organization, Page, Store, StoreError, User};

impl Store {
    // -- Organizations -----------------------------------------------------

    /// Creates an organization. `name` is its unique slug (1 to 64 of `a-z`,
    /// `0-9`, `-`); `Conflict` when taken.
    pub async fn create_org(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<Organization, StoreError> {
        self.create_org_with_timezone(name, display_name, None)
            .await
    }

    /// Creates an organization with a time zone (an IANA name; `None`:
    /// UTC), which its monthly quotas follow.
    pub async fn create_org_with_timezone(
        &self,
        name: &str,
        display_name: &str,
        timezone: Option<&str>,
    ) -> Result<Organization, StoreError> {
        let mut errs = Errors::default();
        check::slug(name, &mut errs);
        check::text(display_name, "display_name", 1, check::MAX_NAME, &mut errs);
        if let Some(tz) = timezone {
            timezone_check(tz, &mut errs);
        }
        errs.finish()?;
        let mut conn = self.pool.write().await?;
        let row = sql::insert_org(
            &mut conn,
            &OrgId::new(),
            name,
            display_name,
            timezone,
            now_millis(),
        )
        .await?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn get_org(&self, id: &OrgId) -> Result<Organization, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::org_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("organization", id))?
            .into_record()
    }

    /// The organization with this slug; `NotFound` carries the name as its id.
    pub async fn get_org_by_name(&self, name: &str) -> Result<Organization, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::org_by_name(&mut conn, name)
            .await?
            .ok_or_else(|| StoreError::not_found("organization", name))?
            .into_record()
    }

    /// One page of organizations, in id (creation) order.
    pub async fn list_orgs(&self, page: Page) -> Result<Listed<Organization>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.pool.conn().await?;
        let rows = sql::orgs_page(
            &mut conn,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(sql::OrgRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    /// Changes an organization's display name (its slug is permanent).
    pub async fn update_org(
        &self,
        id: &OrgId,
        display_name: &str,
    ) -> Result<Organization, StoreError> {
        let update = OrgUpdate {
            display_name: Some(display_name.to_owned()),
            timezone: None,
        };
        self.patch_org(id, update).await
    }

    /// Changes the given fields of an organization. A new time zone records
    /// a change for each of its subscriptions, whose grants carry it, so
    /// gateways move its monthly quota periods at once.
    pub async fn patch_org(
        &self,
        id: &OrgId,
        update: OrgUpdate,
    ) -> Result<Organization, StoreError> {
        let mut errs = Errors::default();
        if let Some(display_name) = &update.display_name {
            check::text(display_name, "display_name", 1, check::MAX_NAME, &mut errs);
        }
        if let Some(Some(tz)) = &update.timezone {
            timezone_check(tz, &mut errs);
        }
        errs.finish()?;
        let now = now_millis();
        let mut conn = self.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        let current = sql::org_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("organization", id))?;
        let display_name = update.display_name.unwrap_or(current.display_name);
        let timezone = update.timezone.unwrap_or(current.timezone.clone());
        let row = sql::update_org(&mut conn, id, &display_name, timezone.as_deref(), now)
            .await?
            .ok_or_else(|| StoreError::not_found("organization", id))?;
        if timezone != current.timezone {
            log.record_subscriptions(&mut conn, id).await?;
        }
        conn.commit().await?;
        row.into_record()
    }

    /// Deletes an organization with its memberships, apps, keys, clients and
    /// subscriptions. Records a change for every key, client and
    /// subscription, so gateways drop them.
    pub async fn delete_org(&self, id: &OrgId) -> Result<(), StoreError> {
        let now = now_millis();
        let mut conn = self.pool.write().await?;
        let log = ChangeLog::begin(&mut conn, now).await?;
        log.record_cascade(&mut conn, id, None).await?;
        if !sql::delete_org(&mut conn, id).await? {
            return Err(StoreError::not_found("organization", id));
        }
        conn.commit().await?;
        tracing::info!(org = %id, "organization deleted");
        Ok(())
    }

    // -- Users -------------------------------------------------------------

    /// Creates a user. The email is trimmed and lower-cased; `Conflict` when
    /// another user has it.
    pub async fn create_user(&self, email: &str, name: &str) -> Result<User, StoreError> {
        let mut errs = Errors::default();
        let email = check::email(email, &mut errs);
        check::text(name, "name", 0, check::MAX_NAME, &mut errs);
        errs.finish()?;
        let mut conn = self.pool.write().await?;
        let row = sql::insert_user(&mut conn, &UserId::new(), &email, name, now_millis()).await?;
        conn.commit().await?;
        row.into_record()
    }

    pub async fn get_user(&self, id: &UserId) -> Result<User, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::user_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))?
            .into_record()
    }

    /// The user with this email (compared case-insensitively), if any.
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = email.trim().to_lowercase();
        let mut conn = self.pool.conn().await?;
        sql::user_by_email(&mut conn, &email)
            .await?
            .map(sql::UserRow::into_record)
            .transpose()
    }

    /// One page of users, in id (creation) order.
    pub async fn list_users(&self, page: Page) -> Result<Listed<User>, StoreError> {
        let limit = page.clamped_limit();
        let mut conn = self.pool.conn().await?;
        let rows = sql::users_page(
            &mut conn,
            page.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(sql::UserRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |r| r.id.as_str()))
    }

    /// The organizations a user belongs to, with the user's role in each, in
    /// organization id order (for a portal's organization picker).
    pub async fn user_orgs(&self, user: &UserId) -> Result<Vec<(Organization, Role)>, StoreError> {
        let mut conn = self.pool.conn().await?;
        sql::memberships_of(&mut conn, user)
            .await?
            .into_iter()
            .map(|row| {
                let role = sql::parse_enum(&row.role, &format!("member {user}"), "role")?;
                Ok((row.org.into_record()?, role))
            })
            .collect()
    }
}

fn timezone_check(tz: &str, errs: &mut Errors) {
    if let Err(reason) = check_timezone(tz) {
        errs.push("timezone", reason);
    }
}
