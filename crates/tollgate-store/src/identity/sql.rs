//! SQL for organizations, users, memberships, apps and meta values, and the
//! row conversions shared by the identity module.
//!
//! Every statement on a tenant table filters on `org_id`: an id of another
//! organization matches nothing, exactly like an id that does not exist.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use tollgate_core::identity::Role;
use tollgate_core::ids::{AppId, OrgId, UserId};

use crate::db::{Conn, on_conn};
use crate::sql::{parse_id, timestamp};
use crate::{App, Member, Organization, StoreError, User};

// ---------------------------------------------------------------------------
// Conversions

pub(super) fn opt_timestamp(
    ms: Option<i64>,
    what: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(|ms| timestamp(ms, what)).transpose()
}

/// A JSON column; the error names the row and column, never the value.
pub(super) fn from_json<T: DeserializeOwned>(
    raw: &str,
    what: &str,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{what}: {column}: {e}")))
}

pub(super) fn parse_enum<T: FromStr<Err = String>>(
    raw: &str,
    what: &str,
    column: &str,
) -> Result<T, StoreError> {
    raw.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what}: {column}: {e}")))
}

fn rows_affected(result: Result<u64, sqlx::Error>) -> Result<bool, StoreError> {
    Ok(result? > 0)
}

// ---------------------------------------------------------------------------
// Organizations

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrgRow {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub timezone: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OrgRow {
    pub(crate) fn into_record(self) -> Result<Organization, StoreError> {
        let what = format!("organization {}", self.id);
        Ok(Organization {
            id: parse_id(&self.id, &what)?,
            name: self.name,
            display_name: self.display_name,
            timezone: self.timezone,
            created_at: timestamp(self.created_at, &what)?,
            updated_at: timestamp(self.updated_at, &what)?,
        })
    }
}

const ORG_COLUMNS: &str = "id, name, display_name, timezone, created_at, updated_at";

fn org_conflict(name: &str) -> String {
    format!("an organization named `{name}` already exists")
}

pub(crate) async fn insert_org(
    conn: &mut Conn,
    id: &OrgId,
    name: &str,
    display_name: &str,
    timezone: Option<&str>,
    now: i64,
) -> Result<OrgRow, StoreError> {
    let sql = format!(
        "INSERT INTO organizations ({ORG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $5) \
         RETURNING {ORG_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(name)
        .bind(display_name)
        .bind(timezone)
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| StoreError::unique(e, || org_conflict(name)))
}

pub(crate) async fn org_by_id(conn: &mut Conn, id: &OrgId) -> Result<Option<OrgRow>, StoreError> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn org_by_name(conn: &mut Conn, name: &str) -> Result<Option<OrgRow>, StoreError> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE name = $1");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(name)
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn orgs_page(
    conn: &mut Conn,
    after: &str,
    limit: i64,
) -> Result<Vec<OrgRow>, StoreError> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id > $1 ORDER BY id LIMIT $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn update_org(
    conn: &mut Conn,
    id: &OrgId,
    display_name: &str,
    timezone: Option<&str>,
    now: i64,
) -> Result<Option<OrgRow>, StoreError> {
    let sql = format!(
        "UPDATE organizations SET display_name = $2, timezone = $3, updated_at = $4 \
         WHERE id = $1 RETURNING {ORG_COLUMNS}"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(display_name)
        .bind(timezone)
        .bind(now)
        .fetch_optional(&mut *c)
        .await)?)
}

/// Deletes an organization with its memberships, apps, keys and clients.
pub(crate) async fn delete_org(conn: &mut Conn, id: &OrgId) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM organizations WHERE id = $1";
    rows_affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

/// Locks the organization's row until the transaction ends (PostgreSQL; on
/// SQLite the write transaction already excludes other writers), so
/// membership rules checked afterwards hold at commit. False when it does
/// not exist.
pub(crate) async fn lock_org(conn: &mut Conn, id: &OrgId) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE organizations SET updated_at = updated_at WHERE id = $1";
    rows_affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

// ---------------------------------------------------------------------------
// Users

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: i64,
}

impl UserRow {
    pub(crate) fn into_record(self) -> Result<User, StoreError> {
        let what = format!("user {}", self.id);
        Ok(User {
            id: parse_id(&self.id, &what)?,
            email: self.email,
            name: self.name,
            created_at: timestamp(self.created_at, &what)?,
        })
    }
}

const USER_COLUMNS: &str = "id, email, name, created_at";

pub(crate) async fn insert_user(
    conn: &mut Conn,
    id: &UserId,
    email: &str,
    name: &str,
    now: i64,
) -> Result<UserRow, StoreError> {
    let sql = format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(email)
        .bind(name)
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| StoreError::unique(e, || format!("a user with email `{email}` already exists")))
}

pub(crate) async fn user_by_id(
    conn: &mut Conn,
    id: &UserId,
) -> Result<Option<UserRow>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn user_by_email(
    conn: &mut Conn,
    email: &str,
) -> Result<Option<UserRow>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(email)
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn users_page(
    conn: &mut Conn,
    after: &str,
    limit: i64,
) -> Result<Vec<UserRow>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

// ---------------------------------------------------------------------------
// Memberships

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub user_created_at: i64,
    pub role: String,
    pub since: i64,
}

impl MemberRow {
    pub(crate) fn into_record(self) -> Result<Member, StoreError> {
        let what = format!("member {}", self.user_id);
        Ok(Member {
            role: parse_enum(&self.role, &what, "role")?,
            since: timestamp(self.since, &what)?,
            user: UserRow {
                id: self.user_id,
                email: self.email,
                name: self.name,
                created_at: self.user_created_at,
            }
            .into_record()?,
        })
    }
}

const MEMBER_SELECT: &str = "SELECT u.id AS user_id, u.email, u.name, \
     u.created_at AS user_created_at, m.role, m.created_at AS since \
     FROM memberships m JOIN users u ON u.id = m.user_id";

pub(crate) async fn insert_member(
    conn: &mut Conn,
    org: &OrgId,
    user: &UserId,
    role: Role,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str =
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)";
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(role.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop))
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::not_found("user", user)
        }
        _ => StoreError::unique(e, || format!("user `{user}` is already a member")),
    })
}

/// Every member of the organization, in user id order.
pub(crate) async fn members(conn: &mut Conn, org: &OrgId) -> Result<Vec<MemberRow>, StoreError> {
    let sql = format!("{MEMBER_SELECT} WHERE m.org_id = $1 ORDER BY u.id");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn member(
    conn: &mut Conn,
    org: &OrgId,
    user: &UserId,
) -> Result<Option<MemberRow>, StoreError> {
    let sql = format!("{MEMBER_SELECT} WHERE m.org_id = $1 AND m.user_id = $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(user.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn set_member_role(
    conn: &mut Conn,
    org: &OrgId,
    user: &UserId,
    role: Role,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2";
    rows_affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(role.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

pub(crate) async fn delete_member(
    conn: &mut Conn,
    org: &OrgId,
    user: &UserId,
) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2";
    rows_affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(user.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

pub(crate) async fn owner_count(conn: &mut Conn, org: &OrgId) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'";
    Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .bind(org.as_str())
        .fetch_one(&mut *c)
        .await)?)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MembershipRow {
    #[sqlx(flatten)]
    pub org: OrgRow,
    pub role: String,
}

/// The organizations a user belongs to, in organization id order.
pub(crate) async fn memberships_of(
    conn: &mut Conn,
    user: &UserId,
) -> Result<Vec<MembershipRow>, StoreError> {
    const SQL: &str = "SELECT o.id, o.name, o.display_name, o.timezone, o.created_at, \
         o.updated_at, m.role \
         FROM memberships m JOIN organizations o ON o.id = m.org_id \
         WHERE m.user_id = $1 ORDER BY o.id";
    Ok(on_conn!(conn, |c| sqlx::query_as(SQL)
        .bind(user.as_str())
        .fetch_all(&mut *c)
        .await)?)
}

// ---------------------------------------------------------------------------
// Apps

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AppRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub description: String,
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl AppRow {
    pub(crate) fn into_record(self) -> Result<App, StoreError> {
        let what = format!("app {}", self.id);
        Ok(App {
            id: parse_id(&self.id, &what)?,
            org_id: parse_id(&self.org_id, &what)?,
            metadata: from_json(&self.metadata, &what, "metadata")?,
            name: self.name,
            description: self.description,
            created_at: timestamp(self.created_at, &what)?,
            updated_at: timestamp(self.updated_at, &what)?,
        })
    }
}

const APP_COLUMNS: &str = "id, org_id, name, description, metadata, created_at, updated_at";

fn app_error(err: sqlx::Error, org: &OrgId, name: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::not_found("organization", org)
        }
        _ => StoreError::unique(err, || format!("an app named `{name}` already exists")),
    }
}

pub(crate) async fn insert_app(
    conn: &mut Conn,
    org: &OrgId,
    id: &AppId,
    name: &str,
    description: &str,
    metadata: &str,
    now: i64,
) -> Result<AppRow, StoreError> {
    let sql = format!(
        "INSERT INTO apps ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) \
         RETURNING {APP_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(name)
        .bind(description)
        .bind(metadata)
        .bind(now)
        .fetch_one(&mut *c)
        .await)
    .map_err(|e| app_error(e, org, name))
}

pub(crate) async fn app_by_id(
    conn: &mut Conn,
    org: &OrgId,
    id: &AppId,
) -> Result<Option<AppRow>, StoreError> {
    let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE org_id = $1 AND id = $2");
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await)?)
}

pub(crate) async fn apps_page(
    conn: &mut Conn,
    org: &OrgId,
    after: &str,
    limit: i64,
) -> Result<Vec<AppRow>, StoreError> {
    let sql = format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    Ok(on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await)?)
}

pub(crate) async fn update_app(
    conn: &mut Conn,
    org: &OrgId,
    id: &AppId,
    name: &str,
    description: &str,
    metadata: &str,
    now: i64,
) -> Result<Option<AppRow>, StoreError> {
    let sql = format!(
        "UPDATE apps SET name = $3, description = $4, metadata = $5, updated_at = $6 \
         WHERE org_id = $1 AND id = $2 RETURNING {APP_COLUMNS}"
    );
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(org.as_str())
        .bind(id.as_str())
        .bind(name)
        .bind(description)
        .bind(metadata)
        .bind(now)
        .fetch_optional(&mut *c)
        .await)
    .map_err(|e| app_error(e, org, name))
}

/// Deletes an app with its keys and clients.
pub(crate) async fn delete_app(
    conn: &mut Conn,
    org: &OrgId,
    id: &AppId,
) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM apps WHERE org_id = $1 AND id = $2";
    rows_affected(on_conn!(conn, |c| sqlx::query(SQL)
        .bind(org.as_str())
        .bind(id.as_str())
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())))
}

// ---------------------------------------------------------------------------
// Meta

pub(crate) async fn meta_get(conn: &mut Conn, key: &str) -> Result<Option<String>, StoreError> {
    const SQL: &str = "SELECT value FROM meta WHERE key = $1";
    Ok(on_conn!(conn, |c| sqlx::query_scalar(SQL)
        .bind(key)
        .fetch_optional(&mut *c)
        .await)?)
}

/// Inserts the value unless the key exists; concurrent callers cannot clash.
pub(crate) async fn meta_insert_absent(
    conn: &mut Conn,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
    on_conn!(conn, |c| sqlx::query(SQL)
        .bind(key)
        .bind(value)
        .execute(&mut *c)
        .await
        .map(drop))?;
    Ok(())
}
