//! The audit log: one entry per write through the admin API (and later the
//! portal API), saying who did what to which resource, with the resource's
//! state before and after.
//!
//! The log is append-only: [`Store::append_audit`] and [`Store::list_audit`]
//! are the only operations on it, and no statement in the store updates or
//! deletes an entry. Entries are not configuration, so appending one leaves
//! the configuration revision alone (nodes do not rebuild their snapshot for
//! it). Whatever a caller passes, `before` and `after` are [`redact`]ed
//! before they are written, so no secret reaches the table through this
//! module.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::ids::{AuditId, OrgId};

use crate::db::on_conn;
use crate::sql::{parse_id, timestamp, to_json};
use crate::{Listed, Page, Store, StoreError};

/// What replaces a secret's value in `before` and `after`.
pub const REDACTED: &str = "[redacted]";

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// `aud_…`; entries sort by id in the order they were recorded.
    pub id: AuditId,
    /// When the write was answered.
    pub at: DateTime<Utc>,
    /// Who wrote: `admin_token:<first 12 hex digits of the token's SHA-256>`.
    pub actor: String,
    /// What was done: `<resource type>.<verb>`, such as `service.create`,
    /// `key.revoke` or `config.apply`.
    pub action: String,
    /// The kind of resource written: `service`, `key`, `config`…
    pub resource_type: String,
    /// The resource's id (or name, for JWT issuers and plans); for a
    /// create, the new resource's. Absent when the write names no single
    /// resource or failed before one existed.
    pub resource_id: Option<String>,
    /// The organization the resource belongs to, for `/orgs/{org}/…`.
    pub org_id: Option<OrgId>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The resource as it was just before the write (secrets redacted);
    /// absent for a create or when it could not be read.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The answer's JSON body after a successful write (secrets redacted);
    /// absent after a failed write and a delete. `{"truncated": true}` when
    /// the body was too large to keep.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// The client's address (the TCP peer of the admin listener).
    pub ip: Option<String>,
    /// The request's `X-Request-Id`, as received or as generated.
    pub request_id: String,
}

/// Which entries [`Store::list_audit`] returns; every field that is set
/// must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub org: Option<OrgId>,
    /// Entries recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Entries recorded before this time.
    pub to: Option<DateTime<Utc>>,
    pub status: Option<u16>,
}

impl Store {
    /// Appends one entry to the audit log, with `before` and `after`
    /// [`redact`]ed. `Conflict` if an entry with this id exists. Does not
    /// bump the configuration revision.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO audit_log \
             (id, at, actor, action, resource_type, resource_id, org_id, status, \
              before, after, ip, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
        let redacted_json = |v: &Option<Value>| -> Result<Option<String>, StoreError> {
            v.as_ref()
                .map(|v| {
                    let mut v = v.clone();
                    redact(&mut v);
                    to_json(&v)
                })
                .transpose()
        };
        let before = redacted_json(&entry.before)?;
        let after = redacted_json(&entry.after)?;
        let mut conn = self.pool.conn().await?;
        on_conn!(&mut conn, |c| sqlx::query(SQL)
            .bind(entry.id.as_str())
            .bind(entry.at.timestamp_millis())
            .bind(entry.actor.as_str())
            .bind(entry.action.as_str())
            .bind(entry.resource_type.as_str())
            .bind(entry.resource_id.as_deref())
            .bind(entry.org_id.as_ref().map(OrgId::as_str))
            .bind(i32::from(entry.status))
            .bind(before.as_deref())
            .bind(after.as_deref())
            .bind(entry.ip.as_deref())
            .bind(entry.request_id.as_str())
            .execute(&mut *c)
            .await
            .map(drop))
        .map_err(|e| StoreError::unique(e, || format!("audit entry `{}` exists", entry.id)))
    }

    /// One page of the entries that match `filter`, oldest first (in id
    /// order, so `page.after` resumes where the previous page ended).
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<Listed<AuditEntry>, StoreError> {
        let limit = page.clamped_limit();
        let (sql, args) = page_query(filter, page.after.as_deref().unwrap_or(""));
        let mut conn = self.pool.conn().await?;
        let rows: Vec<AuditRow> = on_conn!(&mut conn, |c| {
            let mut q = sqlx::query_as(&sql);
            for arg in &args {
                q = match arg {
                    Arg::Text(t) => q.bind(t.as_str()),
                    Arg::Int(i) => q.bind(*i),
                };
            }
            q.bind(i64::from(limit) + 1).fetch_all(&mut *c).await
        })?;
        let items = rows
            .into_iter()
            .map(AuditRow::into_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed::from_fetched(items, limit, |e| e.id.as_str()))
    }
}

/// A bound value of a filtered query.
enum Arg {
    Text(String),
    Int(i64),
}

/// The SELECT for one page: only the filters that are set appear in the
/// WHERE clause, so each combination is a plain statement that an index on
/// its column serves (rather than `$n IS NULL OR …`, which a generic plan
/// cannot use an index for). The last placeholder is the limit.
fn page_query(filter: &AuditFilter, after: &str) -> (String, Vec<Arg>) {
    let mut sql = String::from(
        "SELECT id, at, actor, action, resource_type, resource_id, org_id, status, \
         before, after, ip, request_id FROM audit_log WHERE id > $1",
    );
    let mut args = vec![Arg::Text(after.to_owned())];
    let mut push = |clause: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    let text = |s: &Option<String>| s.as_ref().map(|s| Arg::Text(s.clone()));
    let conditions = [
        ("actor =", text(&filter.actor)),
        ("action =", text(&filter.action)),
        ("resource_type =", text(&filter.resource_type)),
        ("resource_id =", text(&filter.resource_id)),
        (
            "org_id =",
            filter.org.as_ref().map(|o| Arg::Text(o.to_string())),
        ),
        ("at >=", filter.from.map(|t| Arg::Int(t.timestamp_millis()))),
        ("at <", filter.to.map(|t| Arg::Int(t.timestamp_millis()))),
        ("status =", filter.status.map(|s| Arg::Int(i64::from(s)))),
    ];
    for (clause, arg) in conditions {
        if let Some(arg) = arg {
            push(clause, arg);
        }
    }
    let limit = args.len() + 1;
    sql.push_str(&format!(" ORDER BY id LIMIT ${limit}"));
    (sql, args)
}

#[derive(Debug, sqlx::FromRow)]
struct AuditRow {
    id: String,
    at: i64,
    actor: String,
    action: String,
    resource_type: String,
    resource_id: Option<String>,
    org_id: Option<String>,
    status: i32,
    before: Option<String>,
    after: Option<String>,
    ip: Option<String>,
    request_id: String,
}

impl AuditRow {
    fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let what = format!("audit entry {}", self.id);
        let json = |text: Option<String>, field: &str| {
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(format!("{what}: {field}: {e}")))
            })
            .transpose()
        };
        Ok(AuditEntry {
            id: parse_id(&self.id, &what)?,
            at: timestamp(self.at, &what)?,
            org_id: self
                .org_id
                .as_deref()
                .map(|o| parse_id(o, &what))
                .transpose()?,
            status: u16::try_from(self.status)
                .map_err(|_| StoreError::Corrupt(format!("{what}: status {}", self.status)))?,
            before: json(self.before, "before")?,
            after: json(self.after, "after")?,
            actor: self.actor,
            action: self.action,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            ip: self.ip,
            request_id: self.request_id,
        })
    }
}

/// Replaces every secret in `value` with [`REDACTED`], at any depth:
///
/// - the value of every field whose name (case-insensitive, `-` read as
///   `_`) is `secret`, `client_secret`, `token`, `password`, `passwd`,
///   `private_key`, `key_hash`, `pepper`, `authorization`,
///   `proxy_authorization`, `cookie`, `set_cookie`, `api_key` or
///   `x_api_key`, or ends in `_secret`, `_token`, `_password`, `_hash` or
///   `_private_key` (a `null` stays `null`: it reveals nothing);
/// - as a backstop, any string that has the shape of one of Tollgate's own
///   credentials (an API key `tg_live_…`/`tg_test_…`, an admin token
///   `tgadm_…`, an OAuth client secret `tgcs_…`), wherever it appears.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                if is_secret_field(name) {
                    if !v.is_null() {
                        *v = Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if looks_like_credential(s) => *s = REDACTED.to_owned(),
        _ => {}
    }
}

fn is_secret_field(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "secret",
        "client_secret",
        "token",
        "password",
        "passwd",
        "private_key",
        "key_hash",
        "pepper",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "api_key",
        "x_api_key",
    ];
    const SUFFIXES: &[&str] = &["_secret", "_token", "_password", "_hash", "_private_key"];
    let name = name.to_ascii_lowercase().replace('-', "_");
    NAMES.contains(&name.as_str()) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether `s` has the shape of a Tollgate credential. API keys are
/// recognised at their full length (38), so a key's public display prefix
/// (`tg_live_AbCd`) is kept.
fn looks_like_credential(s: &str) -> bool {
    const API_KEY_LEN: usize = 38;
    let api_key =
        (s.starts_with("tg_live_") || s.starts_with("tg_test_")) && s.len() >= API_KEY_LEN;
    api_key || (s.starts_with("tgadm_") && s.len() > 16) || (s.starts_with("tgcs_") && s.len() > 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = json!({
            "key": {"id": "key_1", "display_prefix": "tg_live_AbCd", "key_hash": "ab12"},
            "secret": "tg_live_3kPz81QeVbN0sXy7LmA2cD4f1Hq9Zr",
            "client_secret": "x",
            "Access-Token": "y",
            "nested": [{"password": 1, "name": "ok"}, {"webhook_secret": {"a": 1}}],
            "metadata": {"note": "tg_test_3kPz81QeVbN0sXy7LmA2cD4f1Hq9Zr", "other": "tgcs_abcdefghijklmnopqrstuvwxyz"},
            "secret_env": "HS_SECRET",
            "token_ttl": 3600,
            "expires_at": null,
            "refresh_token": null,
        });
        redact(&mut v);
        assert_eq!(
            v,
            json!({
                "key": {"id": "key_1", "display_prefix": "tg_live_AbCd", "key_hash": REDACTED},
                "secret": REDACTED,
                "client_secret": REDACTED,
                "Access-Token": REDACTED,
                "nested": [{"password": REDACTED, "name": "ok"}, {"webhook_secret": REDACTED}],
                "metadata": {"note": REDACTED, "other": REDACTED},
                "secret_env": "HS_SECRET",
                "token_ttl": 3600,
                "expires_at": null,
                "refresh_token": null,
            })
        );
    }

    #[test]
    fn only_set_filters_appear_in_the_query() {
        let (sql, args) = page_query(&AuditFilter::default(), "");
        assert!(sql.ends_with("WHERE id > $1 ORDER BY id LIMIT $2"), "{sql}");
        assert_eq!(args.len(), 1);
        let filter = AuditFilter {
            actor: Some("a".into()),
            status: Some(422),
            from: DateTime::from_timestamp_millis(5),
            ..AuditFilter::default()
        };
        let (sql, args) = page_query(&filter, "aud_x");
        assert!(
            sql.ends_with(
                "WHERE id > $1 AND actor = $2 AND at >= $3 AND status = $4 ORDER BY id LIMIT $5"
            ),
            "{sql}"
        );
        assert!(matches!(args[2], Arg::Int(5)));
    }
}
