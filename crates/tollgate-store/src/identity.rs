//! Identity: organizations (tenants), users and memberships, apps, API keys,
//! OAuth clients, subscriptions, the OAuth server's signing keys and revoked
//! tokens, and the change feed gateway nodes replicate from.
//!
//! Three levels of access:
//!
//! - **Operator** ([`Store`] methods in `directory`): organizations and
//!   users.
//! - **Tenant** ([`Store::tenant`] gives a [`Tenant`]): everything inside one
//!   organization (members, apps, keys, clients, subscriptions). This is the only way to reach an organization's data. Its
//!   methods never take an organization id again, every statement they run
//!   filters on `org_id`, and an id that belongs to another organization is
//!   `NotFound`, exactly like one that does not exist.
//! - **Gateway feed** ([`Store`] methods in `feed`): a consistent
//!   [`Store::identity_snapshot`] of every usable credential, then
//!   [`Store::identity_changes`] after its `seq`.
//!
//! Every write to a key, client or subscription (create, update, revoke,
//! rotate, delete, and the cascades of deleting an app or an organization)
//! records a change in the same transaction, so a node that applies the feed
//! never keeps a revoked credential or a stale subscription. So does a
//! change of an organization's time zone, for each of its subscriptions. Identity writes do not bump the configuration revision.
//! Errors never contain a secret, hashes included.

use tollgate_core::ids::OrgId;
use tollgate_core::problem::FieldError;

use crate::{Store, StoreError};

mod credential_sql;
mod credentials;
mod directory;
mod feed;
mod records;
mod sql;
mod subscription_sql;
mod subscriptions;
mod tenant;

pub use feed::MAX_CHANGES_PER_READ;
pub use records::{
    ApiKey, App, AppUpdate, ChangeEntity, ClientGrant, IdentityChange, IdentitySnapshot, KeyGrant,
    KeyUpdate, Member, NewApiKey, NewSubscription, OAuthClient, OrgUpdate, Organization,
    SigningKey, SigningKeyMaterial, Subscription, SubscriptionGrant, SubscriptionUpdate, User,
};

/// One organization's view of the store; see the module docs. Cheap to make.
#[derive(Debug, Clone)]
pub struct Tenant<'a> {
    store: &'a Store,
    org: OrgId,
}

impl Store {
    /// The only way to reach an organization's members, apps, keys and
    /// clients. Does not check that the organization exists: reads then find
    /// nothing and writes fail with `NotFound`.
    pub fn tenant(&self, org: &OrgId) -> Tenant<'_> {
        Tenant {
            store: self,
            org: org.clone(),
        }
    }
}

impl Tenant<'_> {
    /// The organization this tenant is scoped to.
    pub fn org_id(&self) -> &OrgId {
        &self.org
    }
}

/// Input checks. Messages never quote a secret.
pub(crate) mod check {
    use super::*;

    pub(crate) const MAX_NAME: usize = 128;
    pub(crate) const MAX_DESCRIPTION: usize = 2048;
    pub(crate) const MAX_METADATA_BYTES: usize = 8192;
    pub(crate) const MAX_SCOPES: usize = 100;
    pub(crate) const MAX_SCOPE: usize = 128;

    /// Collects field errors; [`Errors::finish`] turns them into `Invalid`.
    #[derive(Default)]
    pub(crate) struct Errors(Vec<FieldError>);

    impl Errors {
        pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
            self.0.push(FieldError {
                path: path.into(),
                reason: reason.into(),
            });
        }

        pub(crate) fn finish(self) -> Result<(), StoreError> {
            if self.0.is_empty() {
                Ok(())
            } else {
                Err(StoreError::Invalid(self.0))
            }
        }
    }

    /// An organization slug: 1 to 64 of `a-z`, `0-9` and `-`, starting with
    /// a letter or digit.
    pub(crate) fn slug(name: &str, errs: &mut Errors) {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if !ok {
            errs.push(
                "name",
                "must be 1 to 64 lower-case letters, digits or `-`, not starting with `-`",
            );
        }
    }

    /// Free text of `min..=max` characters without control characters.
    pub(crate) fn text(value: &str, path: &str, min: usize, max: usize, errs: &mut Errors) {
        let n = value.chars().count();
        if n < min || n > max {
            if min == 0 {
                errs.push(path, format!("must be at most {max} characters"));
            } else {
                errs.push(path, format!("must be {min} to {max} characters"));
            }
        } else if value.chars().any(char::is_control) {
            errs.push(path, "must not contain control characters");
        } else if min > 0 && value.trim().is_empty() {
            errs.push(path, "must not be blank");
        }
    }

    /// Text that may span lines: at most `max` characters, no control
    /// characters other than newlines and tabs.
    pub(crate) fn multiline(value: &str, path: &str, max: usize, errs: &mut Errors) {
        if value.chars().count() > max {
            errs.push(path, format!("must be at most {max} characters"));
        } else if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            errs.push(
                path,
                "must not contain control characters other than newlines and tabs",
            );
        }
    }

    /// Trims and lower-cases an email address, then checks its shape.
    pub(crate) fn email(raw: &str, errs: &mut Errors) -> String {
        let email = raw.trim().to_lowercase();
        let ok = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if !ok {
            errs.push("email", "is not a valid email address");
        }
        email
    }

    pub(crate) fn metadata(map: &serde_json::Map<String, serde_json::Value>, errs: &mut Errors) {
        let size = serde_json::to_string(map).map_or(usize::MAX, |s| s.len());
        if size > MAX_METADATA_BYTES {
            errs.push(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            );
        }
    }

    /// OAuth scope tokens (RFC 6749 section 3.3): printable ASCII without
    /// space, `"` or `\`; no duplicates.
    pub(crate) fn scopes(scopes: &[String], errs: &mut Errors) {
        if scopes.len() > MAX_SCOPES {
            errs.push("scopes", format!("must list at most {MAX_SCOPES} scopes"));
            return;
        }
        for (i, scope) in scopes.iter().enumerate() {
            let ok = (1..=MAX_SCOPE).contains(&scope.len())
                && scope
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !ok {
                errs.push(
                    format!("scopes[{i}]"),
                    format!(
                        "must be 1 to {MAX_SCOPE} printable ASCII characters without space, `\"` or `\\`"
                    ),
                );
            } else if scopes[..i].contains(scope) {
                errs.push(format!("scopes[{i}]"), format!("duplicate scope `{scope}`"));
            }
        }
    }

    /// Printable ASCII without spaces, `1..=max` long; the value is never quoted.
    pub(crate) fn token(value: &str, path: &str, max: usize, errs: &mut Errors) {
        let ok = (1..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            errs.push(
                path,
                format!("must be 1 to {max} printable ASCII characters without spaces"),
            );
        }
    }

    /// An argon2 PHC string; never quoted back.
    pub(crate) fn secret_hash(value: &str, errs: &mut Errors) {
        let ok = value.starts_with("$argon2")
            && value.len() <= 512
            && value.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            errs.push("secret_hash", "must be an argon2 PHC string");
        }
    }
}
